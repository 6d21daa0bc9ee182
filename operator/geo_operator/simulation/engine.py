"""Replay a rate trace through simulated Triton replicas under one autoscaler.

Time advances in 1-second steps. In each step:

1. pods whose start-up delay has passed become ready (routable);
2. the autoscaler decides, if its period has come, from a `View` of the metrics
   as they stood ``metrics_lag_seconds`` ago (scrape lag), and the engine orders
   or removes pods: new pods are ready ``startup_seconds`` after the order;
   removal takes pods that are still starting first, then the newest ready ones
   (the ReplicaSet controller's preference), and a removed pod still finishes
   what it has queued;
3. the second's arrivals are drawn (Poisson at the trace's rate, seeded) and
   spread uniformly at random over the ready pods, as a Service's iptables
   rules do; each pod's dynamic batcher (`replica.serve`) runs to the end of
   the second.

With a bounded queue (`Batching.max_queue_size`, `timeout_s`: the spec's default queue
policy) each pod admits arrivals as Triton's does (`replica.serve_bounded`): a refused
request is answered at once, counts as a failed request in its window (a refusal is
no faster way to meet the SLO), and only those refused after their timeout show in
the metrics (`View.rejected_qps`, Triton's REJECTED failures); queue-full refusals
show nowhere, as in Triton 2.51.

It records what users and the bill see: per 10-second window (by arrival time)
the requests and how many exceeded the p99 target, so a window violates the SLO
exactly when more than 1 % of its requests were slower than the target; a
latency histogram per window for the worst p99; replica-seconds (every ordered
pod costs from its order, start-up included, to its removal); and the replica
count over time for plots.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Protocol

import numpy as np

from geo_operator.simulation import replica
from geo_operator.simulation.replica import BoolArray, FloatArray, Int8Array, IntArray
from geo_operator.simulation.trace import Trace

SLO_WINDOW = 10  # seconds; the definition of a violation window
# Latency histogram: 40 bins per decade from 10 µs to 1000 s (about 6 % per bin).
_BINS_PER_DECADE = 40
_MIN_S = 1e-5
_NBINS = 8 * _BINS_PER_DECADE + 1


def _bin(latency_s: FloatArray) -> IntArray:
    idx = np.floor(np.log10(np.maximum(latency_s, _MIN_S) / _MIN_S) * _BINS_PER_DECADE)
    bins: IntArray = np.minimum(idx, _NBINS - 1).astype(np.int64)
    return bins


def _upper_edge_ms(index: int) -> float:
    return 1000.0 * _MIN_S * 10 ** ((index + 1) / _BINS_PER_DECADE)


def _quantile_ms(hist: IntArray, q: float) -> float | None:
    total = int(hist.sum())
    if total == 0:
        return None
    rank = math.ceil(q * total)
    return _upper_edge_ms(int(np.searchsorted(np.cumsum(hist), rank)))


@dataclasses.dataclass(frozen=True)
class Batching:
    """One replica's Triton settings and service-time profile."""

    profile: replica.Profile
    max_batch_size: int
    max_queue_delay_us: int | None  # None: dynamic batching off
    instances: int = 1  # Triton's instance_group count: batches run in parallel
    max_queue_size: int = 0  # requests waiting at most; 0: unbounded
    timeout_s: float | None = None  # refused after waiting this long (REJECT); None: never

    @property
    def bounded(self) -> bool:
        return self.max_queue_size > 0 or self.timeout_s is not None


@dataclasses.dataclass
class _Pod:
    ordered_at: float
    ready_at: float
    queue: FloatArray = dataclasses.field(default_factory=lambda: np.zeros(0))
    free_at: FloatArray = dataclasses.field(default_factory=lambda: np.zeros(1))
    ring_counts: IntArray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    ring_hist: IntArray = dataclasses.field(default_factory=lambda: np.zeros((0, 0), np.int64))
    ring_queued: IntArray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    # With a bounded queue, beside `queue`: each request's state and end (replica.serve_bounded).
    state: Int8Array = dataclasses.field(default_factory=lambda: np.zeros(0, np.int8))
    end: FloatArray = dataclasses.field(default_factory=lambda: np.zeros(0))

    def waiting(self) -> int:
        """Requests in the queue, not yet started (Triton's pending-request gauge)."""
        if self.state.shape[0] == 0:
            return int(self.queue.shape[0])
        return int(np.count_nonzero(self.state <= replica.WAITING))

    def ready(self, now: float) -> bool:
        return self.ready_at <= now


