"""kopf handlers: thin glue between the cluster and the pure logic.

`geo run` imports this module and starts kopf. Each handler parses the body
into the pydantic model, calls `builders.plan` / `builders.children`, applies
through `k8s.client`, and writes status (only when it changed) and Events.
The decorated functions only fetch the shared `Kube` and delegate to plain
functions (`reconcile`, `refresh_readiness`) that the unit tests call with a
fake `Kube`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import kopf
import pydantic

from geo_operator.api import conditions, models
from geo_operator.api import status as status_io
from geo_operator.builders import children, plan, tuning
from geo_operator.k8s import client as k8s
from geo_operator.scaling import loop

log = logging.getLogger(__name__)

# Reasons of a Ready=False that the Deployment's own state must not overwrite.
_BLOCKING_REASONS = {"InvalidSpec", "NoQualifyingArtifact"}

_CONFLICT_ATTEMPTS = 5

_kube: k8s.Kube | None = None
# The image the tuning Job runs `geo tune` in: the operator's own (`geo run --tuner-image`).
DEFAULT_TUNER_IMAGE = "ghcr.io/geo-ai/geo-operator:0.1.0"
_tuner_image = DEFAULT_TUNER_IMAGE
_timers: dict[tuple[str, str], threading.Timer] = {}
_timers_lock = threading.Lock()
_schedule: Callable[[str, str, float], None]
_clock: Callable[[], float] = time.time  # tests move time forward
_autoscaler: loop.Autoscaler | None = None
_stop = threading.Event()


def kube() -> k8s.Kube:
    """The process-wide client, created on first use (after kopf logged in)."""
    global _kube
    if _kube is None:
        k8s.load_config()
        _kube = k8s.KubeClient()
    return _kube


def autoscaler() -> loop.Autoscaler:
    """The process-wide autoscaling loop (its thread starts with the operator)."""
    global _autoscaler
    if _autoscaler is None:
        _autoscaler = loop.Autoscaler(kube())
    return _autoscaler


def set_kube(value: k8s.Kube | None) -> None:
    """Swap the client (tests use a fake)."""
    global _kube
    _kube = value


def set_tuner_image(image: str) -> None:
    global _tuner_image
    _tuner_image = image


def set_scheduler(schedule: Callable[[str, str, float], None] | None) -> None:
    """How a later retry is scheduled: a timer thread (default); tests record the calls."""
    global _schedule
    _schedule = schedule or _schedule_with_timer


# ------------------------------------------------------------------ logic


def _validation_message(error: pydantic.ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = "spec." + ".".join(str(p) for p in item["loc"]) if item["loc"] else "spec"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def reconcile(kube_: k8s.Kube, body: Mapping[str, Any]) -> None:
    """Bring the children in line with the spec and report in status."""
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    generation = meta.get("generation")
    status = models.parse_status(body.get("status") or {})
    conds = list(status.conditions)

    try:
        spec = models.parse_spec(body.get("spec") or {})
    except pydantic.ValidationError as error:
        message = f"the spec is invalid, nothing was changed: {_validation_message(error)}"
        conds = conditions.set_condition(
            conds, conditions.READY, "False", "InvalidSpec", message, generation=generation
        )
        new = status.model_copy(update={"conditions": conds, "observed_generation": generation})
        if status_io.write(kube_, body, new):
            kube_.event(dict(body), "Warning", "InvalidSpec", message)
        log.warning("%s/%s: %s", namespace, name, message)
        return

    deployment = kube_.get("apps/v1", "Deployment", namespace, name)
    current = (deployment or {}).get("spec", {}).get("replicas")

    def decide(status_: models.GeoDeploymentStatus) -> plan.Plan:
        return plan.plan(
            name=name,
            namespace=namespace,
            uid=meta["uid"],
            spec=spec,
            status=status_,
            current_replicas=current,
        )

    decided = decide(status)
    # Batch tuning (spec.triton.maxBatchSize 0): for each candidate artifact, take in a
    # finished Job's result and decide the next step; then plan again with the results,
    # so selection compares the measured figures and the children carry the chosen
    # artifact's tuned settings.
    events: list[tuple[str, str, str]] = []
    steps: dict[str, tuning.Step] = {}
    if decided.target is not None and decided.tuning_keys:
        now = _clock()
        for candidate, key in decided.tuning_keys.items():
            run, finished = _collect_tuning(
                kube_, namespace, spec, tuning.run_for(status.tuning, candidate, key), now
            )
            events += finished
            steps[candidate] = tuning.step([run] if run else [], name, candidate, key, now)
        runs = [s.tuning for s in steps.values()]
        status = status.model_copy(update={"tuning": runs})
        decided = decide(status)
    elif decided.target is not None and status.tuning is not None:
        # maxBatchSize is set now: a tuning run still going is stopped, and its record goes.
        _stop_tuning(kube_, namespace, name)
        status = status.model_copy(update={"tuning": None})
    if decided.target is None:
        running = status.selected_artifact.name if status.selected_artifact else None
        left = (
            f"; the running deployment (artifact {running}) is left as it was"
            if running and deployment is not None
            else "; nothing was deployed"
        )
        conds = conditions.set_condition(
            conds,
            conditions.ARTIFACT_SELECTED,
            "False",
            "NoQualifyingArtifact",
            decided.choice.reason,
            generation=generation,
        )
        conds = conditions.set_condition(
            conds,
            conditions.READY,
            "False",
            "NoQualifyingArtifact",
            decided.choice.reason + left,
            generation=generation,
        )
        new = status.model_copy(update={"conditions": conds, "observed_generation": generation})
        if status_io.write(kube_, body, new):
            kube_.event(dict(body), "Warning", "NoQualifyingArtifact", decided.choice.reason + left)
        log.warning("%s/%s: %s%s", namespace, name, decided.choice.reason, left)
        return

    target = decided.target
    artifact = target.artifact
    applied: dict[str, Any] | None = None
    for obj in children.all_children(target):
        result = kube_.apply(obj)
        if obj["kind"] == "Deployment":
            applied = result
    new_hash = children.config_hash(target)
    if steps:
        events += _act_on_tuning(kube_, target, steps)

    # Events go out after the status write: a conflict retries the whole
    # reconcile, and the Events must not be posted twice.
    previous = status.selected_artifact.name if status.selected_artifact else None
    if previous != artifact.name:
        events.append(
            (
                "Normal",
                "ArtifactSelected",
                f"serving {artifact.name} ({artifact.precision}, {artifact.format}): "
                f"{decided.choice.reason}",
            )
        )
    if status.observed_generation is None:
        events.append(
            (
                "Normal",
                "Created",
                f"created Triton Deployment, Service and ConfigMap "
                f"{children.config_map_name(name)} with {target.replicas} replica(s), "
                f"max_batch_size {target.batch.max_batch_size}",
            )
        )
    elif status.config_hash not in (None, new_hash):
        events.append(
            (
                "Normal",
                "Rolling",
                f"model configuration changed (artifact {artifact.name}, max_batch_size "
                f"{target.batch.max_batch_size}): rolling the Triton pods with no unavailable "
                "replica",
            )
        )

    ready = plan.readiness(applied, target.replicas)
    conds = conditions.set_condition(
        conds,
        conditions.ARTIFACT_SELECTED,
        "True",
        "Selected",
        decided.choice.reason,
        generation=generation,
    )
    conds = conditions.set_condition(
        conds,
        conditions.BATCH_TUNED,
        "True" if decided.batch_tuned else "False",
        decided.batch_reason,
        decided.batch_message,
        generation=generation,
    )
    conds = conditions.set_condition(
        conds, conditions.READY, ready.status, ready.reason, ready.message, generation=generation
    )
    new = status.model_copy(
        update={
            "observed_generation": generation,
            "conditions": conds,
            "selected_artifact": models.SelectedArtifact(
                name=artifact.name,
                precision=artifact.precision,
                format=artifact.format,
                uri=artifact.uri,
                reason=decided.choice.reason,
            ),
            "max_batch_size": target.batch.max_batch_size,
            "config_hash": new_hash,
            "replicas": target.replicas,
            "ready_replicas": ready.ready_replicas,
            "selector": children.selector(name),
        }
    )
    status_io.write(kube_, body, new)
    for type_, reason, message in events:
        kube_.event(dict(body), type_, reason, message)
    waits = [s.retry_in for s in steps.values() if s.action == "retry_later" and s.retry_in]
    if waits:
        _schedule(namespace, name, min(waits))


def _collect_tuning(
    kube_: k8s.Kube,
    namespace: str,
    spec: models.GeoDeploymentSpec,
    run: models.TuningStatus | None,
    now: float,
) -> tuple[models.TuningStatus | None, list[tuple[str, str, str]]]:
    """If this candidate's running Job has finished, its outcome (and the Event to post)."""
    if run is None or run.result is not None or run.attempts <= run.failures:
        return run, []
    job = kube_.get("batch/v1", "Job", namespace, run.job or "")
    pods = kube_.list("v1", "Pod", namespace, f"batch.kubernetes.io/job-name={run.job}")
    finished = tuning.finish(spec, run, job, pods[0] if pods else None, now)
    if finished is None:
        return run, []
    if finished.result is not None:
        budget = spec.batch_tuning.latency_budget_ms
        event = (
            "Normal",
            "Tuned",
            f"Job {run.job} ({run.artifact}): {tuning.describe(finished.result, budget)}",
        )
    else:
        event = (
            "Warning",
            finished.failure_reason or "TuningFailed",
            f"{run.artifact}: {finished.failure_message}; retrying after "
            f"{finished.next_retry_time}",
        )
    return finished, [event]


