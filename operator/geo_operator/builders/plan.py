"""Decide what to run for one GeoDeployment: artifact, batch settings, replicas.

A pure function of the spec, the previous status and the Deployment's current
replica count. `builders.desired` calls it for the reconcile, then either applies the children
built from `Plan.target` or, when no artifact qualifies, leaves whatever runs
alone and reports why. `geo render` calls it with no status.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from geo_operator.api import models, names
from geo_operator.artifacts import cost, selection
from geo_operator.builders import children, tuning
from geo_operator.triton import model_config

# max_batch_size used while spec.triton.maxBatchSize is 0 and nothing has been
# measured yet: small enough to keep p99 low on any backend, large enough that
# the dynamic batcher has something to do.
UNTUNED_MAX_BATCH_SIZE = 8
# A generative model's slots while triton.engine.slots is 0 and nothing is measured yet:
# EngineSpec's default.
UNTUNED_SLOTS = 4


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the handler should run, and the words for its status."""

    choice: selection.Choice
    target: children.Target | None
    batch_tuned: bool
    batch_reason: str
    batch_message: str
    tuning_key: str | None = None  # set when spec.triton.maxBatchSize is 0 (tune)
    # maxBatchSize 0: every candidate artifact's tuning key, by name (each is measured).
    tuning_keys: dict[str, str] = dataclasses.field(default_factory=dict)
    # The spec as asked, where the target's resolves a measured lever (a generative model's
    # triton.engine.slots 0): what the tuning Jobs measure.
    asked: models.GeoDeploymentSpec | None = None


def batch_settings(
    spec: models.GeoDeploymentSpec,
    status: models.GeoDeploymentStatus,
    tuning_key: str | None = None,
) -> tuple[model_config.BatchSettings, bool, str, str]:
    """Batch settings, whether they are final, and the BatchTuned reason/message.

    With spec.triton.maxBatchSize 0, the tuning result in status serves only when
    its key is ``tuning_key`` (what the spec asks for now); until then
    `UNTUNED_MAX_BATCH_SIZE` and the spec's batcher settings serve.
    """
    run = None
    if tuning_key is not None:
        run = next((r for r in status.tuning or () if r.key == tuning_key), None)
    if spec.model.generative:
        _, tuned, reason, message = engine_slots(spec, run)
        return (
            model_config.BatchSettings(max_batch_size=0, dynamic_batching=False),
            tuned,
            reason,
            message,
        )
    batching = spec.triton.dynamic_batching
    enabled, delay = batching.enabled, batching.max_queue_delay_microseconds
    if spec.triton.max_batch_size > 0:
        size, tuned = spec.triton.max_batch_size, True
        reason = "SetBySpec"
        message = f"max_batch_size {size} from spec.triton.maxBatchSize"
    elif run is not None and run.result is not None:
        result = run.result
        size, tuned = result.max_batch_size, True
        enabled = result.max_queue_delay_microseconds is not None
        delay = result.max_queue_delay_microseconds or 0
        reason = "Measured"
        message = f"measured by Job {run.job}: " + tuning.describe(result, spec.tuning_budget_ms())
    else:
        size, tuned = UNTUNED_MAX_BATCH_SIZE, False
        reason, message = _unmeasured(
            run,
            f"; serving max_batch_size {size} meanwhile",
            "spec.triton.maxBatchSize is 0 (tune)",
        )
    settings = model_config.BatchSettings(
        max_batch_size=size,
        dynamic_batching=enabled,
        max_queue_delay_microseconds=delay,
        # Preferred sizes above max_batch_size would make Triton refuse the config.
        preferred_batch_sizes=tuple(p for p in batching.preferred_batch_sizes or () if p <= size),
    )
    return settings, tuned, reason, message


def _unmeasured(run: models.TuningStatus | None, meanwhile: str, asked: str) -> tuple[str, str]:
    """The BatchTuned reason and message while the measurement ``asked`` for has no result."""
    if run is not None and run.failure_reason and run.failures >= run.attempts:
        return run.failure_reason, (
            f"attempt {run.attempts} failed: {run.failure_message}; next attempt after "
            f"{run.next_retry_time}{meanwhile}"
        )
    if run is not None and run.attempts:
        message = f"Job {run.job} is measuring (attempt {run.attempts}){meanwhile}"
        if run.failure_reason:
            message += f"; the previous attempt failed: {run.failure_message}"
        return "Tuning", message
    return "NotMeasured", f"{asked} and no measurement exists yet{meanwhile}"


def engine_slots(
    spec: models.GeoDeploymentSpec, run: models.TuningStatus | None
) -> tuple[int, bool, str, str]:
    """A generative model's slots, whether final, and the BatchTuned reason/message: the
    spec's, or with triton.engine.slots 0 the measured ones (``run``: the served
    candidate's tuning run for the current key), `UNTUNED_SLOTS` until then."""
    engine = spec.triton.engine or models.EngineSpec()
    how = f"one batch of up to {engine.batch_tokens} tokens per step"
    if engine.slots > 0:
        return (
            engine.slots,
            True,
            "EngineBatches",
            f"a generative model: decoupled, llama.cpp decodes up to {engine.slots} sequences "
            f"together, {how}",
        )
    if run is not None and run.result is not None:
        words = tuning.describe(run.result, spec.tuning_budget_ms(), generative=True)
        return run.result.max_batch_size, True, "Measured", f"measured by Job {run.job}: {words}"
    reason, message = _unmeasured(
        run, f"; serving {UNTUNED_SLOTS} slots meanwhile", "triton.engine.slots is 0 (measure)"
    )
    return UNTUNED_SLOTS, False, reason, message


