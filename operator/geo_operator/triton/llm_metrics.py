"""The metrics of a generative engine on Triton: one reading whichever engine serves.

Two families, parsed with prometheus_client's exposition parser:

* **vLLM's names**, as Triton's vLLM backend exports them (and GEO's own CPU engine,
  ``llama_model.py``, under the same names): ``vllm:num_requests_running`` /
  ``_waiting`` (gauges), ``vllm:gpu_cache_usage_perc`` or its newer name
  ``vllm:kv_cache_usage_perc`` (0..1), ``vllm:prompt_tokens_total`` /
  ``vllm:generation_tokens_total`` (counters), the histograms
  ``vllm:time_to_first_token_seconds`` and ``vllm:time_per_output_token_seconds``,
  ``vllm:request_success_total{finished_reason}``.
* **TensorRT-LLM's**, as its Triton backend's metrics reporter exports them (its README,
  "Triton Metrics"): ``nv_trt_llm_request_metrics{request_type=active|scheduled|context|
  max|waiting}``, ``nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=max|free|used|
  tokens_per|fraction}``, ``nv_trt_llm_inflight_batcher_metrics{
  inflight_batcher_specific_metric=generation_requests|total_context_tokens|...}``. It
  has no token counters or latency histograms there: those fields stay None, never 0.

``rates()`` turns two scrapes of one pod into token throughput, mean TTFT / time per
output token and their p99 from the histogram buckets' increase (as Prometheus'
``histogram_quantile`` over ``rate()`` does).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

VLLM, TRT_LLM = "vllm", "tensorrt-llm"
TTFT = "vllm:time_to_first_token_seconds"
TPOT = "vllm:time_per_output_token_seconds"


@dataclasses.dataclass(frozen=True)
class EngineScrape:
    """One pod's generative engine at one moment (one model, summed over versions)."""

    time: float
    engine: str  # VLLM (vLLM's names) or TRT_LLM
    running: float | None = None
    waiting: float | None = None
    kv_usage: float | None = None  # 0..1
    max_requests: float | None = None  # TensorRT-LLM's request_type="max": its slots
    prompt_tokens: float | None = None  # counters
    generation_tokens: float | None = None
    ttft_buckets: tuple[tuple[float, float], ...] = ()  # (le, cumulative count)
    tpot_buckets: tuple[tuple[float, float], ...] = ()
    ttft_sum: float | None = None
    ttft_count: float | None = None
    tpot_sum: float | None = None
    tpot_count: float | None = None
    finished: Mapping[str, float] = dataclasses.field(default_factory=dict)


def _le(value: str) -> float:
    return math.inf if value in ("+Inf", "inf") else float(value)


def parse(text: str, model: str, time: float) -> EngineScrape | None:
    """The engine's figures for ``model``; None when the scrape has neither family."""
    values: dict[str, float] = {}
    labelled: dict[tuple[str, str], float] = {}
    buckets: dict[str, dict[float, float]] = {TTFT: {}, TPOT: {}}
    finished: dict[str, float] = {}
    seen = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("model", model) != model:
                continue
            name = sample.name
            seen.add(name.split(":")[0] if ":" in name else name)
            if name in (f"{TTFT}_bucket", f"{TPOT}_bucket"):
                le = _le(labels["le"])
                hist = buckets[name.removesuffix("_bucket")]
                hist[le] = hist.get(le, 0.0) + sample.value
            elif name == "vllm:request_success_total":
                reason = labels.get("finished_reason", "")
                finished[reason] = finished.get(reason, 0.0) + sample.value
            elif name.startswith("nv_trt_llm_"):
                kind = next((v for k, v in labels.items() if k not in ("model", "version")), "")
                key = (name, kind)
                labelled[key] = labelled.get(key, 0.0) + sample.value
            else:
                values[name] = values.get(name, 0.0) + sample.value
    if "vllm" in seen:
        kv = values.get("vllm:kv_cache_usage_perc", values.get("vllm:gpu_cache_usage_perc"))
        return EngineScrape(
            time=time,
            engine=VLLM,
            running=values.get("vllm:num_requests_running"),
            waiting=values.get("vllm:num_requests_waiting"),
            kv_usage=kv,
            prompt_tokens=values.get("vllm:prompt_tokens_total"),
            generation_tokens=values.get("vllm:generation_tokens_total"),
            ttft_buckets=tuple(sorted(buckets[TTFT].items())),
            tpot_buckets=tuple(sorted(buckets[TPOT].items())),
            ttft_sum=values.get(f"{TTFT}_sum"),
            ttft_count=values.get(f"{TTFT}_count"),
            tpot_sum=values.get(f"{TPOT}_sum"),
            tpot_count=values.get(f"{TPOT}_count"),
            finished=finished,
        )
    requests = "nv_trt_llm_request_metrics"
    blocks = "nv_trt_llm_kv_cache_block_metrics"
    if not any(name in (requests, blocks) for name, _ in labelled):
        return None
    kv = labelled.get((blocks, "fraction"))
    used, total = labelled.get((blocks, "used")), labelled.get((blocks, "max"))
    if kv is None and used is not None and total:
        kv = used / total
    return EngineScrape(
        time=time,
        engine=TRT_LLM,
        running=labelled.get((requests, "active")),
        waiting=labelled.get((requests, "waiting")),
        kv_usage=kv,
        max_requests=labelled.get((requests, "max")),
    )


