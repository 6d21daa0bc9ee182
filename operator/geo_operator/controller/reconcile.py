"""The reconcile: one per GeoDeployment, the same for every cause.

kopf calls `reconcile` when the GeoDeployment is created, its spec changes or
the operator resumes; when one of its children changes or goes away (drift is
repaired: a deleted Deployment or Service comes back); and when a tuning
retry's back-off has passed. Each run, under the object's own lock:

1. gather: the GeoDeployment, its Deployment (and a rollout's canary), its
   tuning Jobs and the pods of the Jobs whose outcome status waits for; a
   by-hand rollout action (the `geo.ai/rollout` annotation); and, when the
   running canary's analysis is due, each track's figures over the analysis
   window and, with model.evaluation, the canary's held-out score
   (`controller.canary`);
2. decide: `builders.desired.decide`, pure (the canary's verdict, the rollout
   policy and the two tracks included: `rollout.analysis`, `builders.tracks`);
3. act: apply the children, the tuning ConfigMaps and Jobs, delete outdated
   Jobs, scale the two tracks to their split, delete a canary that went; a
   child the API server refuses stops the applying, and its words go to
   status; open the next analysis window; remove the by-hand annotation;
4. write status once (`builders.desired.settle`, only the reconcile's fields,
   only when they changed), then post the Events of what changed.

It returns when it wants to run again (a tuning retry, the next analysis, a
canary draining), which the caller records in `Context.requeues`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from geo_operator.api import models, names
from geo_operator.api import status as status_io
from geo_operator.builders import children, tuning
from geo_operator.builders import desired as desired_
from geo_operator.controller import canary as canary_
from geo_operator.controller import context, telemetry
from geo_operator.k8s import client as k8s
from geo_operator.rollout import analysis, policy
from geo_operator.triton import prometheus

log = logging.getLogger(__name__)


def run(ctx: context.Context, namespace: str, name: str, cause: str = "requeue") -> None:
    """`reconcile`, for kopf's handlers: a failure (the API server unreachable or
    answering 5xx) is one log line and a retry with back-off, never a traceback per try.
    Asked for while the object's reconcile runs, it returns at once and that one runs
    again after (`context.Pending`): what it gathers then is at least as new as the
    cause."""
    key = (namespace, name)
    if not ctx.pending.enter(key):
        telemetry.RECONCILE_CAUSES.labels("coalesced").inc()
        log.debug("%s/%s: reconcile asked for (%s) while one runs: it runs again", *key, cause)
        return
    telemetry.RECONCILE_CAUSES.labels(cause).inc()
    log.debug("%s/%s: reconcile (%s)", *key, cause)
    try:
        _run_once(ctx, key)
        while ctx.pending.leave(key):
            _run_once(ctx, key)
    except BaseException:
        ctx.pending.release(key)
        raise


def _run_once(ctx: context.Context, key: tuple[str, str]) -> None:
    namespace, name = key
    try:
        reconcile(ctx, namespace, name)
    except k8s.Gone as gone:  # deleted meanwhile, or its namespace is going: nothing to do
        log.debug("%s/%s: gone while reconciling: %s", *key, gone)
        ctx.requeues.set(key, None)
        ctx.requeues.succeeded(key)
    except Exception as error:
        delay = ctx.requeues.failed(key, ctx.clock())
        log.warning(
            "%s/%s: reconcile failed, retrying in %.0f s: %s", *key, delay, k8s.describe(error)
        )
        log.debug("%s/%s: the failure", *key, exc_info=True)
        telemetry.RECONCILES.labels(namespace, name, "failed").inc()
    else:
        ctx.requeues.succeeded(key)


def reconcile(ctx: context.Context, namespace: str, name: str) -> float | None:
    """Reconcile one GeoDeployment; returns seconds until it wants to run again, if ever."""
    key = (namespace, name)
    with ctx.locks.hold(key):
        observed = gather(ctx.kube, namespace, name)
        if observed is None:
            ctx.requeues.set(key, None)
            ctx.windows.forget(key)
            ctx.scores.forget(key)
            return None
        now = ctx.clock()
        spec = _spec(observed.body)
        pods = _Pods(ctx.kube, namespace, name)
        observed = _analysed(ctx, observed, spec, pods, now)
        wanted = desired_.decide(observed, now, ctx.tuner_image)
        deployment, refused = act(ctx.kube, wanted, observed, ctx.written)
        if deployment is None:  # refused before the Deployment: what runs is the old one
            deployment = observed.deployment
        elif deployment is not observed.deployment:
            # What this reconcile just wrote and read back: its own watch event (the ADDED
            # of a new Deployment, the MODIFIED of an apply) re-runs nothing.
            ctx.seen.changed((namespace, name), deployment_digest(deployment))
        # Both tracks serve behind the Service: at a 100 % step only the canary has pods.
        serving = (deployment, observed.canary)
        idle = deployment is not None and not any(
            ((d or {}).get("status") or {}).get("readyReplicas") for d in serving
        )
        final = desired_.settle(
            wanted, deployment, refused, pods.get() if idle else (), observed.canary
        )
        _open_window(ctx, key, spec, final, pods)
        if _annotation(observed.body) is not None:
            ctx.kube.annotate(
                models.API_VERSION, models.KIND, namespace, name, {names.ROLLOUT_ANNOTATION: None}
            )
            refused = manual_refusal(observed.body)
            if refused is not None:  # `kubectl annotate` users get the answer geo rollout gives
                ctx.kube.event(dict(observed.body), "Warning", "RolloutActionRefused", refused)
                log.warning("%s/%s: RolloutActionRefused: %s", namespace, name, refused)
        report(ctx.kube, observed.body, wanted, final)
        telemetry.RECONCILES.labels(namespace, name, "ok").inc()
        after = wanted.requeue_after
        ctx.requeues.set(key, None if after is None else ctx.clock() + after)
        return after


def deployment_digest(deployment: Mapping[str, Any]) -> str:
    """What the reconcile reads of a Deployment (its spec and identity, and of its status
    the replica counts and observedGeneration), as one string: equal digests, nothing
    for the owner's reconcile to do."""
    meta = deployment.get("metadata") or {}
    status = deployment.get("status") or {}
    read = {
        "spec": deployment.get("spec"),
        "metadata": {
            k: meta.get(k)
            for k in ("generation", "labels", "annotations", "ownerReferences", "deletionTimestamp")
        },
        "status": {
            k: status.get(k)
            for k in ("observedGeneration", "replicas", "readyReplicas", "updatedReplicas")
        },
    }
    # A hash, not the text: it is kept for every Deployment (the text held the whole spec).
    return hashlib.blake2b(
        json.dumps(read, sort_keys=True, default=str).encode(), digest_size=16
    ).hexdigest()