def with_slots(spec: models.GeoDeploymentSpec, slots: int) -> models.GeoDeploymentSpec:
    """``spec`` with triton.engine.slots set: what the pods run when it was 0 (measure)."""
    engine = (spec.triton.engine or models.EngineSpec()).model_copy(update={"slots": slots})
    triton = spec.triton.model_copy(update={"engine": engine})
    return spec.model_copy(update={"triton": triton})


def desired_replicas(spec: models.GeoDeploymentSpec, current: int | None) -> int:
    """Replicas for the Deployment: spec.replicas, or the autoscaler's within bounds."""
    scaling = spec.autoscaling
    if not scaling.enabled:
        return spec.replicas
    if current is None:
        return scaling.min_replicas
    return max(scaling.min_replicas, min(scaling.max_replicas, current))


def current_load(status: models.GeoDeploymentStatus) -> float | None:
    """The total req/s the autoscaler last saw, for min-cost; None when it has seen none.

    Its QPS per replica × the replicas it decided from (`from`), not today's
    readyReplicas: right after a scale-out readyReplicas already counts the new pods
    while the per-replica figure is still the old one, so the product would claim
    the load grew by to/from (and min-cost would chase that). A maintain is recorded
    once, so under a steady load this is the figure of the last scaling decision.
    """
    decision = status.last_decision
    if decision is None or decision.qps_per_replica is None or not decision.from_replicas:
        return None
    return decision.qps_per_replica * decision.from_replicas


def measures(spec: models.GeoDeploymentSpec) -> bool:
    """Whether each candidate gets a tuning Job: a predictive model's with maxBatchSize 0
    (tune); a generative model's with model.evaluation (its quality and token speed)."""
    if spec.model.generative:
        engine = spec.triton.engine or models.EngineSpec()
        return spec.model.evaluation is not None or engine.slots == 0
    return spec.triton.max_batch_size == 0


@dataclasses.dataclass(frozen=True)
class SelectionInputs:
    """What artifact selection reads of a GeoDeployment, as the reconcile gathers it."""

    hardware: selection.Hardware
    # When the spec measures its candidates (`measures`): each one's tuning key; else empty.
    keys: Mapping[str, str]
    # The tuning results whose key is this spec's; none when the spec does not tune.
    measured: Mapping[str, selection.Measurement]
    demand: cost.Demand  # the load the autoscaler last saw, the artifact serving now


def selection_inputs(
    spec: models.GeoDeploymentSpec,
    status: models.GeoDeploymentStatus,
    gpu_arch: str | None = None,
) -> SelectionInputs:
    """Selection's inputs from the spec and the previous status: the reconcile's and
    `geo select`'s one way to them, so that both name the same artifact."""
    hardware = selection.hardware_of(spec.triton, gpu_arch)
    keys: dict[str, str] = {}
    measured: dict[str, selection.Measurement] = {}
    if measures(spec):
        keys = tuning.keys(spec, hardware)
        measured = tuning.measured(status.tuning, keys)
    served = status.selected_artifact.name if status.selected_artifact else None
    return SelectionInputs(
        hardware, keys, measured, cost.demand(spec, current_load(status), served)
    )


def choose(
    spec: models.GeoDeploymentSpec, status: models.GeoDeploymentStatus, inputs: SelectionInputs
) -> selection.Choice:
    """The artifact to serve from ``inputs``; with tuning keys, its reason names the
    status's tuning figures."""
    choice = selection.select(spec.model, inputs.hardware, inputs.measured, demand=inputs.demand)
    if choice.artifact is not None and inputs.keys:
        choice = dataclasses.replace(
            choice, reason=f"{choice.reason}; {tuning.figures(status.tuning, inputs.keys)}"
        )
    return choice


def plan(
    *,
    name: str,
    namespace: str,
    uid: str,
    spec: models.GeoDeploymentSpec,
    status: models.GeoDeploymentStatus,
    current_replicas: int | None,
    gpu_arch: str | None = None,
) -> Plan:
    """The plan; with maxBatchSize 0, selection compares the candidates' tuning results in
    ``status.tuning`` (when every candidate has one) and its reason names the figures."""
    inputs = selection_inputs(spec, status, gpu_arch)
    hardware, keys = inputs.hardware, dict(inputs.keys)
    choice = choose(spec, status, inputs)
    key = None
    if choice.artifact is not None and keys:
        key = keys.get(choice.artifact.name) or tuning.key(spec, choice.artifact)
    batch, tuned, reason, message = batch_settings(spec, status, key)
    served = spec
    if spec.model.generative and spec.triton.engine is not None and spec.triton.engine.slots == 0:
        run = next((r for r in status.tuning or () if key and r.key == key), None)
        served = with_slots(spec, engine_slots(spec, run)[0])
    target = None
    if choice.artifact is not None:
        target = children.Target(
            name=name,
            namespace=namespace,
            uid=uid,
            spec=served,
            artifact=choice.artifact,
            batch=batch,
            replicas=desired_replicas(spec, current_replicas),
            gpu=hardware.gpu,
        )
    return Plan(choice, target, tuned, reason, message, key, keys, asked=spec)


