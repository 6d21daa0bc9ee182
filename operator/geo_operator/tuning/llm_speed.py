"""A generative artifact's token speed, measured through the real Triton's
``generate_stream`` (what `geo tune-llm` records in the tuning Job).

``concurrency`` streams at a time, each asking ``max_tokens`` from the same prompt with
greedy sampling and ``ignore_eos`` (so every stream decodes the whole length), for
``rounds`` rounds: the client-side time to first token of each stream, the gaps between
its tokens, and the tokens all streams produced per second of the round's wall time.
Each event of a stream is one token (the engine answers one response per token).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from geo_operator.triton import generate


@dataclasses.dataclass(frozen=True)
class Speed:
    concurrency: int
    streams: int
    tokens_per_second: float  # all streams' tokens over the rounds' wall time
    ttft_p99_ms: float
    inter_token_p99_ms: float
    inter_token_mean_ms: float


def _one(http: str, model: str, prompt: str, max_tokens: int) -> tuple[float, list[float]]:
    """One stream: its time to first token and its token arrival times (perf_counter)."""
    sent = time.perf_counter()
    arrivals = [
        at
        for at, event in generate.stream(
            http,
            model,
            prompt,
            parameters={"max_tokens": max_tokens, "temperature": 0, "ignore_eos": True},
        )
        if event.get("text_output")
    ]
    if not arrivals:
        raise RuntimeError(f"{model} streamed no token for a {max_tokens}-token request")
    return arrivals[0] - sent, arrivals


def _p99(values: Sequence[float]) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), 99)) * 1000.0


def measure(
    http: str, model: str, prompt: str, *, max_tokens: int, concurrency: int, rounds: int = 2
) -> Speed:
    """``rounds`` rounds of ``concurrency`` simultaneous streams."""
    ttfts: list[float] = []
    gaps: list[float] = []
    tokens = 0
    wall = 0.0
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        for _ in range(rounds):
            started = time.perf_counter()
            futures = [
                pool.submit(_one, http, model, prompt, max_tokens) for _ in range(concurrency)
            ]
            for future in futures:
                ttft, arrivals = future.result()
                ttfts.append(ttft)
                gaps += list(np.diff(arrivals))
                tokens += len(arrivals)
            wall += time.perf_counter() - started
    return Speed(
        concurrency=concurrency,
        streams=len(ttfts),
        tokens_per_second=round(tokens / wall, 1),
        ttft_p99_ms=round(_p99(ttfts), 2),
        inter_token_p99_ms=round(_p99(gaps), 2) if gaps else 0.0,
        inter_token_mean_ms=round(float(np.mean(gaps)) * 1000.0, 3) if gaps else 0.0,
    )


def within(speed: Speed, ttft_budget_ms: float | None, itl_budget_ms: float | None) -> bool:
    """Whether ``speed`` keeps both token objectives (an unset one bounds nothing)."""
    return (ttft_budget_ms is None or speed.ttft_p99_ms <= ttft_budget_ms) and (
        itl_budget_ms is None or speed.inter_token_p99_ms <= itl_budget_ms
    )


@dataclasses.dataclass(frozen=True)
class SlotSearch:
    measured: tuple[tuple[int, Speed], ...]  # in the order measured, the confirmation last
    chosen: int | None  # the slots kept; None: none kept the objectives
    speed: Speed | None  # the chosen one's figures (its confirmation's)


def search_slots(
    measure_at: Callable[[int], Speed],
    candidates: Sequence[int],
    ttft_budget_ms: float | None,
    itl_budget_ms: float | None,
) -> SlotSearch:
    """The generative max_batch_size search: each slot count measured with that many
    streams at once (the engine full), the highest token throughput within the objectives
    kept, then measured again (a confirmation round, as the classifiers' search has): if
    the repeat misses the objectives, the next best is taken (its one measurement)."""
    measured: list[tuple[int, Speed]] = [(c, measure_at(c)) for c in sorted(set(candidates))]
    fitting = sorted(
        (m for m in measured if within(m[1], ttft_budget_ms, itl_budget_ms)),
        key=lambda m: m[1].tokens_per_second,
        reverse=True,
    )
    if not fitting:
        return SlotSearch(tuple(measured), None, None)
    best, _ = fitting[0]
    again = measure_at(best)
    measured.append((best, again))
    if within(again, ttft_budget_ms, itl_budget_ms) or len(fitting) == 1:
        return SlotSearch(tuple(measured), best, again)
    return SlotSearch(tuple(measured), fitting[1][0], fitting[1][1])


def load_slots(http: str, model: str, slots: int) -> None:
    """Reload ``model`` with ``slots`` (Triton in explicit model control: its own config
    with the engine's ``slots`` parameter replaced); the engine sizes its KV cache anew."""
    import json

    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(http)
    try:
        config: dict[str, Any] = client.get_model_config(model)
        config.setdefault("parameters", {})["slots"] = {"string_value": str(slots)}
        client.load_model(model, config=json.dumps(config))
        loaded = client.get_model_config(model)["parameters"]["slots"]["string_value"]
        if loaded != str(slots):
            raise RuntimeError(f"loaded {slots} slots but Triton reports {loaded}")
    finally:
        client.close()


def prefill(http: str, model: str, prompt: str, rounds: int = 3) -> float:
    """Prompt tokens per second of one request alone: a ``max_tokens`` 1 request (its time is
    the prefill and one decode step), the prompt's tokens as the engine counted them
    (``return_num_input_tokens``); the median of ``rounds``."""
    import json
    import urllib.request

    body = {
        "text_input": prompt,
        "exclude_input_in_output": True,
        "return_num_input_tokens": True,
        "parameters": {"max_tokens": 1, "temperature": 0},
    }
    speeds = []
    for _ in range(rounds):
        request = urllib.request.Request(
            f"http://{http}/v2/models/{model}/generate",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
        took = time.perf_counter() - started
        speeds.append(float(answer["num_input_tokens"]) / took)
    return round(float(np.median(speeds)), 1)