def _stop_tuning(kube_: k8s.Kube, namespace: str, name: str) -> None:
    """Delete this GeoDeployment's tuning Jobs that have not finished."""
    for job in kube_.list("batch/v1", "Job", namespace, f"{tuning.TUNING_FOR_LABEL}={name}"):
        conds = (job.get("status") or {}).get("conditions") or []
        if not any(c.get("type") in ("Complete", "Failed") for c in conds):
            kube_.delete("batch/v1", "Job", namespace, job["metadata"]["name"])


def _act_on_tuning(
    kube_: k8s.Kube, target: children.Target, steps: Mapping[str, tuning.Step]
) -> list[tuple[str, str, str]]:
    """Start the candidates' Jobs the steps say to start (each with its ConfigMap), after
    deleting Jobs of outdated inputs."""
    current = {s.tuning.key for s in steps.values()}
    for job in kube_.list(
        "batch/v1", "Job", target.namespace, f"{tuning.TUNING_FOR_LABEL}={target.name}"
    ):
        meta = job.get("metadata") or {}
        if (meta.get("labels") or {}).get(tuning.TUNING_KEY_LABEL) not in current:
            kube_.delete("batch/v1", "Job", target.namespace, meta["name"])
    by_name = {a.name: a for a in target.spec.model.artifacts}
    events = []
    spec = target.spec
    for artifact, step in steps.items():
        if step.action != "start":
            continue
        run = step.tuning
        candidate = dataclasses.replace(target, artifact=by_name[artifact])
        kube_.apply(tuning.tuning_config_map(candidate))
        kube_.apply(
            tuning.tuning_job(candidate, key_=run.key, attempt=run.attempts, image=_tuner_image)
        )
        events.append(
            (
                "Normal",
                "TuningStarted",
                f"Job {run.job} measures {artifact} at max_batch_size "
                f"{list(spec.batch_tuning.candidates)} x queue delay {tuning.delays(spec)} "
                f"under p99 {spec.batch_tuning.latency_budget_ms:g} ms (attempt {run.attempts})",
            )
        )
    return events


