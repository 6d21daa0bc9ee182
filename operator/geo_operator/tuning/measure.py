"""Measure one batching configuration on a live Triton: load it, drive load, read the figures.

Called by ``geo tune`` (through `tuning.search`) and by ``e2e/bench_tune.py``.
For a `search.Config` the `Measurer`:

1. loads the model through Triton's model-repository API with a config override
   (``load_model(name, config=...)``: the model's current config with
   ``max_batch_size`` and ``dynamic_batching`` replaced) — Triton must run with
   ``--model-control-mode=explicit``; nothing restarts;
2. drives closed-loop load at rising concurrency (each in-flight slot sends one
   1-item request after the other) with tritonclient's asyncio client for a
   fixed duration per level, recording completed requests/s and client-side
   p50/p99;
3. reads Triton's statistics before and after each level: the inference count
   delta must equal the requests the client completed (a cross-check that the
   figures describe this load; Triton may count the last response a moment after
   sending it, so the counts are re-read until stable, for up to 2 s, and one late
   count of the previous level is tolerated), and inferences / executions is the
   average batch the dynamic batcher formed.

The result of a configuration is its best throughput among the levels whose p99
stays within the latency budget. Levels stop at the first one over budget:
more in-flight requests only queue longer, and skipping them keeps a sweep short.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient

from geo_operator.tuning.search import Config

DEFAULT_CONCURRENCY = (1, 4, 16, 32)

# Triton config data types -> (tritonclient datatype, numpy dtype) for synthetic inputs.
# Triton data type -> (the wire type, the numpy dtype); also the held-out evaluator's.
DTYPES: dict[str, tuple[str, type[np.generic]]] = {
    "TYPE_FP32": ("FP32", np.float32),
    "TYPE_FP16": ("FP16", np.float16),
    "TYPE_FP64": ("FP64", np.float64),
    "TYPE_INT8": ("INT8", np.int8),
    "TYPE_INT32": ("INT32", np.int32),
    "TYPE_INT64": ("INT64", np.int64),
    "TYPE_UINT8": ("UINT8", np.uint8),
}


class MeasureError(RuntimeError):
    """Triton refused the configuration, or its statistics contradict the client's count."""


@dataclasses.dataclass(frozen=True)
class Level:
    """One concurrency level of one configuration."""

    concurrency: int
    requests: int  # completed by the client (1 item each)
    seconds: float
    throughput: float  # completed requests per second
    p50_ms: float
    p99_ms: float
    avg_batch: float  # Triton's inference_count / execution_count deltas
    within_budget: bool


@dataclasses.dataclass(frozen=True)
class Result:
    """A configuration's levels and the best level within the budget (None: none fits)."""

    config: Config
    levels: tuple[Level, ...]
    best: Level | None
    loaded_max_batch_size: int  # what get_model_config reported after the load

    @property
    def within_budget(self) -> bool:
        return self.best is not None

    @property
    def throughput(self) -> float:
        return self.best.throughput if self.best is not None else 0.0


def override(current: dict[str, Any], config: Config) -> dict[str, Any]:
    """The model's current config with the batching part replaced by ``config``."""
    cfg = copy.deepcopy(current)
    cfg["max_batch_size"] = config.max_batch_size
    old = cfg.pop("dynamic_batching", None) or {}
    if config.max_queue_delay_us is not None:
        batching: dict[str, Any] = {"max_queue_delay_microseconds": config.max_queue_delay_us}
        # Preferred sizes above the new max_batch_size would make Triton refuse the config.
        preferred = [int(p) for p in old.get("preferred_batch_size", [])]
        kept = [p for p in preferred if p <= config.max_batch_size]
        if kept:
            batching["preferred_batch_size"] = kept
        cfg["dynamic_batching"] = batching
    return cfg


