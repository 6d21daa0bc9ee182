"""The canary analysis' figures: what each track served since the analysis window opened.

With the autoscaler's Prometheus source the reconcile asks Prometheus instead
(`triton.prometheus.track_figures`: `increase` over the window, grouped by the
`track` label). With the direct source it calls `Windows.figures` when
`rollout.policy.analysis_due` says an analysis is due, and `Windows.open` after
acting, so the next window's counters start from the moment it opened. Both read the
GeoDeployment's Triton pods directly (the autoscaler's direct-scrape source: the
`geo.ai/metrics-url` annotation, else `http://<podIP>:8002/metrics`), grouped by the
`geo.ai/track` label (no label: stable):

- requests and errors: Triton's `nv_inference_request_success` and
  `nv_inference_request_failure` counters, summed over the track's ready pods, less
  their values when the window opened. A pod that came up after the window opened
  counts from zero; one first seen later than that (the operator restarted) counts
  from its first scrape, so a restart shortens the window, never inflates it;
- p99: the worst of the track's pods' p99 from Triton's latency summary (its own
  sliding window of recent requests, not exactly the analysis window; no requests in
  the window: no p99);
- a generative model's time to first token and inter-token p99: from its engine's
  histograms (`vllm:time_to_first_token_seconds`, `vllm:time_per_output_token_seconds`),
  the buckets' increase since the window opened summed over the track's pods, and the
  observations they hold (first tokens, inter-token gaps): over exactly the window.

With `model.evaluation`, `Scores.score` sends the held-out set through one ready
canary pod (its `geo.ai/inference-url` annotation, else `<podIP>:8000`), once per
canary configuration, as a background job (`controller.background`: the reconcile
never waits on the download or the scoring): `accuracy` against the labels,
`agreement` against the answers of one ready stable pod (what serves now; the
reference artifact is not loaded beside the canary); a generative model's, whatever its
metric, as the next-token agreement with the stable on prompts cut from the held-out text
(`tuning.llm_agreement`: Triton returns tokens, not logits). The held-out file is read by the
operator itself (kept per URI for ten minutes): an http(s) or file URI; a pvc one is
not mounted in the operator's pod, so the gate stays inconclusive with words that say
so. What the score is held to (the accuracy floor the choice
was judged against) is the pure analysis' business.

The baselines live in memory only: an operator restarted mid-rollout resumes at the
same step (the state is in status.rollout), and its first analysis counts from the
first scrape after the restart. Any pod that cannot be read makes the figures None:
no analysis this time (the policy waits; the deadline still runs).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from geo_operator.api import models, names
from geo_operator.controller import background
from geo_operator.controller.autoscaler import pod_view
from geo_operator.rollout.analysis import Figures
from geo_operator.triton import fetch, llm_metrics, metrics
from geo_operator.tuning import evaluate, llm_agreement

log = logging.getLogger(__name__)

Key = tuple[str, str]
Fetch = Callable[[str], str]


@dataclasses.dataclass(frozen=True)
class Count:
    """One pod's cumulative counters at one scrape."""

    success: float
    failure: float
    p99_ms: float | None
    engine: llm_metrics.EngineScrape | None = None  # a generative engine's histograms


@dataclasses.dataclass
class _Window:
    since: float
    baselines: dict[str, Count]


def track_of(pod: Mapping[str, Any]) -> str:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return str(labels.get(names.TRACK_LABEL) or names.STABLE_TRACK)


def _created(pod: Mapping[str, Any]) -> float | None:
    stamp = (pod.get("metadata") or {}).get("creationTimestamp")
    if stamp is None:
        return None
    if not isinstance(stamp, str):  # the client's datetime
        return float(stamp.timestamp())
    return names.parse_time(stamp)


