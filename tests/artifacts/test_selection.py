"""Artifact selection: hardware filter, accuracy floor, each policy, and the reasons."""

from __future__ import annotations

from typing import Any

import pytest

from geo_operator.api import models
from geo_operator.artifacts import cost, selection

CPU = selection.Hardware(gpu=False)
HOPPER = selection.Hardware(gpu=True, gpu_arch="hopper")


def _with(spec: models.GeoDeploymentSpec, **selection_over: Any) -> models.ModelSpec:
    raw = spec.model.model_dump(by_alias=True, exclude_none=True, mode="json")
    raw["selection"].update(selection_over)
    return models.ModelSpec.model_validate(raw)


def test_cpu_drops_gpu_only_artifacts_and_says_so(spec: models.GeoDeploymentSpec) -> None:
    choice = selection.select(spec.model, CPU)
    assert choice.artifact is not None and choice.artifact.name == "int8"
    assert dict(choice.rejected) == {
        "fp8": "needs GPU hopper|ada; pods are CPU only (no nvidia.com/gpu limit)"
    }
    assert "best score of 3 qualifying" in choice.reason
    assert "dropped fp8" in choice.reason


def test_gpu_arch_admits_fp8(spec: models.GeoDeploymentSpec) -> None:
    choice = selection.select(spec.model, HOPPER)
    assert not choice.rejected
    assert choice.artifact is not None and choice.artifact.name == "fp8"
    # fp8 declares no latency, so every artifact is compared on the nominal basis.
    assert "latency nominal" in choice.reason


def test_unknown_gpu_arch_is_named(spec: models.GeoDeploymentSpec) -> None:
    choice = selection.select(spec.model, selection.Hardware(gpu=True))
    assert "nvidia.com/gpu.family" in dict(choice.rejected)["fp8"]


def test_accuracy_floor(spec: models.GeoDeploymentSpec) -> None:
    model = _with(spec, minAccuracyRatio=0.999)
    choice = selection.select(model, HOPPER)
    assert choice.artifact is not None and choice.artifact.name == "int8"
    assert dict(choice.rejected)["fp8"].startswith("accuracy 0.9700 < floor 0.9768")


def test_nothing_qualifies(spec: models.GeoDeploymentSpec) -> None:
    raw = spec.model.model_dump(by_alias=True, exclude_none=True, mode="json")
    raw["artifacts"] = [a for a in raw["artifacts"] if a["name"] == "fp8"]
    choice = selection.select(models.ModelSpec.model_validate(raw), CPU)
    assert choice.artifact is None
    assert choice.reason.startswith("no artifact qualifies on CPU only")
    assert "fp8: needs GPU hopper|ada" in choice.reason


def test_smallest_and_fastest(spec: models.GeoDeploymentSpec) -> None:
    smallest = selection.select(_with(spec, policy="smallest"), CPU)
    assert smallest.artifact is not None and smallest.artifact.name == "int8"
    assert "173000 bytes" in smallest.reason
    fastest = selection.select(_with(spec, policy="fastest"), CPU)
    assert fastest.artifact is not None and fastest.artifact.name == "int8"
    assert "declared latency 0.15 ms" in fastest.reason


def test_measured_latency_wins_over_declared(spec: models.GeoDeploymentSpec) -> None:
    measured = {
        "fp32": selection.Measurement(latency_ms=0.1),
        "fp16": selection.Measurement(latency_ms=5.0),
        "int8": selection.Measurement(latency_ms=0.9),
    }
    fastest = selection.select(_with(spec, policy="fastest"), CPU, measured)
    assert fastest.artifact is not None and fastest.artifact.name == "fp32"
    assert "measured latency 0.1 ms" in fastest.reason


def test_pinned_bypasses_floor_but_not_hardware(spec: models.GeoDeploymentSpec) -> None:
    pinned = selection.select(
        _with(spec, policy="pinned", pinned="fp16", minAccuracyRatio=1.0), CPU
    )
    assert pinned.artifact is not None and pinned.artifact.name == "fp16"
    assert "pinned wins" in pinned.reason
    blocked = selection.select(_with(spec, policy="pinned", pinned="fp8"), CPU)
    assert blocked.artifact is None and "can't run here" in blocked.reason