def _percentile(sorted_ms: Sequence[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    # Nearest rank: with a few hundred samples, interpolation adds nothing.
    rank = max(0, min(len(sorted_ms) - 1, int(np.ceil(q * len(sorted_ms))) - 1))
    return float(sorted_ms[rank])


def _counts(stats: dict[str, Any], model: str) -> tuple[int, int]:
    for s in stats.get("model_stats", []):
        if s.get("name") == model:
            return int(s.get("inference_count", 0)), int(s.get("execution_count", 0))
    raise MeasureError(f"Triton's statistics have no model {model!r}")


class Measurer:
    """Measures configurations of one model on one Triton (explicit model control)."""

    def __init__(
        self,
        url: str,
        model: str,
        latency_budget_ms: float,
        *,
        concurrency: Sequence[int] = DEFAULT_CONCURRENCY,
        seconds: float = 3.0,
        warmup_seconds: float = 0.3,
        seed: int = 0,
    ) -> None:
        if latency_budget_ms <= 0 or seconds <= 0:
            raise ValueError("latency budget and duration must be positive")
        self.url = url
        self.model = model
        self.budget_ms = latency_budget_ms
        self.concurrency = tuple(sorted(set(concurrency)))
        self.seconds = seconds
        self.warmup_seconds = warmup_seconds
        self._client = httpclient.InferenceServerClient(url)
        # The config before tuning: every override starts from it, never from a tuned one.
        self.original: dict[str, Any] = self._client.get_model_config(model)
        self._inputs: list[np.ndarray[Any, Any]] = self._make_inputs(
            self.original, np.random.default_rng(seed)
        )

    def close(self) -> None:
        self._client.close()

    @staticmethod
    def _make_inputs(
        config: dict[str, Any], rng: np.random.Generator
    ) -> list[np.ndarray[Any, Any]]:
        arrays = []
        for spec in config.get("input", []):
            dtype = DTYPES.get(spec["data_type"])
            if dtype is None:
                raise MeasureError(f"input {spec['name']}: {spec['data_type']} is not supported")
            dims = [int(d) for d in spec["dims"]]
            if any(d < 0 for d in dims):
                raise MeasureError(f"input {spec['name']} has variable dims {dims}")
            arrays.append(rng.standard_normal([1, *dims]).astype(dtype[1]))
        return arrays

    def load(self, config: Config) -> int:
        """Load ``config`` into Triton; return the max_batch_size Triton reports afterwards."""
        cfg = override(self.original, config)
        try:
            self._client.load_model(self.model, config=json.dumps(cfg))
        except Exception as error:  # tritonclient raises its own InferenceServerException
            raise MeasureError(f"Triton refused {config.describe()}: {error}") from error
        loaded = int(self._client.get_model_config(self.model).get("max_batch_size", 0))
        if loaded != config.max_batch_size:
            raise MeasureError(f"loaded {config.describe()} but Triton reports mbs={loaded}")
        return loaded

    def measure(self, config: Config) -> Result:
        loaded = self.load(config)
        levels = asyncio.run(self._levels())
        fitting = [lv for lv in levels if lv.within_budget]
        best = max(fitting, key=lambda lv: lv.throughput) if fitting else None
        return Result(config=config, levels=tuple(levels), best=best, loaded_max_batch_size=loaded)

    def _request(self) -> list[aioclient.InferInput]:
        inputs = []
        for spec, array in zip(self.original["input"], self._inputs, strict=True):
            tensor = aioclient.InferInput(
                spec["name"], list(array.shape), DTYPES[spec["data_type"]][0]
            )
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return inputs

    async def _levels(self) -> list[Level]:
        client = aioclient.InferenceServerClient(self.url, conn_limit=max(self.concurrency) + 4)
        try:
            inputs = self._request()
            if self.warmup_seconds > 0:
                # The first requests after a load pay for the python stub's start-up.
                await self._drive(client, inputs, self.concurrency[0], self.warmup_seconds)
            levels = []
            for n in self.concurrency:
                level = await self._level(client, inputs, n)
                levels.append(level)
                if not level.within_budget:
                    break
            return levels
        finally:
            await client.close()

    async def _drive(
        self, client: aioclient.InferenceServerClient, inputs: list[Any], n: int, seconds: float
    ) -> tuple[list[float], float]:
        latencies: list[float] = []
        clock: Callable[[], float] = time.perf_counter
        start = clock()
        deadline = start + seconds

        async def slot() -> None:
            while clock() < deadline:
                t0 = clock()
                await client.infer(self.model, inputs)
                latencies.append((clock() - t0) * 1000.0)

        await asyncio.gather(*(slot() for _ in range(n)))
        return latencies, clock() - start

    async def _level(
        self, client: aioclient.InferenceServerClient, inputs: list[Any], n: int
    ) -> Level:
        before = _counts(await client.get_inference_statistics(self.model), self.model)
        latencies, elapsed = await self._drive(client, inputs, n, self.seconds)
        # Every request was awaited before this read, so the counts must agree — but
        # Triton updates its statistics just after sending a response (seen here: one
        # request short now and then), and counts the execution apart from the
        # requests, so read until the count is complete and two reads agree.
        settle = time.monotonic() + 2.0
        previous = None
        while True:
            after = _counts(await client.get_inference_statistics(self.model), self.model)
            complete = after[0] - before[0] >= len(latencies)
            if (complete and after == previous) or time.monotonic() > settle:
                break
            previous = after
            await asyncio.sleep(0.02)
        inferences, executions = after[0] - before[0], after[1] - before[1]
        # One extra is tolerated: a count the previous level's reads just missed
        # lands in this level's delta (seen once in a 60-configuration benchmark).
        if not len(latencies) <= inferences <= len(latencies) + 1:
            raise MeasureError(
                f"client completed {len(latencies)} requests but Triton counted {inferences}"
            )
        latencies.sort()
        p99 = _percentile(latencies, 0.99)
        return Level(
            concurrency=n,
            requests=len(latencies),
            seconds=elapsed,
            throughput=len(latencies) / elapsed,
            p50_ms=_percentile(latencies, 0.50),
            p99_ms=p99,
            avg_batch=inferences / executions if executions else 0.0,
            within_budget=p99 <= self.budget_ms,
        )
