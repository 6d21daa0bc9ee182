"""The autoscaler's target QPS per replica: declared, measured, or learned. Pure.

`target(spec, capacity, correction)` says what the policy aims for and where the
number came from:

- **declared**: `autoscaling.targetQpsPerReplica` is set; the user's number wins.
- **measured**: it is unset; the served artifact's tuned throughput within the
  p99 objective (`status.tuning[].result.throughput`, measured on the real
  Triton by the tuning Job) × `targetUtilization` (default 0.7, as Knative's
  KPA: the 30 % headroom absorbs a burst for the time a new pod takes to start).
- **learned**: as measured, times a correction factor production taught (`learn`).
- **unknown**: nothing measured yet; the policy then scales out on p99 only and
  never scales in (a missing number is never read as a low load).

`learn(correction, obs, capacity, target_p99_ms)` keeps a bounded estimate of
what one replica really serves within the SLO: when a tick shows a replica
saturated (p99 at 90 % of the objective or more while a backlog is queued and
not draining, or the queue growing by more than 1 % of the QPS per second) the
QPS it served *is* its capacity; when it serves more than the estimate with p99
under half the objective, the estimate was low. Each tick moves the factor at
most LEARN_RATE of the way to what it saw, within [MIN_FACTOR, MAX_FACTOR], and
only on ticks with every replica ready for a minute and real load, so a cold
start, a scale-out still settling or an idle minute teaches nothing. The
policy's safety rules are untouched: the correction changes the target, not the
rules.
"""

from __future__ import annotations

import dataclasses

from geo_operator.api import models
from geo_operator.scaling.policy import BACKLOG_FRACTION, Observation, TokenTargets

MIN_FACTOR = 0.25
MAX_FACTOR = 1.5
LEARN_RATE = 0.2
# p99 at this fraction of the objective or more: the replica is at its capacity within the SLO.
SATURATED_P99 = 0.9
# p99 under this fraction of the objective while serving above the estimate: the estimate is low.
RELAXED_P99 = 0.5
# Ticks whose load per replica is under this fraction of the estimate teach nothing.
MIN_LOAD_FRACTION = 0.3
# The queue grows when it gained more than this fraction of the QPS served, per second,
# since the last tick: the few requests a gauge catches between two batches are noise.
GROWING_FRACTION = 0.01
# A p99 near the objective is a summary of the last minute; it says the replicas are
# saturated *now* only if their queues hold at least BACKLOG_FRACTION of the objective's
# worth of work (queued / QPS: the mean wait, by Little's law; the policy's constant, its
# own rule for a stale p99). Else it is a breach already drained, typically by replicas
# that just became ready: what each serves now is no capacity.
# Ticks within this many seconds of a change in the ready replicas teach nothing: the
# rates and the p99 summary (a minute of Triton's) still describe the old count.
SETTLE_SECONDS = 60.0


@dataclasses.dataclass(frozen=True)
class Correction:
    """What production taught about one replica's capacity (kept by the loop, per object)."""

    factor: float = 1.0
    evidence: int = 0  # ticks that moved it
    queued: tuple[float, float] | None = None  # (time, queued) at the last tick
    ready: tuple[float, int] | None = None  # (since when, ready replicas) as last seen


@dataclasses.dataclass(frozen=True)
class Target:
    """The QPS per replica to aim for (None: unknown), its source and the figures."""

    value: float | None
    source: models.TargetSource
    reason: str
    capacity: float | None = None
    factor: float | None = None

    def status(self) -> models.AutoscalingStatus:
        return models.AutoscalingStatus(
            effective_target_qps_per_replica=self.value,
            source=self.source,
            measured_capacity=self.capacity,
            correction=self.factor,
            reason=self.reason,
        )


def measured_capacity(status: models.GeoDeploymentStatus) -> float | None:
    """The served artifact's tuned throughput within the SLO, from its tuning entry."""
    served = status.selected_artifact.name if status.selected_artifact else None
    for run in status.tuning or ():
        if run.artifact == served and run.result is not None and run.result.throughput > 0:
            return run.result.throughput
    return None