def test_weights_steer_best_score(spec: models.GeoDeploymentSpec) -> None:
    accuracy_only = _with(spec, weights={"accuracy": 1.0, "latency": 0.0, "cost": 0.0})
    assert selection.select(accuracy_only, CPU).artifact.name == "int8"  # type: ignore[union-attr]
    speed_only = _with(spec, weights={"accuracy": 0.0, "latency": 1.0, "cost": 0.0})
    assert selection.select(speed_only, CPU).artifact.name == "int8"  # type: ignore[union-attr]
    # fp32 is the fastest once int8 is out of the running.
    raw = speed_only.model_dump(by_alias=True, exclude_none=True, mode="json")
    raw["artifacts"] = [a for a in raw["artifacts"] if a["name"] != "int8"]
    choice = selection.select(models.ModelSpec.model_validate(raw), CPU)
    assert choice.artifact is not None and choice.artifact.name == "fp32"


def test_hardware_from_spec() -> None:
    triton = models.TritonSpec(
        resources={"limits": {"nvidia.com/gpu": 1}},
        node_selector={"nvidia.com/gpu.family": "Ada"},
    )
    assert selection.hardware_of(triton) == selection.Hardware(gpu=True, gpu_arch="ada")
    assert selection.hardware_of(models.TritonSpec()) == CPU
    assert selection.hardware_of(models.TritonSpec(), "Hopper") == HOPPER


# ---------------------------------------------------------------- min-cost


def _min_cost_spec(artifacts: list[dict[str, Any]], **over: Any) -> models.GeoDeploymentSpec:
    """A min-cost GeoDeployment of ``artifacts`` (name, accuracy and the like); ``over``
    replaces top-level spec fields (objectives, autoscaling, triton...)."""
    raw: dict[str, Any] = {
        "model": {
            "name": "m",
            "inputs": [{"name": "x", "dataType": "TYPE_FP32", "dims": [4]}],
            "outputs": [{"name": "y", "dataType": "TYPE_FP32", "dims": [2]}],
            "artifacts": [
                {"precision": "fp32", "format": "onnx", "uri": f"file://{a['name']}", **a}
                for a in artifacts
            ],
            "selection": {"policy": "min-cost"},
        },
        **over,
    }
    return models.parse_spec(raw)


# fast: 2000 req/s measured at b32, 1.5 × the cost; slow: 500 req/s at b8, cost 1, more accurate.
# At targetUtilization 0.7 a replica carries 1400 and 350 req/s; the nominal replica
# (1 CPU, 1 GiB) costs 0.04 + 0.005 = $0.045/h.
PAIR = [
    {"name": "fast", "accuracy": 0.97, "relativeCost": 1.5},
    {"name": "slow", "accuracy": 0.98, "relativeCost": 1.0},
]
PAIR_MEASURED = {
    "fast": selection.Measurement(latency_ms=40.0, throughput=2000.0, max_batch_size=32),
    "slow": selection.Measurement(latency_ms=60.0, throughput=500.0, max_batch_size=8),
}


def _min_cost(
    spec: models.GeoDeploymentSpec,
    measured: dict[str, selection.Measurement] | None = None,
    current_qps: float | None = None,
) -> selection.Choice:
    return selection.select(
        spec.model,
        CPU,
        PAIR_MEASURED if measured is None else measured,
        demand=cost.demand(spec, current_qps),
    )


