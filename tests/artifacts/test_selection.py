"""Artifact selection: hardware filter, accuracy floor, each policy, and the reasons."""

from __future__ import annotations

from typing import Any

from geo_operator.api import models
from geo_operator.artifacts import selection

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