class Windows:
    """Each GeoDeployment's open analysis window and its pods' counters when it opened."""

    def __init__(self, fetch: Fetch) -> None:
        self.fetch = fetch
        self._guard = threading.Lock()
        self._windows: dict[Key, _Window] = {}
        self._unreadable: set[str] = set()  # pods whose last scrape failed (logged once)

    def _scrape(
        self, pods: Sequence[Mapping[str, Any]], model: str, now: float, generative: bool
    ) -> dict[str, tuple[str, Count, float | None]] | None:
        """(track, counters, created) of each ready pod; None if any could not be read."""
        found: dict[str, tuple[str, Count, float | None]] = {}
        for pod in pods:
            view = pod_view(pod)
            if not view.ready:
                continue
            if view.metrics_url is None:
                log.debug("pod %s: no metrics address yet", view.name)
                return None
            try:
                text = self.fetch(view.metrics_url)
                scrape = metrics.parse(text, model, now)
                engine = llm_metrics.parse(text, model, now) if generative else None
            except (OSError, ValueError) as error:
                with self._guard:  # once per outage per pod, not every tick (issue 31.8)
                    first = view.name not in self._unreadable
                    self._unreadable.add(view.name)
                level = logging.INFO if first else logging.DEBUG
                log.log(
                    level,
                    "pod %s: metrics unreadable for the canary analysis: %s",
                    view.name,
                    error,
                )
                return None
            with self._guard:
                back = view.name in self._unreadable
                self._unreadable.discard(view.name)
            if back:
                log.info("pod %s: metrics readable again for the canary analysis", view.name)
            p99 = None if scrape.p99_us is None else scrape.p99_us / 1000
            count = Count(scrape.success, scrape.failure or 0.0, p99, engine)
            found[view.name] = (track_of(pod), count, _created(pod))
        return found

    def is_open(self, key: Key, since: float) -> bool:
        """Whether the window that started at ``since`` has its baselines already."""
        with self._guard:
            window = self._windows.get(key)
            return window is not None and window.since == since

    def open(
        self,
        key: Key,
        since: float,
        pods: Sequence[Mapping[str, Any]],
        model: str,
        generative: bool = False,
    ) -> None:
        """Open the window that started at ``since`` (again: no-op while it is the same)."""
        with self._guard:
            window = self._windows.get(key)
            if window is not None and window.since == since:
                return
        scraped = self._scrape(pods, model, since, generative) or {}
        with self._guard:
            self._windows[key] = _Window(since, {n: c for n, (_, c, _) in scraped.items()})

    def figures(
        self,
        key: Key,
        since: float,
        pods: Sequence[Mapping[str, Any]],
        model: str,
        now: float,
        generative: bool = False,
    ) -> tuple[Figures, Figures] | None:
        """(canary, stable) over the window opened at ``since``; None when unreadable."""
        scraped = self._scrape(pods, model, now, generative)
        if scraped is None:
            return None
        with self._guard:
            window = self._windows.get(key)
            if window is None or window.since != since:
                window = self._windows[key] = _Window(since, {})
            sums: dict[str, list[float]] = {names.CANARY_TRACK: [0, 0], names.STABLE_TRACK: [0, 0]}
            p99s: dict[str, list[float]] = {names.CANARY_TRACK: [], names.STABLE_TRACK: []}
            # A generative engine's histogram increases, summed per track: {le: count}
            ttfts: dict[str, dict[float, float]] = {}
            tpots: dict[str, dict[float, float]] = {}
            for pod, (track, count, created) in scraped.items():
                base = window.baselines.get(pod)
                if base is None:
                    fresh = created is not None and created >= since
                    base = Count(0.0, 0.0, None) if fresh else count
                    window.baselines[pod] = base
                if count.success < base.success:  # the server restarted: count it afresh
                    base = window.baselines[pod] = Count(0.0, 0.0, None)
                bucket = sums.setdefault(track, [0, 0])
                bucket[0] += count.success - base.success
                bucket[1] += count.failure - base.failure
                if count.p99_ms is not None and count.success > base.success:
                    p99s.setdefault(track, []).append(count.p99_ms)
                if count.engine is not None:
                    was = base.engine
                    llm_metrics.add_increase(
                        ttfts.setdefault(track, {}),
                        was.ttft_buckets if was else (),
                        count.engine.ttft_buckets,
                    )
                    llm_metrics.add_increase(
                        tpots.setdefault(track, {}),
                        was.tpot_buckets if was else (),
                        count.engine.tpot_buckets,
                    )

        def of(track: str) -> Figures:
            success, failure = sums[track]
            requests = int(success + failure)
            worst = max(p99s[track]) if p99s[track] and requests else None
            first, ttft = llm_metrics.observed(ttfts.get(track))
            gaps, itl = llm_metrics.observed(tpots.get(track))
            return Figures(
                requests=requests,
                errors=int(failure),
                p99_ms=worst,
                first_tokens=first,
                ttft_p99_ms=ttft,
                tokens=gaps,
                itl_p99_ms=itl,
            )

        return of(names.CANARY_TRACK), of(names.STABLE_TRACK)

    def forget(self, key: Key) -> None:
        with self._guard:
            self._windows.pop(key, None)


