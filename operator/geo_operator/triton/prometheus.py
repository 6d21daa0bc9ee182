"""Triton's load as Prometheus sees it: one set of queries per tick for all GeoDeployments.

Called by the autoscaling loop for GeoDeployments whose metrics source is
`prometheus`. Each query groups by the `namespace` and `geodeployment` labels,
so a thousand GeoDeployments cost the same four queries as one. Prometheus
must attach those labels to Triton's series — with Kubernetes pod discovery,
relabel `__meta_kubernetes_namespace` to `namespace`,
`__meta_kubernetes_pod_label_geo_ai_geodeployment` to `geodeployment` and
`__meta_kubernetes_pod_label_geo_ai_track` to `track` (the e2e runner's file-based
discovery sets them directly).

- QPS: `rate(nv_inference_request_success[<rateWindowSeconds>s])` summed over the pods
  (both tracks of a rollout: the load is the load);
- p99: the worst pod's `nv_inference_request_summary_us{quantile="0.99"}` (with the
  response cache on Triton has no such summary: then the worst pod's sum of its queue
  and compute stages' p99s, as `triton.metrics` does)
  (quantiles can't be averaged), of the stable track only (`track!="canary"`; series
  with no track label count as stable): a slow canary is the rollout's to judge, not
  the autoscaler's;
- queued: `nv_inference_pending_request_count` summed over the pods (the
  backlog the policy adds to the demand);
- rejected: `rate(nv_inference_request_failure{reason="REJECTED"}[...])` summed: requests
  refused after their queue timeout, which the policy counts as demand;
- cache: hits / (hits + misses) of `nv_cache_num_{hits,misses}_per_model` rates, shown
  in the decision's figures and the operator's metrics;
- pods: how many Triton targets are up, to tell complete data from partial.

`track_figures` answers the canary analysis for one GeoDeployment: per track, the
requests (`increase` of success + failure) and failures over the analysis window,
and the worst pod's p99.
"""

from __future__ import annotations

import dataclasses
import math

from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from geo_operator.triton import llm_metrics, promql

Key = tuple[str, str]

QPS_QUERY = promql.QPS_QUERY
P99_QUERY = promql.P99_QUERY
CACHE_QUERY = promql.CACHE_QUERY
REJECTED_QUERY = promql.REJECTED_QUERY
PENDING_QUERY = promql.PENDING_QUERY
UP_QUERY = promql.UP_QUERY


class PrometheusError(RuntimeError):
    """Prometheus couldn't be asked (unreachable, error answer); the message says which."""


@dataclasses.dataclass(frozen=True)
class Load:
    qps: float | None
    p99_ms: float | None  # None: no requests in the summary window (idle), or no series
    pods_up: int
    queued: float | None = None  # requests waiting in the pods' queues
    rejected_qps: float | None = None  # refused after a queue timeout, per second
    cache_hit_ratio: float | None = None  # response-cache hits per lookup; None: no cache


def _finite(result: list[dict[str, object]]) -> list[tuple[dict[str, object], float]]:
    """Each series' labels and value; a value that is not a finite number (NaN, +Inf,
    garbage) is left out: it is missing data, never a load."""
    out: list[tuple[dict[str, object], float]] = []
    for series in result:
        labels = series.get("metric") or {}
        value = series.get("value") or [0, "nan"]
        if not isinstance(labels, dict) or not isinstance(value, list) or len(value) < 2:
            continue
        try:
            number = float(value[1])
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out.append((labels, number))
    return out


def _by_key(result: list[dict[str, object]]) -> dict[Key, float]:
    """Values by (namespace, geodeployment), finite ones only."""
    return {
        (str(labels.get("namespace", "")), str(labels.get("geodeployment", ""))): number
        for labels, number in _finite(result)
    }


def loads(
    qps: dict[Key, float],
    p99_us: dict[Key, float],
    up: dict[Key, float],
    pending: dict[Key, float],
    rejected: dict[Key, float] | None = None,
    cache: dict[Key, float] | None = None,
) -> dict[Key, Load]:
    """One Load per GeoDeployment from the answers (finite values only)."""
    out: dict[Key, Load] = {}
    for key in set(qps) | set(p99_us) | set(up):
        p = p99_us.get(key)
        out[key] = Load(
            qps=qps.get(key),
            p99_ms=p / 1000 if p is not None else None,
            pods_up=int(up.get(key, 0)),
            queued=pending.get(key),
            rejected_qps=(rejected or {}).get(key),
            cache_hit_ratio=(cache or {}).get(key),
        )
    return out


def query_all(url: str, window_seconds: int = 60, timeout: float = 5.0) -> dict[Key, Load]:
    """The load of every GeoDeployment Prometheus knows about."""
    try:
        # No retries: the loop asks again next tick, and a blocked tick delays every object.
        client = PrometheusConnect(url=url, disable_ssl=True, timeout=timeout, retry=Retry(total=0))
        qps = _by_key(client.custom_query(QPS_QUERY.format(window=window_seconds)))
        p99 = _by_key(client.custom_query(P99_QUERY))
        up = _by_key(client.custom_query(UP_QUERY))
        pending = _by_key(client.custom_query(PENDING_QUERY))
        rejected = _by_key(client.custom_query(REJECTED_QUERY.format(window=window_seconds)))
        cache = _by_key(client.custom_query(CACHE_QUERY.format(window=window_seconds)))
    except Exception as error:  # the client raises requests' and its own errors alike
        raise PrometheusError(f"Prometheus at {url}: {type(error).__name__}: {error}") from error
    return loads(qps, p99, up, pending, rejected, cache)