def _schedule_with_timer(namespace: str, name: str, delay: float) -> None:
    """Reconcile ``namespace/name`` again after ``delay`` s (one pending timer per object)."""
    with _timers_lock:
        old = _timers.pop((namespace, name), None)
        if old is not None:
            old.cancel()
        timer = threading.Timer(delay + 0.5, _retry, args=(namespace, name))
        timer.daemon = True
        _timers[(namespace, name)] = timer
        timer.start()


def _retry(namespace: str, name: str) -> None:
    with _timers_lock:
        _timers.pop((namespace, name), None)
    try:
        reconcile_fresh(kube(), namespace, name)
    except Exception:  # a timer thread must not die silently
        log.exception("%s/%s: tuning retry failed", namespace, name)


def reconcile_fresh(kube_: k8s.Kube, namespace: str, name: str) -> None:
    """Read the GeoDeployment and reconcile it, re-reading on status conflicts."""
    for _ in range(_CONFLICT_ATTEMPTS):
        body = kube_.get(models.API_VERSION, models.KIND, namespace, name)
        if body is None:
            return
        try:
            reconcile(kube_, body)
            return
        except k8s.Conflict:
            continue
    log.warning("%s/%s: status kept changing; reconcile skipped", namespace, name)


def refresh_tuning(kube_: k8s.Kube, job: Mapping[str, Any]) -> None:
    """A tuning Job changed: once it finished, reconcile its GeoDeployment (which reads it)."""
    meta = job.get("metadata", {})
    owner = (meta.get("labels") or {}).get(tuning.TUNING_FOR_LABEL)
    conds = (job.get("status") or {}).get("conditions") or []
    done = any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conds)
    if owner and meta.get("namespace") and done:
        reconcile_fresh(kube_, meta["namespace"], owner)