class View:
    """What an autoscaler can see at `time`: the replica counts now, metrics `lag` old."""

    def __init__(self, sim: Simulation, time: int) -> None:
        self._sim = sim
        self.time = time
        self.replicas = len(sim.pods)
        self.ready = sum(1 for p in sim.pods if p.ready(time))

    @property
    def starting(self) -> int:
        return self.replicas - self.ready

    def _seconds(self, window: int) -> range:
        end = self.time - self._sim.lag  # last complete second visible is end - 1
        return range(max(0, end - window), max(0, end))

    def total_qps(self, window: int) -> float | None:
        """Requests per second completed by all pods over the last `window` visible seconds."""
        seconds = self._seconds(window)
        if len(seconds) == 0:
            return None
        return float(self._sim.completed[seconds.start : seconds.stop].sum()) / len(seconds)

    def qps_series(self, window: int) -> FloatArray:
        """Completed requests in each of the last `window` visible seconds (oldest first)."""
        seconds = self._seconds(window)
        return self._sim.completed[seconds.start : seconds.stop].astype(np.float64)

    def rejected_qps(self, window: int) -> float | None:
        """Requests per second refused after their queue timeout over the last ``window``
        visible seconds: what Triton counts (failure reason REJECTED). Queue-full refusals
        are not in it: Triton counts them nowhere."""
        seconds = self._seconds(window)
        if len(seconds) == 0:
            return None
        return float(self._sim.timed_out[seconds.start : seconds.stop].sum()) / len(seconds)

    def startup_seconds(self, samples: int = 10) -> float | None:
        """The median order-to-ready time of the last ``samples`` pods that became ready
        (what the operator's loop measures on its pods); None before any."""
        ready = sorted((p for p in self._sim.pods if p.ready(self.time)), key=lambda p: p.ready_at)
        times = [p.ready_at - p.ordered_at for p in ready[-samples:]]
        return float(np.median(times)) if times else None

    def queued(self) -> float | None:
        """Requests waiting in the ready pods' queues (Triton's pending-request gauge)."""
        second = self.time - self._sim.lag - 1
        if second < 0:
            return None
        slot = second % self._sim.ring
        return float(sum(int(p.ring_queued[slot]) for p in self._sim.pods if p.ready(self.time)))

    def worst_p99_ms(self, window: int) -> float | None:
        """The highest p99 among the ready pods over the window (None: no requests)."""
        slots = [s % self._sim.ring for s in self._seconds(window)]
        worst = None
        for pod in self._sim.pods:
            if not pod.ready(self.time):
                continue
            hist = pod.ring_hist[slots].sum(axis=0)
            p99 = _quantile_ms(hist, 0.99)
            if p99 is not None and (worst is None or p99 > worst):
                worst = p99
        return worst


class Autoscaler(Protocol):
    """A policy under test: asked every `period` seconds for the replica count it wants."""

    name: str
    period: int

    def desired(self, view: View) -> int: ...


