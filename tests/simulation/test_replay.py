"""Replays: the engine's accounting, the anchors' documented rules, GEO's one code path."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import yaml
from tests.support.paths import ROOT

from geo_operator.api import models
from geo_operator.scaling import policy
from geo_operator.simulation import autoscalers, engine, replay, replica
from geo_operator.simulation import trace as traces

EXAMPLE = ROOT / "manifests" / "examples" / "digits-simulate.yaml"
SPEC = models.parse_spec(yaml.safe_load(EXAMPLE.read_text())["spec"])
TARGET = SPEC.autoscaling.target_qps_per_replica
PROFILE = replica.Profile.load()


class Fixed:
    name = "fixed"
    period = 10

    def __init__(self, n: int) -> None:
        self.n = n

    def desired(self, view: engine.View) -> int:
        return self.n


def _run(
    trace: traces.Trace, scaler: engine.Autoscaler, replicas: int, **kw: float
) -> engine.Result:
    return engine.Simulation(
        trace,
        replay.batching(SPEC, PROFILE),
        scaler,
        target_p99_ms=50,
        min_replicas=1,
        max_replicas=20,
        initial_replicas=replicas,
        **kw,  # type: ignore[arg-type]
    ).run()


def test_fixed_replicas_under_capacity_meet_the_slo() -> None:
    flat = traces.Trace("flat", np.full(120, 2 * TARGET))
    result = _run(flat, Fixed(3), 3)
    assert result.violation_seconds == 0
    assert result.replica_seconds == pytest.approx(3 * 120)
    assert result.requests == pytest.approx(2 * TARGET * 120, rel=0.01)
    assert result.actions == 0 and result.worst_p99_ms < 50


def test_overload_violates_and_the_queue_grows() -> None:
    capacity = PROFILE.capacity(8)
    flat = traces.Trace("flat", np.full(60, 1.3 * capacity))
    result = _run(flat, Fixed(1), 1)
    assert result.violation_seconds >= 50
    assert result.worst_p99_ms > 1000  # 30 % over capacity for a minute queues for seconds


def test_same_seed_same_result_other_seed_other_arrivals() -> None:
    trace = traces.scale_to_peak(traces.synthetic("spike", duration=300), 4, TARGET)
    runs = [replay.replay(SPEC, trace, "geo", replay.Options(seed=s))[0] for s in (1, 1, 2)]
    assert runs[0].summary() == runs[1].summary()
    assert runs[0].requests != runs[2].requests


def test_scale_in_drains_and_pays_until_removal() -> None:
    trace = traces.Trace("t", np.full(100, 0.5 * TARGET))

    class Shrink(Fixed):
        def desired(self, view: engine.View) -> int:
            return 1 if view.time >= 50 else 4

    result = _run(trace, Shrink(0), 4)
    assert result.replica_seconds == pytest.approx(4 * 50 + 1 * 50)
    assert result.actions == 1 and result.direction_changes == 0
    assert result.requests == pytest.approx(0.5 * TARGET * 100, rel=0.01)


def test_new_pods_serve_only_after_start_up() -> None:
    trace = traces.Trace("t", np.full(80, 0.5 * TARGET))

    class Grow(Fixed):
        period = 1

        def desired(self, view: engine.View) -> int:
            return 3 if view.time >= 10 else 1

    result = _run(trace, Grow(0), 1, startup_seconds=30.0)
    assert result.replicas[15] == 3 and result.ready[15] == 1
    assert result.ready[41] == 3
    assert result.replica_seconds == pytest.approx(80 + 2 * 70)


# --- the anchors, on a scripted view ---------------------------------------------


@dataclasses.dataclass
class FakeView:
    time: int
    replicas: int
    ready: int
    qps: float
    p99: float = 1.0
    series: tuple[float, ...] = ()

    def total_qps(self, window: int) -> float:
        return self.qps

    def worst_p99_ms(self, window: int) -> float:
        return self.p99

    def qps_series(self, window: int) -> np.ndarray:
        return np.array(self.series[-window:] or (self.qps,))

    def queued(self) -> float:
        return 0.0


def test_hpa_scale_up_is_limited_to_double_or_four_pods_per_15s() -> None:
    hpa = autoscalers.Hpa(SPEC.autoscaling)
    assert hpa.desired(FakeView(15, 1, 1, 19 * TARGET)) == 5  # max(1 x 2, 1 + 4)
    assert hpa.desired(FakeView(30, 5, 5, 19 * TARGET)) == 10  # max(5 x 2, 5 + 4)
    assert hpa.desired(FakeView(45, 10, 10, 19 * TARGET)) == 19


def test_hpa_tolerance_and_300s_scale_down_stabilization() -> None:
    hpa = autoscalers.Hpa(SPEC.autoscaling)
    assert hpa.desired(FakeView(15, 4, 4, 4 * TARGET * 1.08)) == 4  # within 10 %
    assert hpa.desired(FakeView(30, 4, 4, 4 * TARGET)) == 4
    low = [hpa.desired(FakeView(t, 4, 4, TARGET)) for t in range(45, 330, 15)]
    assert all(n == 4 for n in low)  # the 4-replica recommendation at t=30 still in the window
    assert hpa.desired(FakeView(345, 4, 4, TARGET)) == 1


def test_hpa_follows_p99_as_a_second_metric() -> None:
    hpa = autoscalers.Hpa(SPEC.autoscaling)
    # QPS says 2; p99 at 3x the 50 ms target says ceil(3 x 2) = 6, limited to 2 + 4.
    assert hpa.desired(FakeView(15, 2, 2, 2 * TARGET, p99=150)) == 6


def test_keda_reads_the_metric_once_per_30s_poll() -> None:
    keda = autoscalers.Keda(SPEC.autoscaling)
    assert keda.desired(FakeView(15, 2, 2, 2 * TARGET)) == 2
    # Load tripled at t=30: the poll at t=15 is still cached until t=45.
    assert keda.desired(FakeView(30, 2, 2, 6 * TARGET)) == 2
    assert keda.desired(FakeView(45, 2, 2, 6 * TARGET)) == 6


def test_kpa_panics_on_a_burst_and_never_scales_down_while_panicking() -> None:
    kpa = autoscalers.Kpa(SPEC.autoscaling)
    per_pod = TARGET * 0.7
    calm = (2 * per_pod,) * 54
    burst = calm + (8 * per_pod,) * 6
    # Stable window mean is 2.6 pods' worth, panic window 8: 8 / 2 ready >= 2 -> panic, 8 pods.
    assert kpa.desired(FakeView(100, 2, 2, 0, series=burst)) == 8
    assert kpa.panic_time == 100
    # Load gone, but panic holds the maximum until a stable window without panic passed.
    quiet = (0.5 * per_pod,) * 60
    assert kpa.desired(FakeView(140, 8, 8, 0, series=quiet)) == 8
    assert kpa.desired(FakeView(162, 8, 8, 0, series=quiet)) == 4  # panic over; max-scale-down 2


def test_oracle_orders_start_up_ahead() -> None:
    rate = np.concatenate([np.full(100, TARGET), np.full(100, 3 * TARGET)])
    oracle = autoscalers.Oracle(SPEC.autoscaling, traces.Trace("s", rate), 30)
    assert oracle.plan[69] == 1 and oracle.plan[70] == 3 and oracle.plan[199] == 3


def test_geo_in_the_simulator_is_the_operator_policy() -> None:
    trace = traces.scale_to_peak(traces.synthetic("step", duration=900), 6, TARGET)
    result, geo = replay.replay(SPEC, trace, "geo")
    assert isinstance(geo, autoscalers.Geo) and geo.decisions
    # Replaying its observations through policy.decide by hand gives the same decisions.
    time, first = geo.decisions[0]
    assert first.action == "scale_out" and time >= 300
    assert result.replicas.max() >= 6


def test_every_policy_scales_out_for_a_step_and_the_oracle_is_the_floor() -> None:
    trace = traces.scale_to_peak(traces.synthetic("step", duration=900), 6, TARGET)
    results = {p: replay.replay(SPEC, trace, p)[0] for p in autoscalers.POLICIES}
    for name, r in results.items():
        assert r.replicas.max() >= 6, name
    oracle = results.pop("oracle")
    assert oracle.violation_seconds == 0
    assert all(r.violation_seconds > 0 for r in results.values())  # 30 s start-up hurts all


def test_geo_scales_ahead_of_a_ramp_without_violations() -> None:
    trace = traces.scale_to_peak(traces.synthetic("ramp", duration=1800), 8, TARGET)
    geo = replay.replay(SPEC, trace, "geo")[0]
    assert geo.violation_seconds == 0
    assert geo.direction_changes <= 2


# --- the command ------------------------------------------------------------------


def geo_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "geo_operator.cli", "simulate", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        env={"PYTHONPATH": str(ROOT / "operator"), "PATH": "/usr/bin:/bin"},
    )


def test_simulate_prints_every_policy_as_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = geo_cli(
        "-f", str(EXAMPLE), "--synthetic", "spike", "--duration", "300", "--policy", "all",
        "--json", "--plot", str(tmp_path / "p.png"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["policy"] for r in rows] == list(autoscalers.POLICIES)
    assert all(r["durationSeconds"] == 300 and r["requests"] > 0 for r in rows)
    assert set(rows[0]) >= {"sloViolationSeconds", "replicaSeconds", "scalingActions",
                            "directionChanges", "worstP99Ms"}  # fmt: skip
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_simulate_replays_a_csv_trace(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0, 400, 2000))
    csv = tmp_path / "trace.csv"
    csv.write_text(
        "TIMESTAMP,ContextTokens\n"
        + "".join(f"2024-01-01 00:{int(t // 60):02d}:{t % 60:09.6f},1\n" for t in times)
    )
    out = geo_cli("-f", str(EXAMPLE), "--trace", str(csv), "--policy", "geo,hpa")
    assert out.returncode == 0, out.stderr
    assert "trace" in out.stdout and out.stdout.count("\n") == 4  # header, 2 rows, correction
    assert "geo: correction" in out.stdout
    assert "peak" in out.stderr and "replicas at the target" in out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--synthetic", "step", "--policy", "vpa"), "unknown policy vpa"),
        (("--trace", "/nonexistent.csv"), "cannot read trace"),
        ((), "exactly one of --trace"),
        (
            ("--synthetic", "step", "--startup-seconds", "-5"),
            "--startup-seconds must be at least 0",
        ),
        (("--synthetic", "step", "--metrics-lag-seconds", "-1"), "must be at least 0"),
        (("--synthetic", "step", "--peak-replicas", "-2"), "--peak-replicas must be"),
        (("--synthetic", "step", "--duration", "5"), "--duration must be at least 60"),
        (("--synthetic", "step", "--profile", "/nonexistent.json"), "cannot read replica profile"),
    ],
)
def test_simulate_bad_input_is_a_clear_error(args: tuple[str, ...], message: str) -> None:
    out = geo_cli("-f", str(EXAMPLE), *args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_decisions_are_explained() -> None:
    decision, _ = policy.decide(
        SPEC.autoscaling, policy.Observation(10.0, 2, 2, 2 * TARGET, 400.0, None, queued=5e5)
    )
    assert decision.action == "scale_out"
    assert "queued" in decision.reason and not math.isnan(decision.replicas)


def test_instant_is_the_oracle_a_start_up_late() -> None:
    rate = np.concatenate([np.full(100, TARGET), np.full(100, 3 * TARGET)])
    instant = autoscalers.make("instant", SPEC, None, traces.Trace("s", rate), 30)
    assert isinstance(instant, autoscalers.Oracle) and instant.name == "instant"
    assert instant.plan[99] == 1 and instant.plan[100] == 3


# --- no targetQpsPerReplica: the derived target and its correction ------------------

DERIVED = ROOT / "manifests" / "examples" / "digits-simulate-derived.yaml"
DERIVED_SPEC = models.parse_spec(yaml.safe_load(DERIVED.read_text())["spec"])


def test_the_derived_example_declares_no_target_and_one_objective() -> None:
    assert DERIVED_SPEC.autoscaling.target_qps_per_replica is None
    assert DERIVED_SPEC.objectives.p99_latency_ms == 50 and not DERIVED_SPEC.deprecations()
    assert DERIVED_SPEC.model_dump(exclude={"autoscaling", "objectives"}) == SPEC.model_dump(
        exclude={"autoscaling", "objectives"}
    )


def test_queue_noise_does_not_teach_a_correction() -> None:
    # Replicas as fast as the lab measured, a spike: the few requests a queue gauge catches
    # between batches, and a breach the new pods drained, must not read as saturation.
    target = replay.target(DERIVED_SPEC, PROFILE).value
    assert target is not None
    trace = traces.scale_to_peak(traces.synthetic("spike", duration=900), 8, target)
    _, geo = replay.replay(DERIVED_SPEC, trace, "geo")
    assert isinstance(geo, autoscalers.Geo)
    assert geo.correction.factor > 0.9


def test_slower_replicas_teach_a_lower_target_and_no_learning_keeps_the_lab_one() -> None:
    target = replay.target(DERIVED_SPEC, PROFILE).value
    assert target is not None
    trace = traces.scale_to_peak(traces.synthetic("diurnal", duration=900), 8, target)
    slow = replay.Options(capacity_error=0.7)
    _, learned = replay.replay(DERIVED_SPEC, trace, "geo", slow)
    _, fixed = replay.replay(DERIVED_SPEC, trace, "geo", dataclasses.replace(slow, learn=False))
    assert isinstance(learned, autoscalers.Geo) and isinstance(fixed, autoscalers.Geo)
    assert learned.correction.evidence > 0 and learned.correction.factor < 0.95
    assert learned.learned().source == "learned"
    assert learned.learned().value is not None and learned.learned().value < target
    assert fixed.correction.factor == 1.0 and fixed.learned().value == target


def test_the_simulated_replicas_are_slower_by_the_capacity_error() -> None:
    slow = replay.production(PROFILE, 0.5)
    assert slow.capacity(8) == pytest.approx(0.5 * PROFILE.capacity(8))
    assert slow.overhead_ms == PROFILE.overhead_ms
    assert replay.production(PROFILE, 1.0) is PROFILE


def test_simulate_accepts_a_spec_without_target_qps_per_replica() -> None:
    out = geo_cli("-f", str(DERIVED), "--synthetic", "step", "--duration", "120", "--json",
                  "--policy", "geo,hpa")  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    target = replay.target(DERIVED_SPEC, PROFILE)
    for row in rows:
        assert row["targetSource"] == "measured"
        assert row["effectiveTargetQpsPerReplica"] == target.value
        assert row["capacitySource"] == "the replica profile, tuned in simulation"
    assert rows[0]["correction"] == 1.0 and rows[0]["learnedTargetQpsPerReplica"] == target.value
    assert "correction" not in rows[1]
    assert f"effective target {target.value:g} req/s per replica (measured" in out.stderr


def test_simulate_takes_the_capacity_by_hand_or_from_a_status(tmp_path) -> None:  # type: ignore[no-untyped-def]
    base = ("-f", str(DERIVED), "--synthetic", "step", "--duration", "60", "--json")
    out = geo_cli(*base, "--capacity", "20000")
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)
    assert (row["effectiveTargetQpsPerReplica"], row["capacitySource"]) == (14000, "--capacity")
    status = {
        "selectedArtifact": {"name": "int8", "precision": "int8", "format": "python",
                             "uri": "http://x/m.onnx", "reason": "best score"},
        "tuning": [
            {"artifact": "fp32", "key": "a", "result": {"maxBatchSize": 8, "throughput": 9000,
             "p99Ms": 3, "measurements": 5, "gridSize": 28}},
            {"artifact": "int8", "key": "b", "result": {"maxBatchSize": 8, "throughput": 30000,
             "p99Ms": 3, "measurements": 5, "gridSize": 28}},
        ],
    }  # fmt: skip
    path = tmp_path / "geo.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": models.API_VERSION, "kind": models.KIND,
                                    "metadata": {"name": "d"}, "status": status}))  # fmt: skip
    out = geo_cli(*base, "--status", str(path))
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)
    assert row["measuredCapacity"] == 30000 and row["effectiveTargetQpsPerReplica"] == 21000
    assert "status.tuning[int8]" in row["capacitySource"]
    # The served artifact has no result: a clear error, not a guess.
    status["selectedArtifact"]["name"] = "fp16"  # type: ignore[index]
    path.write_text(json.dumps(status))
    out = geo_cli(*base, "--status", str(path))
    assert out.returncode == 2 and "no tuning result for the served artifact" in out.stderr
    assert "fp32, int8" in out.stderr and "Traceback" not in out.stderr


def test_simulate_reports_the_correction_it_learned() -> None:
    out = geo_cli("-f", str(DERIVED), "--synthetic", "step", "--duration", "120",
                  "--capacity-error", "0.7")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "geo: correction" in out.stdout and "req/s per replica" in out.stdout
    assert "production replicas at 0.7 of the lab's capacity" in out.stderr
    out = geo_cli("-f", str(DERIVED), "--synthetic", "step", "--capacity-error", "0")
    assert out.returncode == 2 and "--capacity-error must be at least 0.1" in out.stderr


# --- issue 16: steady noise, a fair start ----------------------------------------------


def test_a_fair_start_has_what_the_first_minute_needs() -> None:
    rate = np.concatenate([np.full(30, TARGET), np.full(30, 5 * TARGET), np.full(60, TARGET)])
    trace = traces.Trace("late", rate)
    assert replay.initial_replicas(SPEC.autoscaling, trace, "cold") == 1
    assert replay.initial_replicas(SPEC.autoscaling, trace, "fair") == 5
    with pytest.raises(ValueError, match="unknown start"):
        replay.initial_replicas(SPEC.autoscaling, trace, "warm")
    fair = replay.replay(SPEC, trace, "geo", replay.Options(start="fair"))[0]
    cold = replay.replay(SPEC, trace, "geo", replay.Options(start="cold"))[0]
    assert fair.violation_seconds == 0 < cold.violation_seconds
    assert fair.replicas[0] == 5 and cold.replicas[0] == 1


def test_scoring_after_a_warmup_counts_only_what_follows() -> None:
    rate = np.concatenate([np.full(60, 4 * TARGET), np.full(120, TARGET)])
    result = _run(traces.Trace("x", rate), Fixed(1), 1)
    assert result.violation_seconds >= 60
    violations, replica_seconds = result.scored(95)  # rounded up to 100 s
    assert replica_seconds == 80  # one replica from 100 s to 180 s
    assert violations == int(result.violated[10:].sum()) * engine.SLO_WINDOW
    assert result.scored(0) == (result.violation_seconds, pytest.approx(result.replica_seconds))


def test_geo_scales_in_from_its_peak_on_steady_noisy_load_without_violations() -> None:
    # The finding: on stationary load with noisy 10 s windows GEO held its peak
    # replica count for the whole hour. Start it there.
    trace = traces.scale_to_peak(traces.synthetic("steady-mid", duration=1200), 8, TARGET)
    geo = autoscalers.make("geo", SPEC, replay.measured(SPEC, PROFILE), trace, 30)
    assert isinstance(geo, autoscalers.Geo)
    result = _run(trace, geo, 8, startup_seconds=30, metrics_lag_seconds=5)
    first_in = next(t for t, d in geo.decisions if d.action == "scale_in")
    assert first_in <= 400  # one 300 s window, not never
    assert result.violation_seconds == 0
    assert result.replicas[-600:].mean() <= 7


def test_simulate_steady_shapes_fair_start_and_warmup_on_the_command_line() -> None:
    from geo_operator.cli import simulate

    assert simulate.SHAPES == traces.SHAPES
    out = geo_cli("-f", str(EXAMPLE), "--synthetic", "steady-high", "--duration", "120",
                  "--start", "cold", "--warmup-seconds", "60", "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)
    assert row["afterWarmupSeconds"] == 60
    assert row["replicaSecondsAfterWarmup"] <= row["replicaSeconds"]
    assert "cold start" in out.stderr
    bad = geo_cli("-f", str(EXAMPLE), "--synthetic", "steady-high", "--start", "hot")
    assert bad.returncode == 2 and "invalid choice: 'hot'" in bad.stderr


# --- the bounded queue: shed load is refused fast, and what Triton counts of it is seen


def _shedding(**policy: object) -> models.GeoDeploymentSpec:
    raw = SPEC.model_dump(by_alias=True, mode="json", exclude_none=True)
    raw["triton"]["dynamicBatching"]["defaultQueuePolicy"] = policy
    return models.parse_spec(raw)


def _overloaded(
    spec: models.GeoDeploymentSpec,
) -> tuple[engine.Result, list[tuple[float | None, float | None]]]:
    """One replica under 1.3x its capacity for a minute: the result, and each tick's
    (REJECTED rate, queued) as an autoscaler sees them."""
    flat = traces.Trace("flat", np.full(60, 1.3 * PROFILE.capacity(8)))
    views: list[tuple[float | None, float | None]] = []

    class Watch(Fixed):
        def desired(self, view: engine.View) -> int:
            views.append((view.rejected_qps(10), view.queued()))
            return self.n

    sim = engine.Simulation(
        flat, replay.batching(spec, PROFILE), Watch(1), target_p99_ms=50, min_replicas=1,
        max_replicas=1, initial_replicas=1,
    )  # fmt: skip
    return sim.run(), views


def test_overload_with_a_timeout_sheds_instead_of_queueing() -> None:
    capacity = PROFILE.capacity(8)
    spec = _shedding(defaultTimeoutMicroseconds=40_000)
    batching = replay.batching(spec, PROFILE)
    assert batching.timeout_s == 0.04 and batching.max_queue_size == 0
    result, views = _overloaded(spec)
    # About the 30 % over capacity is refused, fast; what is served stays near the timeout.
    assert 0.15 < result.timed_out / (1.3 * capacity * 60) < 0.35
    assert result.queue_full == 0
    assert result.worst_p99_ms < 100  # queueing unbounded: > 1000 (the test above)
    # Triton's REJECTED counter: the loop sees about the excess, ~0.3 x capacity per second.
    late = [r for r, _ in views[2:] if r is not None]
    assert late and 0.15 * capacity < np.median(late) < 0.45 * capacity
    # Refusals are failed requests: the windows violate the SLO all the same.
    assert result.violation_seconds >= 50


def test_queue_full_refusals_are_not_seen_but_the_full_queue_is() -> None:
    capacity = PROFILE.capacity(8)
    spec = _shedding(maxQueueSize=64)
    batching = replay.batching(spec, PROFILE)
    assert batching.max_queue_size == 64 and batching.timeout_s is None
    result, views = _overloaded(spec)
    assert result.queue_full > 0.15 * 1.3 * capacity * 60 and result.timed_out == 0
    assert all(r == 0 for r, _ in views[1:])  # Triton 2.51 counts them nowhere
    assert max(q or 0 for _, q in views) >= 0.8 * 64  # the pending gauge at the bound


def test_geo_scales_on_the_shed_demand_the_anchors_miss() -> None:
    trace = traces.scale_to_peak(traces.synthetic("step", duration=900), 8, TARGET)
    spec = _shedding(defaultTimeoutMicroseconds=40_000)
    geo = replay.replay(spec, trace, "geo")[0]
    hpa = replay.replay(spec, trace, "hpa")[0]
    # HPA scales on Triton's successes only: shed requests hide the step from it.
    assert geo.violation_seconds < hpa.violation_seconds
    assert geo.timed_out < hpa.timed_out


def test_simulate_compares_shedding_with_queueing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = tmp_path / "shed.yaml"
    body = yaml.safe_load(EXAMPLE.read_text())
    body["spec"]["triton"]["dynamicBatching"]["defaultQueuePolicy"] = {
        "defaultTimeoutMicroseconds": 40000
    }
    spec.write_text(yaml.safe_dump(body))
    out = geo_cli("-f", str(spec), "--synthetic", "step", "--duration", "300", "--queue", "both")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "refused" in lines[0]
    shed = next(line for line in lines if " geo/shed " in line)
    queue = next(line for line in lines if " geo/queue " in line)
    assert int(shed.split()[-1]) > 0 and int(queue.split()[-1]) == 0
