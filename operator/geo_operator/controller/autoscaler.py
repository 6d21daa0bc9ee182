"""The autoscaler: observe each GeoDeployment's Triton pods, decide, act, record.

One `Autoscaler` per operator process, in the controller's context. kopf's
indexes (`handlers.py`) keep the view current — the GeoDeployments, their
Triton pods (`PodView`), their Deployments' replica counts — with no API
calls of ours. An asyncio task that kopf's startup starts and its cleanup
stops calls `tick` about once a second, in kopf's event loop, where the
indexes live; every GeoDeployment whose `autoscaling.intervalSeconds` has
passed and whose previous step has finished gets one `step` on a worker
thread:

1. observe — direct scrape: GET each ready pod's Triton metrics (the
   `geo.ai/metrics-url` pod annotation when set, else `http://<podIP>:8002/metrics`),
   rates from the previous scrape of the same pod, summed QPS, worst p99;
   or one shared Prometheus answer per (URL, rate window) and second; and
   each pod's start-up as Kubernetes saw it (creationTimestamp to the Ready
   condition), the median of the last STARTUP_SAMPLES pods: the policy's lead;
2. decide — `policy.decide`, the same pure function `geo decide` runs;
3. act — set the Deployment's replicas (the Deployment's own count is
   "current", never a copy in status). While a rollout's canary runs, the total
   is both tracks' replicas, the QPS is both tracks' and the p99 the stable's
   alone (a slow canary is the rollout's to judge: it must not make the loop
   scale out); the new total is split between the tracks at the rollout's
   weight (`rollout.split`, as the reconcile splits it);
4. record — `builders.autoscale` renders, pure, its own status fields only
   (`api.status.AUTOSCALER`): `lastDecision`, a short history, `autoscaling` (the
   target, the measured pod start-up), `ScalingActive` and `MetricsAvailable`; an
   Event on every scale_out / scale_in and when metrics go missing. One write, under
   the autoscaler's field manager; the history is what this process last wrote on
   every path (a failed step's too), never a body that lags behind it.

Each object's step is its own: a slow source holds only the objects that use
it (time limits on every call, steps run side by side), and a step that fails
is that object's `MetricsAvailable=False`, never another's. Anything partial
is missing, and missing means maintain.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime
import functools
import logging
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from geo_operator.api import models, names
from geo_operator.api import status as status_io
from geo_operator.builders import autoscale, children
from geo_operator.controller import telemetry
from geo_operator.rollout import split
from geo_operator.rollout.policy import ACTIVE
from geo_operator.scaling import capacity, policy
from geo_operator.triton import llm_metrics, metrics, prometheus

log = logging.getLogger(__name__)

# Pods whose start-up (creation to Ready) the median is taken over, per GeoDeployment.
STARTUP_SAMPLES = 10
SCRAPE_TIMEOUT = 2.0
# A Prometheus answer serves every object that asks within this many seconds.
ANSWER_SECONDS = 1.0
WORKERS = 16

Key = tuple[str, str]  # (namespace, name)
Fetch = Callable[[str], str]
Query = Callable[[str, int], dict[Key, prometheus.Load]]


class Cluster(Protocol):
    """The cluster seam the autoscaler acts through (k8s.client.KubeClient is one)."""

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> None: ...

    def apply_status(
        self, namespace: str, name: str, manager: str, status: dict[str, Any]
    ) -> None: ...

    def event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None: ...


def http_fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as response:
        return str(response.read().decode())


@dataclasses.dataclass(frozen=True)
class PodView:
    """What the autoscaler needs of one Triton pod (kopf's pod index holds these)."""

    name: str
    ready: bool
    metrics_url: str | None
    track: str = names.STABLE_TRACK  # a rollout's track (the geo.ai/track label)
    # From creationTimestamp to the Ready condition's lastTransitionTime, when Ready.
    startup_seconds: float | None = None


def _timestamp(value: Any) -> float | None:
    """Seconds since the epoch of an RFC 3339 API timestamp; None when absent or bad."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _startup(meta: Mapping[str, Any], ready: Mapping[str, Any] | None) -> float | None:
    created = _timestamp(meta.get("creationTimestamp"))
    became = _timestamp((ready or {}).get("lastTransitionTime"))
    if created is None or became is None or became < created:
        return None
    return became - created


def pod_view(pod: Mapping[str, Any]) -> PodView:
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    ready = not meta.get("deletionTimestamp") and status.get("phase") == "Running"
    condition = next(
        (
            c
            for c in status.get("conditions") or []
            if c.get("type") == "Ready" and c.get("status") == "True"
        ),
        None,
    )
    ready = ready and condition is not None
    url = (meta.get("annotations") or {}).get(names.METRICS_URL_ANNOTATION)
    ip = status.get("podIP")
    if not url and ip:
        url = f"http://{ip}:{names.METRICS_PORT}/metrics"
    track = (meta.get("labels") or {}).get(names.TRACK_LABEL) or names.STABLE_TRACK
    startup = _startup(meta, condition) if ready else None
    return PodView(str(meta.get("name")), bool(ready), url or None, str(track), startup)


@dataclasses.dataclass(frozen=True)
class Work:
    """One object's step: its body, its pods and the Deployment's replicas, as seen."""

    key: Key
    body: Mapping[str, Any]
    spec: models.GeoDeploymentSpec
    pods: tuple[PodView, ...]
    current: int | None  # the Deployment's spec.replicas; None: no Deployment yet
    canary: int | None = None  # a rollout's canary Deployment's spec.replicas, if any

    @functools.cached_property
    def rollout_weight(self) -> int | None:
        """The canary's weight while a rollout's canary runs (status.rollout); else None
        (read once per step: the body's status is parsed once)."""
        rollout = models.parse_status(self.body.get("status") or {}).rollout
        if rollout is None or rollout.phase not in ACTIVE or not rollout.canary_hash:
            return None
        return rollout.weight if self.canary is not None else None

    def total(self) -> int | None:
        """The replicas the decision is about: both tracks' while a canary runs."""
        if self.current is None or self.rollout_weight is None:
            return self.current
        return self.current + (self.canary or 0)


@dataclasses.dataclass(frozen=True)
class EngineLoad:
    """The ready pods' generative engines between two scrapes (None: not known)."""

    prompt_tps: float | None
    generated_tps: float | None
    waiting: float | None
    kv_usage: float | None
    ttft_p99_ms: float | None
    itl_p99_ms: float | None


def engine_load(pods: list[llm_metrics.EngineRates]) -> EngineLoad:
    """Summed token rates and queues, the mean KV-cache use, the worst pod's p99s."""

    def total(values: list[float | None]) -> float | None:
        return None if not values or None in values else sum(v for v in values if v is not None)

    def worst_ms(values: list[float | None]) -> float | None:
        seen = [v for v in values if v is not None]
        return max(seen) * 1000.0 if seen else None

    kv = [p.kv_usage for p in pods if p.kv_usage is not None]
    return EngineLoad(
        prompt_tps=total([p.prompt_tokens_per_second for p in pods]),
        generated_tps=total([p.generation_tokens_per_second for p in pods]),
        waiting=total([p.waiting for p in pods]),
        kv_usage=sum(kv) / len(kv) if kv else None,
        ttft_p99_ms=worst_ms([p.p99_ttft_s for p in pods]),
        itl_p99_ms=worst_ms([p.p99_tpot_s for p in pods]),
    )


@dataclasses.dataclass
class _State:
    memory: policy.Memory = dataclasses.field(default_factory=policy.Memory)
    last_step: float | None = None
    scrapes: dict[str, metrics.Scrape] = dataclasses.field(default_factory=dict)
    # A generative model's engine metrics (vLLM's names), per pod, and the last reading.
    engines: dict[str, llm_metrics.EngineScrape] = dataclasses.field(default_factory=dict)
    engine: EngineLoad | None = None
    running: concurrent.futures.Future[None] | None = None
    failing: bool = False
    # What production taught about the served artifact's capacity, and for which capacity.
    correction: capacity.Correction = dataclasses.field(default_factory=capacity.Correction)
    corrected: tuple[str | None, float | None] = (None, None)
    # Pod name -> its measured start-up, the last STARTUP_SAMPLES pods seen Ready.
    startups: dict[str, float] = dataclasses.field(default_factory=dict)
    # The last scrape missed only pods this process had not scraped before (new pods, or
    # any after its own start): a rate needs two scrapes. The step holds, but that is no
    # outage: no MetricsMissing Event, no MetricsAvailable=False.
    warming: bool = False
    written: dict[str, Any] | None = None  # the status fields this process last wrote
    # The history written and the MetricsMissing Events said, which win over a body that
    # lags behind them (a watch behind under load): one Event per outage.
    recall: autoscale.Recall = dataclasses.field(default_factory=autoscale.Recall)

    def startup(self, pods: Iterable[PodView]) -> float | None:
        """Take in the start-up of pods newly seen Ready; the median of the kept ones."""
        for pod in pods:
            if pod.startup_seconds is not None and pod.name not in self.startups:
                self.startups[pod.name] = pod.startup_seconds
        while len(self.startups) > STARTUP_SAMPLES:
            del self.startups[next(iter(self.startups))]
        if not self.startups:
            return None
        return statistics.median(self.startups.values())


class _Answers:
    """Prometheus answers shared by every object asking the same (URL, window) at once;
    one query in flight per key (the others wait for it, not for each other)."""

    def __init__(self, query: Query, clock: Callable[[], float]) -> None:
        self.query, self.clock = query, clock
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, int], threading.Lock] = {}
        self._cache: dict[tuple[str, int], tuple[float, dict[Key, prometheus.Load] | str]] = {}

    def get(self, url: str, window: int) -> dict[Key, prometheus.Load] | str:
        ask = (url, window)
        with self._guard:
            lock = self._locks.setdefault(ask, threading.Lock())
        with lock:
            cached = self._cache.get(ask)
            if cached is not None and self.clock() - cached[0] < ANSWER_SECONDS:
                return cached[1]
            try:
                answer: dict[Key, prometheus.Load] | str = self.query(url, window)
            except prometheus.PrometheusError as error:
                answer = str(error)
            self._cache[ask] = (self.clock(), answer)
            return answer