@dataclasses.dataclass
class Result:
    policy: str
    trace: str
    duration: int
    requests: int
    violation_seconds: int
    replica_seconds: float
    actions: int
    direction_changes: int
    worst_p99_ms: float
    window_p99_ms: list[float | None]
    replicas: IntArray  # ordered replicas at each second
    ready: IntArray
    offered_qps: FloatArray  # the trace's rate at each second
    violated: BoolArray  # per whole 10-second window (by arrival): its p99 exceeded the target
    timed_out: int = 0  # requests refused after their queue timeout (bounded queue)
    queue_full: int = 0  # requests refused because the queue was full

    def scored(self, warmup_seconds: int) -> tuple[int, float]:
        """(SLO-violation seconds, replica-seconds) counting only from ``warmup_seconds``
        on (rounded up to a whole window): the score after a warm-up, when every policy
        has had time to leave its start. Replica-seconds are the replicas ordered each
        second from then on."""
        first = -(-warmup_seconds // SLO_WINDOW)
        start = first * SLO_WINDOW
        return int(self.violated[first:].sum()) * SLO_WINDOW, float(self.replicas[start:].sum())

    def summary(self) -> dict[str, float | int | str]:
        return {
            "policy": self.policy,
            "trace": self.trace,
            "durationSeconds": self.duration,
            "requests": self.requests,
            "sloViolationSeconds": self.violation_seconds,
            "replicaSeconds": round(self.replica_seconds, 1),
            "scalingActions": self.actions,
            "directionChanges": self.direction_changes,
            "worstP99Ms": round(self.worst_p99_ms, 2),
            "refusedTimedOut": self.timed_out,
            "refusedQueueFull": self.queue_full,
        }


class Simulation:
    """One run: a trace, a replica model, an autoscaler. Deterministic for a seed."""

    def __init__(
        self,
        trace: Trace,
        batching: Batching,
        autoscaler: Autoscaler,
        *,
        target_p99_ms: float,
        min_replicas: int,
        max_replicas: int,
        initial_replicas: int,
        startup_seconds: float = 30.0,
        metrics_lag_seconds: int = 2,
        history_seconds: int = 120,
        seed: int = 0,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        if not 1 <= min_replicas <= initial_replicas <= max_replicas:
            raise ValueError("need 1 <= minReplicas <= initial replicas <= maxReplicas")
        self.trace = trace
        self.batching = batching
        self.autoscaler = autoscaler
        self.target_s = target_p99_ms / 1000.0
        self.min_replicas, self.max_replicas = min_replicas, max_replicas
        self.startup = startup_seconds
        self.lag = metrics_lag_seconds
        self.ring = history_seconds + metrics_lag_seconds + 2
        self.rng = np.random.default_rng(seed)
        self.progress = progress
        n = trace.duration
        self.completed = np.zeros(n + 1, np.int64)
        self.timed_out = np.zeros(n + 1, np.int64)
        self.queue_full = np.zeros(n + 1, np.int64)
        windows = -(-n // SLO_WINDOW) + 1
        self.win_requests = np.zeros(windows, np.int64)
        self.win_slow = np.zeros(windows, np.int64)
        self.win_hist = np.zeros((windows, _NBINS), np.int64)
        self.pods: list[_Pod] = [
            self._new_pod(-startup_seconds, 0.0) for _ in range(initial_replicas)
        ]
        self.replica_seconds = 0.0
        self.actions = 0
        self.direction_changes = 0
        self._last_direction = 0
        profile = batching.profile
        self._a = profile.service_a_ms / 1000.0
        self._b = profile.service_b_ms / 1000.0
        self._overhead = profile.overhead_ms / 1000.0
        delay = batching.max_queue_delay_us
        self._delay = -1.0 if delay is None else delay / 1e6

    def _new_pod(self, ordered_at: float, ready_at: float) -> _Pod:
        return _Pod(
            ordered_at=ordered_at,
            ready_at=ready_at,
            free_at=np.full(self.batching.instances, ready_at),
            ring_counts=np.zeros(self.ring, np.int64),
            ring_hist=np.zeros((self.ring, _NBINS), np.int64),
            ring_queued=np.zeros(self.ring, np.int64),
        )

    # --- scaling -------------------------------------------------------------------

    def _scale(self, now: int, wanted: int) -> None:
        wanted = max(self.min_replicas, min(self.max_replicas, wanted))
        current = len(self.pods)
        if wanted == current:
            return
        direction = 1 if wanted > current else -1
        self.actions += 1
        if self._last_direction and direction != self._last_direction:
            self.direction_changes += 1
        self._last_direction = direction
        if wanted > current:
            self.pods += [self._new_pod(now, now + self.startup) for _ in range(wanted - current)]
            return
        # Starting pods go first (newest first), then the newest ready ones.
        order = sorted(self.pods, key=lambda p: (p.ready(now), -p.ordered_at))
        for pod in order[: current - wanted]:
            self.pods.remove(pod)
            self.replica_seconds += now - max(pod.ordered_at, 0.0)
            self._run(pod, now, math.inf)  # it finishes what it has queued

    # --- serving -------------------------------------------------------------------

    def _run(self, pod: _Pod, second: int, horizon: float) -> None:
        if self.batching.bounded:
            self._run_bounded(pod, second, horizon)
            return
        queue = pod.queue
        if queue.shape[0] == 0:
            return
        room = queue.shape[0]
        first = np.empty(room, np.int64)
        size = np.empty(room, np.int64)
        end = np.empty(room, np.float64)
        j, written = replica.serve_fast(
            queue, 0, pod.free_at, horizon, self.batching.max_batch_size, self._delay,
            self._a, self._b, first, size, end,
        )  # fmt: skip
        if written == 0:
            return
        done = queue[:j]
        pod.queue = queue[j:]
        self._record(pod, second, done, np.repeat(end[:written], size[:written]) - done)

    def _run_bounded(self, pod: _Pod, second: int, horizon: float) -> None:
        queue = pod.queue
        if queue.shape[0] == 0:
            return
        timeout = self.batching.timeout_s
        replica.serve_bounded_fast(
            queue, pod.state, pod.end, pod.free_at, horizon, self.batching.max_batch_size,
            self._delay, self._a, self._b, self.batching.max_queue_size,
            -1.0 if timeout is None else timeout,
        )  # fmt: skip
        # Everything before the first request still waiting (or not yet admitted) is done.
        open_ = np.flatnonzero(pod.state <= replica.WAITING)
        decided = int(open_[0]) if open_.shape[0] else queue.shape[0]
        if decided == 0:
            return
        state, end = pod.state[:decided], pod.end[:decided]
        done = queue[:decided]
        pod.queue, pod.state, pod.end = queue[decided:], pod.state[decided:], pod.end[decided:]
        served = state == replica.SERVED
        at = min(second, len(self.completed) - 1)
        self.timed_out[at] += int(np.count_nonzero(state == replica.TIMED_OUT))
        self.queue_full[at] += int(np.count_nonzero(state == replica.QUEUE_FULL))
        # A refusal is a failed request of its window: counted, and never within the SLO.
        refused = (done[~served] // SLO_WINDOW).astype(np.int64)
        np.add.at(self.win_requests, refused, 1)
        np.add.at(self.win_slow, refused, 1)
        if np.any(served):
            self._record(pod, second, done[served], end[served] - done[served])

    def _record(self, pod: _Pod, second: int, done: FloatArray, service: FloatArray) -> None:
        """Requests ``done`` (their arrival times) completed after ``service`` seconds."""
        j = done.shape[0]
        latency = service + self._overhead
        bins = _bin(latency)
        slot = second % self.ring
        pod.ring_counts[slot] += j
        pod.ring_hist[slot] += np.bincount(bins, minlength=_NBINS)
        self.completed[min(second, len(self.completed) - 1)] += j
        windows = (done // SLO_WINDOW).astype(np.int64)
        lo, hi = int(windows[0]), int(windows[-1])
        if lo == hi:
            self.win_requests[lo] += j
            self.win_slow[lo] += int(np.count_nonzero(latency > self.target_s))
            self.win_hist[lo] += np.bincount(bins, minlength=_NBINS)
        else:
            np.add.at(self.win_requests, windows, 1)
            np.add.at(self.win_slow, windows[latency > self.target_s], 1)
            np.add.at(self.win_hist, (windows, bins), 1)

    def _arrivals(self, second: int, pods: list[_Pod]) -> None:
        rate = float(self.trace.rate[second])
        if rate <= 0 or not pods:
            return
        counts = self.rng.poisson(rate / len(pods), size=len(pods))
        for pod, k in zip(pods, counts, strict=True):
            if k == 0:
                continue
            # Sorted uniform times in the second, without a sort: normalised exponential sums.
            gaps = self.rng.standard_exponential(int(k) + 1)
            times = second + np.cumsum(gaps)[:-1] / gaps.sum()
            pod.queue = np.concatenate((pod.queue, times)) if pod.queue.shape[0] else times
            if self.batching.bounded:
                pod.state = np.concatenate((pod.state, np.zeros(times.shape[0], np.int8)))
                pod.end = np.concatenate((pod.end, np.zeros(times.shape[0])))

    def run(self) -> Result:
        n = self.trace.duration
        period = max(1, int(self.autoscaler.period))
        replicas = np.zeros(n, np.int64)
        ready_count = np.zeros(n, np.int64)
        for second in range(n):
            if second % period == 0 and second > 0:
                self._decide(second)
            for pod in self.pods:
                pod.ring_counts[second % self.ring] = 0
                pod.ring_hist[second % self.ring] = 0
            ready = [p for p in self.pods if p.ready(second)]
            self._arrivals(second, ready)
            for pod in ready:
                self._run(pod, second, second + 1.0)
                pod.ring_queued[second % self.ring] = pod.waiting()
            replicas[second] = len(self.pods)
            ready_count[second] = len(ready)
            if self.progress is not None and second % 60 == 0:
                self.progress(second, n)
        for pod in self.pods:
            self.replica_seconds += n - max(pod.ordered_at, 0.0)
            self._run(pod, n, math.inf)
        return self._result(replicas, ready_count)

    def _decide(self, second: int) -> None:
        view = View(self, second)
        self._scale(second, self.autoscaler.desired(view))

    def _result(self, replicas: IntArray, ready: IntArray) -> Result:
        windows = self.trace.duration // SLO_WINDOW  # whole windows only
        requests = self.win_requests[:windows]
        slow = self.win_slow[:windows]
        # Nearest-rank p99 > target  <=>  more requests exceeded the target than the
        # n - ceil(0.99 n) the top 1 % may hold: exact, no histogram involved.
        violated = (requests > 0) & (slow > requests - (99 * requests + 99) // 100)
        p99s = [_quantile_ms(self.win_hist[w], 0.99) for w in range(windows)]
        return Result(
            policy=self.autoscaler.name,
            trace=self.trace.name,
            duration=self.trace.duration,
            requests=int(self.win_requests.sum()),
            violation_seconds=int(violated.sum()) * SLO_WINDOW,
            replica_seconds=self.replica_seconds,
            actions=self.actions,
            direction_changes=self.direction_changes,
            worst_p99_ms=max((p for p in p99s if p is not None), default=0.0),
            window_p99_ms=p99s,
            replicas=replicas,
            ready=ready,
            offered_qps=self.trace.rate.copy(),
            violated=violated,
            timed_out=int(self.timed_out.sum()),
            queue_full=int(self.queue_full.sum()),
        )
