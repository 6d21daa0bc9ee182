"""The TensorRT-LLM repository rendered from the engine levers: each model parses with
Triton's protobuf text format and each lever lands where the backend reads it."""

from __future__ import annotations

from geo_operator.triton import model_config, trtllm_config

ENGINE = model_config.EngineSettings(slots=8, context_length=2048, n_batch=1024)


def _repo() -> dict[str, str]:
    repo = trtllm_config.repository("pycode", ENGINE, "/models", instances=2)
    return {name: model_config.render(config) for name, config in repo.items()}


def test_every_model_parses_as_a_triton_model_config() -> None:
    rendered = _repo()
    assert set(rendered) == {"pycode", "preprocessing", "tensorrt_llm", "postprocessing"}
    for name, text in rendered.items():
        assert model_config.parse(text).name == name


def test_the_levers_land_where_the_backend_reads_them() -> None:
    config = model_config.parse(_repo()["tensorrt_llm"])
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert config.backend == "tensorrtllm" and config.max_batch_size == 8
    assert config.model_transaction_policy.decoupled  # streaming: one response per step
    assert params["gpt_model_type"] == "inflight_fused_batching"
    assert params["gpt_model_path"] == "/models/tensorrt_llm/1"
    assert "max_num_tokens" not in params  # a build-time limit of the engine
    scalars = {t.name for t in config.input if t.HasField("reshape")}
    assert scalars >= {"input_lengths", "end_id", "temperature"}
    assert "request_output_len" not in scalars
    assert params["max_tokens_in_paged_kv_cache"] == str(8 * 2048)
    assert params["max_attention_window_size"] == "2048"
    assert params["max_beam_width"] == "1" and params["exclude_input_in_output"] == "true"
    assert config.dynamic_batching.max_queue_delay_microseconds == 0
    assert list(config.dynamic_batching.preferred_batch_size) == [8]
    for name in ("preprocessing", "postprocessing"):
        step = model_config.parse(_repo()[name])
        assert step.parameters["tokenizer_dir"].string_value == "/models/pycode/tokenizer"
        assert step.instance_group[0].count == 2


def test_no_context_leaves_the_kv_cache_to_the_free_memory_fraction() -> None:
    config = trtllm_config.tensorrt_llm(model_config.EngineSettings(), "/models")
    assert "max_tokens_in_paged_kv_cache" not in config.parameters
    assert config.parameters["kv_cache_free_gpu_mem_fraction"].string_value == "0.9"


def test_the_ensemble_speaks_the_llm_backends_text_interface() -> None:
    config = model_config.parse(_repo()["pycode"])
    assert config.platform == "ensemble"
    assert [i.name for i in config.input][:3] == ["text_input", "max_tokens", "stream"]
    assert [o.name for o in config.output] == ["text_output"]
    steps = config.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["preprocessing", "tensorrt_llm", "postprocessing"]
    assert steps[1].input_map["streaming"] == "stream"
    assert steps[2].output_map["OUTPUT"] == "text_output"
    # Every ensemble tensor a step reads is written by an earlier step or is an input.
    known = {i.name for i in config.input}
    for step in steps:
        assert set(step.input_map.values()) <= known
        known |= set(step.output_map.values())