def test_low_load_the_cheaper_artifact_wins() -> None:
    # No load known: minReplicas (1) each; slow 1 × 0.045 × 1 beats fast 1 × 0.045 × 1.5.
    start = _min_cost(_min_cost_spec(PAIR))
    assert start.artifact is not None and start.artifact.name == "slow"
    assert [(c.name, c.replicas, round(c.per_hour, 4)) for c in start.costs] == [
        ("slow", 1, 0.045),
        ("fast", 1, 0.0675),
    ]
    assert start.reason.startswith(
        "min-cost for minReplicas' worth (1; no load known yet) at $0.045/replica-h "
        "(1 CPU, 1 GiB nominal; triton.resources sets no cpu or memory); capacity = measured "
        "throughput × targetUtilization 0.7: slow acc 0.9800 cap 350 req/s b8 → 1 replica ×1 "
        "$0.045/h <- chosen; fast acc 0.9700 cap 1400 req/s b32 → 1 replica ×1.5 $0.0675/h;"
    )
    # 300 req/s still fits one slow replica (350).
    low = _min_cost(_min_cost_spec(PAIR, objectives={"expectedQps": 300}))
    assert low.artifact is not None and low.artifact.name == "slow"


def test_high_load_the_faster_artifact_wins() -> None:
    # 1000 req/s: slow needs ceil(1000/350) = 3 replicas ($0.135/h), fast 1 ($0.0675/h).
    choice = _min_cost(_min_cost_spec(PAIR, objectives={"expectedQps": 1000}))
    assert choice.artifact is not None and choice.artifact.name == "fast"
    assert dict(choice.scores) == pytest.approx({"fast": 0.0675, "slow": 0.135})
    assert "min-cost for 1000 req/s (objectives.expectedQps)" in choice.reason
    assert (
        "fast acc 0.9700 cap 1400 req/s b32 → 1 replica ×1.5 $0.0675/h <- chosen" in choice.reason
    )
    assert "slow acc 0.9800 cap 350 req/s b8 → 3 replicas ×1 $0.135/h" in choice.reason
    # The same load seen by the autoscaler, with no expectedQps, says where it came from.
    seen = _min_cost(_min_cost_spec(PAIR), current_qps=1000.0)
    assert seen.artifact is not None and seen.artifact.name == "fast"
    assert "1000 req/s (the load the autoscaler last saw)" in seen.reason


def test_replicas_exactly_at_capacity_are_not_rounded_up() -> None:
    # 700 req/s on slow is exactly 2 × 350: two replicas, not three.
    choice = _min_cost(_min_cost_spec(PAIR, objectives={"expectedQps": 700}))
    assert {c.name: c.replicas for c in choice.costs} == {"slow": 2, "fast": 1}


def test_prices_scale_every_cost_alike() -> None:
    # Every artifact runs on the same triton.resources, so the replica price multiplies every
    # cost: a GPU price changes the dollars, not the ranking.
    gpu = {"resources": {"limits": {"nvidia.com/gpu": 1}}}
    costly = _min_cost(_min_cost_spec(PAIR, triton=gpu, objectives={"expectedQps": 1000}))
    cheap = _min_cost(
        _min_cost_spec(
            PAIR, triton=gpu, objectives={"expectedQps": 1000, "prices": {"gpuHour": 0.5}}
        )
    )
    assert costly.artifact == cheap.artifact and cheap.artifact is not None
    assert cheap.artifact.name == "fast"
    # 0.04 + 0.005 + 2.5 = 2.545 a replica against 0.545.
    assert (
        "at $2.545/replica-h (1 CPU, 1 GiB nominal, 1 GPU; triton.resources sets no cpu or memory)"
        in costly.reason
    )
    assert dict(costly.scores)["slow"] == pytest.approx(3 * 2.545)
    assert dict(cheap.scores)["slow"] == pytest.approx(3 * 0.545)


def test_free_replicas_leave_accuracy_to_decide() -> None:
    free = {"expectedQps": 1000, "prices": {"cpuCoreHour": 0, "memoryGibHour": 0}}
    choice = _min_cost(_min_cost_spec(PAIR, objectives=free))
    assert choice.artifact is not None and choice.artifact.name == "slow"
    assert dict(choice.scores) == {"fast": 0.0, "slow": 0.0}