def inference_url(pod: Mapping[str, Any]) -> str | None:
    """A pod's Triton HTTP endpoint as tritonclient takes it (host:port)."""
    meta = pod.get("metadata") or {}
    url = (meta.get("annotations") or {}).get(names.INFERENCE_URL_ANNOTATION)
    if url:
        return str(url)
    ip = (pod.get("status") or {}).get("podIP")
    return f"{ip}:{names.HTTP_PORT}" if ip else None


def _ready_on(pods: Sequence[Mapping[str, Any]], track: str) -> str | None:
    for pod in pods:
        if track_of(pod) == track and pod_view(pod).ready:
            url = inference_url(pod)
            if url:
                return url
    return None


Score = Callable[[models.GeoDeploymentSpec, str, str | None, str], models.MeasuredAccuracy]


def live_score(
    spec: models.GeoDeploymentSpec, canary_url: str, stable_url: str | None, path: str
) -> models.MeasuredAccuracy:
    """The canary's held-out score through its Triton (agreement: against the stable's)."""
    evaluation = spec.model.evaluation
    assert evaluation is not None
    if spec.model.generative:  # whatever the metric: a serving pod gives tokens, not logits
        if stable_url is None:
            raise evaluate.EvaluationError("no ready stable pod to agree with")
        engine = spec.triton.engine or models.EngineSpec()
        chars = llm_agreement.prompt_chars(engine.context_length)
        return llm_agreement.against(canary_url, stable_url, spec.model.name, path, chars=chars)
    if evaluation.metric is models.EvaluationMetric.AGREEMENT:
        if stable_url is None:
            raise evaluate.EvaluationError("no ready stable pod to agree with")
        return evaluate.against(
            canary_url, stable_url, spec.model.name, path, output=evaluation.output
        )
    return evaluate.run(
        canary_url, spec.model.name, path, evaluation.metric, output=evaluation.output
    )


# The held-out file is fetched at most this often per URI (seconds), and a fetch, retries
# included, may take this long before it is refused (a URL that hangs or trickles).
HELD_OUT_TTL_SECONDS = 600.0
HELD_OUT_DEADLINE_SECONDS = 300.0
# Triton's latency summary is a sliding window of recent requests (prometheus-cpp's
# default: the last 60 s): the scored pods' p99 holds the scorer's batches that long.
P99_SETTLE_SECONDS = 60.0