def token_targets(
    spec: models.GeoDeploymentSpec, status: models.GeoDeploymentStatus
) -> TokenTargets | None:
    """A generative model's token targets for the loop: its two objectives and the served
    artifact's measured engine costs (`geo tune-llm`: 1 / prefill tokens/s a prompt
    token, 1 / tokens/s with every slot streaming a generated one). None when either
    objective or either measurement is missing: then the loop decides on requests and
    its p99 as before, and says so in its target's reason."""
    objectives = spec.objectives
    ttft, itl = objectives.time_to_first_token_p99_ms, objectives.inter_token_latency_p99_ms
    served = status.selected_artifact.name if status.selected_artifact else None
    if not spec.model.generative or ttft is None or itl is None:
        return None
    for run in status.tuning or ():
        result = run.result
        if run.artifact != served or result is None:
            continue
        prefill = result.prefill_tokens_per_second
        if prefill and prefill > 0 and result.throughput > 0:
            return TokenTargets(
                ttft, itl, 1.0 / prefill, 1.0 / result.throughput, result.max_batch_size
            )
    return None


def _round(value: float) -> float:
    """Three significant figures: a status that doesn't churn on noise."""
    return float(f"{value:.3g}")


def target(
    spec: models.GeoDeploymentSpec, capacity: float | None, correction: Correction = Correction()
) -> Target:
    """The effective target for ``spec``, given the measured ``capacity`` (req/s per replica)."""
    scaling = spec.autoscaling
    if scaling.target_qps_per_replica is not None:
        value = scaling.target_qps_per_replica
        return Target(value, "declared", f"autoscaling.targetQpsPerReplica {value:g}", capacity)
    utilization = scaling.target_utilization
    if capacity is None:
        return Target(
            None,
            "unknown",
            "no measured capacity yet (the tuning Job measures it; or set "
            "autoscaling.targetQpsPerReplica): scaling on p99 only, never in",
        )
    factor = round(correction.factor, 2)
    value = _round(capacity * factor * utilization)
    text = f"measured {capacity:g} req/s within p99 {spec.tuning_budget_ms():g} ms"
    if correction.evidence and factor != 1.0:
        return Target(
            value,
            "learned",
            f"{text} × correction {factor:g} (from {correction.evidence} ticks of production) "
            f"× utilization {utilization:g} = {value:g}",
            capacity,
            factor,
        )
    return Target(
        value, "measured", f"{text} × utilization {utilization:g} = {value:g}", capacity, factor
    )


def resolve(spec: models.GeoDeploymentSpec, target_: Target) -> models.Autoscaling:
    """The autoscaling spec the policy reads: the effective target and the p99 objective."""
    return spec.autoscaling.model_copy(
        update={
            "target_qps_per_replica": target_.value,
            "target_p99_latency_ms": spec.target_p99_ms(),
        }
    )


def learn(
    correction: Correction, obs: Observation, capacity: float | None, target_p99_ms: float
) -> Correction:
    """The correction after one tick (unchanged when the tick says nothing about capacity)."""
    queued = None if obs.queued is None else (obs.time, obs.queued)
    ready = correction.ready
    if ready is None or ready[1] != obs.ready_replicas:
        ready = (obs.time, obs.ready_replicas)
    kept = dataclasses.replace(correction, queued=queued, ready=ready)
    if (
        obs.time - ready[0] < SETTLE_SECONDS
        or capacity is None
        or obs.qps is None
        or obs.p99_ms is None
        or obs.ready_replicas <= 0
        or obs.ready_replicas < obs.replicas  # pods starting: the load is not spread yet
    ):
        return kept
    estimate = capacity * correction.factor
    per_replica = obs.qps / obs.ready_replicas
    if per_replica < MIN_LOAD_FRACTION * estimate:
        return kept
    # The queue's change per second since the last tick (None: unknown).
    change = None
    if obs.queued is not None and correction.queued is not None:
        then, before = correction.queued
        if obs.time > then:
            change = (obs.queued - before) / (obs.time - then)
    growing = change is not None and change > GROWING_FRACTION * obs.qps
    # A high p99 with the backlog still there and not draining: saturated now. A draining
    # backlog sits in the old pods' queues while the new ones idle: the mean is no capacity.
    slow = obs.p99_ms >= SATURATED_P99 * target_p99_ms and (
        obs.queued is None
        or (
            obs.queued >= BACKLOG_FRACTION * target_p99_ms / 1000.0 * obs.qps
            and (change is None or change >= 0)
        )
    )
    seen = per_replica / capacity
    # Saturated below the estimate: it serves less than we thought. (Saturated above it is
    # overload: what it serves then is beyond the SLO, not within it.)
    lower = (slow or growing) and seen < correction.factor
    # Comfortable above the estimate: it serves more than we thought.
    higher = obs.p99_ms < RELAXED_P99 * target_p99_ms and per_replica > estimate
    if not (lower or higher):
        return kept
    factor = correction.factor + LEARN_RATE * (seen - correction.factor)
    factor = min(MAX_FACTOR, max(MIN_FACTOR, factor))
    return Correction(factor, correction.evidence + 1, queued, ready)
