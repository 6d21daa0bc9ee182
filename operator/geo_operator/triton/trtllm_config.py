"""The TensorRT-LLM path for a generative spec: Triton's TensorRT-LLM backend's model
repository (the ``inflight_batcher_llm`` layout of triton-inference-server/tensorrtllm_backend:
an ensemble preprocessing → tensorrt_llm → postprocessing), rendered from the same
``EngineSettings`` as llama.cpp and vLLM. ``builders.children`` calls it for a GPU spec with
``triton.engine.backend: tensorrtllm``.

Rendered and golden-tested here; run only where a GPU with TensorRT-LLM is. TensorRT-LLM
runs a built engine directory (``trtllm-build``'s output: ``rank0.engine`` and
``config.json``) built for one GPU architecture with its batch and length limits baked in;
a GGUF file is not an engine, so this path reads ``triton.engine.tensorrtllmEngine``, not the
artifact. The ensemble keeps the text interface of Triton's LLM backends (``text_input``,
``max_tokens``, ``stream`` → ``text_output``), under the name the user calls:
``spec.model.name``.
"""

from __future__ import annotations

import posixpath

from tritonclient.grpc import model_config_pb2 as pb

from geo_operator.triton import model_config

TRTLLM = "tensorrt_llm"
PREPROCESSING = "preprocessing"
POSTPROCESSING = "postprocessing"
ENGINE_DIR = "1"  # the engine's files sit in the tensorrt_llm model's version directory
TOKENIZER_DIR = "tokenizer"  # the HF tokenizer, beside the ensemble's version directory
# The backend's own default when its parameter is unset (docs/model_config.md).
KV_CACHE_FREE_GPU_MEM_FRACTION = 0.9


def _tensor(
    kind: type[pb.ModelInput] | type[pb.ModelOutput],
    name: str,
    dtype: str,
    dims: list[int],
    **extra: bool,
) -> pb.ModelInput | pb.ModelOutput:
    return kind(name=name, data_type=pb.DataType.Value(dtype), dims=dims, **extra)


def _params(config: pb.ModelConfig, values: dict[str, str]) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = value


_SCALARS = frozenset(
    {"input_lengths", "end_id", "pad_id", "temperature", "runtime_top_k", "runtime_top_p"}
)


def tensorrt_llm(engine: model_config.EngineSettings, repository: str) -> pb.ModelConfig:
    """The ``tensorrt_llm`` model: in-flight (continuous) batching over ``slots`` sequences,
    decoupled (one response per step when a request streams), the engine read from its
    version directory. ``KIND_CPU``: the backend places itself on the GPUs, as in the
    upstream template. ``batch_tokens`` has no runtime parameter here: it is the engine's
    ``trtllm-build --max_num_tokens``, baked in with ``--max_batch_size`` (>= slots) and
    ``--max_seq_len`` (the context; it caps max_tokens), so the engine must be built for
    the spec's levers."""
    config = pb.ModelConfig(
        name=TRTLLM,
        backend="tensorrtllm",
        max_batch_size=engine.slots,
        input=[
            _tensor(pb.ModelInput, "input_ids", "TYPE_INT32", [-1], allow_ragged_batch=True),
            _tensor(pb.ModelInput, "input_lengths", "TYPE_INT32", [1]),
            _tensor(pb.ModelInput, "request_output_len", "TYPE_INT32", [1]),
            _tensor(pb.ModelInput, "end_id", "TYPE_INT32", [1], optional=True),
            _tensor(pb.ModelInput, "pad_id", "TYPE_INT32", [1], optional=True),
            _tensor(pb.ModelInput, "streaming", "TYPE_BOOL", [1], optional=True),
            _tensor(pb.ModelInput, "temperature", "TYPE_FP32", [1], optional=True),
            _tensor(pb.ModelInput, "runtime_top_k", "TYPE_INT32", [1], optional=True),
            _tensor(pb.ModelInput, "runtime_top_p", "TYPE_FP32", [1], optional=True),
        ],
        output=[
            _tensor(pb.ModelOutput, "output_ids", "TYPE_INT32", [-1, -1]),
            _tensor(pb.ModelOutput, "sequence_length", "TYPE_INT32", [-1]),
        ],
        instance_group=[pb.ModelInstanceGroup(kind=pb.ModelInstanceGroup.KIND_CPU, count=1)],
    )
    for tensor in config.input:  # the template's scalars per request: reshape to []
        if tensor.name in _SCALARS:
            tensor.reshape.SetInParent()
    config.model_transaction_policy.decoupled = True
    # No queue delay: the batch manager admits requests between steps itself.
    config.dynamic_batching.preferred_batch_size.append(engine.slots)
    config.dynamic_batching.max_queue_delay_microseconds = 0
    params = {
        "gpt_model_type": "inflight_fused_batching",
        "gpt_model_path": posixpath.join(repository, TRTLLM, ENGINE_DIR),
        "max_beam_width": "1",
        "batch_scheduler_policy": "guaranteed_no_evict",
        "kv_cache_free_gpu_mem_fraction": str(KV_CACHE_FREE_GPU_MEM_FRACTION),
        "exclude_input_in_output": "true",
        "enable_chunked_context": "true",
        "FORCE_CPU_ONLY_INPUT_TENSORS": "no",
    }
    if engine.context_length:
        # slots × context: the paged KV cache holds every slot's full sequence.
        params["max_tokens_in_paged_kv_cache"] = str(engine.slots * engine.context_length)
        params["max_attention_window_size"] = str(engine.context_length)
    _params(config, params)
    return config


