"""The autoscaling loop: observe each GeoDeployment's Triton pods, decide, act, record.

One `Autoscaler` per operator process. kopf's watch handlers keep its view of
GeoDeployments and their pods current (`upsert_*` / `remove_*`, no extra API
calls); a background thread calls `tick()` about once a second, and every
GeoDeployment whose `autoscaling.intervalSeconds` has elapsed gets one step:

1. observe — direct scrape: GET each ready pod's Triton metrics (the
   `geo.ai/metrics-url` pod annotation when set, else `http://<podIP>:8002/metrics`),
   rates from the previous scrape of the same pod, summed QPS, worst p99;
2. decide — `policy.decide`, the same pure function `geo decide` runs;
3. act — set the Deployment's replicas through the cluster seam;
4. record — `lastDecision` and a short history in status, conditions
   `ScalingActive` and `MetricsAvailable`, an Event on every scale_out / scale_in
   and when metrics go missing.

Anything partial is missing: a ready pod that can't be scraped, a pod seen for
the first time (no rate yet), a counter that went backwards. Missing means
maintain.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from geo_operator.api import conditions, models
from geo_operator.api import status as status_io
from geo_operator.scaling import policy, telemetry
from geo_operator.triton import metrics, prometheus

log = logging.getLogger(__name__)

METRICS_URL_ANNOTATION = f"{models.GROUP}/metrics-url"
OWNER_LABEL = f"{models.GROUP}/geodeployment"
METRICS_PORT = 8002
HISTORY = 10
SCRAPE_TIMEOUT = 2.0

Key = tuple[str, str]  # (namespace, name)
Fetch = Callable[[str], str]
Query = Callable[[str, int], dict[Key, prometheus.Load]]
# What one tick learned from each (Prometheus, rate window): the loads, or why there are none.
Answers = dict[tuple[str, int], dict[Key, prometheus.Load] | str]


class Cluster(Protocol):
    """The cluster seam the loop acts through (k8s.client.KubeClient is one)."""

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> None: ...

    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None
    ) -> None: ...

    def event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None: ...


def http_fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as response:
        return str(response.read().decode())


@dataclasses.dataclass
class _State:
    memory: policy.Memory = dataclasses.field(default_factory=policy.Memory)
    last_step: float | None = None
    scrapes: dict[str, metrics.Scrape] = dataclasses.field(default_factory=dict)


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    if pod.get("metadata", {}).get("deletionTimestamp") or status.get("phase") != "Running":
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def metrics_url(pod: Mapping[str, Any]) -> str | None:
    annotations = pod.get("metadata", {}).get("annotations") or {}
    if annotations.get(METRICS_URL_ANNOTATION):
        return str(annotations[METRICS_URL_ANNOTATION])
    ip = (pod.get("status") or {}).get("podIP")
    return f"http://{ip}:{METRICS_PORT}/metrics" if ip else None


class Autoscaler:
    """The loop's state and steps; thread-safe for kopf's handler threads."""

    def __init__(
        self,
        cluster: Cluster,
        fetch: Fetch = http_fetch,
        clock: Callable[[], float] = time.monotonic,
        query: Query = prometheus.query_all,
    ) -> None:
        self.cluster = cluster
        self.fetch = fetch
        self.query = query
        self.clock = clock
        self._lock = threading.Lock()
        # Each object with its spec parsed once per change (not once per tick).
        self._objects: dict[Key, tuple[dict[str, Any], models.GeoDeploymentSpec | None]] = {}
        self._pods: dict[Key, dict[str, dict[str, Any]]] = {}  # owner -> pod name -> body
        self._state: dict[Key, _State] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="geo-scrape")

    # ---- the view, kept current by kopf's watch handlers

    def upsert_object(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        with self._lock:
            known = self._objects.get(key)
        if known is not None and known[0].get("spec") == body.get("spec"):
            spec = known[1]  # a status-only change: the parsed spec still holds
        else:
            try:
                spec = models.parse_spec(body.get("spec") or {})
            except ValueError:
                spec = None  # the reconcile reports invalid specs
        with self._lock:
            self._objects[key] = (dict(body), spec)

    def remove_object(self, namespace: str, name: str) -> None:
        with self._lock:
            self._objects.pop((namespace, name), None)
            self._state.pop((namespace, name), None)
            self._pods.pop((namespace, name), None)
        telemetry.forget(namespace, name)

    def upsert_pod(self, pod: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        owner = (meta.get("labels") or {}).get(OWNER_LABEL)
        if owner:
            with self._lock:
                self._pods.setdefault((meta["namespace"], owner), {})[meta["name"]] = dict(pod)

    def remove_pod(self, pod: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        owner = (meta.get("labels") or {}).get(OWNER_LABEL)
        with self._lock:
            self._pods.get((meta["namespace"], owner or ""), {}).pop(meta["name"], None)

    # ---- the loop

    def run(self, stop: threading.Event, period: float = 1.0) -> None:
        log.info("autoscaling loop started")
        while not stop.wait(period):
            try:
                self.tick()
            except Exception:  # the loop must outlive any one bad step
                log.exception("autoscaling tick failed")
        self._pool.shutdown(wait=False, cancel_futures=True)

    def tick(self) -> None:
        with telemetry.LOOP_SECONDS.time():
            self._tick()

    def _tick(self) -> None:
        now = self.clock()
        with self._lock:
            due = []
            for key, (body, spec) in self._objects.items():
                if spec is None:
                    continue
                state = self._state.setdefault(key, _State())
                if state.last_step is None or now - state.last_step >= (
                    spec.autoscaling.interval_seconds
                ):
                    state.last_step = now
                    due.append((key, body, spec))
        # One round of queries per Prometheus per tick, whatever the number of objects.
        answers: Answers = {}
        for _, _, spec in due:
            source = spec.autoscaling.metrics
            ask = (source.prometheus_url or "", source.rate_window_seconds)
            if source.source is models.MetricsSourceKind.PROMETHEUS and ask not in answers:
                try:
                    answers[ask] = self.query(*ask)
                except prometheus.PrometheusError as error:
                    answers[ask] = str(error)
        for key, body, spec in due:
            try:
                self.step(key, body, spec, now, answers)
            except status_io.Conflict:
                log.debug("%s/%s: status moved on during the step; next tick", *key)

    def observe(
        self,
        key: Key,
        body: Mapping[str, Any],
        spec: models.GeoDeploymentSpec,
        now: float,
        answers: Answers | None = None,
    ) -> policy.Observation:
        """Read the load of the ready pods (scrape or Prometheus) into one Observation."""
        with self._lock:
            pods = list(self._pods.get(key, {}).values())
            state = self._state.setdefault(key, _State())
        deployment_replicas = int((body.get("status") or {}).get("replicas") or 0)
        replicas = max(deployment_replicas, spec.autoscaling.min_replicas)
        ready = [p for p in pods if _pod_ready(p)]

        def obs(
            qps: float | None, p99: float | None, missing: str | None, queued: float | None = None
        ) -> policy.Observation:
            return policy.Observation(now, replicas, len(ready), qps, p99, missing, queued)

        def load(
            qps: float, p99: float | None, no_p99: str, queued: float | None
        ) -> policy.Observation:
            # No request in the summary window: an idle server has no p99. With no
            # traffic at all, a latency of 0 is the truth, not a guess.
            if p99 is None:
                return obs(0.0, 0.0, None, queued) if qps == 0 else obs(None, None, no_p99)
            return obs(qps, p99, None, queued)

        if not ready:
            return obs(None, None, "no ready Triton pod")
        source = spec.autoscaling.metrics
        if source.source is models.MetricsSourceKind.PROMETHEUS:
            ask = (source.prometheus_url or "", source.rate_window_seconds)
            answer = (answers or {}).get(ask, "Prometheus not asked")
            if isinstance(answer, str):
                return obs(None, None, answer)
            answer_load = answer.get(key)
            if answer_load is None:
                return obs(None, None, "Prometheus has no series for this GeoDeployment")
            if answer_load.pods_up < len(ready):
                return obs(
                    None,
                    None,
                    f"Prometheus scrapes {answer_load.pods_up} of {len(ready)} ready pods",
                )
            if answer_load.qps is None:
                return obs(None, None, "Prometheus has no request rate yet")
            return load(
                answer_load.qps,
                answer_load.p99_ms,
                "no p99 summary in Prometheus",
                answer_load.queued,
            )
        urls = {p["metadata"]["name"]: metrics_url(p) for p in ready}
        futures = {name: self._pool.submit(self.fetch, url) for name, url in urls.items() if url}
        per_pod: list[metrics.PodRates] = []
        problems: list[str] = []
        fresh: dict[str, metrics.Scrape] = {}
        for name in urls:
            if name not in futures:
                problems.append(f"{name}: no address")
                continue
            try:
                scrape = metrics.parse(futures[name].result(), spec.model.name, now)
            except (OSError, ValueError) as error:
                problems.append(f"{name}: {error}")
                continue
            fresh[name] = scrape
            before = state.scrapes.get(name)
            rates = metrics.rates(before, scrape) if before else None
            if rates is None:
                problems.append(f"{name}: first scrape or counters reset, no rate yet")
            else:
                per_pod.append(rates)
        state.scrapes = fresh  # pods that went away are forgotten
        if problems:
            return obs(
                None,
                None,
                f"{len(problems)} of {len(ready)} ready pods: " + "; ".join(problems)[:300],
            )
        total = metrics.aggregate(per_pod)
        return load(
            total.qps, total.p99_ms, "no p99 summary (is summary_latencies on?)", total.queued
        )

    def step(
        self,
        key: Key,
        body: Mapping[str, Any],
        spec: models.GeoDeploymentSpec,
        now: float,
        answers: Answers | None = None,
    ) -> policy.Decision | None:
        """One observe-decide-act-record round for one GeoDeployment."""
        namespace, name = key
        old = models.parse_status(body.get("status") or {})
        generation = body["metadata"].get("generation")
        conds = list(old.conditions)
        if not spec.autoscaling.enabled:
            conds = conditions.set_condition(
                conds,
                conditions.SCALING_ACTIVE,
                "False",
                "AutoscalingDisabled",
                "spec.autoscaling.enabled is false: spec.replicas rules",
                generation=generation,
            )
            status_io.write(self.cluster, body, old.model_copy(update={"conditions": conds}))
            return None
        if old.observed_generation is None or old.selected_artifact is None:
            return None  # nothing deployed yet: the reconcile comes first

        observation = self.observe(key, body, spec, now, answers)
        with self._lock:
            state = self._state.setdefault(key, _State())
            decision, state.memory = policy.decide(spec.autoscaling, observation, state.memory)

        if decision.replicas != observation.replicas:
            self.cluster.scale_deployment(namespace, name, decision.replicas)
        telemetry.DECISIONS.labels(namespace, name, decision.action).inc()
        telemetry.DESIRED_REPLICAS.labels(namespace, name).set(decision.replicas)
        if observation.missing is None:
            telemetry.OBSERVED_QPS.labels(namespace, name).set(observation.qps or 0.0)
            telemetry.OBSERVED_P99.labels(namespace, name).set(observation.p99_ms or 0.0)
        else:
            telemetry.METRIC_ERRORS.labels(namespace, name).inc()

        metrics_ok = observation.missing is None
        source_is_prometheus = (
            spec.autoscaling.metrics.source is models.MetricsSourceKind.PROMETHEUS
        )
        conds = conditions.set_condition(
            conds,
            conditions.SCALING_ACTIVE,
            "True",
            "Active",
            f"deciding every {spec.autoscaling.interval_seconds:g}s from "
            f"{spec.autoscaling.metrics.source} metrics",
            generation=generation,
        )
        previous_metrics = conditions.get(conds, conditions.METRICS_AVAILABLE)
        conds = conditions.set_condition(
            conds,
            conditions.METRICS_AVAILABLE,
            "True" if metrics_ok else "False",
            ("Queried" if source_is_prometheus else "Scraped") if metrics_ok else "MetricsMissing",
            f"{observation.ready_replicas} ready pod(s) scraped"
            if metrics_ok
            else f"{observation.missing}; holding replicas (never scaling in blind)",
            generation=generation,
        )
        record = models.Decision.model_validate(
            {
                "action": decision.action,
                "from": observation.replicas,
                "to": decision.replicas,
                "qpsPerReplica": round(decision.qps_per_replica, 2)
                if decision.qps_per_replica is not None
                else None,
                "p99LatencyMs": round(decision.p99_ms, 2) if decision.p99_ms is not None else None,
                "reason": decision.reason,
                "time": conditions.now(),
            }
        )
        update: dict[str, Any] = {"conditions": conds}
        last = old.last_decision
        # A maintain is recorded once, when it replaces another kind of decision,
        # so that status is not rewritten every tick with a new timestamp.
        if decision.action != "maintain" or last is None or last.action != "maintain":
            update["last_decision"] = record
            update["decisions"] = [*old.decisions, record][-HISTORY:]
        status_io.write(self.cluster, body, old.model_copy(update=update))

        if decision.action in ("scale_out", "scale_in"):
            self.cluster.event(
                dict(body),
                "Normal",
                "ScaledOut" if decision.action == "scale_out" else "ScaledIn",
                f"{observation.replicas} -> {decision.replicas}: {decision.reason}",
            )
        if not metrics_ok and (previous_metrics is None or previous_metrics.status == "True"):
            self.cluster.event(
                dict(body),
                "Warning",
                "MetricsMissing",
                f"{observation.missing}; holding {observation.replicas} replicas",
            )
        log.info(
            "%s/%s: %s %d -> %d: %s",
            namespace,
            name,
            decision.action,
            observation.replicas,
            decision.replicas,
            decision.reason,
        )
        return decision
