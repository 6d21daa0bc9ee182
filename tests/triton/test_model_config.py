"""config.pbtxt rendered through Triton's protobuf and parsed back."""

from __future__ import annotations

from geo_operator.api import models
from geo_operator.triton import model_config


def _artifact(spec: models.GeoDeploymentSpec, name: str) -> models.Artifact:
    return next(a for a in spec.model.artifacts if a.name == name)


def test_python_artifact_config(spec: models.GeoDeploymentSpec) -> None:
    batch = model_config.BatchSettings(
        max_batch_size=32, max_queue_delay_microseconds=250, preferred_batch_sizes=(8, 16, 64)
    )
    text = model_config.render(model_config.build(spec.model, _artifact(spec, "int8"), batch))
    parsed = model_config.parse(text)
    assert parsed.name == "digits" and parsed.backend == "python"
    assert parsed.max_batch_size == 32
    assert parsed.dynamic_batching.max_queue_delay_microseconds == 250
    assert list(parsed.dynamic_batching.preferred_batch_size) == [8, 16]  # 64 > max
    assert [(i.name, list(i.dims)) for i in parsed.input] == [("input", [64])]
    assert [o.name for o in parsed.output] == ["label", "probabilities"]
    assert parsed.instance_group[0].kind == parsed.instance_group[0].KIND_CPU
    assert 'backend: "python"' in text


def test_batching_off_and_onnx_backend(spec: models.GeoDeploymentSpec) -> None:
    raw = _artifact(spec, "fp32").model_dump(by_alias=True, mode="json")
    onnx = models.Artifact.model_validate({**raw, "format": "onnx"})
    batch = model_config.BatchSettings(max_batch_size=8, dynamic_batching=False)
    config = model_config.build(spec.model, onnx, batch, instance_count=2, gpu=True)
    assert config.backend == "onnxruntime" and config.default_model_filename == "model.onnx"
    assert not config.HasField("dynamic_batching")
    assert config.instance_group[0].count == 2
    assert config.instance_group[0].kind == config.instance_group[0].KIND_GPU