class Scores:
    """Each canary configuration's held-out score, measured once through one of its pods,
    off the reconcile path.

    `score` never waits: the fetch and the scoring run as one `background.Jobs` job per
    (GeoDeployment, canary configuration) — a URL that hangs holds a pool thread for at
    most HELD_OUT_DEADLINE_SECONDS, never a reconcile — and, until it ends, the answer is
    why there is none yet ("running for 12 s", "failed: …; retrying in 40 s"). The file
    is kept per URI for HELD_OUT_TTL_SECONDS, so tenants sharing a set fetch
    it once. When the job ends, the owner's reconcile is brought forward (`Context`).

    The scorer's own requests must not count as the canary's traffic (issue 31): `ended`
    says when they stopped, and the analysis window counts from then (`reconcile`).
    """

    def __init__(self, score: Score = live_score, jobs: background.Jobs | None = None) -> None:
        self._score = score
        self.jobs = jobs if jobs is not None else background.Jobs(workers=8)
        self._guard = threading.Lock()
        self._done: dict[tuple[Key, str], models.MeasuredAccuracy] = {}
        self._ended: dict[Key, float] = {}
        self._files: dict[str, tuple[str, float]] = {}  # URI: path, fetched at (monotonic)
        self._fetching: dict[str, threading.Lock] = {}
        self._dir: str | None = None

    def ended(self, key: Key) -> float | None:
        """When the operator's last scoring requests to ``key``'s pods ended (its clock)."""
        with self._guard:
            return self._ended.get(key)

    def _held_out(self, uri: str) -> str:
        """The held-out file's local path, fetched if not kept or kept too long (the
        evaluation names no digest: the URI is the key)."""
        which = uri
        with self._guard:
            lock = self._fetching.setdefault(which, threading.Lock())
            if self._dir is None:
                self._dir = tempfile.mkdtemp(prefix="geo-heldout-")
            folder = self._dir
        with lock:  # one fetch per URI at a time; the others wait for its file
            with self._guard:
                kept = self._files.get(which)
            if kept is not None and time.monotonic() - kept[1] < HELD_OUT_TTL_SECONDS:
                return kept[0]
            name = hashlib.sha256(uri.encode()).hexdigest()[:24]
            path = os.path.join(folder, f"{name}.npz")
            fetch.fetch(uri, path, timeout=30, deadline=HELD_OUT_DEADLINE_SECONDS)
            with self._guard:
                self._files[which] = (path, time.monotonic())
            return path

    def score(
        self,
        key: Key,
        config_hash: str,
        spec: models.GeoDeploymentSpec,
        pods: Sequence[Mapping[str, Any]],
        clock: Callable[[], float] = time.time,
    ) -> models.MeasuredAccuracy | str:
        """The score, or why there is none yet (the accuracy gate is then inconclusive).
        ``clock`` is the caller's (what `ended` is recorded in)."""
        with self._guard:
            done = self._done.get((key, config_hash))
        if done is not None:
            return done
        evaluation = spec.model.evaluation
        assert evaluation is not None
        if urllib.parse.urlparse(evaluation.uri).scheme == "pvc":
            return (
                f"the held-out set {evaluation.uri} is on a PVC, which the operator's pod does "
                "not mount: the canary is not scored (serve it over http(s) to gate on it)"
            )
        canary_url = _ready_on(pods, names.CANARY_TRACK)
        if canary_url is None:
            return "no ready canary pod to score yet"
        stable_url = _ready_on(pods, names.STABLE_TRACK)
        uri = evaluation.uri

        def work() -> models.MeasuredAccuracy:
            try:
                path = self._held_out(uri)
                return self._score(spec, canary_url, stable_url, path)
            finally:  # whatever reached the pods was the operator's, not the users'
                with self._guard:
                    self._ended[key] = clock()

        scored = self.jobs.result(
            (key, config_hash), work, what=f"scoring the canary on {uri}", owner=key
        )
        if isinstance(scored, background.Pending):
            return scored.words[:300]
        assert isinstance(scored, models.MeasuredAccuracy)
        with self._guard:
            first = (key, config_hash) not in self._done
            self._done = {k: v for k, v in self._done.items() if k[0] != key}
            self._done[(key, config_hash)] = scored
        if first:
            log.info(
                "%s/%s: canary %s held-out %s %.4f on %d samples",
                *key,
                config_hash[:8],
                scored.metric,
                scored.value,
                scored.samples,
            )
        return scored

    def forget(self, key: Key) -> None:
        with self._guard:
            self._done = {k: v for k, v in self._done.items() if k[0] != key}
            self._ended.pop(key, None)
        self.jobs.forget(key)