def test_over_max_replicas_loses_to_any_that_fits() -> None:
    # maxReplicas 2, 1000 req/s: slow needs 3 (over) at $0.135/h; fast at 5 × the cost needs
    # 1 replica, $0.225/h: dearer, but it carries the load.
    artifacts = [{**PAIR[0], "relativeCost": 5.0}, PAIR[1]]
    spec = _min_cost_spec(
        artifacts, objectives={"expectedQps": 1000}, autoscaling={"maxReplicas": 2}
    )
    choice = _min_cost(spec)
    assert choice.artifact is not None and choice.artifact.name == "fast"
    assert [(c.name, c.replicas, c.over) for c in choice.costs] == [
        ("fast", 1, False),
        ("slow", 3, True),
    ]
    assert "slow acc 0.9800 cap 350 req/s b8 → 3 replicas (over) ×1 $0.135/h" in choice.reason
    assert "; over: needs more than maxReplicas 2;" in choice.reason


def test_when_none_fits_the_most_capacity_wins() -> None:
    # 5000 req/s within 2 replicas: fast needs ceil(5000/1400) = 4, slow 15.
    spec = _min_cost_spec(PAIR, objectives={"expectedQps": 5000}, autoscaling={"maxReplicas": 2})
    choice = _min_cost(spec)
    assert choice.artifact is not None and choice.artifact.name == "fast"
    assert {c.name: (c.replicas, c.over) for c in choice.costs} == {
        "fast": (4, True),
        "slow": (15, True),
    }
    assert "no artifact carries the load within maxReplicas 2: the most capacity wins" in (
        choice.reason
    )
    # Both need 5 (1050 and 1190 req/s a replica): the one whose 2 replicas carry more of
    # the 5000 wins, though it costs twice as much and is less accurate.
    near = {
        "slow": selection.Measurement(latency_ms=50.0, throughput=1500.0, max_batch_size=8),
        "fast": selection.Measurement(latency_ms=50.0, throughput=1700.0, max_batch_size=8),
    }
    artifacts = [PAIR[1], {**PAIR[0], "relativeCost": 2.0}]
    tied = _min_cost(
        _min_cost_spec(artifacts, objectives={"expectedQps": 5000}, autoscaling={"maxReplicas": 2}),
        near,
    )
    assert [(c.name, c.replicas) for c in tied.costs] == [("fast", 5), ("slow", 5)]
    assert tied.artifact is not None and tied.artifact.name == "fast"


def test_autoscaling_off_sizes_at_spec_replicas() -> None:
    spec = _min_cost_spec(
        PAIR, replicas=2, autoscaling={"enabled": False}, objectives={"expectedQps": 1000}
    )
    choice = _min_cost(spec)
    # Two replicas either way: slow can't carry 1000 on 2 (needs 3), fast can.
    assert choice.artifact is not None and choice.artifact.name == "fast"
    assert "slow acc 0.9800 cap 350 req/s b8 → 3 replicas (over) ×1" in choice.reason
    assert "over: needs more than spec.replicas 2 (autoscaling off)" in choice.reason
    assert dict(choice.scores)["fast"] == pytest.approx(2 * 0.045 * 1.5)


def test_ties_go_to_accuracy_then_capacity_then_spec_order() -> None:
    same = selection.Measurement(latency_ms=10.0, throughput=1000.0, max_batch_size=16)
    artifacts = [
        {"name": "a", "accuracy": 0.95},
        {"name": "b", "accuracy": 0.97},
        {"name": "c", "accuracy": 0.97},
    ]
    measured = {"a": same, "b": same, "c": same}
    choice = _min_cost(_min_cost_spec(artifacts, objectives={"expectedQps": 900}), measured)
    assert choice.artifact is not None and choice.artifact.name == "b"
    assert [c.name for c in choice.costs] == ["b", "c", "a"]
    # relativeCost unset counts as 1, and the reason shows no factor.
    assert "b acc 0.9700 cap 700 req/s b16 → 2 replicas $0.09/h <- chosen" in choice.reason
    # c at 1200 req/s also needs 2 replicas (840 each): same cost and accuracy, more headroom.
    roomier = {**measured, "c": selection.Measurement(latency_ms=10.0, throughput=1200.0)}
    choice = _min_cost(_min_cost_spec(artifacts, objectives={"expectedQps": 900}), roomier)
    assert [(c.name, c.replicas) for c in choice.costs] == [("c", 2), ("b", 2), ("a", 2)]


