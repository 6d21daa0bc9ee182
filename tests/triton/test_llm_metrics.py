"""triton/llm_metrics: one reading of a generative engine, from vLLM's names (Triton's
vLLM backend, GEO's llama.cpp engine) or TensorRT-LLM's; tested on exposition text
written from each backend's documentation, and on the real engine in test_llama_model."""

from __future__ import annotations

import pathlib

import pytest

from geo_operator.triton import llm_metrics

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"


def test_vllm_backends_families() -> None:
    text = (FIXTURES / "llm_metrics_vllm_backend.txt").read_text()
    scrape = llm_metrics.parse(text, "vllm_model", 10.0)
    assert scrape is not None and scrape.engine == llm_metrics.VLLM
    assert (scrape.running, scrape.waiting, scrape.kv_usage) == (2, 3, 0.25)
    assert (scrape.prompt_tokens, scrape.generation_tokens) == (10, 16)
    assert scrape.ttft_count == 1 and scrape.tpot_count == 15
    assert scrape.ttft_buckets[-1] == (float("inf"), 1)
    assert llm_metrics.parse(text, "another_model", 10.0) is None


def test_tensorrt_llms_families_have_no_token_counters_and_say_so() -> None:
    text = (FIXTURES / "llm_metrics_tensorrt_llm.txt").read_text()
    scrape = llm_metrics.parse(text, "tensorrt_llm", 5.0)
    assert scrape is not None and scrape.engine == llm_metrics.TRT_LLM
    assert (scrape.running, scrape.waiting, scrape.max_requests) == (3, 4, 512)
    assert scrape.kv_usage == pytest.approx(1560 / 6240)  # used / max: no fraction series
    assert scrape.generation_tokens is None and scrape.ttft_count is None  # None, never 0
    with_fraction = text + (
        'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction",'
        'model="tensorrt_llm",version="1"} 0.3\n'
    )
    assert llm_metrics.parse(with_fraction, "tensorrt_llm", 5.0).kv_usage == 0.3  # type: ignore[union-attr]


def test_rates_and_the_p99_from_two_scrapes_of_a_histogram() -> None:
    text = (FIXTURES / "llm_metrics_vllm_backend.txt").read_text()
    before = llm_metrics.parse(text, "vllm_model", 10.0)
    later = (
        text.replace('vllm_model",version="1"} 16', 'vllm_model",version="1"} 216')
        .replace('le="0.01"} 14', 'le="0.01"} 114')
        .replace('le="0.025"} 15', 'le="0.025"} 215')
        .replace('le="+Inf"} 15', 'le="+Inf"} 215')
        .replace(
            'time_per_output_token_seconds_count{model="vllm_model",version="1"} 15',
            'time_per_output_token_seconds_count{model="vllm_model",version="1"} 215',
        )
        .replace("0.04501533508300781", "3.04501533508300781")
    )
    after = llm_metrics.parse(later, "vllm_model", 20.0)
    assert before is not None and after is not None
    rates = llm_metrics.rates(before, after)
    assert rates is not None
    assert rates.generation_tokens_per_second == 20.0  # 200 tokens in 10 s
    assert rates.prompt_tokens_per_second == 0.0
    assert rates.mean_tpot_s == pytest.approx(3.0 / 200)
    assert rates.mean_ttft_s is None  # no first token in the window
    # 100 of the 200 new gaps under 10 ms, 100 between 10 and 25 ms: p99 at 24.7 ms
    assert rates.p99_tpot_s == pytest.approx(0.01 + 0.015 * (198 - 100) / 100)
    assert rates.p99_ttft_s is None
    # a counter that went backwards (a restart) is missing, not a negative rate
    assert (
        llm_metrics.rates(
            after, llm_metrics.parse(text, "vllm_model", 30.0)
        ).generation_tokens_per_second
        is None
    )  # type: ignore[arg-type,union-attr]


def test_quantile_in_the_open_bucket_is_the_highest_bound() -> None:
    before = ((0.1, 0.0), (1.0, 0.0), (float("inf"), 0.0))
    after = ((0.1, 0.0), (1.0, 1.0), (float("inf"), 100.0))
    assert llm_metrics.quantile(before, after, 0.99) == 1.0
    assert llm_metrics.quantile(before, before, 0.99) is None