def refresh_readiness(kube_: k8s.Kube, deployment: Mapping[str, Any]) -> None:
    """A Triton Deployment changed: carry its readiness into the owner's status."""
    meta = deployment.get("metadata", {})
    owner = meta.get("labels", {}).get(children.OWNER_LABEL)
    namespace = meta.get("namespace")
    if not owner or not namespace:
        return
    for _ in range(_CONFLICT_ATTEMPTS):
        body = kube_.get(models.API_VERSION, models.KIND, namespace, owner)
        if body is None:
            return
        try:
            _carry_readiness(kube_, body, deployment)
            return
        except k8s.Conflict:
            continue  # the reconcile wrote meanwhile: read again
    log.warning("%s/%s: status kept changing; readiness not recorded", namespace, owner)


def _carry_readiness(
    kube_: k8s.Kube, body: Mapping[str, Any], deployment: Mapping[str, Any]
) -> None:
    status = models.parse_status(body.get("status") or {})
    replicas = int(deployment.get("spec", {}).get("replicas") or 0)
    ready = plan.readiness(dict(deployment), replicas)
    conds = list(status.conditions)
    current = conditions.get(conds, conditions.READY)
    if current is None or current.reason not in _BLOCKING_REASONS:
        conds = conditions.set_condition(
            conds,
            conditions.READY,
            ready.status,
            ready.reason,
            ready.message,
            generation=current.observed_generation if current else None,
        )
    new = status.model_copy(
        update={"conditions": conds, "ready_replicas": ready.ready_replicas, "replicas": replicas}
    )
    status_io.write(kube_, body, new)


# ------------------------------------------------------------------ kopf wiring

RESOURCE = (models.GROUP, models.VERSION, models.PLURAL)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """kopf's bookkeeping under our prefix; watches that notice a dead server."""
    settings.persistence.finalizer = f"{models.GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=models.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=models.GROUP, key="last-handled-configuration"
    )
    # Reconnect promptly when the API server restarts or a watch silently dies.
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    settings.watching.connect_timeout = 10
    settings.watching.reconnect_backoff = 1.0
    # Our Events are posted by k8s.client with the numbers in them; kopf's
    # per-handler "Handler succeeded" Events would only be noise.
    settings.posting.level = logging.WARNING


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
def on_change(body: kopf.Body, **_: Any) -> None:
    """Create, edit and operator restart all converge the same way."""
    kube_ = kube()
    current: Mapping[str, Any] = body
    for _attempt in range(_CONFLICT_ATTEMPTS):
        try:
            reconcile(kube_, current)
            return
        except k8s.Conflict:
            # The Deployment watcher or the autoscaler wrote status meanwhile: re-read, redo.
            meta = body["metadata"]
            fresh = kube_.get(models.API_VERSION, models.KIND, meta["namespace"], meta["name"])
            if fresh is None:
                return  # deleted meanwhile
            current = fresh
    raise kopf.TemporaryError("status kept changing under the reconcile", delay=1)


@kopf.on.event(
    "apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": children.MANAGER}
)
def on_deployment_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    """Follow the Triton Deployments' readiness."""
    if type == "DELETED":
        return
    refresh_readiness(kube(), body)


@kopf.on.event("batch", "v1", "jobs", labels={"app.kubernetes.io/component": tuning.COMPONENT})
def on_tuning_job_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    """A tuning Job finished: its GeoDeployment takes the result in (or schedules a retry)."""
    if type == "DELETED":
        return
    refresh_tuning(kube(), body)


@kopf.on.startup()
def start_autoscaler(**_: Any) -> None:
    """One loop thread for all GeoDeployments; kopf's watches keep its view current."""
    _stop.clear()
    threading.Thread(
        target=autoscaler().run, args=(_stop,), name="geo-autoscaler", daemon=True
    ).start()


@kopf.on.cleanup()
def stop_autoscaler(**_: Any) -> None:
    _stop.set()


@kopf.on.event(*RESOURCE)
def on_geodeployment_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    """Keep the loop's view of GeoDeployments (spec and status) current.

    This is also the delete handler: children go with their owner by
    ownerReferences, so deletion needs no finalizer (which would block it
    whenever the operator is down); the loop just forgets the object.
    """
    meta = body["metadata"]
    if type == "DELETED":
        autoscaler().remove_object(meta["namespace"], meta["name"])
    else:
        autoscaler().upsert_object(body)


@kopf.on.event("", "v1", "pods", labels={"app.kubernetes.io/managed-by": children.MANAGER})
def on_pod_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    """Keep the loop's view of the Triton pods (readiness, IP, metrics URL) current."""
    if type == "DELETED":
        autoscaler().remove_pod(body)
    else:
        autoscaler().upsert_pod(body)


set_scheduler(None)