class Autoscaler:
    """The autoscaler's state and steps; `step` is thread-safe per object."""

    def __init__(
        self,
        cluster: Cluster,
        fetch: Fetch = http_fetch,
        clock: Callable[[], float] = time.monotonic,
        query: Query = prometheus.query_all,
        workers: int = WORKERS,
    ) -> None:
        self.cluster = cluster
        self.fetch = fetch
        self.clock = clock
        self.answers = _Answers(query, clock)
        # Which condition series are exported for each object (flips replace them).
        self.descriptions = telemetry.Descriptions()
        self._state: dict[Key, _State] = {}
        self._specs: dict[Key, tuple[Any, float | None]] = {}  # spec -> its interval
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="geo-step")
        self._scrapes = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="geo-scrape")
        self._task: asyncio.Task[None] | None = None

    # ---- the view, handed in from kopf's indexes

    def interval_of(self, key: Key, body: Mapping[str, Any]) -> float | None:
        """The object's autoscaling interval, from its spec parsed once per change (not once
        per tick); None if the spec is invalid. Only the figure is kept: the parsed specs of
        1,000 objects were 25 MiB, the largest thing the operator held."""
        raw = body.get("spec") or {}
        known = self._specs.get(key)
        if known is not None and (known[0] is raw or known[0] == raw):
            if known[0] is not raw:  # the same spec from a newer event: hold that one only
                self._specs[key] = (raw, known[1])
            return known[1]
        spec = self.spec_of(body)
        interval = None if spec is None else float(spec.autoscaling.interval_seconds)
        self._specs[key] = (raw, interval)
        return interval

    @staticmethod
    def spec_of(body: Mapping[str, Any]) -> models.GeoDeploymentSpec | None:
        """The parsed spec (a step's, when it is due); None if invalid."""
        try:
            return models.parse_spec(body.get("spec") or {})
        except ValueError:
            return None  # the reconcile reports invalid specs

    def forget(self, key: Key) -> None:
        self._state.pop(key, None)
        self._specs.pop(key, None)
        self.descriptions.forget(*key)

    def due(
        self,
        objects: Iterable[Mapping[str, Any]],
        pods: Callable[[Key], Iterable[PodView]],
        current: Callable[[Key], int | None],
        now: float,
        canary: Callable[[Key], int | None] = lambda key: None,
    ) -> list[Work]:
        """The objects whose interval has passed and whose last step has finished."""
        work = []
        for body in objects:
            key = (body["metadata"]["namespace"], body["metadata"]["name"])
            interval = self.interval_of(key, body)
            if interval is None:
                continue
            state = self._state.setdefault(key, _State())
            if state.running is not None and not state.running.done():
                continue  # a slow source holds this object only
            if state.last_step is None or now - state.last_step >= interval:
                spec = self.spec_of(body)
                if spec is None:
                    continue
                state.last_step = now
                work.append(Work(key, body, spec, tuple(pods(key)), current(key), canary(key)))
        return work

    # ---- the loop (an asyncio task in kopf's event loop)

    def start(self, tick: Callable[[], list[Work]], period: float = 1.0) -> None:
        """Start the loop in the running event loop; ``tick`` reads the indexes there."""
        self._task = asyncio.get_running_loop().create_task(self._run(tick, period))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._scrapes.shutdown(wait=False, cancel_futures=True)

    async def _run(self, tick: Callable[[], list[Work]], period: float) -> None:
        log.info("autoscaling loop started")
        while True:
            await asyncio.sleep(period)
            try:
                with telemetry.LOOP_SECONDS.time():
                    self.submit(tick())
            except Exception:  # the loop must outlive any one bad tick
                log.exception("autoscaling tick failed")

    def submit(self, work: Iterable[Work]) -> None:
        """Run each object's step on a worker, side by side."""
        for item in work:
            state = self._state.setdefault(item.key, _State())
            state.running = self._pool.submit(self.guarded_step, item)

    def tick(
        self,
        objects: Iterable[Mapping[str, Any]],
        pods: Callable[[Key], Iterable[PodView]],
        current: Callable[[Key], int | None],
    ) -> None:
        """One tick with every due step in this thread, one after the other (tests,
        benchmarks); the operator's loop hands them to workers instead."""
        with telemetry.LOOP_SECONDS.time():
            for item in self.due(objects, pods, current, self.clock()):
                self.guarded_step(item)

    def guarded_step(self, work: Work) -> None:
        """`step`, with a failure kept to this object: its MetricsAvailable goes False."""
        state = self._state.setdefault(work.key, _State())
        try:
            with telemetry.STEP_SECONDS.time():
                self.step(work, self.clock())
            state.failing = False
        except Exception as error:
            if not state.failing:  # once per run of failures, not every tick
                log.warning("%s/%s: autoscaling step failed: %s", *work.key, error)
            state.failing = True
            self._record_failure(work, error)

    def _record_failure(self, work: Work, error: Exception) -> None:
        state = self._state.setdefault(work.key, _State())
        old = models.parse_status(work.body.get("status") or {})
        generation = work.body["metadata"].get("generation")
        new = autoscale.failed(old, generation, f"{type(error).__name__}: {error}", state.recall)
        try:
            self._write(work.key, work.body, new)
        except Exception as again:  # e.g. the object is gone: nothing to record on
            log.debug("%s/%s: could not record the failure: %s", *work.key, again)

    # ---- one object's step

    def observe(self, work: Work, now: float) -> policy.Observation:
        """Read the load of the ready pods (scrape or Prometheus) into one Observation."""
        state = self._state.setdefault(work.key, _State())
        replicas = max(work.total() or 0, work.spec.autoscaling.min_replicas)
        ready = [p for p in work.pods if p.ready]
        # While a canary runs, its p99 is the rollout's to judge, not the loop's.
        p99_track = names.STABLE_TRACK if work.rollout_weight is not None else None

        startup = state.startup(ready)
        bound = work.spec.triton.queue_bound()
        tokens = capacity.token_targets(
            work.spec, models.parse_status(work.body.get("status") or {})
        )
        state.engine = None

        def obs(
            load: prometheus.Load | metrics.Aggregate | None,
            missing: str | None = None,
            no_p99: str = "no p99 yet",
        ) -> policy.Observation:
            """The observation of one source's reading (None: nothing read, ``missing``)."""
            return policy.observation(
                now,
                replicas,
                len(ready),
                None if load is None else load.qps,
                None if load is None else load.p99_ms,
                None if load is None else load.queued,
                missing=missing,
                no_p99=no_p99,
                startup_seconds=startup,
                rejected_qps=None if load is None else load.rejected_qps,
                queue_bound=None if bound is None else bound * len(ready),
                cache_hit_ratio=None if load is None else load.cache_hit_ratio,
                **_engine_fields(state.engine if tokens is not None else None),
                tokens=tokens if state.engine is not None else None,
            )

        state.warming = False
        if not ready:
            return obs(None, missing="no ready Triton pod")
        source = work.spec.autoscaling.metrics
        if source.source is models.MetricsSourceKind.PROMETHEUS:
            answer = self.answers.get(source.prometheus_url or "", source.rate_window_seconds)
            load, missing = _prometheus_load(answer, work.key, len(ready))
            return obs(load, missing, no_p99="no p99 summary in Prometheus")
        total, missing = self._scrape(
            state, ready, work.spec.model.name, now, p99_track, generative=tokens is not None
        )
        return obs(total, missing, no_p99="no p99 summary (is summary_latencies on?)")

    def _scrape(
        self,
        state: _State,
        ready: list[PodView],
        model: str,
        now: float,
        p99_track: str | None = None,
        generative: bool = False,
    ) -> tuple[metrics.Aggregate | None, str | None]:
        """Scrape the ready pods at once: their summed rates, or why there are none
        (the p99 of ``p99_track``'s pods alone when given); ``generative``: the engines'
        token rates too, into ``state.engine``."""
        futures = {
            p.name: self._scrapes.submit(self.fetch, p.metrics_url) for p in ready if p.metrics_url
        }
        per_pod: list[metrics.PodRates] = []
        p99_pods: list[metrics.PodRates] = []
        problems: list[str] = []
        new = 0  # of the problems: pods with no scrape before this one
        fresh: dict[str, metrics.Scrape] = {}
        engines: dict[str, llm_metrics.EngineScrape] = {}
        per_engine: list[llm_metrics.EngineRates] = []
        for pod in ready:
            if pod.name not in futures:
                problems.append(f"{pod.name}: no address")
                continue
            try:
                text = futures[pod.name].result()
                scrape = metrics.parse(text, model, now)
                engine = llm_metrics.parse(text, model, now) if generative else None
            except (OSError, ValueError) as error:
                problems.append(f"{pod.name}: {error}")
                continue
            if engine is not None:
                engines[pod.name] = engine
                earlier = state.engines.get(pod.name)
                engine_rates = llm_metrics.rates(earlier, engine) if earlier else None
                if engine_rates is not None:
                    per_engine.append(engine_rates)
            fresh[pod.name] = scrape
            before = state.scrapes.get(pod.name)
            rates = metrics.rates(before, scrape) if before else None
            if before is None:
                problems.append(f"{pod.name}: first scrape, no rate yet")
                new += 1
            elif rates is None:
                problems.append(f"{pod.name}: counters reset, no rate yet")
            else:
                per_pod.append(rates)
                if p99_track is None or pod.track == p99_track:
                    p99_pods.append(rates)
        state.scrapes = fresh  # pods that went away are forgotten
        state.engines = engines
        if generative and per_engine and len(per_engine) == len(ready):
            state.engine = engine_load(per_engine)
        state.warming = bool(problems) and new == len(problems)
        if problems:
            return None, f"{len(problems)} of {len(ready)} ready pods: " + "; ".join(problems)[:300]
        total = metrics.aggregate(per_pod)
        if p99_track is not None:
            total = dataclasses.replace(total, p99_ms=metrics.aggregate(p99_pods).p99_ms)
        return total, None

    def step(self, work: Work, now: float) -> policy.Decision | None:
        """One observe-decide-act-record round for one GeoDeployment."""
        body, spec = work.body, work.spec
        old = models.parse_status(body.get("status") or {})
        generation = body["metadata"].get("generation")
        self.descriptions.describe(
            *work.key,
            spec.target_p99_ms(),
            spec.autoscaling.max_replicas if spec.autoscaling.enabled else None,
            ((c.type, c.status, c.reason) for c in old.conditions),
        )
        if not spec.autoscaling.enabled:
            state = self._state.setdefault(work.key, _State())
            self._write(work.key, body, autoscale.disabled(old, generation, state.recall))
            return None
        if old.observed_generation is None or old.selected_artifact is None or work.current is None:
            return None  # nothing deployed yet: the reconcile comes first
        observation = self.observe(work, now)
        state = self._state.setdefault(work.key, _State())
        # a generative model's measured throughput is tokens/s, not a request target
        measured = None if spec.model.generative else capacity.measured_capacity(old)
        served = (old.selected_artifact.name, measured)
        if state.corrected != served:  # another artifact or a new measurement: start afresh
            state.correction, state.corrected = capacity.Correction(), served
        target = capacity.target(spec, measured, state.correction)
        resolved = capacity.resolve(spec, target)
        decision, state.memory = policy.decide(resolved, observation, state.memory)
        state.correction = capacity.learn(
            state.correction, observation, measured, spec.target_p99_ms()
        )
        if decision.replicas != observation.replicas:
            self._act(work, decision.replicas)
        _export(work.key, observation, decision, target)
        self._record(work, old, observation, decision, target)
        return decision

    def _act(self, work: Work, replicas: int) -> None:
        """Scale to ``replicas`` in all: the stable alone, or both tracks at the rollout's split."""
        weight = work.rollout_weight
        if weight is None:
            self.cluster.scale_deployment(*work.key, replicas)
            return
        stable, canary = split.split(replicas, weight)
        if stable != work.current:
            self.cluster.scale_deployment(*work.key, stable)
        if canary != work.canary:
            self.cluster.scale_deployment(work.key[0], children.canary_name(work.key[1]), canary)

    def _write(self, key: Key, body: Mapping[str, Any], new: models.GeoDeploymentStatus) -> None:
        """The autoscaler's status fields, unless the body has them or they are what this
        process last wrote: under load kopf's index lags behind the writes, and comparing
        with the body alone rewrote the same status every tick (each write one more
        event for the index to catch up on)."""
        state = self._state.setdefault(key, _State())
        mine = autoscale.comparable(new)
        if mine != state.written:
            status_io.write(self.cluster, body, new, status_io.AUTOSCALER)
            state.written = mine

    def _record(
        self,
        work: Work,
        old: models.GeoDeploymentStatus,
        observation: policy.Observation,
        decision: policy.Decision,
        target: capacity.Target,
    ) -> None:
        """Render the step's status and Events (`builders.autoscale`), write, post."""
        state = self._state.setdefault(work.key, _State())
        done = autoscale.record(
            old,
            work.spec,
            work.body["metadata"].get("generation"),
            observation,
            decision,
            target,
            state.recall,
            time=names.now(),
            startup_samples=len(state.startups),
            warming=state.warming,
        )
        self._write(work.key, work.body, done.status)
        state.recall = dataclasses.replace(state.recall, decisions=done.recall.decisions)
        for type_, reason, message in done.events:
            self.cluster.event(dict(work.body), type_, reason, message)
            if reason == "MetricsMissing":
                log.warning("%s/%s: metrics missing: %s", *work.key, observation.missing)
        if done.flapping:
            log.info("%s/%s: metrics missing again (flapping): %s", *work.key, observation.missing)
        state.recall = done.recall
        if decision.action != "maintain":
            log.info(
                "%s/%s: %s %d -> %d: %s",
                *work.key,
                decision.action,
                observation.replicas,
                decision.replicas,
                decision.reason,
            )
        else:
            log.debug("%s/%s: maintain %d: %s", *work.key, decision.replicas, decision.reason)