@dataclasses.dataclass(frozen=True)
class Readiness:
    """The Ready condition's inputs, read off the Triton Deployments (both tracks while a
    canary serves): ``replicas`` asked of them and ``ready_replicas`` ready, in total."""

    status: models.ConditionStatus
    reason: str
    message: str
    ready_replicas: int
    replicas: int


@dataclasses.dataclass(frozen=True)
class Canary:
    """A rollout's canary Deployment, for Ready: its pods sit behind the same Service as the
    stable's and serve beside them (all the traffic at a 100 % step, where the stable has
    none)."""

    deployment: Mapping[str, Any] | None  # as stored; None: applied for the first time now
    replicas: int  # asked of it
    # Its step's share, percent; None: draining (the rollout ended, the canary goes once the
    # stable serves again).
    weight: int | None = None


@dataclasses.dataclass(frozen=True)
class _Track:
    """One Deployment's pods: asked, ready, updated."""

    name: str
    replicas: int
    ready: int
    updated: int

    @classmethod
    def of(cls, name: str, deployment: Mapping[str, Any] | None, replicas: int) -> _Track:
        status = (deployment or {}).get("status") or {}
        ready = int(status.get("readyReplicas") or 0)
        return cls(name, replicas, ready, int(status.get("updatedReplicas") or 0))

    @property
    def settled(self) -> bool:
        return self.ready >= self.replicas and self.updated >= self.replicas


def fetch_failure(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """Why the pods' fetch-artifact init container fails, in its own words (fetch.py writes
    its one-line refusal to the termination log; the kubelet's waiting message says when a
    Secret or one of its keys is missing), or None when none fails."""
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name", "?")
        for c in (pod.get("status") or {}).get("initContainerStatuses") or ():
            if c.get("name") != names.FETCH_CONTAINER:
                continue
            state, last = c.get("state") or {}, c.get("lastState") or {}
            waiting = state.get("waiting") or {}
            if waiting.get("reason") in ("CreateContainerConfigError", "CreateContainerError"):
                words = waiting.get("message") or waiting["reason"]
                return f"pod {name}: {names.FETCH_CONTAINER}: {words}"
            ended = state.get("terminated") or last.get("terminated") or {}
            if ended.get("exitCode") not in (None, 0):
                words = " ".join(str(ended.get("message") or "").split()) or (
                    f"exit code {ended['exitCode']} (see the container's log)"
                )
                restarts = int(c.get("restartCount") or 0)
                again = f", restarted {restarts}x" if restarts else ""
                return f"pod {name}: {names.FETCH_CONTAINER} failed{again}: {words}"
    return None


def readiness(
    deployment: Mapping[str, Any] | None, replicas: int, canary: Canary | None = None
) -> Readiness:
    """Ready means serving: at least one ready Triton pod (all of them when settled),
    counted over what serves: the stable (``deployment``, ``replicas`` asked of it) and,
    while one exists and is not going, the canary. At a 100 % step the stable has no pod
    and the canary serves everything: that is Ready, not ScaledToZero."""
    if deployment is None and canary is None:
        return Readiness(
            "False", "Creating", "the Triton Deployment does not exist yet", 0, replicas
        )
    tracks = [_Track.of("stable", deployment, replicas)]
    if canary is not None:
        tracks.append(_Track.of("canary", canary.deployment, canary.replicas))
    total = sum(t.replicas for t in tracks)
    ready = sum(t.ready for t in tracks)
    updated = sum(t.updated for t in tracks)
    split = ""
    if canary is not None:
        at = "draining" if canary.weight is None else f"at {canary.weight} %"
        split = " (" + ", ".join(f"{t.ready} of {t.replicas} {t.name}" for t in tracks) + f" {at})"
    if total == 0:
        return Readiness(
            "False", "ScaledToZero", "spec.replicas is 0: no Triton pod runs", ready, 0
        )
    if ready == 0:
        return Readiness(
            "False",
            "NoReadyReplicas",
            f"0 of {total} Triton pods ready{split} (starting, or the model failed to load: "
            "see the pods' events and logs)",
            0,
            total,
        )
    if all(t.settled for t in tracks):
        return Readiness(
            "True", "Available", f"{ready} of {total} Triton pods ready{split}", ready, total
        )
    return Readiness(
        "True",
        "Progressing",
        f"serving; {ready} of {total} Triton pods ready, {updated} of {total} updated{split}",
        ready,
        total,
    )