def gather(kube: k8s.Kube, namespace: str, name: str) -> desired_.Observed | None:
    """What exists now; None when the GeoDeployment is gone or going."""
    body = kube.get(models.API_VERSION, models.KIND, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    deployment = kube.get("apps/v1", "Deployment", namespace, name)
    jobs = kube.list("batch/v1", "Job", namespace, f"{names.TUNING_FOR_LABEL}={name}")
    waiting = {r.job for r in models.parse_status(body.get("status") or {}).tuning or ()}
    pods: dict[str, Mapping[str, Any]] = {}
    for job in jobs:
        job_name = job["metadata"]["name"]
        if job_name in waiting and tuning.finished(job):
            found = kube.list("v1", "Pod", namespace, f"{names.JOB_NAME_LABEL}={job_name}")
            if found:
                pods[job_name] = found[0]
    canary = kube.get("apps/v1", "Deployment", namespace, children.canary_name(name))
    manual = _annotation(body)
    return desired_.Observed(
        body,
        deployment,
        jobs,
        pods,
        canary=canary,
        manual=manual if manual in ("promote", "abort") else None,  # type: ignore[arg-type]
    )


def _annotation(body: Mapping[str, Any]) -> str | None:
    """The by-hand rollout action asked for, if any (`geo rollout promote|abort`)."""
    value = ((body.get("metadata") or {}).get("annotations") or {}).get(names.ROLLOUT_ANNOTATION)
    return None if value is None else str(value).strip().lower()


MANUAL_ACTIONS = ("promote", "abort")


def manual_refusal(body: Mapping[str, Any]) -> str | None:
    """Why the `geo.ai/rollout` annotation on ``body`` is not acted on, if it is not: a
    value that is no action, or an action with no canary running. The annotation is
    removed either way; these words go out as a Warning Event."""
    raw = ((body.get("metadata") or {}).get("annotations") or {}).get(names.ROLLOUT_ANNOTATION)
    action = _annotation(body)
    if action is None:
        return None
    if action not in MANUAL_ACTIONS:
        return (
            f"{names.ROLLOUT_ANNOTATION}={raw!r} is not an action: the accepted values are "
            f"{' and '.join(MANUAL_ACTIONS)} (pause and resume are spec.rollout.paused: "
            "`geo rollout pause|resume`); the annotation is removed, nothing changed"
        )
    state = _rollout_state(body)
    if not state.active:
        return (
            f"{names.ROLLOUT_ANNOTATION}={action}: no canary is running to {action} "
            f"(rollout phase {state.phase or 'none'}); the annotation is removed, nothing changed"
        )
    return None


def _rollout_state(body: Mapping[str, Any]) -> policy.State:
    return policy.State.of(models.parse_status(body.get("status") or {}).rollout)


class _Pods:
    """The Triton pods of both tracks, listed once per reconcile, and only if asked for
    (an analysis due, or a window opening)."""

    def __init__(self, kube: k8s.Kube, namespace: str, name: str) -> None:
        self._kube, self._where = kube, (namespace, f"{names.OWNER_LABEL}={name}")
        self._pods: list[dict[str, Any]] | None = None

    def get(self) -> list[dict[str, Any]]:
        if self._pods is None:
            self._pods = self._kube.list("v1", "Pod", *self._where)
        return self._pods


def _spec(body: Mapping[str, Any]) -> models.GeoDeploymentSpec | None:
    try:
        return models.parse_spec(body.get("spec") or {})
    except ValueError:
        return None  # decide reports it


def _analysed(
    ctx: context.Context,
    observed: desired_.Observed,
    spec: models.GeoDeploymentSpec | None,
    pods: _Pods,
    now: float,
) -> desired_.Observed:
    """``observed`` with each track's figures over the window, when an analysis is due and
    they are readable (and, with model.evaluation, the canary's held-out score)."""
    state = _rollout_state(observed.body)
    if spec is None or state.window_since is None:
        return observed
    meta = observed.body["metadata"]
    key = (meta["namespace"], meta["name"])
    scored: models.MeasuredAccuracy | str | None = None
    if spec.model.evaluation is not None and state.canary_hash is not None:
        # Asked every reconcile while a canary runs: the scoring job starts as soon as a
        # canary pod is ready, so its score is there by the first analysis.
        scored = ctx.scores.score(key, state.canary_hash, spec, pods.get(), ctx.clock)
    if not policy.analysis_due(spec.rollout, state, now):
        return observed
    since = _window_since(ctx, key, state)
    figures = _figures(ctx, spec, key, since, pods, now)
    if figures is None:
        return observed
    canary, stable = figures
    ended = ctx.scores.ended(key)
    if ended is not None and now < ended + canary_.P99_SETTLE_SECONDS:
        canary = dataclasses.replace(canary, p99_ms=None)  # the scorer's batches are in it
    if isinstance(scored, models.MeasuredAccuracy):
        canary = dataclasses.replace(canary, accuracy=scored.value, samples=scored.samples)
    elif scored is not None:
        log.info("%s/%s: the canary's accuracy gate waits: %s", *key, scored)
    log.info(
        "%s/%s: canary analysis due (canary %s; stable %s)",
        *key,
        canary.words(),
        stable.words(),
    )
    return dataclasses.replace(observed, figures=(canary, stable))


def _window_since(ctx: context.Context, key: tuple[str, str], state: policy.State) -> float:
    """Where the traffic figures count from: the analysis window's start, or, when the
    operator's held-out requests ended inside the window, their end (issue 31: the
    scorer's 68 requests passed a step with no user traffic at all). The user requests
    before that are dropped too: fewer requests, never a wrong pass."""
    assert state.window_since is not None
    ended = ctx.scores.ended(key)
    return state.window_since if ended is None else max(state.window_since, ended)


def _figures(
    ctx: context.Context,
    spec: models.GeoDeploymentSpec,
    key: tuple[str, str],
    since: float,
    pods: _Pods,
    now: float,
) -> tuple[analysis.Figures, analysis.Figures] | None:
    """(canary, stable) over the window, from the autoscaler's metrics source: each track's
    pods scraped directly, or Prometheus grouped by the track label."""
    source = spec.autoscaling.metrics
    if source.source is not models.MetricsSourceKind.PROMETHEUS:
        return ctx.windows.figures(
            key, since, pods.get(), spec.model.name, now, spec.model.generative
        )
    try:
        found = prometheus.track_figures(
            source.prometheus_url or "",
            *key,
            round(now - since),
            generative=spec.model.generative,
        )
    except prometheus.PrometheusError as error:
        log.info("%s/%s: no canary analysis this time: %s", *key, error)
        return None

    def of(track: str) -> analysis.Figures:
        load = found[track]
        return analysis.Figures(
            requests=load.requests,
            errors=load.errors,
            p99_ms=load.p99_ms,
            first_tokens=load.first_tokens,
            ttft_p99_ms=load.ttft_p99_ms,
            tokens=load.tokens,
            itl_p99_ms=load.itl_p99_ms,
        )

    return of(names.CANARY_TRACK), of(names.STABLE_TRACK)


def _open_window(
    ctx: context.Context,
    key: tuple[str, str],
    spec: models.GeoDeploymentSpec | None,
    final: models.GeoDeploymentStatus,
    pods: _Pods,
) -> None:
    """Take the counters the next analysis window starts from (when it just opened)."""
    state = policy.State.of(final.rollout)
    if spec is None or not state.active or state.window_since is None:
        ctx.windows.forget(key)
        return
    since = _window_since(ctx, key, state)
    if not ctx.windows.is_open(key, since):
        ctx.windows.open(key, since, pods.get(), spec.model.name, spec.model.generative)


# A child `context.Written` vouches for: stored as wanted, untouched since (not read).
_CURRENT: Mapping[str, Any] = {"current": True}


def act(
    kube: k8s.Kube,
    wanted: desired_.Desired,
    observed: desired_.Observed | None = None,
    written: context.Written | None = None,
) -> tuple[Mapping[str, Any] | None, str | None]:
    """Apply what ``wanted`` says; the (stable) Deployment as stored (the one gathered,
    when it was only scaled), and a refusal if one came: the API server's, or ours for an
    object under a child's name that another owner controls (never applied over nor
    deleted). A Service or ConfigMap that ``written`` vouches for is neither read nor
    applied."""
    namespace = wanted.target.namespace if wanted.target else ""
    uid = str(((observed.body if observed else {}).get("metadata") or {}).get("uid", ""))
    known = _gathered(observed)
    for job in wanted.delete_jobs:
        kube.delete("batch/v1", "Job", namespace, job)
    deployment: Mapping[str, Any] | None = None
    stable = wanted.target.name if wanted.target else None
    stamped = [children.stamp(obj) for obj in wanted.objects]
    stored_now: list[Mapping[str, Any] | None] = []
    for obj in stamped:  # all checked before any is applied: a conflict changes nothing
        if written is not None and written.current(obj, uid):
            stored_now.append(_CURRENT)
            continue
        existing = _stored(
            kube, known, obj["apiVersion"], obj["kind"], namespace, obj["metadata"]["name"]
        )
        taken = children.foreign(existing, uid)
        if taken is not None:
            return None, taken
        stored_now.append(existing)
    # Deployments are applied without replicas: a stored one is scaled first (an apply
    # that leaves out a field it owned alone would reset it to 1), a new one after.
    created = {
        obj["metadata"]["name"]
        for obj, existing in zip(stamped, stored_now, strict=True)
        if obj["kind"] == "Deployment" and not existing
    }
    later = [(name, n) for name, n in wanted.scale if name in created]
    for name, replicas in wanted.scale:
        if name not in created:
            kube.scale_deployment(namespace, name, replicas)
    for obj, existing in zip(stamped, stored_now, strict=True):
        if existing is _CURRENT:
            continue
        if children.unchanged(existing, obj):  # applied before, as it is: no request
            stored: Mapping[str, Any] | None = existing
        else:
            try:
                stored = kube.apply(obj)
            except k8s.Refused as refusal:
                return deployment, str(refusal)
        if written is not None and stored:
            written.wrote(stored)
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] == stable:
            deployment = stored
    for name, replicas in later:
        kube.scale_deployment(namespace, name, replicas)
    base = deployment if deployment is not None else (observed.deployment if observed else None)
    for name, replicas in wanted.scale:
        if name == stable and base is not None:
            # As stored but for the replicas just set: no read back.
            deployment = {**base, "spec": {**(base.get("spec") or {}), "replicas": replicas}}
    for api_version, kind, name in wanted.delete:
        if children.foreign(_stored(kube, known, api_version, kind, namespace, name), uid) is None:
            kube.delete(api_version, kind, namespace, name)
            if written is not None:  # gone: vouched for no more, before the watch says so
                written.watched(kind, namespace, name, None)
    return deployment, None