# The canary analysis: one GeoDeployment, by track, over the window (seconds).
_SELECT = 'namespace="{namespace}",geodeployment="{name}"'
TRACK_SUCCESS_QUERY = (
    "sum by (track) (increase(nv_inference_request_success{{" + _SELECT + "}}[{window}s]))"
)
TRACK_FAILURE_QUERY = (
    "sum by (track) (increase(nv_inference_request_failure{{" + _SELECT + "}}[{window}s]))"
)
# A generative engine's latency histograms, their buckets' increase by track: the p99 and
# the observations are taken from them as the direct source does (`llm_metrics.observed`).
TRACK_HISTOGRAM_QUERY = (
    "sum by (track, le) (increase({metric}_bucket{{" + _SELECT + "}}[{window}s]))"
)


@dataclasses.dataclass(frozen=True)
class TrackLoad:
    """What one track served over the window, as Prometheus saw it."""

    requests: int
    errors: int
    p99_ms: float | None
    # A generative engine's (None: not asked, or it exports no such histogram).
    first_tokens: int | None = None
    ttft_p99_ms: float | None = None
    tokens: int | None = None
    itl_p99_ms: float | None = None


def _by_track(result: list[dict[str, object]], combine: str = "sum") -> dict[str, float]:
    """Values by track (no label: stable; ``combine`` "sum" or "max" when both occur),
    finite ones only."""
    out: dict[str, float] = {}
    for labels, number in _finite(result):
        track = str(labels.get("track") or "stable")
        if track not in out:
            out[track] = number
        else:
            out[track] = out[track] + number if combine == "sum" else max(out[track], number)
    return out


def tracks(
    success: dict[str, float], failure: dict[str, float], p99_us: dict[str, float]
) -> dict[str, TrackLoad]:
    """One TrackLoad per track from the three answers (rounded to whole requests)."""
    out: dict[str, TrackLoad] = {}
    for track in ("stable", "canary"):
        errors = round(failure.get(track, 0.0))
        requests = round(success.get(track, 0.0)) + errors
        p99 = p99_us.get(track)
        out[track] = TrackLoad(
            requests, errors, p99 / 1000 if p99 is not None and requests else None
        )
    return out


def track_figures(
    url: str,
    namespace: str,
    name: str,
    window_seconds: int,
    timeout: float = 5.0,
    generative: bool = False,
) -> dict[str, TrackLoad]:
    """Each track's requests, errors and p99 for one GeoDeployment over the last
    ``window_seconds`` (Prometheus' `increase`, extrapolated to the window's edges); a
    generative engine's time to first token and inter-token p99 too."""
    where = {"namespace": namespace, "name": name, "window": max(1, window_seconds)}
    histograms: dict[str, dict[str, dict[float, float]]] = {}
    try:
        client = PrometheusConnect(url=url, disable_ssl=True, timeout=timeout, retry=Retry(total=0))
        success = _by_track(client.custom_query(TRACK_SUCCESS_QUERY.format(**where)))
        failure = _by_track(client.custom_query(TRACK_FAILURE_QUERY.format(**where)))
        p99_query = promql.p99("track", _SELECT.format(**where))
        p99 = _by_track(client.custom_query(p99_query), "max")
        for metric in (llm_metrics.TTFT, llm_metrics.TPOT) if generative else ():
            query = TRACK_HISTOGRAM_QUERY.format(metric=metric, **where)
            histograms[metric] = _buckets_by_track(client.custom_query(query))
    except Exception as error:  # the client raises requests' and its own errors alike
        raise PrometheusError(f"Prometheus at {url}: {type(error).__name__}: {error}") from error
    found = tracks(success, failure, p99)
    if not generative:
        return found
    out = {}
    for track, load in found.items():
        first, ttft = llm_metrics.observed(histograms[llm_metrics.TTFT].get(track))
        gaps, itl = llm_metrics.observed(histograms[llm_metrics.TPOT].get(track))
        out[track] = dataclasses.replace(
            load, first_tokens=first, ttft_p99_ms=ttft, tokens=gaps, itl_p99_ms=itl
        )
    return out


def _buckets_by_track(result: list[dict[str, object]]) -> dict[str, dict[float, float]]:
    """{track: {le: count}} from a ``sum by (track, le)`` answer (no track: stable)."""
    out: dict[str, dict[float, float]] = {}
    for labels, number in _finite(result):
        track = str(labels.get("track") or "stable")
        le = str(labels.get("le", "+Inf"))
        bound = math.inf if le in ("+Inf", "inf") else float(le)
        bucket = out.setdefault(track, {})
        bucket[bound] = bucket.get(bound, 0.0) + number
    return out
