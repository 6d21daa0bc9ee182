"""The decision policy: examples, and hypothesis properties of its safety."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.paths import FIXTURES, ROOT

from geo_operator.api import models
from geo_operator.scaling import policy

SPEC = models.Autoscaling(
    min_replicas=1,
    max_replicas=10,
    target_qps_per_replica=100,
    target_p99_latency_ms=200,
    scale_in_stabilization_seconds=300,
)


def _obs(
    replicas: int,
    qps: float | None,
    p99: float | None,
    *,
    ready: int | None = None,
    time: float = 1000.0,
) -> policy.Observation:
    return policy.Observation(time, replicas, replicas if ready is None else ready, qps, p99)


def test_overload_scales_out_proportionally() -> None:
    decision, _ = policy.decide(SPEC, _obs(2, 600, 100))
    assert (decision.action, decision.replicas) == ("scale_out", 6)
    assert "300.0 QPS/replica" in decision.reason


def test_latency_breach_scales_out_even_at_low_qps() -> None:
    decision, _ = policy.decide(SPEC, _obs(2, 50, 390))
    assert decision.action == "scale_out" and decision.replicas == 4  # ceil(2 * 1.95)


def test_breach_at_max_is_maintain_and_says_so() -> None:
    decision, _ = policy.decide(SPEC, _obs(10, 5000, 900))
    assert decision.action == "maintain" and "at maxReplicas 10" in decision.reason


def test_starting_replicas_are_waited_for() -> None:
    decision, _ = policy.decide(SPEC, _obs(4, 260, 250, ready=2))
    assert decision.action == "maintain" and "2 starting replica(s)" in decision.reason


def test_scale_in_only_after_the_window() -> None:
    memory = policy.Memory()
    actions = []
    for t in range(0, 331, 15):
        decision, memory = policy.decide(SPEC, _obs(4, 40, 30, time=float(t)), memory)
        actions.append(decision.action)
    assert actions[:20] == ["maintain"] * 20  # 0 .. 285 s
    assert "scale_in" in actions[20:]
    decision, _ = policy.decide(SPEC, _obs(4, 40, 30, time=300.0), policy.Memory(0.0))
    assert decision.replicas == 2  # at most halve in one step


def test_a_gap_in_metrics_restarts_the_window() -> None:
    memory = policy.Memory(low_since=0.0)
    _, memory = policy.decide(SPEC, _obs(4, None, None, time=200.0), memory)
    decision, _ = policy.decide(SPEC, _obs(4, 40, 30, time=400.0), memory)
    assert decision.action == "maintain"


def test_missing_metrics_hold() -> None:
    decision, memory = policy.decide(
        SPEC,
        policy.Observation(1.0, 3, 3, None, None, "Prometheus unreachable"),
        policy.Memory(low_since=-1000.0),
    )
    assert (decision.action, decision.replicas) == ("maintain", 3)
    assert "Prometheus unreachable" in decision.reason and memory == policy.Memory()


replicas = st.integers(min_value=1, max_value=10)
qps = st.floats(min_value=0, max_value=5000, allow_nan=False)
p99 = st.floats(min_value=0.1, max_value=5000, allow_nan=False)
held = st.floats(min_value=0, max_value=1000)


@given(replicas, st.integers(0, 10), st.none() | qps, st.none() | p99, held)
@settings(max_examples=400, deadline=None)
def test_replicas_stay_within_bounds(
    n: int, ready: int, q: float | None, lat: float | None, low_for: float
) -> None:
    obs = policy.Observation(1000.0, n, min(ready, n), q, lat)
    decision, _ = policy.decide(SPEC, obs, policy.Memory(low_since=1000.0 - low_for))
    assert SPEC.min_replicas <= decision.replicas <= SPEC.max_replicas


@given(replicas, qps, st.floats(min_value=200.01, max_value=5000), held)
@settings(max_examples=300, deadline=None)
def test_no_scale_in_while_p99_above_target(n: int, q: float, lat: float, low_for: float) -> None:
    decision, _ = policy.decide(SPEC, _obs(n, q, lat), policy.Memory(low_since=1000.0 - low_for))
    assert decision.action != "scale_in" and decision.replicas >= n


@given(replicas, st.none() | qps, st.none() | p99, held)
@settings(max_examples=300, deadline=None)
def test_missing_data_only_maintains(
    n: int, q: float | None, lat: float | None, low_for: float
) -> None:
    obs = policy.Observation(1000.0, n, n, q, lat, missing="stale")
    decision, _ = policy.decide(SPEC, obs, policy.Memory(low_since=1000.0 - low_for))
    assert (decision.action, decision.replicas) == ("maintain", n)


@given(replicas, qps, qps, p99, held)
@settings(max_examples=400, deadline=None)
def test_monotone_in_load(n: int, q1: float, q2: float, lat: float, low_for: float) -> None:
    low, high = sorted((q1, q2))
    memory = policy.Memory(low_since=1000.0 - low_for)
    d_low, _ = policy.decide(SPEC, _obs(n, low, lat), memory)
    d_high, _ = policy.decide(SPEC, _obs(n, high, lat), memory)
    assert d_high.replicas >= d_low.replicas


def test_geo_decide_without_metrics_says_missing() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "geo_operator.cli",
            "decide",
            "-f",
            str(FIXTURES / "digits.yaml"),
            "--replicas",
            "3",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    result = json.loads(out.stdout)
    assert result["action"] == "maintain" and result["replicas"] == 3
    assert "not given" in result["reason"]
    loaded = subprocess.run(
        [
            sys.executable,
            "-m",
            "geo_operator.cli",
            "decide",
            "-f",
            str(FIXTURES / "digits.yaml"),
            "--replicas",
            "2",
            "--qps",
            "400",
            "--p99-ms",
            "120",
            "--capacity",
            "100",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    # No targetQpsPerReplica in the file: the target is the capacity x 0.7 = 70 req/s.
    decided = json.loads(loaded.stdout)
    assert decided["action"] == "scale_out"
    assert decided["target"]["source"] == "measured"
    assert decided["target"]["effectiveTargetQpsPerReplica"] == 70


def test_queued_backlog_sizes_the_step_when_known() -> None:
    # 2 replicas serve 200 QPS, p99 breached. Queue unknown: the latency factor (x2) -> 4.
    unknown, _ = policy.decide(SPEC, policy.Observation(1000.0, 2, 2, 200, 600))
    assert (unknown.action, unknown.replicas) == ("scale_out", 4)
    # 24000 queued = 400 QPS more to serve within DRAIN_SECONDS: demand 600 -> 6 replicas.
    known, _ = policy.decide(SPEC, policy.Observation(1000.0, 2, 2, 200, 600, queued=24000))
    assert policy.DRAIN_SECONDS == 60
    assert (known.action, known.replicas) == ("scale_out", 6)
    assert "24000 queued" in known.reason


def test_queue_growth_since_the_last_tick_counts_as_arrivals() -> None:
    memory = policy.Memory(queued=(995.0, 0.0))
    # The queue grew by 1000 in 5 s: 200 QPS arrive beyond the 200 served, plus the backlog.
    decision, after = policy.decide(
        SPEC, policy.Observation(1000.0, 2, 2, 200, 600, queued=1000), memory
    )
    assert decision.replicas == math.ceil((200 + 200 + 1000 / 60) / 100 * 0.9)
    assert after.queued == (1000.0, 1000)


def test_a_rising_trend_scales_out_before_the_threshold() -> None:
    # 130 QPS/replica on 2 (threshold 150) but rising 4 QPS/s: in 30 s each carries ~190.
    memory = policy.Memory()
    for t, q in ((960.0, 103.0), (970.0, 137.0), (980.0, 183.0), (990.0, 218.0)):
        _, memory = policy.decide(SPEC, policy.Observation(t, 2, 2, q, 20), memory)
    decision, _ = policy.decide(SPEC, policy.Observation(1000.0, 2, 2, 260, 20), memory)
    assert decision.action == "scale_out" and decision.replicas == 4
    assert "trend" in decision.reason
    # The same load, flat, is within band.
    flat = policy.Memory(samples=tuple((t, 260.0) for t in (960.0, 970.0, 980.0, 990.0)))
    decision, _ = policy.decide(SPEC, policy.Observation(1000.0, 2, 2, 260, 20), flat)
    assert decision.action == "maintain"


def test_noise_on_a_flat_load_is_not_a_trend() -> None:
    # Zero-mean noise, 10-second windows read every 2 s: the least-squares slope is
    # positive about half the time; it must not stand out of the noise.
    rng = random.Random(7)
    rising = 0
    for _ in range(200):
        samples, level = [], 0.0
        for tick in range(60):
            if tick % 5 == 0:
                level = 200.0 * rng.gammavariate(6.25, 0.16)  # CV 0.4
            samples.append((float(tick * 2), level))
        rising += policy._slope(tuple(samples)) > 0
    assert rising <= 200 * 0.05
    # A real ramp in the same noise stands out.
    ramp = tuple(
        (float(t * 2), (100.0 + 3.0 * t * 2) * (1 + 0.1 * rng.uniform(-1, 1))) for t in range(60)
    )
    assert policy._slope(ramp) == pytest.approx(3.0, rel=0.2)


def test_ticks_within_band_are_evidence_not_a_restart_of_the_window() -> None:
    # 8 replicas; the load needs 4 at the target, with a 10-second burst needing 6 every
    # 120 s: within band on 8 (650 / 8 = 81 QPS/replica, above the scale-in floor 70,
    # below the scale-out threshold 120). A window that restarted at every burst would
    # never scale in on such load (issue 16's steady noisy trace).
    memory, decision = policy.Memory(), None
    for tick in range(200):
        t = float(tick * 2)
        level = 650.0 if tick % 60 < 5 else 330.0 + 10 * (tick % 3)
        decision, memory = policy.decide(SPEC, _obs(8, level, 20, time=t), memory)
        if decision.action != "maintain":
            break
    assert decision is not None and decision.action == "scale_in" and t == 300.0
    # To the window's highest recommendation: what the bursts need, not the halving.
    assert decision.replicas == 6 and "highest recommendation 6" in decision.reason


def test_a_breach_while_the_backlog_drains_holds_and_says_why() -> None:
    # p99 still high from old queues, but the queue shrinks and 4 replicas cover 300 QPS.
    memory = policy.Memory(queued=(998.0, 9000.0))
    decision, _ = policy.decide(
        SPEC, policy.Observation(1000.0, 4, 4, 300, 900, queued=6000), memory
    )
    assert decision.action == "maintain"
    assert "draining" in decision.reason and "p99 above target" in decision.reason
    # The same breach with the queue growing scales out.
    growing = policy.Memory(queued=(998.0, 3000.0))
    decision, _ = policy.decide(
        SPEC, policy.Observation(1000.0, 4, 4, 300, 900, queued=6000), growing
    )
    assert decision.action == "scale_out"


def test_the_trend_looks_ahead_by_the_measured_startup() -> None:
    samples = tuple((float(t), 165.0 + 1.5 * t) for t in range(0, 50, 10))
    obs = dict(time=50.0, replicas=2, ready_replicas=2, qps=240.0, p99_ms=10.0)
    assumed, _ = policy.decide(SPEC, policy.Observation(**obs), policy.Memory(samples=samples))
    slow = policy.Observation(**obs, startup_seconds=90.0)
    measured, _ = policy.decide(SPEC, slow, policy.Memory(samples=samples))
    assert assumed.action == "maintain"  # 240 + 30 s x 1.5 = 285 < 2 x 150
    assert measured.action == "scale_out" and "in 90s, the pods' measured start-up" in (
        measured.reason
    )
    # A start-up that is not a number is not measured.
    unmeasured = policy.observation(1.0, 1, 1, 10.0, 5.0, startup_seconds=math.nan)
    assert unmeasured.startup_seconds is None


def _after_bursts(
    seen: tuple[tuple[float, int], ...], now: float, cost: float = 20, breached: bool = True
) -> policy.Decision:
    """8 replicas, low load (needs 1) for the whole window, after bursts ``seen``."""
    bursts = tuple((start, height, breached) for start, height in seen)
    spec = SPEC.model_copy(update={"violation_cost_replica_seconds": cost})
    memory = policy.Memory(low_since=now - 300, recommendations=((now - 10, 1),), bursts=bursts)
    decision, _ = policy.decide(spec, _obs(8, 40, 20, time=now), memory)
    return decision


def test_recurring_bursts_keep_their_replicas_warm_when_cheaper_than_the_misses() -> None:
    # Bursts to 6 every 400 s; 300 s after the last, the next is due in ~100 s: keeping
    # 2 more than the halving (4) costs ~200 replica-s, under 30 s over SLO x 20.
    decision = _after_bursts(((0.0, 6), (400.0, 6)), 700.0)
    assert (decision.action, decision.replicas) == ("scale_in", 6)
    assert "keeping 6 warm: 2 bursts over SLO seen about every 400s" in decision.reason
    # Worth nothing: scale in as the window says.
    assert _after_bursts(((0.0, 6), (400.0, 6)), 700.0, cost=0).replicas == 4
    # Bursts the headroom served (p99 stayed within the objective) cost nothing cold.
    assert _after_bursts(((0.0, 6), (400.0, 6)), 700.0, breached=False).replicas == 4
    # One burst has no rhythm; a burst overdue by far more than its spacing broke it.
    assert _after_bursts(((400.0, 6),), 700.0).replicas == 4
    assert _after_bursts(((0.0, 6), (100.0, 6)), 700.0).replicas == 4
    # Far-apart bursts: keeping 4 more for ~1700 s costs more than the misses prevented.
    assert _after_bursts(((0.0, 8), (2000.0, 8)), 2300.0).replicas == 4


def test_a_burst_is_remembered_across_its_steps_and_across_blind_ticks() -> None:
    memory = policy.Memory()
    for t, qps, replicas in ((0.0, 500, 2), (40.0, 1200, 6), (500.0, 700, 2)):
        decision, memory = policy.decide(SPEC, _obs(replicas, qps, 20, time=t), memory)
        assert decision.action == "scale_out"
    assert memory.bursts == ((0.0, 10, False), (500.0, 7, False))  # 0 s and 40 s: one burst
    _, memory = policy.decide(SPEC, policy.Observation(510.0, 7, 7, None, None, "stale"), memory)
    assert memory.bursts == ((0.0, 10, False), (500.0, 7, False)) and memory.low_since is None
    # p99 over the objective within the burst's first 90 s marks it as one that cost misses.
    _, memory = policy.decide(SPEC, _obs(7, 300, 450, time=560.0), memory)
    assert memory.bursts[-1] == (500.0, 7, True)


bursts = st.lists(
    st.tuples(st.floats(min_value=0, max_value=1000), st.integers(1, 10), st.booleans()),
    max_size=5,
).map(lambda b: tuple(sorted(b)))


@given(replicas, qps, p99, held, bursts)
@settings(max_examples=300, deadline=None)
def test_keeping_warm_only_ever_holds_more_never_scales_out(
    n: int, q: float, lat: float, low_for: float, seen: tuple[tuple[float, int, bool], ...]
) -> None:
    plain, _ = policy.decide(SPEC, _obs(n, q, lat), policy.Memory(low_since=1000.0 - low_for))
    warm, _ = policy.decide(
        SPEC, _obs(n, q, lat), policy.Memory(low_since=1000.0 - low_for, bursts=seen)
    )
    assert plain.replicas <= warm.replicas <= max(n, plain.replicas)
    assert SPEC.min_replicas <= warm.replicas <= SPEC.max_replicas


def test_a_breach_with_empty_queues_and_enough_replicas_is_a_stale_p99() -> None:
    # After a burst is served, Triton's p99 summary stays high for a minute; the queue is
    # empty and 4 replicas cover 200 QPS: more replicas would not make anything faster.
    memory = policy.Memory(queued=(990.0, 2.0))
    obs = policy.Observation(1000.0, 4, 4, 200.0, 5000.0, None, 3.0)  # 15 ms of work
    decision, _ = policy.decide(SPEC, obs, memory)
    assert decision.action == "maintain" and "already served" in decision.reason
    # A real backlog (a second's worth of work) with the same p99 is not stale.
    backed_up = policy.Observation(1000.0, 4, 4, 200.0, 5000.0, None, 400.0)
    decision, _ = policy.decide(SPEC, backed_up, policy.Memory(queued=(990.0, 100.0)))
    assert decision.action == "scale_out"


def test_requests_refused_after_the_queue_timeout_are_demand() -> None:
    # 2 replicas serve 180 QPS at a fine p99 — but Triton refused 220 more per second
    # after their queue timeout: the demand is 400, 4 replicas at 100 each (x0.9 headroom).
    served = policy.Observation(1000.0, 2, 2, 180, 50)
    held, _ = policy.decide(SPEC, served)
    assert held.action == "maintain" and held.rejected_qps is None
    shed = dataclasses.replace(served, rejected_qps=220.0)
    decision, _ = policy.decide(SPEC, shed)
    assert (decision.action, decision.replicas) == ("scale_out", math.ceil(400 / 100 * 0.9))
    assert decision.rejected_qps == 220.0
    assert "220.0 req/s refused after the queue timeout" in decision.reason


def test_full_bounded_queues_are_saturation_the_demand_is_more_than_served() -> None:
    # Queue-full refusals are counted nowhere (Triton 2.51); queues at their bound say so.
    full = policy.Observation(1000.0, 2, 2, 190, 80, queued=120, queue_bound=128)
    decision, _ = policy.decide(SPEC, full)
    assert decision.action == "scale_out"
    assert decision.replicas == math.ceil(190 * policy.SATURATION_GAIN / 100 * 0.9 + 0.0001)
    assert "queues full (120 of 128" in decision.reason
    # The same queue unbounded, or the bound far off: no saturation.
    for obs in (
        dataclasses.replace(full, queue_bound=None),
        dataclasses.replace(full, queue_bound=1000),
    ):
        quiet, _ = policy.decide(SPEC, obs)
        assert "queues full" not in quiet.reason


def test_the_decision_record_shows_the_rejections() -> None:
    decision, _ = policy.decide(SPEC, policy.Observation(1000.0, 2, 2, 180, 50, rejected_qps=5))
    assert decision.rejected_qps == 5


def test_the_cache_hit_ratio_is_shown_with_the_figures() -> None:
    obs = policy.observation(1000.0, 2, 2, 500, 50, cache_hit_ratio=0.874)
    decision, _ = policy.decide(SPEC, obs)
    assert "response cache hits 87%" in decision.reason
