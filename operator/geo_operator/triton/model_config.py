"""Triton model configuration (`config.pbtxt`) built with Triton's own protobuf.

The builders call `render()` for the ConfigMap; tests parse the text back with
`parse()`. Building a `model_config_pb2.ModelConfig` and printing it with
protobuf's `text_format` means a field Triton doesn't know can't be written,
which string templates would let through.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from geo_operator.api import models

# Triton backend per artifact format, and the file name each backend loads.
BACKENDS = {
    models.ArtifactFormat.ONNX: "onnxruntime",
    models.ArtifactFormat.TENSORRT_PLAN: "tensorrt",
    models.ArtifactFormat.TORCHSCRIPT: "pytorch",
    models.ArtifactFormat.PYTHON: "python",
}
FILENAMES = {
    models.ArtifactFormat.ONNX: "model.onnx",
    models.ArtifactFormat.TENSORRT_PLAN: "model.plan",
    models.ArtifactFormat.TORCHSCRIPT: "model.pt",
    # The python backend's model.py (shipped by the operator) runs this ONNX file.
    models.ArtifactFormat.PYTHON: "model.onnx",
}


@dataclasses.dataclass(frozen=True)
class BatchSettings:
    """The batching part of the configuration: what the tuner decides."""

    max_batch_size: int
    dynamic_batching: bool = True
    max_queue_delay_microseconds: int = 100
    preferred_batch_sizes: tuple[int, ...] = ()


def _tensors(
    specs: Sequence[models.TensorSpec], kind: type[pb.ModelInput] | type[pb.ModelOutput]
) -> list[pb.ModelInput] | list[pb.ModelOutput]:
    return [
        kind(name=t.name, data_type=pb.DataType.Value(t.data_type), dims=list(t.dims))
        for t in specs
    ]


def build(
    model: models.ModelSpec,
    artifact: models.Artifact,
    batch: BatchSettings,
    *,
    instance_count: int = 1,
    gpu: bool = False,
) -> pb.ModelConfig:
    """The ModelConfig protobuf for one artifact of the model."""
    config = pb.ModelConfig(
        name=model.name,
        backend=BACKENDS[artifact.format],
        max_batch_size=batch.max_batch_size,
        input=_tensors(model.inputs, pb.ModelInput),
        output=_tensors(model.outputs, pb.ModelOutput),
        instance_group=[
            pb.ModelInstanceGroup(
                count=instance_count,
                kind=pb.ModelInstanceGroup.KIND_GPU if gpu else pb.ModelInstanceGroup.KIND_CPU,
            )
        ],
    )
    if artifact.format is not models.ArtifactFormat.PYTHON:
        config.default_model_filename = FILENAMES[artifact.format]
    if batch.dynamic_batching and batch.max_batch_size > 0:
        config.dynamic_batching.max_queue_delay_microseconds = batch.max_queue_delay_microseconds
        config.dynamic_batching.preferred_batch_size.extend(
            b for b in batch.preferred_batch_sizes if b <= batch.max_batch_size
        )
    return config


def render(config: pb.ModelConfig) -> str:
    """The text of `config.pbtxt`."""
    return str(text_format.MessageToString(config))


def parse(text: str) -> pb.ModelConfig:
    """Parse `config.pbtxt` text back into the protobuf (tests, the e2e runner)."""
    return text_format.Parse(text, pb.ModelConfig())
