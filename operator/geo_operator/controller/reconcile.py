"""The reconcile: one per GeoDeployment, the same for every cause.

kopf calls `reconcile` when the GeoDeployment is created, its spec changes or
the operator resumes; when one of its children changes or goes away (drift is
repaired: a deleted Deployment or Service comes back); and when a tuning
retry's back-off has passed. Each run, under the object's own lock:

1. gather: the GeoDeployment, its Deployment, its tuning Jobs and the pods of
   the Jobs whose outcome status waits for;
2. decide: `builders.desired.decide`, pure;
3. act: apply the children, the tuning ConfigMaps and Jobs, delete outdated
   Jobs; a child the API server refuses stops the applying, and its words go
   to status;
4. write status once (`builders.desired.settle`, only the reconcile's fields,
   only when they changed), then post the Events of what changed.

It returns when it wants to run again (a tuning retry), which the caller
records in `Context.requeues`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from geo_operator.api import models, names
from geo_operator.api import status as status_io
from geo_operator.builders import desired as desired_
from geo_operator.builders import tuning
from geo_operator.controller import context
from geo_operator.k8s import client as k8s

log = logging.getLogger(__name__)


def run(ctx: context.Context, namespace: str, name: str) -> None:
    """`reconcile`, for kopf's handlers: a failure (the API server unreachable or
    answering 5xx) is one log line and a retry with back-off, never a traceback per try."""
    key = (namespace, name)
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
    else:
        ctx.requeues.succeeded(key)


def reconcile(ctx: context.Context, namespace: str, name: str) -> float | None:
    """Reconcile one GeoDeployment; returns seconds until it wants to run again, if ever."""
    key = (namespace, name)
    with ctx.locks.hold(key):
        observed = gather(ctx.kube, namespace, name)
        if observed is None:
            ctx.requeues.set(key, None)
            return None
        wanted = desired_.decide(observed, ctx.clock(), ctx.tuner_image)
        deployment, refused = act(ctx.kube, wanted)
        if deployment is None:  # refused before the Deployment: what runs is the old one
            deployment = observed.deployment
        final = desired_.settle(wanted, deployment, refused)
        report(ctx.kube, observed.body, wanted, final)
        after = wanted.requeue_after
        ctx.requeues.set(key, None if after is None else ctx.clock() + after)
        return after


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
    return desired_.Observed(body, deployment, jobs, pods)


def act(kube: k8s.Kube, wanted: desired_.Desired) -> tuple[Mapping[str, Any] | None, str | None]:
    """Apply what ``wanted`` says; the Deployment as stored, and a refusal if one came."""
    namespace = wanted.target.namespace if wanted.target else ""
    for job in wanted.delete_jobs:
        kube.delete("batch/v1", "Job", namespace, job)
    deployment: Mapping[str, Any] | None = None
    for obj in wanted.objects:
        try:
            stored = kube.apply(obj)
        except k8s.Refused as refusal:
            return deployment, str(refusal)
        if obj["kind"] == "Deployment":
            deployment = stored
    return deployment, None


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
