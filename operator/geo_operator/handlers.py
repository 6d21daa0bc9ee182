"""kopf handlers: thin glue between the cluster and the pure logic.

`geo run` imports this module and starts kopf. Each handler parses the body
into the pydantic model, calls `builders.plan` / `builders.children`, applies
through `k8s.client`, and writes status (only when it changed) and Events.
The decorated functions only fetch the shared `Kube` and delegate to plain
functions (`reconcile`, `refresh_readiness`) that the unit tests call with a
fake `Kube`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import kopf
import pydantic

from geo_operator.api import conditions, models
from geo_operator.api import status as status_io
from geo_operator.builders import children, plan
from geo_operator.k8s import client as k8s
from geo_operator.scaling import loop

log = logging.getLogger(__name__)

# Reasons of a Ready=False that the Deployment's own state must not overwrite.
_BLOCKING_REASONS = {"InvalidSpec", "NoQualifyingArtifact"}

_CONFLICT_ATTEMPTS = 5

_kube: k8s.Kube | None = None
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
    decided = plan.plan(
        name=name,
        namespace=namespace,
        uid=meta["uid"],
        spec=spec,
        status=status,
        current_replicas=current,
    )
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

    # Events go out after the status write: a conflict retries the whole
    # reconcile, and the Events must not be posted twice.
    events: list[tuple[str, str]] = []
    previous = status.selected_artifact.name if status.selected_artifact else None
    if previous != artifact.name:
        events.append(
            (
                "ArtifactSelected",
                f"serving {artifact.name} ({artifact.precision}, {artifact.format}): "
                f"{decided.choice.reason}",
            )
        )
    if status.observed_generation is None:
        events.append(
            (
                "Created",
                f"created Triton Deployment, Service and ConfigMap "
                f"{children.config_map_name(name)} with {target.replicas} replica(s), "
                f"max_batch_size {target.batch.max_batch_size}",
            )
        )
    elif status.config_hash not in (None, new_hash):
        events.append(
            (
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
    for reason, message in events:
        kube_.event(dict(body), "Normal", reason, message)


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
