"""Triton's Prometheus metrics: parse one pod's scrape, turn two scrapes into rates.

The autoscaler's direct-scrape source reads each ready pod's `:8002/metrics`
(Triton started with `--metrics-config summary_latencies=true`) and calls
`parse()`; `rates()` derives QPS and average latency from two successive
scrapes of the same pod, the way Knative's autoscaler and AIBrix read pods
directly. `aggregate()` combines pods: QPS adds up; p99 is the worst pod's,
because quantiles cannot be averaged and the clients of the slowest pod see its
p99 — scaling on it is the conservative reading of the SLO.

Parsing uses prometheus_client's exposition-format parser, not regular
expressions. A missing counter is "missing", never zero.

Levers (measured on Triton 2.51, the nvidia-pytriton wheel's): a request refused
because it waited past its queue's timeout is counted in
`nv_inference_request_failure{reason="REJECTED"}`; `rates()` reports it as
`rejected_qps`, which the autoscaler adds to demand. A request refused because the
queue was full (`max_queue_size`) is counted nowhere, so the pending gauge at the
queue's bound is the only sign of it (see `scaling.policy`). With the response cache
on, Triton publishes no `nv_inference_request_summary_us` at all; the p99 is then the
sum of the queue and compute stages' p99s (`STAGES`), an upper bound of the request's
p99 in practice (each stage's worst requests are not all the same ones), and the
cache's hits and misses are counted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from prometheus_client.parser import text_string_to_metric_families

_COUNTERS = {
    "nv_inference_request_success": "success",
    "nv_inference_count": "inferences",
    "nv_inference_exec_count": "executions",
    "nv_inference_request_duration_us": "request_us",
    "nv_inference_queue_duration_us": "queue_us",
}
_P99 = "nv_inference_request_summary_us"
# A request's stages, each a summary: their p99s add up to the p99 when _P99 is absent.
STAGES = (
    "nv_inference_queue_summary_us",
    "nv_inference_compute_input_summary_us",
    "nv_inference_compute_infer_summary_us",
    "nv_inference_compute_output_summary_us",
)
_CACHE = {"nv_cache_num_hits_per_model": "hits", "nv_cache_num_misses_per_model": "misses"}
REJECTED = "REJECTED"  # the failure reason of a request refused after its queue timeout
_PENDING = "nv_inference_pending_request_count"  # gauge: requests queued, not yet executing
_FAILURE = "nv_inference_request_failure"  # counter, by reason: the canary's error rate


@dataclasses.dataclass(frozen=True)
class Scrape:
    """One pod's counters (summed over model versions) at one moment."""

    time: float
    success: float
    inferences: float
    executions: float
    request_us: float
    queue_us: float
    p99_us: float | None  # None when Triton has no summary (summary_latencies off)
    pending: float | None = None  # queued requests; None when this Triton has no such gauge
    failure: float | None = None  # failed requests, every reason; None: no such counter
    rejected: float | None = None  # of those, refused after a queue timeout (REJECTED)
    cache_hits: float | None = None  # None: no response cache
    cache_misses: float | None = None


@dataclasses.dataclass(frozen=True)
class PodRates:
    """What one pod did between two scrapes."""

    qps: float  # successful requests per second
    items_per_second: float  # inferences (batch items) per second
    avg_latency_ms: float | None  # request duration / requests, None when idle
    avg_queue_ms: float | None
    avg_batch: float | None  # inferences / executions, None when idle
    p99_ms: float | None
    pending: float | None = None  # queued requests at the later scrape
    rejected_qps: float = 0.0  # requests refused after a queue timeout, per second
    cache_hit_ratio: float | None = None  # hits / lookups between the scrapes; None: no cache
    cache_lookups: float = 0.0  # cache lookups (hits + misses) per second


class MetricsError(ValueError):
    """The text isn't Triton metrics for that model (named in the message)."""


