"""The autoscaling decision: QPS and p99 in, scale_out / scale_in / maintain out.

Pure and deterministic: `decide(autoscaling_spec, observation, memory)` returns
the decision and the memory for the next tick. Called by `geo decide` and by the
operator's loop; the trace simulator is to use the same function.

The rule (DESIGN.md), per ready replica:

- **scale_out** when QPS per replica > target × scaleOutRatio, or p99 > the p99
  target (an SLO breach is never read as "maintain", except at maxReplicas or
  while replicas already ordered are still starting — both named in the reason);
- **scale_in** when QPS per replica < target × scaleInRatio **and** p99 < the p99
  target × latencyHeadroom, continuously for scaleInStabilizationSeconds;
- **maintain** otherwise, and always when metrics are missing or stale: a
  missing number is never read as zero, so we never scale in blind.

How far one decision moves (the anchors are HPA and KPA):

- out: proportional, like HPA — enough replicas that each carries the target
  QPS (`ceil(qps / targetQpsPerReplica)`), and on a latency breach at least
  `ceil(replicas × min(p99 / target, 2))`; always at least one more; capped by
  maxReplicas. Pods that are ordered but not ready count as capacity, so a
  second tick during start-up does not pile on more.
- in: to the highest recommendation seen during the stabilization window (HPA's
  scale-down stabilization), never below minReplicas, never more than half the
  replicas in one step.
"""

from __future__ import annotations

import dataclasses
import math

from geo_operator.api import models

# Proportional moves ignore changes within 10 % of the target, like HPA's
# --horizontal-pod-autoscaler-tolerance default.
TOLERANCE = 0.10
# One latency-driven step at most doubles the replicas.
MAX_LATENCY_FACTOR = 2.0


@dataclasses.dataclass(frozen=True)
class Observation:
    """What the loop saw at `time` (seconds, any monotonic origin)."""

    time: float
    replicas: int  # replicas asked of the Deployment
    ready_replicas: int
    qps: float | None  # total successful requests per second over the ready pods
    p99_ms: float | None  # worst p99 among the ready pods
    missing: str | None = None  # why the metrics are missing or stale, if they are


@dataclasses.dataclass(frozen=True)
class Memory:
    """What the policy remembers between ticks (kept by the loop, per object)."""

    low_since: float | None = None  # start of the current run of scale-in conditions
    recommendations: tuple[tuple[float, int], ...] = ()  # (time, replicas) in the window


@dataclasses.dataclass(frozen=True)
class Decision:
    """One decision and the numbers behind it."""

    action: models.Action
    replicas: int
    reason: str
    qps_per_replica: float | None
    p99_ms: float | None


def _clamp(spec: models.Autoscaling, n: int) -> int:
    return max(spec.min_replicas, min(spec.max_replicas, n))


def decide(
    spec: models.Autoscaling, obs: Observation, memory: Memory = Memory()
) -> tuple[Decision, Memory]:
    """The decision for one tick, and the memory for the next."""
    current = obs.replicas
    if obs.missing is not None or obs.qps is None or obs.p99_ms is None:
        why = obs.missing or "no QPS or p99 reading"
        return (
            Decision("maintain", current, f"metrics unavailable ({why}): holding", None, None),
            Memory(),  # a gap restarts the scale-in window: never scale in across blind time
        )
    if obs.ready_replicas <= 0:
        return (
            Decision("maintain", current, "no ready replica to measure: holding", None, obs.p99_ms),
            Memory(),
        )

    qps_pr = obs.qps / obs.ready_replicas
    target_qps, target_p99 = spec.target_qps_per_replica, spec.target_p99_latency_ms
    by_load = math.ceil(obs.qps / target_qps * (1 - TOLERANCE)) if obs.qps > 0 else 0
    numbers = (
        f"{qps_pr:.1f} QPS/replica (target {target_qps:g}), p99 {obs.p99_ms:.0f} ms "
        f"(target {target_p99:g})"
    )

    overloaded = qps_pr > target_qps * spec.scale_out_ratio
    breach = obs.p99_ms > target_p99
    if overloaded or breach:
        wanted = max(by_load, current + 1)
        if breach:
            factor = min(obs.p99_ms / target_p99, MAX_LATENCY_FACTOR)
            wanted = max(wanted, math.ceil(current * factor))
        wanted = _clamp(spec, wanted)
        cause = "p99 above target" if breach else "load above scale-out threshold"
        if breach and overloaded:
            cause = "p99 above target and load above scale-out threshold"
        starting = current - obs.ready_replicas
        if wanted <= current and current >= spec.max_replicas:
            return (
                Decision(
                    "maintain",
                    current,
                    f"{cause} but at maxReplicas {spec.max_replicas}: {numbers}",
                    qps_pr,
                    obs.p99_ms,
                ),
                Memory(),
            )
        if starting > 0 and by_load <= current and not (breach and obs.p99_ms > 2 * target_p99):
            return (
                Decision(
                    "maintain",
                    current,
                    f"{cause}; waiting for {starting} starting "
                    f"replica(s) already ordered: {numbers}",
                    qps_pr,
                    obs.p99_ms,
                ),
                Memory(),
            )
        return (
            Decision(
                "scale_out",
                wanted,
                f"{cause}: {numbers}; {current} -> {wanted}",
                qps_pr,
                obs.p99_ms,
            ),
            Memory(),
        )

    low = qps_pr < target_qps * spec.scale_in_ratio and obs.p99_ms < target_p99 * (
        spec.latency_headroom
    )
    if not low:
        return (
            Decision("maintain", current, f"within band: {numbers}", qps_pr, obs.p99_ms),
            Memory(),
        )

    window = spec.scale_in_stabilization_seconds
    low_since = memory.low_since if memory.low_since is not None else obs.time
    recommendation = _clamp(spec, max(by_load, 1))
    recent = tuple(
        (t, r)
        for t, r in (*memory.recommendations, (obs.time, recommendation))
        if t >= obs.time - window
    )
    held = obs.time - low_since
    if held < window:
        return (
            Decision(
                "maintain",
                current,
                f"low load for {held:.0f}s of the {window:g}s stabilization window: {numbers}",
                qps_pr,
                obs.p99_ms,
            ),
            Memory(low_since, recent),
        )
    stable = max(r for _, r in recent)
    wanted = _clamp(spec, max(stable, math.ceil(current / 2)))
    if wanted >= current:
        return (
            Decision(
                "maintain",
                current,
                f"low load, but {current} replicas are the floor "
                f"({'minReplicas' if current <= spec.min_replicas else 'the window max'}): "
                f"{numbers}",
                qps_pr,
                obs.p99_ms,
            ),
            Memory(low_since, recent),
        )
    return (
        Decision(
            "scale_in",
            wanted,
            f"low load for {held:.0f}s (window {window:g}s): {numbers}; {current} -> {wanted}",
            qps_pr,
            obs.p99_ms,
        ),
        # After a step down the window starts again: the next step needs its own evidence.
        Memory(obs.time, ((obs.time, wanted),)),
    )
