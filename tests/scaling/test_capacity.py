"""The effective target (declared, measured, learned, unknown) and the correction learned online."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from tests.support.paths import ROOT

from geo_operator.api import models
from geo_operator.scaling import capacity, policy

SPEC = models.parse_spec(
    yaml.safe_load((ROOT / "manifests" / "examples" / "digits-simulate-derived.yaml").read_text())[
        "spec"
    ]
)
CAPACITY = 1000.0  # req/s per replica within the p99 objective, as the tuning Job measured
P99 = SPEC.target_p99_ms()


def declared(value: float) -> models.GeoDeploymentSpec:
    scaling = SPEC.autoscaling.model_copy(update={"target_qps_per_replica": value})
    return SPEC.model_copy(update={"autoscaling": scaling})


def obs(
    time: float,
    qps: float,
    p99: float,
    *,
    replicas: int = 2,
    ready: int | None = None,
    queued: float | None = None,
) -> policy.Observation:
    return policy.Observation(
        time, replicas, replicas if ready is None else ready, qps, p99, None, queued
    )


def settled(correction: capacity.Correction | None = None) -> capacity.Correction:
    """A correction that has seen two ready replicas for longer than SETTLE_SECONDS."""
    return dataclasses.replace(correction or capacity.Correction(), ready=(0.0, 2))


# --- the target ----------------------------------------------------------------


def test_the_declared_target_wins_over_a_measurement() -> None:
    target = capacity.target(declared(500), CAPACITY, capacity.Correction(0.5, 10))
    assert (target.value, target.source) == (500, "declared")
    assert capacity.resolve(declared(500), target).target_qps_per_replica == 500


def test_measured_capacity_times_utilization() -> None:
    target = capacity.target(SPEC, CAPACITY)
    assert SPEC.autoscaling.target_utilization == 0.7
    assert (target.value, target.source, target.capacity) == (700, "measured", CAPACITY)
    assert "1000 req/s within p99 50 ms" in target.reason
    resolved = capacity.resolve(SPEC, target)
    assert resolved.target_qps_per_replica == 700
    assert resolved.target_p99_latency_ms == 50  # objectives.p99LatencyMs


def test_a_correction_with_evidence_makes_the_target_learned() -> None:
    target = capacity.target(SPEC, CAPACITY, capacity.Correction(0.8, 12))
    assert (target.value, target.source, target.factor) == (560, "learned", 0.8)
    assert target.status().correction == 0.8


def test_nothing_measured_is_unknown_and_the_policy_never_scales_in() -> None:
    target = capacity.target(SPEC, None)
    assert (target.value, target.source) == (None, "unknown")
    scaling = capacity.resolve(SPEC, target)
    assert scaling.target_qps_per_replica is None
    memory = policy.Memory()
    # An idle hour on 4 replicas: with no target, low load is never "low".
    for t in range(0, 3600, 15):
        decision, memory = policy.decide(
            scaling, policy.Observation(float(t), 4, 4, 1.0, 1.0), memory
        )
        assert decision.action == "maintain", decision.reason
    # p99 still scales out.
    decision, _ = policy.decide(scaling, policy.Observation(3600.0, 4, 4, 1.0, 4 * P99), memory)
    assert decision.action == "scale_out"


# --- learning --------------------------------------------------------------------


def test_saturation_below_the_estimate_lowers_the_factor() -> None:
    # Two replicas serve 700 req/s each at p99 48 ms with a backlog: they are at capacity.
    queued = 0.2 * P99 / 1000 * 1400  # a fifth of the objective's worth of work
    after = capacity.learn(settled(), obs(100, 1400, 48, queued=queued), CAPACITY, P99)
    assert after.factor == pytest.approx(1 + capacity.LEARN_RATE * (0.7 - 1))
    assert after.evidence == 1


def test_a_growing_queue_is_saturation() -> None:
    before = dataclasses.replace(settled(), queued=(98.0, 0.0))
    after = capacity.learn(before, obs(100, 1400, 5, queued=400), CAPACITY, P99)  # 200/s
    assert after.factor < 1 and after.evidence == 1


def test_queue_noise_and_a_drained_breach_teach_nothing() -> None:
    # A few requests between batches, a tick apart: not a growing queue.
    before = dataclasses.replace(settled(), queued=(98.0, 3.0))
    assert capacity.learn(before, obs(100, 1400, 1, queued=9), CAPACITY, P99).evidence == 0
    # p99 over the last minute still high, but the queue is empty now: already drained.
    assert capacity.learn(before, obs(100, 1400, 60, queued=5), CAPACITY, P99).evidence == 0
    # ... or draining a backlog in the old pods: their mean load is no capacity.
    backlog = dataclasses.replace(settled(), queued=(98.0, 50_000.0))
    assert capacity.learn(backlog, obs(100, 1400, 900, queued=40_000), CAPACITY, P99).evidence == 0


def test_serving_above_the_estimate_well_within_the_slo_raises_the_factor() -> None:
    correction = settled(capacity.Correction(0.6, 3))
    after = capacity.learn(correction, obs(100, 1600, 10), CAPACITY, P99)  # 800 > 600 each
    assert after.factor == pytest.approx(0.6 + capacity.LEARN_RATE * (0.8 - 0.6))
    assert after.evidence == 4
    # Comfortable below the estimate says nothing.
    assert capacity.learn(correction, obs(100, 1000, 10), CAPACITY, P99).factor == 0.6


def test_the_factor_stays_within_its_bounds() -> None:
    low = settled(capacity.Correction(capacity.MIN_FACTOR, 50))
    queued = 0.5 * P99 / 1000 * 200
    after = capacity.learn(low, obs(100, 200, 49, queued=queued), CAPACITY, P99)
    assert after.factor == capacity.MIN_FACTOR  # 0.1 seen, but never below the floor
    high = settled(capacity.Correction(capacity.MAX_FACTOR, 50))
    after = capacity.learn(high, obs(100, 2 * 1e4, 1), CAPACITY, P99)
    assert after.factor == capacity.MAX_FACTOR  # 10x seen, never above the ceiling
    correction = settled()
    for t in range(100, 2000, 2):
        correction = capacity.learn(correction, obs(t, 1e5, 1), CAPACITY, P99)
    assert correction.factor == pytest.approx(capacity.MAX_FACTOR)


def test_ticks_with_pods_starting_or_settling_or_low_load_teach_nothing() -> None:
    queued = 0.5 * P99 / 1000 * 1400
    saturated = {"queued": queued}
    # A pod still starting: the load is not spread over the replicas asked for.
    starting = capacity.learn(
        settled(), obs(100, 1400, 48, replicas=3, ready=2, **saturated), CAPACITY, P99
    )
    assert starting.factor == 1 and starting.evidence == 0
    # A pod that just became ready: the metrics still describe the old count.
    fresh = capacity.learn(settled(), obs(100, 1400, 48, replicas=3, ready=3, **saturated),
                           CAPACITY, P99)  # fmt: skip
    assert fresh.evidence == 0 and fresh.ready == (100, 3)
    # Low load: 100 req/s per replica is under MIN_LOAD_FRACTION of the estimate.
    idle = capacity.learn(settled(), obs(100, 200, 48, queued=queued), CAPACITY, P99)
    assert idle.evidence == 0
    # Nothing measured: nothing to correct.
    assert capacity.learn(settled(), obs(100, 1400, 48, **saturated), None, P99).evidence == 0


def test_the_first_tick_only_starts_the_settle_clock() -> None:
    first = capacity.learn(capacity.Correction(), obs(100, 1400, 48, queued=1e4), CAPACITY, P99)
    assert (first.evidence, first.ready) == (0, (100, 2))
    later = capacity.learn(first, obs(100 + capacity.SETTLE_SECONDS, 1400, 48, queued=1e4),
                           CAPACITY, P99)  # fmt: skip
    assert later.evidence == 1