def _stored(
    kube: k8s.Kube,
    known: Mapping[tuple[str, str], Mapping[str, Any]],
    api_version: str,
    kind: str,
    namespace: str,
    name: str,
) -> Mapping[str, Any] | None:
    """A child as stored: as the gather read it, else read now."""
    if (kind, name) in known:
        return known[(kind, name)]
    return kube.get(api_version, kind, namespace, name)


def _gathered(observed: desired_.Observed | None) -> dict[tuple[str, str], Mapping[str, Any]]:
    """(kind, name) -> the object, for the children the reconcile already read ({}: the
    gather found none there); the rest are read when they are needed."""
    if observed is None:
        return {}
    name = observed.body["metadata"]["name"]
    known: dict[tuple[str, str], Mapping[str, Any]] = {
        ("Deployment", name): observed.deployment or {},
        ("Deployment", children.canary_name(name)): observed.canary or {},
    }
    for job in observed.jobs:
        known[("Job", job["metadata"]["name"])] = job
    return known


def report(
    kube: k8s.Kube,
    body: Mapping[str, Any],
    wanted: desired_.Desired,
    final: models.GeoDeploymentStatus,
) -> None:
    """Write the reconcile's status once; post the Events of what changed, once."""
    old = models.parse_status(body.get("status") or {})
    if not status_io.write(kube, body, final, status_io.RECONCILE):
        return
    meta = body["metadata"]
    events = list(wanted.events)
    refusal = desired_.refusal_event(old, final)
    if refusal is not None:
        events.append(refusal)
    for type_, reason, message in events:
        kube.event(dict(body), type_, reason, message)
        level = logging.WARNING if type_ == "Warning" else logging.INFO
        log.log(level, "%s/%s: %s: %s", meta["namespace"], meta["name"], reason, message)
