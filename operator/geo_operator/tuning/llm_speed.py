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
from collections.abc import Sequence

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
