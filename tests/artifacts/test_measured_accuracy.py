"""Accuracy measured, not declared: the floor on measured figures, contradictions named."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
import yaml
from tests.support.paths import FAMILY_MANIFEST

from geo_operator.api import models
from geo_operator.artifacts import selection

CPU = selection.Hardware(gpu=False)


def _family(**evaluation: Any) -> models.ModelSpec:
    body = yaml.safe_load(FAMILY_MANIFEST.read_text())
    model = body["spec"]["model"]
    model["evaluation"] = {**model["evaluation"], **evaluation}
    return models.parse_spec(body["spec"]).model


def _scored(value: float, samples: int = 540, **kw: Any) -> models.MeasuredAccuracy:
    return models.MeasuredAccuracy(metric="accuracy", value=value, samples=samples, **kw)


def _measured(**values: float) -> dict[str, selection.Measurement]:
    return {
        name.replace("_", "-"): selection.Measurement(
            latency_ms=5.0, throughput=100.0, max_batch_size=8, accuracy=_scored(v)
        )
        for name, v in values.items()
    }


def test_with_evaluation_every_runnable_artifact_is_a_candidate() -> None:
    model = _family()
    names = [a.name for a in selection.candidates(model, CPU)]
    assert names == [a.name for a in model.artifacts]  # measurement decides, not the figures


def test_the_floor_applies_to_measured_accuracy_and_names_the_contradiction() -> None:
    model = _family()
    measured = _measured(
        teacher=0.9778,
        fp16=0.9778,
        int8_dynamic=0.9759,
        int8_static=0.9778,
        pruned=0.9741,
        student=0.9648,
        int8_miscalibrated=0.1056,
    )
    choice = selection.select(model, CPU, measured)
    assert choice.artifact is not None and choice.artifact.name != "int8-miscalibrated"
    rejected = dict(choice.rejected)
    assert rejected["int8-miscalibrated"].startswith(
        "accuracy 0.1056 measured on 540 samples < floor 0.9289 = 0.95 × best 0.9778"
    )
    assert choice.contradicted == (
        (
            "int8-miscalibrated",
            "int8-miscalibrated declared 0.9778, measured 0.1056 on 540 samples: excluded",
        ),
    )
    assert "contradicted: int8-miscalibrated declared 0.9778, measured 0.1056" in choice.reason


def test_a_small_gap_within_tolerance_is_no_contradiction() -> None:
    model = _family(tolerance=0.02)
    measured = _measured(teacher=0.97)  # declared 0.9778: 0.0078 apart
    assert selection.contradictions(model, measured) == ()
    wide = selection.contradictions(_family(tolerance=0.005), measured)
    assert [n for n, _ in wide] == ["teacher"]
    # Contradicted but still above the floor: judged on the measured figure, not excluded.
    choice = selection.select(_family(tolerance=0.005), CPU, measured)
    assert dict(choice.contradicted)["teacher"].endswith("judged on the measured figure")


def test_undeclared_accuracy_waits_for_measurement_and_serves_the_highest_precision() -> None:
    body = yaml.safe_load(FAMILY_MANIFEST.read_text())
    for artifact in body["spec"]["model"]["artifacts"]:
        del artifact["accuracy"]
    model = models.parse_spec(body["spec"]).model
    choice = selection.select(model, CPU, {})
    assert choice.artifact is not None and choice.artifact.name == "teacher"
    assert choice.reason.startswith("no accuracy measured yet: serving the highest-precision")
    # One measured: it is the only one with a known accuracy, so it is the one judged.
    measured = _measured(student=0.9648)
    choice = selection.select(model, CPU, measured)
    assert choice.artifact is not None and choice.artifact.name == "student"
    assert dict(choice.rejected)["fp16"] == "accuracy not measured yet"


def test_accuracy_is_required_without_evaluation() -> None:
    body = yaml.safe_load(FAMILY_MANIFEST.read_text())
    del body["spec"]["model"]["evaluation"]
    del body["spec"]["model"]["artifacts"][0]["accuracy"]
    with pytest.raises(pydantic.ValidationError, match="missing for \\['teacher'\\]"):
        models.parse_spec(body["spec"])


def test_agreement_reference_is_the_highest_precision_or_the_named_one() -> None:
    assert selection.reference(_family()) is None  # accuracy: labels, no reference
    ref = selection.reference(_family(metric="agreement"))
    assert ref is not None and ref.name == "teacher"
    named = selection.reference(_family(metric="agreement", reference="fp16"))
    assert named is not None and named.name == "fp16"
    with pytest.raises(pydantic.ValidationError, match=r"evaluation\.reference must be"):
        _family(metric="agreement", reference="nope")
