"""The API models: parsing, defaults, and refusal of bad input with the field named."""

from __future__ import annotations

import copy
from typing import Any

import pydantic
import pytest

from geo_operator.api import models


def test_example_parses_with_defaults(spec: models.GeoDeploymentSpec) -> None:
    assert [a.name for a in spec.model.artifacts] == ["fp32", "fp16", "int8", "fp8"]
    assert spec.model.selection.weights == models.SelectionWeights(
        accuracy=0.6, latency=0.3, cost=0.1
    )
    assert spec.batch_tuning.candidates == [1, 2, 4, 8, 16, 32, 64]
    assert spec.autoscaling.enabled is False
    assert spec.autoscaling.metrics.source is models.MetricsSourceKind.DIRECT


def test_minimal_spec_gets_autoscaling_on() -> None:
    spec = models.parse_spec(
        {
            "model": {
                "name": "m",
                "inputs": [{"name": "x", "dataType": "TYPE_FP32", "dims": [4]}],
                "outputs": [{"name": "y", "dataType": "TYPE_FP32", "dims": [1]}],
                "artifacts": [
                    {
                        "name": "a",
                        "precision": "fp32",
                        "format": "onnx",
                        "uri": "https://h/m.onnx",
                        "accuracy": 0.9,
                    }
                ],
            }
        }
    )
    assert spec.autoscaling.enabled and spec.autoscaling.min_replicas == 1
    assert spec.triton.max_batch_size == 0  # tune


def _broken(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(body["spec"])
    node = spec
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return dict(spec)


_DELETE = object()

BAD_CASES = [
    ("model.artifacts", [], "model.artifacts"),
    ("model.artifacts", _DELETE, "model.artifacts"),
    ("replicas", -1, "replicas"),
    ("autoscaling.minReplicas", 5, "minReplicas must be <= autoscaling.maxReplicas"),
    ("autoscaling.minReplicas", 0, "autoscaling.minReplicas"),
    ("model.artifacts.0.precision", "fp64", "model.artifacts.0.precision"),
    ("model.artifacts.0.format", "savedmodel", "model.artifacts.0.format"),
    ("model.selection.pinned", "nope", "selection.pinned must be the name of one of"),
    ("model.artifacts.1.name", "fp32", "names must be unique"),
    ("model.artifacts.0.uri", "ftp://x/y", "model.artifacts.0.uri"),
    ("model.artifacts.0.accuracy", 1.5, "model.artifacts.0.accuracy"),
    ("triton.maxBatchSize", -4, "triton.maxBatchSize"),
    ("autoscaling.scaleInRatio", 2.0, "scaleInRatio must be < autoscaling.scaleOutRatio"),
    ("model.artifacts.0.bogus", 1, "model.artifacts.0.bogus"),
]


@pytest.mark.parametrize(("path", "value", "named"), BAD_CASES)
def test_bad_input_names_the_field(body: dict[str, Any], path: str, value: Any, named: str) -> None:
    bad = _broken(body, path, value)
    if path == "autoscaling.minReplicas" and value == 5:
        bad["autoscaling"]["maxReplicas"] = 2
    with pytest.raises(pydantic.ValidationError) as caught:
        models.parse_spec(bad)
    text = "; ".join(
        ".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in caught.value.errors()
    )
    assert named in text


def test_pinned_policy_needs_a_name(body: dict[str, Any]) -> None:
    bad = _broken(body, "model.selection.policy", "pinned")
    with pytest.raises(pydantic.ValidationError, match=r"selection\.pinned must name an artifact"):
        models.parse_spec(bad)


def test_prometheus_source_needs_url(body: dict[str, Any]) -> None:
    bad = _broken(body, "autoscaling.metrics", {"source": "prometheus"})
    with pytest.raises(pydantic.ValidationError, match="prometheusUrl is required"):
        models.parse_spec(bad)


def test_status_round_trip_uses_camel_case_and_from_to() -> None:
    status = models.GeoDeploymentStatus(
        ready_replicas=2,
        last_decision=models.Decision.model_validate(
            {"action": "scale_out", "from": 1, "to": 2, "reason": "r", "time": "t"}
        ),
    )
    dumped = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert dumped["readyReplicas"] == 2
    assert dumped["lastDecision"]["from"] == 1 and dumped["lastDecision"]["to"] == 2
    assert models.parse_status({**dumped, "unknownLegacyField": 1}) == status


def test_status_tuning_is_one_run_per_artifact_and_the_old_single_record_is_dropped() -> None:
    runs = [{"artifact": "int8", "key": "k1", "attempts": 1}, {"artifact": "fp32", "key": "k2"}]
    status = models.parse_status({"tuning": runs, "maxBatchSize": 8})
    assert [r.artifact for r in status.tuning or []] == ["int8", "fp32"]
    # Written before per-artifact tuning (one object): dropped, so it is measured again.
    old = models.parse_status({"tuning": {"key": "k1", "attempts": 1}, "maxBatchSize": 8})
    assert old.tuning is None and old.max_batch_size == 8


@pytest.mark.parametrize(
    "value", ["1", "500m", "2Gi", "0.5", ".5", "1e3", "1E-3", "+2", "10Ki", "3k", "1n", 0, 7]
)
def test_the_quantity_rule_takes_what_kubernetes_parses(value: int | str) -> None:
    from kubernetes.utils import parse_quantity

    assert parse_quantity(value) >= 0
    assert models.TritonSpec.model_validate({"resources": {"limits": {"cpu": value}}})


@pytest.mark.parametrize("value", ["lots", "-1", "1.5.5", "2gi", "1 Gi", "", "e3", -1])
def test_the_quantity_rule_refuses_what_no_pod_could_carry(value: int | str) -> None:
    with pytest.raises(pydantic.ValidationError, match="non-negative quantities"):
        models.TritonSpec.model_validate({"resources": {"limits": {"cpu": value}}})


def test_a_response_cache_as_large_as_the_memory_limit_is_refused_with_both_figures(
    body: dict[str, Any],
) -> None:
    """Before: accepted, and Triton was OOM-killed at start (a 2 GiB cache in a 1Gi pod)."""
    triton = body["spec"]["triton"]
    triton["responseCache"] = {"enabled": True, "sizeBytes": 2 * 2**30}
    triton["resources"] = {"limits": {"memory": "1Gi"}}
    with pytest.raises(pydantic.ValidationError) as error:
        models.GeoDeploymentSpec.model_validate(body["spec"])
    words = str(error.value)
    assert "triton.responseCache.sizeBytes 2147483648 (2 GiB)" in words
    assert "triton.resources.limits.memory 1Gi (1 GiB)" in words
    triton["resources"] = {"limits": {"memory": "4Gi"}}
    assert models.GeoDeploymentSpec.model_validate(body["spec"]).triton.response_cache.enabled
    triton["responseCache"]["enabled"] = False  # no cache: the size is not reserved
    triton["resources"] = {"limits": {"memory": "1Gi"}}
    models.GeoDeploymentSpec.model_validate(body["spec"])
