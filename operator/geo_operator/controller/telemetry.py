"""The operator's own Prometheus metrics: what the autoscaling loop saw and did.

Updated by `controller.autoscaler`; served by `geo run --metrics-port` (the chart's
Service and optional ServiceMonitor point at it). Labels are per
GeoDeployment; the registry is prometheus_client's default one.
"""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

_LABELS = ("namespace", "geodeployment")

DECISIONS = Counter(
    "geo_autoscaler_decisions",
    "Autoscaling decisions, by action.",
    [*_LABELS, "action"],
)
OBSERVED_QPS = Gauge("geo_autoscaler_observed_qps", "Requests per second, all ready pods.", _LABELS)
OBSERVED_P99 = Gauge("geo_autoscaler_observed_p99_milliseconds", "Worst ready pod's p99.", _LABELS)
DESIRED_REPLICAS = Gauge("geo_autoscaler_desired_replicas", "Replicas decided.", _LABELS)
TARGET_QPS = Gauge(
    "geo_autoscaler_target_qps_per_replica",
    "Effective target QPS per replica (declared, measured or learned; absent: unknown).",
    _LABELS,
)
OBSERVED_REJECTED = Gauge(
    "geo_autoscaler_observed_rejected_qps",
    "Requests per second Triton refused after their queue timeout (counted as demand).",
    _LABELS,
)
CACHE_HIT_RATIO = Gauge(
    "geo_autoscaler_cache_hit_ratio",
    "Response-cache hits per lookup over the ready pods (absent: no cache).",
    _LABELS,
)
METRIC_ERRORS = Counter(
    "geo_autoscaler_metric_errors",
    "Ticks whose metrics were missing, stale or partial.",
    _LABELS,
)
_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LOOP_SECONDS = Histogram(
    "geo_autoscaler_tick_seconds",
    "Duration of one loop tick: finding the due GeoDeployments and handing out their steps.",
    buckets=_BUCKETS,
)
STEP_SECONDS = Histogram(
    "geo_autoscaler_step_seconds", "Duration of one GeoDeployment's step.", buckets=_BUCKETS
)


def forget(namespace: str, name: str) -> None:
    """Drop a deleted GeoDeployment's series."""
    for gauge in (
        OBSERVED_QPS,
        OBSERVED_P99,
        OBSERVED_REJECTED,
        CACHE_HIT_RATIO,
        DESIRED_REPLICAS,
        TARGET_QPS,
    ):
        with contextlib.suppress(KeyError):  # never observed
            gauge.remove(namespace, name)
