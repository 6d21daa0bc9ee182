"""Triton model configuration (`config.pbtxt`) built with Triton's own protobuf.

The builders call `render()` for the ConfigMap; tests parse the text back with
`parse()`. Building a `model_config_pb2.ModelConfig` and printing it with
protobuf's `text_format` means a field Triton doesn't know can't be written,
which string templates would let through.
"""

from __future__ import annotations

import dataclasses
import json
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
    models.ArtifactFormat.GGUF: "python",  # llama_model.py runs llama.cpp
}


def artifact_format_of(config: pb.ModelConfig) -> models.ArtifactFormat:
    """Which artifact format a rendered config.pbtxt serves: by its backend, the python
    backend's two (ONNX through python_model.py, GGUF through llama_model.py) told apart by
    the GGUF file parameter. KeyError for a backend GEO does not render."""
    if config.backend == "python":
        gguf = "gguf_file" in config.parameters
        return models.ArtifactFormat.GGUF if gguf else models.ArtifactFormat.PYTHON
    by_backend = {
        backend: fmt
        for fmt, backend in BACKENDS.items()
        if fmt not in (models.ArtifactFormat.PYTHON, models.ArtifactFormat.GGUF)
    }
    return by_backend[config.backend]


FILENAMES = {
    models.ArtifactFormat.ONNX: "model.onnx",
    models.ArtifactFormat.TENSORRT_PLAN: "model.plan",
    models.ArtifactFormat.TORCHSCRIPT: "model.pt",
    # The python backend's model.py (shipped by the operator) runs this ONNX file.
    models.ArtifactFormat.PYTHON: "model.onnx",
    models.ArtifactFormat.GGUF: "model.gguf",
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


_KINDS = {
    models.InstanceKind.CPU: pb.ModelInstanceGroup.KIND_CPU,
    models.InstanceKind.GPU: pb.ModelInstanceGroup.KIND_GPU,
    models.InstanceKind.AUTO: pb.ModelInstanceGroup.KIND_AUTO,
}
WARMUP_NAME = "geo-warmup"
WARMUP_DIR = "warmup"  # Triton reads input_data_file from <model>/warmup/


def warmup_file(sample: int, position: int) -> str:
    """The file name of input ``position`` (in model.inputs) of warmup ``sample``."""
    return f"{WARMUP_NAME}-{sample}-input{position}.bin"


def warmup_files(model: models.ModelSpec, samples: Sequence[models.Warmup]) -> dict[str, str]:
    """The warmup files to fetch beside config.pbtxt: path under the model's folder -> URI."""
    out = {}
    for index, sample in enumerate(samples):
        for position, tensor in enumerate(model.inputs):
            if sample.files is not None:
                out[f"{WARMUP_DIR}/{warmup_file(index, position)}"] = sample.files[tensor.name]
    return out


def _instance_groups(triton: models.TritonSpec, gpu: bool) -> list[pb.ModelInstanceGroup]:
    """triton.instanceGroups, or one group of instanceCount; an unset kind follows the pod."""
    default = pb.ModelInstanceGroup.KIND_GPU if gpu else pb.ModelInstanceGroup.KIND_CPU
    groups = triton.instance_groups or [models.InstanceGroup(count=triton.instance_count)]
    out = []
    for group in groups:
        rendered = pb.ModelInstanceGroup(
            count=group.count,
            kind=_KINDS[group.kind] if group.kind else default,
            gpus=list(group.gpus or ()),
        )
        if group.rate_limiter is not None:
            rendered.rate_limiter.priority = group.rate_limiter.priority
            rendered.rate_limiter.resources.extend(
                pb.ModelRateLimiter.Resource(name=r.name, count=r.count, **{"global": r.global_})
                for r in group.rate_limiter.resources
            )
        out.append(rendered)
    return out


def _queue_policy(policy: models.QueuePolicy, into: pb.ModelQueuePolicy) -> None:
    into.max_queue_size = policy.max_queue_size
    into.default_timeout_microseconds = policy.default_timeout_microseconds
    into.timeout_action = pb.ModelQueuePolicy.TimeoutAction.Value(policy.timeout_action.value)
    into.allow_timeout_override = policy.allow_timeout_override


def _queues(batching: models.DynamicBatching, into: pb.ModelDynamicBatching) -> None:
    """Priority levels and queue policies (the dynamic batcher's, so only with it)."""
    if batching.priority_levels:
        into.priority_levels = batching.priority_levels
        # 0 asks for the lowest level: traffic must ask to go first.
        into.default_priority_level = batching.default_priority_level or batching.priority_levels
    if batching.default_queue_policy is not None:
        _queue_policy(batching.default_queue_policy, into.default_queue_policy)
    for policy in batching.priority_queue_policies or ():
        _queue_policy(policy, into.priority_queue_policy[policy.level])


def _warmup(
    model: models.ModelSpec, samples: Sequence[models.Warmup], max_batch_size: int
) -> list[pb.ModelWarmup]:
    out = []
    for index, sample in enumerate(samples):
        warmup = pb.ModelWarmup(
            name=f"{WARMUP_NAME}-{index}",
            # Capped: a tuned max_batch_size may be below it; 0 (no batching) means 1.
            batch_size=min(sample.batch_size, max(1, max_batch_size)),
            count=sample.count,
        )
        for position, tensor in enumerate(model.inputs):
            data = warmup.inputs[tensor.name]
            data.data_type = pb.DataType.Value(tensor.data_type)
            data.dims.extend(d if d > 0 else 1 for d in tensor.dims)
            if sample.data is models.WarmupData.ZERO:
                data.zero_data = True
            elif sample.data is models.WarmupData.RANDOM:
                data.random_data = True
            else:
                data.input_data_file = warmup_file(index, position)
        out.append(warmup)
    return out


def _gpu(artifact: models.Artifact, lever: models.GpuOptimization, config: pb.ModelConfig) -> None:
    """GPU-only levers for the artifact's backend (rendered only for pods with a GPU)."""
    onnx = artifact.format is models.ArtifactFormat.ONNX
    if onnx and lever.accelerator is not models.GpuAccelerator.NONE:
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(
            name=lever.accelerator.value
        )
        if lever.accelerator is models.GpuAccelerator.TENSORRT:
            accelerator.parameters["precision_mode"] = lever.precision_mode.value
            if lever.max_workspace_size_bytes is not None:
                accelerator.parameters["max_workspace_size_bytes"] = str(
                    lever.max_workspace_size_bytes
                )
    if artifact.format is models.ArtifactFormat.TENSORRT_PLAN and lever.cuda_graphs:
        config.optimization.cuda.graphs = True


def build(
    model: models.ModelSpec,
    artifact: models.Artifact,
    batch: BatchSettings,
    *,
    triton: models.TritonSpec | None = None,
    gpu: bool = False,
) -> pb.ModelConfig:
    """The ModelConfig protobuf for one artifact of the model; ``triton`` brings the
    levers (instance groups, queues, cache, warmup, GPU accelerators), none when None."""
    triton = triton or models.TritonSpec()
    config = pb.ModelConfig(
        name=model.name,
        backend=BACKENDS[artifact.format],
        max_batch_size=batch.max_batch_size,
        input=_tensors(model.inputs, pb.ModelInput),
        output=_tensors(model.outputs, pb.ModelOutput),
        instance_group=_instance_groups(triton, gpu),
    )
    if artifact.format is models.ArtifactFormat.TENSORRT_PLAN:
        config.platform = "tensorrt_plan"
    if artifact.format is not models.ArtifactFormat.PYTHON:
        config.default_model_filename = FILENAMES[artifact.format]
    if batch.dynamic_batching and batch.max_batch_size > 0:
        config.dynamic_batching.max_queue_delay_microseconds = batch.max_queue_delay_microseconds
        config.dynamic_batching.preferred_batch_size.extend(
            b for b in batch.preferred_batch_sizes if b <= batch.max_batch_size
        )
        _queues(triton.dynamic_batching, config.dynamic_batching)
    if triton.response_cache.enabled:
        config.response_cache.enable = True
    config.model_warmup.extend(_warmup(model, triton.warmup or (), batch.max_batch_size))
    if gpu:
        _gpu(artifact, triton.gpu, config)
    return config


def render(config: pb.ModelConfig) -> str:
    """The text of `config.pbtxt`."""
    return str(text_format.MessageToString(config))


def parse(text: str) -> pb.ModelConfig:
    """Parse `config.pbtxt` text back into the protobuf (tests, the e2e runner)."""
    return text_format.Parse(text, pb.ModelConfig())


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    """The generative engine's levers (llama.cpp in the python backend, ``llama_model.py``):
    sequences decoded together, each one's context, the max_tokens cap, tokens per step."""

    slots: int = 4
    context_length: int = 0  # 0: the model's own training context
    max_tokens_cap: int = 0  # 0: the context length
    n_batch: int = 512
    n_threads: int = 2

    @classmethod
    def of(cls, engine: models.EngineSpec | None) -> EngineSettings:
        engine = engine or models.EngineSpec()
        return cls(
            slots=engine.slots,
            context_length=engine.context_length or 0,
            max_tokens_cap=engine.max_tokens_cap or 0,
            n_batch=engine.batch_tokens,
            n_threads=engine.threads,
        )


# Triton's vLLM backend's request and response tensors (its model.py auto-completes them),
# plus TensorRT-LLM's max_tokens input: what a client of either sends and reads.
GENERATIVE_INPUTS = (
    ("text_input", "TYPE_STRING", False),
    ("stream", "TYPE_BOOL", True),
    ("max_tokens", "TYPE_INT32", True),
    ("sampling_parameters", "TYPE_STRING", True),
    ("exclude_input_in_output", "TYPE_BOOL", True),
    ("return_finish_reason", "TYPE_BOOL", True),
    ("return_num_input_tokens", "TYPE_BOOL", True),
    ("return_num_output_tokens", "TYPE_BOOL", True),
)
GENERATIVE_OUTPUTS = (
    ("text_output", "TYPE_STRING"),
    ("finish_reason", "TYPE_STRING"),
    ("num_input_tokens", "TYPE_UINT32"),
    ("num_output_tokens", "TYPE_UINT32"),
)
GGUF_FILENAME = "model.gguf"


VLLM_ENGINE_ARGS = "model.json"  # where Triton's vLLM backend reads its engine arguments


def build_vllm(name: str, engine: EngineSettings, model_path: str) -> tuple[pb.ModelConfig, str]:
    """The GPU path for the same spec: Triton's vLLM backend (``backend: "vllm"``, decoupled,
    ``KIND_MODEL``: vLLM places itself) and its ``model.json``: the GGUF at ``model_path``
    (vLLM loads GGUF files, tokenizer included), ``slots`` as ``max_num_seqs``, the
    context as ``max_model_len``, stats on so its ``vllm:*`` metrics flow. Rendered and
    golden-tested here; run only where a GPU is."""
    config = pb.ModelConfig(
        name=name,
        backend="vllm",
        max_batch_size=0,
        instance_group=[pb.ModelInstanceGroup(kind=pb.ModelInstanceGroup.KIND_MODEL, count=1)],
    )
    config.model_transaction_policy.decoupled = True
    config.parameters["REPORT_CUSTOM_METRICS"].string_value = "true"
    args: dict[str, object] = {
        "model": model_path,
        "tokenizer": model_path,
        "max_num_seqs": engine.slots,
        "max_num_batched_tokens": max(engine.n_batch, engine.context_length or 0),
        "gpu_memory_utilization": 0.9,
        "disable_log_stats": False,
        "enforce_eager": False,
    }
    if engine.context_length:
        args["max_model_len"] = engine.context_length
    return config, json.dumps(args, indent=2, sort_keys=True) + "\n"


def build_generative(name: str, engine: EngineSettings, *, instances: int = 1) -> pb.ModelConfig:
    """config.pbtxt of a GGUF model served by ``llama_model.py``: decoupled (one response
    per token), no Triton batching (the engine batches its slots itself), the levers as
    the model's parameters."""
    config = pb.ModelConfig(
        name=name,
        backend="python",
        max_batch_size=0,
        input=[
            pb.ModelInput(name=n, data_type=pb.DataType.Value(t), dims=[1], optional=optional)
            for n, t, optional in GENERATIVE_INPUTS
        ],
        output=[
            pb.ModelOutput(name=n, data_type=pb.DataType.Value(t), dims=[-1])
            for n, t in GENERATIVE_OUTPUTS
        ],
        instance_group=[
            pb.ModelInstanceGroup(kind=pb.ModelInstanceGroup.KIND_CPU, count=instances)
        ],
    )
    config.model_transaction_policy.decoupled = True
    for key, value in {
        "gguf_file": GGUF_FILENAME,
        **{k: str(v) for k, v in dataclasses.asdict(engine).items()},
    }.items():
        config.parameters[key].string_value = value
    return config
