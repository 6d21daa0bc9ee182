"""The canary analysis' figures: what each track served since the analysis window opened.

The reconcile calls `Windows.figures` when `rollout.policy.analysis_due` says an
analysis is due, and `Windows.open` after acting, so the next window's counters start
from the moment it opened. Both read the GeoDeployment's Triton pods directly (the
autoscaler's direct-scrape source: the `geo.ai/metrics-url` annotation, else
`http://<podIP>:8002/metrics`), grouped by the `geo.ai/track` label (no label: stable):

- requests and errors: Triton's `nv_inference_request_success` and
  `nv_inference_request_failure` counters, summed over the track's ready pods, less
  their values when the window opened. A pod that came up after the window opened
  counts from zero; one first seen later than that (the operator restarted) counts
  from its first scrape, so a restart shortens the window, never inflates it;
- p99: the worst of the track's pods' p99 from Triton's latency summary (its own
  sliding window of recent requests, not exactly the analysis window; no requests in
  the window: no p99).

The baselines live in memory only: an operator restarted mid-rollout resumes at the
same step (the state is in status.rollout), and its first analysis counts from the
first scrape after the restart. Any pod that cannot be read makes the figures None:
no analysis this time (the policy waits; the deadline still runs).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from geo_operator.api import names
from geo_operator.controller.autoscaler import pod_view
from geo_operator.rollout.analysis import Figures
from geo_operator.triton import metrics

log = logging.getLogger(__name__)

Key = tuple[str, str]
Fetch = Callable[[str], str]


@dataclasses.dataclass(frozen=True)
class Count:
    """One pod's cumulative counters at one scrape."""

    success: float
    failure: float
    p99_ms: float | None


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

    def _scrape(
        self, pods: Sequence[Mapping[str, Any]], model: str, now: float
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
            except (OSError, ValueError) as error:
                log.info("pod %s: metrics unreadable for the canary analysis: %s", view.name, error)
                return None
            p99 = None if scrape.p99_us is None else scrape.p99_us / 1000
            count = Count(scrape.success, scrape.failure or 0.0, p99)
            found[view.name] = (track_of(pod), count, _created(pod))
        return found

    def open(self, key: Key, since: float, pods: Sequence[Mapping[str, Any]], model: str) -> None:
        """Open the window that started at ``since`` (again: no-op while it is the same)."""
        with self._guard:
            window = self._windows.get(key)
            if window is not None and window.since == since:
                return
        scraped = self._scrape(pods, model, since) or {}
        with self._guard:
            self._windows[key] = _Window(since, {n: c for n, (_, c, _) in scraped.items()})

    def figures(
        self,
        key: Key,
        since: float,
        pods: Sequence[Mapping[str, Any]],
        model: str,
        now: float,
    ) -> tuple[Figures, Figures] | None:
        """(canary, stable) over the window opened at ``since``; None when unreadable."""
        scraped = self._scrape(pods, model, now)
        if scraped is None:
            return None
        with self._guard:
            window = self._windows.get(key)
            if window is None or window.since != since:
                window = self._windows[key] = _Window(since, {})
            sums: dict[str, list[float]] = {names.CANARY_TRACK: [0, 0], names.STABLE_TRACK: [0, 0]}
            p99s: dict[str, list[float]] = {names.CANARY_TRACK: [], names.STABLE_TRACK: []}
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

        def of(track: str) -> Figures:
            success, failure = sums[track]
            requests = int(success + failure)
            worst = max(p99s[track]) if p99s[track] and requests else None
            return Figures(requests=requests, errors=int(failure), p99_ms=worst)

        return of(names.CANARY_TRACK), of(names.STABLE_TRACK)

    def forget(self, key: Key) -> None:
        with self._guard:
            self._windows.pop(key, None)