def test_declared_target_qps_is_every_replica_capacity() -> None:
    spec = _min_cost_spec(
        PAIR, objectives={"expectedQps": 1000}, autoscaling={"targetQpsPerReplica": 250}
    )
    choice = _min_cost(spec)
    # 4 replicas each: slow 4 × 0.045 beats fast 4 × 0.045 × 1.5, throughput regardless.
    assert choice.artifact is not None and choice.artifact.name == "slow"
    assert "capacity = declared targetQpsPerReplica 250:" in choice.reason
    assert {c.name: c.replicas for c in choice.costs} == {"slow": 4, "fast": 4}


def test_without_every_throughput_min_cost_goes_by_declared_latency() -> None:
    # slow 2 ms → 500 req/s, fast 0.5 ms → 2000 req/s; × 0.7. One measurement alone doesn't
    # count: all on one basis.
    artifacts = [{**PAIR[0], "latencyMs": 0.5}, {**PAIR[1], "latencyMs": 2.0}]
    spec = _min_cost_spec(artifacts, objectives={"expectedQps": 1000})
    choice = _min_cost(spec, {"slow": PAIR_MEASURED["slow"]})
    assert choice.artifact is not None and choice.artifact.name == "fast"
    assert "capacity = 1000 / declared latencyMs (batch 1, no throughput measured)" in (
        choice.reason
    )
    # No batch is shown where none was measured on this basis.
    assert "fast acc 0.9700 cap 1400 req/s → 1 replica" in choice.reason
    nominal = _min_cost(_min_cost_spec(PAIR, objectives={"expectedQps": 1000}), {})
    assert "capacity = nominal 1000 req/s × fp32 speed per precision" in nominal.reason
    # Both fp32: 700 req/s each, 2 replicas each: the cheaper relative cost wins.
    assert nominal.artifact is not None and nominal.artifact.name == "slow"


def test_min_cost_without_a_demand_sizes_min_replicas_at_default_prices() -> None:
    spec = _min_cost_spec(PAIR)
    choice = selection.select(spec.model, CPU, PAIR_MEASURED)
    assert choice.artifact is not None and choice.artifact.name == "slow"
    assert choice.reason.startswith("min-cost for minReplicas' worth (1; no load known yet)")


def test_min_cost_keeps_the_accuracy_floor() -> None:
    # weak is the cheapest by far but under 0.95 × 0.98.
    artifacts = [*PAIR, {"name": "weak", "accuracy": 0.5, "relativeCost": 0.1}]
    measured = {**PAIR_MEASURED, "weak": PAIR_MEASURED["fast"]}
    choice = _min_cost(_min_cost_spec(artifacts), measured)
    assert choice.artifact is not None and choice.artifact.name == "slow"
    assert [c.name for c in choice.costs] == ["slow", "fast"]
    assert "dropped weak: accuracy 0.5000 declared < floor 0.9310" in choice.reason


def test_min_cost_reason_stays_short() -> None:
    names = [f"artifact-{i:02d}-" + "x" * 50 for i in range(16)]
    artifacts = [{"name": n, "accuracy": 0.97} for n in names]
    measured = {
        n: selection.Measurement(latency_ms=10.0, throughput=100.0 * (i + 1), max_batch_size=8)
        for i, n in enumerate(names)
    }
    # 5500 req/s: the last (1600 × 0.7 = 1120 req/s) needs 5 replicas, the next 6.
    choice = _min_cost(_min_cost_spec(artifacts, objectives={"expectedQps": 5500}), measured)
    assert len(choice.reason) <= selection.MAX_REASON_CHARS
    assert len(choice.costs) == 16
    assert choice.artifact is not None and choice.artifact.name == names[-1]
    assert f"{names[-1]} acc 0.9700 cap 1120 req/s b8 → 5 replicas $0.225/h <- chosen" in (
        choice.reason
    )
    shown = choice.reason.count(" acc 0.9700 ")
    assert 1 < shown < 16 and f"; {16 - shown} more;" in choice.reason
