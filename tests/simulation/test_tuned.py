"""The simulated tuning Job: one replica's throughput within the p99 objective, from the engine."""

from __future__ import annotations

import math

import yaml
from tests.support.paths import ROOT

from geo_operator.api import models
from geo_operator.scaling import capacity
from geo_operator.simulation import autoscalers, replay, replica, tuned
from geo_operator.simulation import trace as traces

DERIVED = ROOT / "manifests" / "examples" / "digits-simulate-derived.yaml"
SPEC = models.parse_spec(yaml.safe_load(DERIVED.read_text())["spec"])
PROFILE = replica.Profile.load()
BATCH = replay.batching(SPEC, PROFILE)
FULL = PROFILE.capacity(BATCH.max_batch_size, BATCH.instances)


def test_the_best_level_fits_the_budget_and_the_next_does_not() -> None:
    result = tuned.within_slo(BATCH, 50.0)
    fitting = [lv for lv in result.levels if lv.fits]
    assert result.throughput == max(lv.throughput for lv in fitting)
    best = max(fitting, key=lambda lv: lv.throughput)
    assert best.worst_p99_ms <= 50
    # Every level above the best that was tried failed the budget: no higher fit was skipped.
    assert all(not lv.fits for lv in result.levels if lv.offered > best.offered)
    # The calibrated replica: a 0.29 ms batch of 8 against a 50 ms budget fits close to
    # its capacity at full batches, never above it.
    assert 0.9 * FULL < result.throughput < FULL


def test_a_tighter_budget_or_a_slower_replica_measures_less() -> None:
    loose = tuned.within_slo(BATCH, 50.0).throughput
    assert tuned.within_slo(BATCH, 2.0).throughput < loose
    slow = replay.batching(SPEC, replay.production(PROFILE, 0.7))
    assert abs(tuned.within_slo(slow, 50.0).throughput / loose - 0.7) < 0.03


def test_same_settings_same_figure() -> None:
    a = tuned.within_slo(BATCH, 50.0, seed=3)
    b = tuned._within_slo.__wrapped__(  # type: ignore[attr-defined]
        PROFILE.service_a_ms, PROFILE.service_b_ms, PROFILE.overhead_ms,
        BATCH.max_batch_size, BATCH.max_queue_delay_us, BATCH.instances, 50.0, 3,
    )  # fmt: skip
    assert a == b


def test_every_policy_gets_the_derived_target() -> None:
    lab = replay.measured(SPEC, PROFILE)
    assert lab == tuned.within_slo(BATCH, SPEC.tuning_budget_ms()).throughput
    target = replay.target(SPEC, PROFILE)
    assert target.source == "measured" and target.value == capacity.target(SPEC, lab).value
    assert replay.resolved(SPEC, PROFILE).target_qps_per_replica == target.value
    trace = traces.scale_to_peak(traces.synthetic("step", duration=300), 4, 1000)
    for name in ("hpa", "keda", "kpa"):
        scaler = autoscalers.make(name, SPEC, lab, trace, 30)
        assert scaler.spec.target_qps_per_replica == target.value, name  # type: ignore[union-attr]
    geo = autoscalers.make("geo", SPEC, lab, trace, 30)
    assert isinstance(geo, autoscalers.Geo) and geo.spec.target_qps_per_replica == target.value
    # The oracle sizes each window at the same target.
    assert isinstance(target.value, float)
    oracle = autoscalers.make("oracle", SPEC, lab, trace, 30)
    assert isinstance(oracle, autoscalers.Oracle)
    assert oracle.plan.max() == math.ceil(trace.peak(10) / target.value - 1e-9)


def test_a_given_capacity_replaces_the_simulated_tuning() -> None:
    assert replay.measured(SPEC, PROFILE, 20_000) == 20_000
    assert replay.resolved(SPEC, PROFILE, 20_000).target_qps_per_replica == 14_000