@dataclasses.dataclass(frozen=True)
class EngineRates:
    """What one pod's engine did between two scrapes."""

    prompt_tokens_per_second: float | None
    generation_tokens_per_second: float | None
    mean_ttft_s: float | None  # None: no first token in the window (or no histogram)
    mean_tpot_s: float | None
    p99_ttft_s: float | None
    p99_tpot_s: float | None
    running: float | None
    waiting: float | None
    kv_usage: float | None


def _per_second(before: float | None, after: float | None, seconds: float) -> float | None:
    if before is None or after is None or after < before:
        return None  # missing, or the counter was reset (a restart): not zero
    return (after - before) / seconds


def _mean(
    sums: tuple[float | None, float | None], counts: tuple[float | None, float | None]
) -> float | None:
    if None in sums or None in counts:
        return None
    count = counts[1] - counts[0]  # type: ignore[operator]
    return None if count <= 0 else (sums[1] - sums[0]) / count  # type: ignore[operator]


def quantile(
    before: tuple[tuple[float, float], ...], after: tuple[tuple[float, float], ...], q: float
) -> float | None:
    """``q`` of the observations between two scrapes of a cumulative histogram, linear
    within the bucket it falls in (Prometheus' histogram_quantile); the highest finite
    bound when it falls in +Inf; None when nothing was observed."""
    start = dict(before)
    increase = [(le, count - start.get(le, 0.0)) for le, count in after]
    if not increase or increase[-1][1] <= 0:
        return None
    rank = q * increase[-1][1]
    lower, below = 0.0, 0.0
    for le, cumulative in increase:
        if cumulative >= rank:
            if math.isinf(le):
                return lower
            inside = cumulative - below
            return lower + (le - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = le, cumulative
    return lower


def add_increase(
    summed: dict[float, float],
    before: tuple[tuple[float, float], ...],
    after: tuple[tuple[float, float], ...],
) -> None:
    """Add one pod's histogram increase between two scrapes (cumulative buckets) into
    ``summed`` ({le: count}), as ``sum by (le) (increase(...))`` does."""
    start = dict(before)
    for le, count in after:
        summed[le] = summed.get(le, 0.0) + max(0.0, count - start.get(le, 0.0))


def observed(summed: dict[float, float] | None) -> tuple[int | None, float | None]:
    """(observations, their p99 in ms) of a summed histogram increase ({le: cumulative
    count}); (None, None) when no pod exports it, (0, None) when nothing was observed."""
    if not summed:
        return None, None
    buckets = tuple(sorted(summed.items()))
    p99 = quantile((), buckets, 0.99)
    return round(buckets[-1][1]), None if p99 is None else p99 * 1000


def rates(before: EngineScrape, after: EngineScrape) -> EngineRates | None:
    """Two scrapes of one pod; None when they are not in order or not the same engine."""
    seconds = after.time - before.time
    if seconds <= 0 or before.engine != after.engine:
        return None
    return EngineRates(
        prompt_tokens_per_second=_per_second(before.prompt_tokens, after.prompt_tokens, seconds),
        generation_tokens_per_second=_per_second(
            before.generation_tokens, after.generation_tokens, seconds
        ),
        mean_ttft_s=_mean((before.ttft_sum, after.ttft_sum), (before.ttft_count, after.ttft_count)),
        mean_tpot_s=_mean((before.tpot_sum, after.tpot_sum), (before.tpot_count, after.tpot_count)),
        p99_ttft_s=quantile(before.ttft_buckets, after.ttft_buckets, 0.99),
        p99_tpot_s=quantile(before.tpot_buckets, after.tpot_buckets, 0.99),
        running=after.running,
        waiting=after.waiting,
        kv_usage=after.kv_usage,
    )
