"""The decision policy: examples, and hypothesis properties of its safety."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FIXTURES, ROOT
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
    for t, q in ((980.0, 180.0), (990.0, 220.0)):
        _, memory = policy.decide(SPEC, policy.Observation(t, 2, 2, q, 20), memory)
    decision, _ = policy.decide(SPEC, policy.Observation(1000.0, 2, 2, 260, 20), memory)
    assert decision.action == "scale_out" and decision.replicas == 4
    assert "trend" in decision.reason
    # The same load, flat, is within band.
    flat = policy.Memory(samples=((980.0, 260.0), (990.0, 260.0)))
    decision, _ = policy.decide(SPEC, policy.Observation(1000.0, 2, 2, 260, 20), flat)
    assert decision.action == "maintain"


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