def _engine_fields(load: EngineLoad | None) -> dict[str, float | None]:
    """The Observation's generative fields from an engine reading (all None without)."""
    if load is None:
        return {}
    return dataclasses.asdict(load)


def _prometheus_load(
    answer: dict[Key, prometheus.Load] | str, key: Key, ready: int
) -> tuple[prometheus.Load | None, str | None]:
    """This object's load in one Prometheus answer, or why it isn't there."""
    if isinstance(answer, str):
        return None, answer
    load = answer.get(key)
    if load is None:
        return None, "Prometheus has no series for this GeoDeployment"
    if load.pods_up < ready:
        return None, f"Prometheus scrapes {load.pods_up} of {ready} ready pods"
    return load, None


def _export(
    key: Key, observation: policy.Observation, decision: policy.Decision, target: capacity.Target
) -> None:
    telemetry.DECISIONS.labels(*key, decision.action).inc()
    telemetry.DESIRED_REPLICAS.labels(*key).set(decision.replicas)
    if target.value is not None:
        telemetry.TARGET_QPS.labels(*key).set(target.value)
    if observation.missing is None:
        telemetry.OBSERVED_QPS.labels(*key).set(observation.qps or 0.0)
        telemetry.OBSERVED_P99.labels(*key).set(observation.p99_ms or 0.0)
        telemetry.OBSERVED_REJECTED.labels(*key).set(observation.rejected_qps or 0.0)
        if observation.cache_hit_ratio is not None:
            telemetry.CACHE_HIT_RATIO.labels(*key).set(observation.cache_hit_ratio)
    else:
        telemetry.METRIC_ERRORS.labels(*key).inc()
