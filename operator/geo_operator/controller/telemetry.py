"""The operator's own Prometheus metrics: what the autoscaling loop saw and did.

Updated by `controller.autoscaler`; served by `geo run --metrics-port` (the chart's
Service and optional ServiceMonitor point at it). Labels are per
GeoDeployment; the registry is prometheus_client's default one.

Besides what the loop saw and did, each GeoDeployment's objective, its replica bound
and its status conditions are exported (`Descriptions`, which the autoscaler holds:
the process state of which condition series are exported lives there, not in this
module), so that alerting rules can follow each one's own SLO and state
(`builders.alerts`, `geo alerts`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable

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
OBJECTIVE_P99 = Gauge(
    "geo_objective_p99_milliseconds",
    "The GeoDeployment's p99 latency objective (objectives.p99LatencyMs, or its default).",
    _LABELS,
)
MAX_REPLICAS = Gauge(
    "geo_autoscaler_max_replicas",
    "autoscaling.maxReplicas (absent: autoscaling off).",
    _LABELS,
)
CONDITION = Gauge(
    "geo_geodeployment_condition",
    "1 per status condition, labelled with its current status and reason.",
    [*_LABELS, "type", "status", "reason"],
)
METRIC_ERRORS = Counter(
    "geo_autoscaler_metric_errors",
    "Ticks whose metrics were missing, stale or partial.",
    _LABELS,
)
RECONCILES = Counter(
    "geo_reconciles",
    "Reconciles of each GeoDeployment, by outcome: ok, or failed (retried with back-off).",
    (*_LABELS, "outcome"),
)
RECONCILE_OUTCOMES = ("ok", "failed")
# Why reconciles were asked for, all objects together (a label per object would multiply
# the series by the causes): change (created, edited, a rollout action, a resume),
# deployment, pod (a fetch failed), child-deleted, tuning-job, requeue (a retry's time).
# ``coalesced`` counts the asks that came while the object's reconcile ran, served by
# one more run after it (however many came).
RECONCILE_CAUSES = Counter(
    "geo_reconcile_causes",
    "Reconciles asked for, by cause; coalesced: asked while one ran, served by one rerun.",
    ("cause",),
)
# What the watches bring in: GEO's own children, or (only with the server-side selectors
# off) the neighbours' objects the client-side filters then drop (e2e/bench_neighbours.py).
WATCH_EVENTS = Counter(
    "geo_watch_events",
    "Watch events the operator received, by resource and whose object: geo, or other.",
    ("resource", "owner"),
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


class Descriptions:
    """Each GeoDeployment's objective, replica bound and conditions on /metrics, and the
    conditions exported now: a flip removes the old series, so each condition has one.
    The autoscaler holds one (its steps run on worker threads, hence the lock)."""

    def __init__(self) -> None:
        # (namespace, name) -> {condition type: (status, reason)} exported now.
        self._conditions: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}
        self._lock = threading.Lock()

    def describe(
        self,
        namespace: str,
        name: str,
        objective_p99_ms: float,
        max_replicas: int | None,
        conditions: Iterable[tuple[str, str, str]],
    ) -> None:
        """Export one GeoDeployment's objective, replica bound and conditions
        (type, status, reason), replacing what was exported for it before."""
        OBJECTIVE_P99.labels(namespace, name).set(objective_p99_ms)
        if max_replicas is None:
            with contextlib.suppress(KeyError):
                MAX_REPLICAS.remove(namespace, name)
        else:
            MAX_REPLICAS.labels(namespace, name).set(max_replicas)
        now = {type_: (status, reason) for type_, status, reason in conditions}
        with self._lock:
            before = self._conditions.get((namespace, name), {})
            for type_, old in before.items():
                if now.get(type_) != old:
                    with contextlib.suppress(KeyError):
                        CONDITION.remove(namespace, name, type_, *old)
            for type_, (status, reason) in now.items():
                CONDITION.labels(namespace, name, type_, status, reason).set(1)
            self._conditions[(namespace, name)] = now

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted GeoDeployment's series, its conditions' included."""
        with self._lock:
            before = self._conditions.pop((namespace, name), {})
        for type_, old in before.items():
            with contextlib.suppress(KeyError):
                CONDITION.remove(namespace, name, type_, *old)
        forget(namespace, name)


def forget(namespace: str, name: str) -> None:
    """Drop a deleted GeoDeployment's series but its conditions' (`Descriptions.forget`
    drops those too)."""
    for gauge in (
        OBJECTIVE_P99,
        MAX_REPLICAS,
        OBSERVED_QPS,
        OBSERVED_P99,
        OBSERVED_REJECTED,
        CACHE_HIT_RATIO,
        DESIRED_REPLICAS,
        TARGET_QPS,
    ):
        with contextlib.suppress(KeyError):  # never observed
            gauge.remove(namespace, name)
    for outcome in RECONCILE_OUTCOMES:
        with contextlib.suppress(KeyError):
            RECONCILES.remove(namespace, name, outcome)