def preprocessing(
    engine: model_config.EngineSettings, tokenizer_dir: str, *, instances: int = 1
) -> pb.ModelConfig:
    """Tokenizes ``QUERY`` into ``INPUT_ID`` (python backend, the upstream ``model.py``)."""
    config = pb.ModelConfig(
        name=PREPROCESSING,
        backend="python",
        max_batch_size=engine.slots,
        input=[
            _tensor(pb.ModelInput, "QUERY", "TYPE_STRING", [1]),
            _tensor(pb.ModelInput, "REQUEST_OUTPUT_LEN", "TYPE_INT32", [1]),
            _tensor(pb.ModelInput, "END_ID", "TYPE_INT32", [1], optional=True),
            _tensor(pb.ModelInput, "PAD_ID", "TYPE_INT32", [1], optional=True),
        ],
        output=[
            _tensor(pb.ModelOutput, "INPUT_ID", "TYPE_INT32", [-1]),
            _tensor(pb.ModelOutput, "REQUEST_INPUT_LEN", "TYPE_INT32", [1]),
            _tensor(pb.ModelOutput, "REQUEST_OUTPUT_LEN", "TYPE_INT32", [-1]),
            _tensor(pb.ModelOutput, "OUT_END_ID", "TYPE_INT32", [1]),
            _tensor(pb.ModelOutput, "OUT_PAD_ID", "TYPE_INT32", [1]),
        ],
        instance_group=[
            pb.ModelInstanceGroup(kind=pb.ModelInstanceGroup.KIND_CPU, count=instances)
        ],
    )
    _params(config, {"tokenizer_dir": tokenizer_dir, "add_special_tokens": "false"})
    return config


def postprocessing(
    engine: model_config.EngineSettings, tokenizer_dir: str, *, instances: int = 1
) -> pb.ModelConfig:
    """Detokenizes ``TOKENS_BATCH`` into ``OUTPUT`` (python backend, upstream ``model.py``)."""
    config = pb.ModelConfig(
        name=POSTPROCESSING,
        backend="python",
        max_batch_size=engine.slots,
        input=[
            _tensor(pb.ModelInput, "TOKENS_BATCH", "TYPE_INT32", [-1, -1]),
            _tensor(pb.ModelInput, "SEQUENCE_LENGTH", "TYPE_INT32", [-1]),
        ],
        output=[_tensor(pb.ModelOutput, "OUTPUT", "TYPE_STRING", [-1])],
        instance_group=[
            pb.ModelInstanceGroup(kind=pb.ModelInstanceGroup.KIND_CPU, count=instances)
        ],
    )
    _params(config, {"tokenizer_dir": tokenizer_dir, "skip_special_tokens": "true"})
    return config


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> pb.ModelEnsembling.Step:
    return pb.ModelEnsembling.Step(
        model_name=model, model_version=-1, input_map=inputs, output_map=outputs
    )


def ensemble(name: str, engine: model_config.EngineSettings) -> pb.ModelConfig:
    """The model the user calls (``spec.model.name``): ``text_input``, ``max_tokens``,
    ``stream`` (and sampling inputs) in, ``text_output`` out, as a client of Triton's vLLM
    backend or of the CPU engine sends them through ``generate``/``generate_stream``."""
    config = pb.ModelConfig(
        name=name,
        platform="ensemble",
        max_batch_size=engine.slots,
        input=[
            _tensor(pb.ModelInput, "text_input", "TYPE_STRING", [1]),
            _tensor(pb.ModelInput, "max_tokens", "TYPE_INT32", [1]),
            _tensor(pb.ModelInput, "stream", "TYPE_BOOL", [1], optional=True),
            _tensor(pb.ModelInput, "temperature", "TYPE_FP32", [1], optional=True),
            _tensor(pb.ModelInput, "top_k", "TYPE_INT32", [1], optional=True),
            _tensor(pb.ModelInput, "top_p", "TYPE_FP32", [1], optional=True),
        ],
        output=[_tensor(pb.ModelOutput, "text_output", "TYPE_STRING", [-1])],
    )
    config.ensemble_scheduling.step.extend(
        [
            _step(
                PREPROCESSING,
                {"QUERY": "text_input", "REQUEST_OUTPUT_LEN": "max_tokens"},
                {
                    "INPUT_ID": "_input_ids",
                    "REQUEST_INPUT_LEN": "_input_lengths",
                    "REQUEST_OUTPUT_LEN": "_request_output_len",
                    "OUT_END_ID": "_end_id",
                    "OUT_PAD_ID": "_pad_id",
                },
            ),
            _step(
                TRTLLM,
                {
                    "input_ids": "_input_ids",
                    "input_lengths": "_input_lengths",
                    "request_output_len": "_request_output_len",
                    "end_id": "_end_id",
                    "pad_id": "_pad_id",
                    "streaming": "stream",
                    "temperature": "temperature",
                    "runtime_top_k": "top_k",
                    "runtime_top_p": "top_p",
                },
                {"output_ids": "_output_ids", "sequence_length": "_sequence_length"},
            ),
            _step(
                POSTPROCESSING,
                {"TOKENS_BATCH": "_output_ids", "SEQUENCE_LENGTH": "_sequence_length"},
                {"OUTPUT": "text_output"},
            ),
        ]
    )
    return config


def repository(
    name: str, engine: model_config.EngineSettings, root: str, *, instances: int = 1
) -> dict[str, pb.ModelConfig]:
    """Every model of the repository under ``root``, keyed by its directory name."""
    tokenizer = posixpath.join(root, name, TOKENIZER_DIR)
    return {
        name: ensemble(name, engine),
        PREPROCESSING: preprocessing(engine, tokenizer, instances=instances),
        TRTLLM: tensorrt_llm(engine, root),
        POSTPROCESSING: postprocessing(engine, tokenizer, instances=instances),
    }
