"""plan() sizes min-cost for the load the autoscaler last saw (status.lastDecision)."""

from __future__ import annotations

from typing import Any

from geo_operator.api import models
from geo_operator.artifacts import selection
from geo_operator.builders import plan, tuning


def _status(**fields: Any) -> models.GeoDeploymentStatus:
    return models.GeoDeploymentStatus.model_validate(fields)


def _decision(qps_per_replica: float | None, from_: int = 2, to: int = 2) -> dict[str, Any]:
    return {
        "action": "maintain" if from_ == to else "scale_out",
        "from": from_,
        "to": to,
        "qpsPerReplica": qps_per_replica,
        "reason": "steady",
        "time": "2026-01-01T00:00:00Z",
    }


def test_current_load_is_qps_per_replica_times_the_replicas_it_decided_from() -> None:
    assert plan.current_load(_status(lastDecision=_decision(150.0, 3, 3))) == 450.0
    # 2 replicas at 700 each scaled out to 4: the load was 1400, even once 4 are ready.
    scaled = _status(lastDecision=_decision(700.0, 2, 4), readyReplicas=4)
    assert plan.current_load(scaled) == 1400.0
    assert plan.current_load(_status(lastDecision=_decision(150.0, 0, 1))) is None
    assert plan.current_load(_status(lastDecision=_decision(None), readyReplicas=3)) is None
    assert plan.current_load(_status(readyReplicas=3)) is None


def _min_cost_spec(body: dict[str, Any]) -> models.GeoDeploymentSpec:
    raw = body["spec"]
    raw["model"]["selection"] = {"policy": "min-cost"}
    raw["triton"]["maxBatchSize"] = 0
    raw["autoscaling"] = {"enabled": True}
    # Relative costs fp32 1, int8 2, fp16 3; fp8 can't run on the CPU.
    for a in raw["model"]["artifacts"]:
        a["relativeCost"] = {"fp32": 1.0, "fp16": 3.0, "int8": 2.0}.get(a["name"], 1.0)
    return models.parse_spec(raw)


def _tuned(spec: models.GeoDeploymentSpec, throughput: dict[str, float]) -> list[dict[str, Any]]:
    keys = tuning.keys(spec, selection.hardware_of(spec.triton))
    return [
        {
            "artifact": name,
            "key": keys[name],
            "result": {
                "maxBatchSize": 16,
                "throughput": qps,
                "p99Ms": 50.0,
                "measurements": 5,
                "gridSize": 7,
            },
        }
        for name, qps in throughput.items()
    ]


def test_plan_sizes_min_cost_for_the_load_last_seen(body: dict[str, Any]) -> None:
    spec = _min_cost_spec(body)
    # fp32 700 × 0.7 = 490 req/s a replica, fp16 1000 × 0.7 = 700, int8 2000 × 0.7 = 1400.
    runs = _tuned(spec, {"fp32": 700.0, "fp16": 1000.0, "int8": 2000.0})

    def chosen(**status: Any) -> tuple[str | None, str]:
        decided = plan.plan(
            name="digits",
            namespace="ml",
            uid="u",
            spec=spec,
            status=_status(tuning=runs, **status),
            current_replicas=2,
        )
        artifact = decided.choice.artifact
        return (artifact.name if artifact else None), decided.choice.reason

    # Nothing seen: one replica each, fp32 the cheapest (relative cost 1).
    name, reason = chosen()
    assert name == "fp32" and "min-cost for minReplicas' worth (1; no load known yet)" in reason
    # 2 replicas × 600 = 1200 req/s: fp32 needs 3 ($0.135/h), int8 1 × 2 ($0.09/h).
    name, reason = chosen(lastDecision=_decision(600.0), readyReplicas=2)
    assert name == "int8"
    assert "min-cost for 1200 req/s (the load the autoscaler last saw)" in reason
    assert "fp32 acc 0.9759 cap 490 req/s b16 → 3 replicas ×1 $0.135/h" in reason


def test_min_cost_keeps_the_served_artifact_within_the_switch_margin() -> None:
    from geo_operator.api import models as m
    from geo_operator.artifacts import cost
    from geo_operator.artifacts import selection as sel

    spec = m.ModelSpec.model_validate(
        {
            "name": "m",
            "inputs": [{"name": "x", "dataType": "TYPE_FP32", "dims": [1]}],
            "outputs": [{"name": "y", "dataType": "TYPE_FP32", "dims": [1]}],
            "artifacts": [
                {
                    "name": "a",
                    "precision": "fp32",
                    "format": "onnx",
                    "uri": "http://h/a",
                    "accuracy": 0.9,
                },
                {
                    "name": "b",
                    "precision": "int8",
                    "format": "onnx",
                    "uri": "http://h/b",
                    "accuracy": 0.9,
                },
            ],
            "selection": {"policy": "min-cost"},
        }
    )
    measured = {
        "a": sel.Measurement(latency_ms=5, throughput=100.0, max_batch_size=8),
        "b": sel.Measurement(latency_ms=5, throughput=110.0, max_batch_size=8),
    }

    def choose(load: float, served: str | None, relative: float = 1.0) -> sel.Choice:
        demand = cost.Demand(
            expected_qps=load,
            source="test",
            min_replicas=1,
            max_replicas=50,
            target_utilization=1.0,
            target_qps_per_replica=None,
            replica_price=1.0,
            price_basis="test",
            served=served,
        )
        return sel.select(spec, sel.Hardware(gpu=False), measured, demand=demand)

    # 1000 req/s: a needs 10 replicas, b 10 (ceil(9.09)): a tie, b has more capacity.
    assert choose(1000, None).artifact.name == "b"  # type: ignore[union-attr]
    # 1050: a needs 11, b 10 -> b is 9 % cheaper: a, serving, stays (within 15 %).
    kept = choose(1050, "a")
    assert kept.artifact is not None and kept.artifact.name == "a"
    assert "keeps serving a: b would cost $10/h against $11/h, within the 15% switch" in (
        kept.reason
    )
    # 2000: a needs 20, b 19 -> 5 % apart: still a. 300: a 3, b 3 -> a stays.
    assert choose(2000, "a").artifact.name == "a"  # type: ignore[union-attr]
    # Nothing serving yet: the cheapest, no margin.
    assert choose(1050, None).artifact.name == "b"  # type: ignore[union-attr]