def parse(text: str, model: str, time: float) -> Scrape:
    """Parse Triton's /metrics text for one model."""
    totals: dict[str, float] = {}
    p99: float | None = None
    stages: dict[str, float] = {}
    cache: dict[str, float] = {}
    pending: float | None = None
    failure: float | None = None
    rejected: float | None = None
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as error:
        raise MetricsError(f"unparseable metrics: {error}") from error
    for family in families:
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            # The parser names counter samples `<family>_total`; Triton's don't carry it.
            name = sample.name.removesuffix("_total")
            if name == _PENDING:
                pending = (pending or 0.0) + sample.value
            elif name == _FAILURE:
                failure = (failure or 0.0) + sample.value
                if sample.labels.get("reason") == REJECTED:
                    rejected = (rejected or 0.0) + sample.value
            elif name in _CACHE:
                cache[_CACHE[name]] = cache.get(_CACHE[name], 0.0) + sample.value
            elif name in _COUNTERS:
                key = _COUNTERS[name]
                totals[key] = totals.get(key, 0.0) + sample.value
            elif (
                name == _P99
                and sample.labels.get("quantile") == "0.99"
                # NaN when the summary window has no observation: that is "idle", not 0.
                and sample.value == sample.value
            ):
                p99 = max(p99 or 0.0, sample.value)
            elif (
                name in STAGES
                and sample.labels.get("quantile") == "0.99"
                and sample.value == sample.value
            ):
                stages[name] = max(stages.get(name, 0.0), sample.value)
    if p99 is None and stages:
        p99 = sum(stages.values())  # the cache is on: no request summary (module docstring)
    missing = [name for name, key in _COUNTERS.items() if key not in totals]
    if missing:
        raise MetricsError(f"model {model!r} has no {', '.join(missing)} in the scrape")
    return Scrape(
        time=time,
        p99_us=p99,
        pending=pending,
        failure=failure,
        rejected=rejected,
        cache_hits=cache.get("hits"),
        cache_misses=cache.get("misses"),
        **totals,
    )


def rates(before: Scrape, after: Scrape) -> PodRates | None:
    """Rates between two scrapes; None when they can't be compared (restart, same time)."""
    elapsed = after.time - before.time
    if elapsed <= 0 or after.success < before.success:
        return None  # counters went backwards: the server restarted
    requests = after.success - before.success
    executions = after.executions - before.executions
    inferences = after.inferences - before.inferences
    return PodRates(
        qps=requests / elapsed,
        items_per_second=inferences / elapsed,
        avg_latency_ms=(after.request_us - before.request_us) / requests / 1000
        if requests
        else None,
        avg_queue_ms=(after.queue_us - before.queue_us) / requests / 1000 if requests else None,
        avg_batch=inferences / executions if executions else None,
        p99_ms=after.p99_us / 1000 if after.p99_us is not None else None,
        pending=after.pending,
        rejected_qps=max(0.0, _delta(before.rejected, after.rejected)) / elapsed,
        cache_hit_ratio=_ratio(
            _delta(before.cache_hits, after.cache_hits),
            _delta(before.cache_misses, after.cache_misses),
            after.cache_hits is not None,
        ),
        cache_lookups=(
            _delta(before.cache_hits, after.cache_hits)
            + _delta(before.cache_misses, after.cache_misses)
        )
        / elapsed,
    )


def _delta(before: float | None, after: float | None) -> float:
    return (after or 0.0) - (before or 0.0)


def _weighted(pairs: Sequence[tuple[float, float]]) -> float | None:
    """The mean of the values weighted by the weights; None when they weigh nothing."""
    weight = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / weight if weight else None


def _ratio(hits: float, misses: float, cached: bool) -> float | None:
    return hits / (hits + misses) if cached and hits + misses > 0 else None


@dataclasses.dataclass(frozen=True)
class Aggregate:
    """A GeoDeployment's load over its ready pods."""

    pods: int
    qps: float
    p99_ms: float | None
    avg_latency_ms: float | None
    avg_batch: float | None
    queued: float | None = None  # summed over pods; None if any pod lacks the gauge
    rejected_qps: float = 0.0  # refused after a queue timeout: demand not served
    cache_hit_ratio: float | None = None  # hits per lookup over the pods; None: no cache


def aggregate(pods: Sequence[PodRates]) -> Aggregate:
    """Sum the load; take the worst p99 (see the module docstring)."""
    qps = sum(p.qps for p in pods)
    p99s = [p.p99_ms for p in pods if p.p99_ms is not None]
    weighted = [(p.avg_latency_ms, p.qps) for p in pods if p.avg_latency_ms is not None]
    batches = [(p.avg_batch, p.items_per_second) for p in pods if p.avg_batch is not None]
    pending = [p.pending for p in pods]
    return Aggregate(
        queued=None if any(q is None for q in pending) else sum(q or 0.0 for q in pending),
        rejected_qps=sum(p.rejected_qps for p in pods),
        cache_hit_ratio=_weighted(
            [(p.cache_hit_ratio, p.cache_lookups) for p in pods if p.cache_hit_ratio is not None]
        ),
        pods=len(pods),
        qps=qps,
        p99_ms=max(p99s) if p99s else None,
        avg_latency_ms=sum(v * w for v, w in weighted) / qps if weighted and qps else None,
        avg_batch=_weighted(batches),
    )
