"""The cost model (`artifacts.cost`): a replica's price from its resources, the load min-cost
sizes for, the replicas an artifact needs, the ranking and the switch margin."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from geo_operator.api import models
from geo_operator.artifacts import cost

PAIR = [{"name": "fast", "accuracy": 0.97}, {"name": "slow", "accuracy": 0.98}]


def _spec(**over: Any) -> models.GeoDeploymentSpec:
    """A min-cost GeoDeployment of two artifacts; ``over`` replaces top-level spec fields."""
    raw: dict[str, Any] = {
        "model": {
            "name": "m",
            "inputs": [{"name": "x", "dataType": "TYPE_FP32", "dims": [4]}],
            "outputs": [{"name": "y", "dataType": "TYPE_FP32", "dims": [2]}],
            "artifacts": [
                {"precision": "fp32", "format": "onnx", "uri": f"file://{a['name']}", **a}
                for a in PAIR
            ],
            "selection": {"policy": "min-cost"},
        },
        **over,
    }
    return models.parse_spec(raw)


def test_replica_price_from_requests_else_limits() -> None:
    resources: dict[str, dict[str, int | str]] = {
        "requests": {"cpu": "500m", "memory": "2Gi"},
        "limits": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": 1},
    }
    price, words = cost.replica_price(resources, models.Prices())
    # 0.5 × 0.04 + 2 × 0.005 + 1 × 2.5: the request, where set, is what is reserved.
    assert price == pytest.approx(2.53)
    assert words == "0.5 CPU, 2 GiB, 1 GPU"
    price, words = cost.replica_price({"limits": {"memory": "1G"}}, models.Prices())
    assert price == pytest.approx(0.04 + 1e9 / 2**30 * 0.005)
    assert words == "1 CPU nominal, 0.931 GiB"


def test_replica_price_nominal_and_bad_quantities_are_said() -> None:
    price, words = cost.replica_price({}, models.Prices())
    assert price == pytest.approx(0.045)
    assert words == "1 CPU, 1 GiB nominal; triton.resources sets no cpu or memory"
    price, words = cost.replica_price(
        {"requests": {"cpu": "lots", "memory": "1Gi"}}, models.Prices(cpu_core_hour=1.0)
    )
    assert price == pytest.approx(1.0 + 0.005)
    assert words.startswith("1 CPU nominal, 1 GiB; triton.resources.requests.cpu: 'lots' is not")


def test_demand_sources() -> None:
    assert cost.demand(_spec(), 800.0).expected_qps == 800.0
    assert cost.demand(_spec(), 800.0).source == "the load the autoscaler last saw"
    declared = cost.demand(_spec(objectives={"expectedQps": 50}), 800.0)
    assert (declared.expected_qps, declared.source) == (50.0, "objectives.expectedQps")
    start = cost.demand(_spec(autoscaling={"minReplicas": 2}))
    assert (start.expected_qps, start.min_replicas, start.max_replicas) == (None, 2, 10)
    assert (start.target_utilization, start.target_qps_per_replica, start.fixed) == (
        0.7,
        None,
        False,
    )
    off = cost.demand(_spec(replicas=3, autoscaling={"enabled": False}))
    assert (off.min_replicas, off.max_replicas, off.fixed) == (3, 3, True)


def _artifact(name: str, relative_cost: float | None = None) -> models.Artifact:
    return models.Artifact.model_validate(
        {
            "name": name,
            "precision": "fp32",
            "format": "onnx",
            "uri": f"file://{name}",
            "accuracy": 0.9,
            **({"relativeCost": relative_cost} if relative_cost is not None else {}),
        }
    )


def _demand(load: float | None, **over: Any) -> cost.Demand:
    base = cost.Demand(
        expected_qps=load,
        source="test",
        min_replicas=1,
        max_replicas=4,
        target_utilization=0.7,
        target_qps_per_replica=None,
        replica_price=0.5,
        price_basis="test",
    )
    return dataclasses.replace(base, **over)


def test_replicas_needed_within_the_bounds_or_over() -> None:
    demand = _demand(None)
    assert cost.replicas_needed(None, 100.0, demand) == (1, False)  # no load: minReplicas
    assert cost.replicas_needed(1200.0, 400.0, demand) == (3, False)  # not 4 (float noise)
    assert cost.replicas_needed(10.0, 400.0, _demand(None, min_replicas=2)) == (2, False)
    assert cost.replicas_needed(1601.0, 400.0, demand) == (5, True)  # what it needs, over
    assert cost.replicas_needed(1.0, 0.0, demand) == (5, True)  # no capacity: over


def test_priced_ranks_by_cost_then_accuracy_capacity_and_order() -> None:
    artifacts = [_artifact("a", 2.0), _artifact("b"), _artifact("c"), _artifact("d")]
    accuracy = {"a": 0.9, "b": 0.8, "c": 0.9, "d": 0.9}
    capacity = {"a": 1000.0, "b": 300.0, "c": 300.0, "d": 300.0}
    ranked = cost.priced(artifacts, accuracy, capacity, {"a": 32}, _demand(500.0))
    # 500 req/s: a 1 replica × 2 = $1/h; b, c, d 2 replicas = $1/h each: b is the least
    # accurate; among a, c, d a has the most capacity (headroom), then c before d in order.
    assert [(c.name, c.replicas, c.per_hour) for c in ranked] == [
        ("a", 1, 1.0),
        ("c", 2, 1.0),
        ("d", 2, 1.0),
        ("b", 2, 1.0),
    ]
    assert [c.max_batch_size for c in ranked] == [32, None, None, None]


def test_priced_puts_those_over_the_bound_last_most_capacity_first() -> None:
    artifacts = [_artifact("small"), _artifact("big", 10.0), _artifact("mid")]
    capacity = {"small": 100.0, "big": 1000.0, "mid": 300.0}
    accuracy = dict.fromkeys(capacity, 0.9)
    # 1300 req/s, at most 4 replicas: big carries it with 2 (× 10, the dearest), mid needs 5
    # and small 13.
    ranked = cost.priced(artifacts, accuracy, capacity, {}, _demand(1300.0))
    assert [(c.name, c.over) for c in ranked] == [("big", False), ("mid", True), ("small", True)]


def test_kept_is_the_served_one_within_the_switch_margin() -> None:
    artifacts = [_artifact("cheap"), _artifact("near", 1.1), _artifact("dear", 1.2)]
    capacity = dict.fromkeys(["cheap", "near", "dear"], 1000.0)
    accuracy = dict.fromkeys(capacity, 0.9)

    def kept(served: str | None) -> str | None:
        demand = _demand(500.0, served=served)
        chosen = cost.kept(cost.priced(artifacts, accuracy, capacity, {}, demand), demand)
        return None if chosen is None else chosen.name

    assert cost.SWITCH_MARGIN == 0.15
    assert kept("near") == "near"  # 10 % dearer: kept
    assert kept("dear") is None  # 20 %: replaced
    assert kept("cheap") is None  # already the cheapest: nothing to keep
    assert kept(None) is None and kept("retired") is None
