"""Replay a generative trace (each request's arrival, prompt and output tokens) through
token-level replicas (`token_replica`) under one autoscaler: the sibling of `engine`.

Time advances in 1-second steps. In each step:

1. pods whose start-up (scheduling, model load) has passed become ready (routable);
2. the autoscaler decides, if its period has come, from a `TokenView` of the metrics as
   they stood ``metrics_lag_seconds`` ago; new pods are ready ``startup_seconds`` after
   the order; removal takes pods still starting first, then the newest ready ones, and a
   removed pod finishes what it holds (its waiting requests included);
3. the second's requests are spread uniformly at random over the ready pods (a
   Service's routing, seeded), a prompt of a whole context or more is refused at once
   (the engine's error), and each pod's engine runs to the end of the second.

It records what users and the bill see: per 10-second window (by arrival) each
request's time to first token and every gap between two of its tokens, so a window
violates the SLO when more than 1 % of its requests' first tokens are slower than the
TTFT objective or more than 1 % of its gaps slower than the inter-token objective
(either p99 over its objective); a refused request counts as a slow first token.
Replica-seconds count every ordered pod from its order to its removal.

The metrics a policy sees are the vLLM names' (`TokenView`): requests finished, prompt
and generated tokens per second, waiting and running requests, KV-cache usage, and TTFT
and inter-token p99 from per-second histograms, all summed over the ready pods.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Protocol

import numpy as np

from geo_operator.api import models
from geo_operator.simulation import engine as request_engine
from geo_operator.simulation import token_replica
from geo_operator.simulation.replica import BoolArray, FloatArray, IntArray
from geo_operator.simulation.trace import MAX_SPAN_SECONDS, TokenRequests

SLO_WINDOW = request_engine.SLO_WINDOW
_NBINS = request_engine._NBINS
# A replay holds per-second arrays over the trace's span: a span longer than this is
# refused, naming it, rather than allocated.
MAX_SECONDS = MAX_SPAN_SECONDS


def _bin(seconds: float) -> int:
    return int(request_engine._bin(np.asarray([seconds]))[0])


@dataclasses.dataclass(frozen=True)
class Serving:
    """One generative replica: its engine's levers and measured costs."""

    profile: token_replica.TokenProfile
    slots: int
    context_length: int
    batch_tokens: int
    max_tokens_cap: int | None = None

    def replica(self, ready_at: float) -> token_replica.TokenReplica:
        return token_replica.TokenReplica(
            self.profile,
            slots=self.slots,
            context_length=self.context_length,
            batch_tokens=self.batch_tokens,
            ready_at=ready_at,
        )

    def work_seconds(self, prompt: FloatArray, output: FloatArray) -> FloatArray:
        """Engine-seconds each request costs with every slot busy: the token demand's
        weight (prompt tokens at the prefill cost, output tokens at a full batch's)."""
        per_prompt, per_token = self.profile.token_seconds(self.slots)
        work: FloatArray = prompt * per_prompt + np.maximum(output - 1, 0) * per_token
        return work


@dataclasses.dataclass(frozen=True)
class TokenObjectives:
    ttft_ms: float
    itl_ms: float


@dataclasses.dataclass
class _Pod:
    ordered_at: float
    ready_at: float
    engine: token_replica.TokenReplica
    ring_waiting: IntArray
    ring_running: IntArray
    ring_kv: FloatArray

    def ready(self, now: float) -> bool:
        return self.ready_at <= now


class TokenView:
    """What an autoscaler sees at ``time``: the replica counts now, metrics ``lag`` old."""

    def __init__(self, sim: TokenSimulation, time: int) -> None:
        self._sim = sim
        self.time = time
        self.replicas = len(sim.pods)
        self.ready = sum(1 for p in sim.pods if p.ready(time))
        self.serving = sim.serving
        self.objectives = sim.objectives

    @property
    def starting(self) -> int:
        return self.replicas - self.ready

    def _seconds(self, window: int) -> range:
        end = self.time - self._sim.lag
        return range(max(0, end - window), max(0, end))

    def _rate(self, series: FloatArray | IntArray, window: int) -> float | None:
        seconds = self._seconds(window)
        if len(seconds) == 0:
            return None
        return float(series[seconds.start : seconds.stop].sum()) / len(seconds)

    def request_rate(self, window: int) -> float | None:
        """Requests finished per second (vllm:request_success_total's rate)."""
        return self._rate(self._sim.completed, window)

    def prompt_tps(self, window: int) -> float | None:
        """Prompt tokens processed per second (vllm:prompt_tokens_total's rate)."""
        return self._rate(self._sim.prompt_tokens, window)

    def generated_tps(self, window: int) -> float | None:
        """Generated tokens per second (vllm:generation_tokens_total's rate)."""
        return self._rate(self._sim.generated_tokens, window)

    def _snapshot(self) -> list[_Pod] | None:
        if self.time - self._sim.lag - 1 < 0:
            return None
        return [p for p in self._sim.pods if p.ready(self.time - self._sim.lag)]

    def _slot(self) -> int:
        return (self.time - self._sim.lag - 1) % self._sim.ring

    def waiting_per_pod(self) -> list[int] | None:
        """Each ready pod's waiting requests (vllm:num_requests_waiting)."""
        pods = self._snapshot()
        return None if pods is None else [int(p.ring_waiting[self._slot()]) for p in pods]

    def running_per_pod(self) -> list[int] | None:
        pods = self._snapshot()
        return None if pods is None else [int(p.ring_running[self._slot()]) for p in pods]

    def kv_per_pod(self) -> list[float] | None:
        """Each ready pod's KV-cache usage, 0..1 (vllm:kv_cache_usage_perc)."""
        pods = self._snapshot()
        return None if pods is None else [float(p.ring_kv[self._slot()]) for p in pods]

    def waiting(self) -> float | None:
        per_pod = self.waiting_per_pod()
        return None if per_pod is None else float(sum(per_pod))

    def kv_usage(self) -> float | None:
        """The ready pods' mean KV-cache usage."""
        per_pod = self.kv_per_pod()
        return None if not per_pod else sum(per_pod) / len(per_pod)

    def _p99_ms(self, hist: IntArray, window: int) -> float | None:
        seconds = self._seconds(window)
        if len(seconds) == 0:
            return None
        # a slot not written since the ring came round holds an older second: skip it
        slots = [
            s % self._sim.ring for s in seconds if self._sim._ring_second[s % self._sim.ring] == s
        ]
        if not slots:
            return request_engine._quantile_ms(np.zeros(_NBINS, np.int64), 0.99)
        return request_engine._quantile_ms(hist[slots].sum(axis=0), 0.99)

    def ttft_p99_ms(self, window: int) -> float | None:
        """p99 of the first tokens sent in the window (vllm:time_to_first_token_seconds)."""
        return self._p99_ms(self._sim.ring_ttft, window)

    def itl_p99_ms(self, window: int) -> float | None:
        """p99 of the gaps between tokens (vllm:time_per_output_token_seconds)."""
        return self._p99_ms(self._sim.ring_itl, window)

    def startup_seconds(self, samples: int = 10) -> float | None:
        ready = sorted((p for p in self._sim.pods if p.ready(self.time)), key=lambda p: p.ready_at)
        times = [p.ready_at - p.ordered_at for p in ready[-samples:]]
        return float(np.median(times)) if times else None


class TokenAutoscaler(Protocol):
    """A policy under test: asked every ``period`` seconds for the replicas it wants."""

    name: str
    period: int

    def desired(self, view: TokenView) -> int: ...


@dataclasses.dataclass
class TokenResult:
    policy: str
    trace: str
    duration: int
    requests: int
    violation_seconds: int
    replica_seconds: float
    actions: int
    direction_changes: int
    worst_ttft_p99_ms: float
    worst_itl_p99_ms: float
    refused: int
    queued: int  # requests that waited for a slot
    replicas: IntArray
    ready: IntArray
    violated: BoolArray

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
            "worstTtftP99Ms": round(self.worst_ttft_p99_ms, 2),
            "worstItlP99Ms": round(self.worst_itl_p99_ms, 2),
            "refusedRequests": self.refused,
            "queuedRequests": self.queued,
        }


class TokenSimulation:
    """One run: a generative trace, a replica model, an autoscaler. Deterministic for a seed."""

    def __init__(
        self,
        requests: TokenRequests,
        serving: Serving,
        autoscaler: TokenAutoscaler,
        objectives: TokenObjectives,
        *,
        min_replicas: int,
        max_replicas: int,
        initial_replicas: int,
        startup_seconds: float = 30.0,
        metrics_lag_seconds: int = 5,
        history_seconds: int = 300,
        seed: int = 0,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        if not 1 <= min_replicas <= initial_replicas <= max_replicas:
            raise ValueError("need 1 <= minReplicas <= initial replicas <= maxReplicas")
        n = math.floor(float(requests.arrivals[-1])) + 1 if len(requests.arrivals) else 1
        if n > MAX_SECONDS:
            raise ValueError(
                f"trace {requests.name} spans {n} s ({n / 86400:.0f} days): a replay holds "
                f"per-second series, at most {MAX_SECONDS} s ({MAX_SECONDS // 86400} days)"
            )
        self.requests = requests
        self.serving = serving
        self.autoscaler = autoscaler
        self.objectives = objectives
        self.min_replicas, self.max_replicas = min_replicas, max_replicas
        self.startup = startup_seconds
        self.lag = metrics_lag_seconds
        self.ring = history_seconds + metrics_lag_seconds + 2
        self.rng = np.random.default_rng(seed)
        self.progress = progress
        self.duration = n
        cap = serving.max_tokens_cap
        self.outputs = (
            requests.generated_tokens if cap is None else np.minimum(requests.generated_tokens, cap)
        )
        self.completed = np.zeros(n + 1, np.int64)
        self.prompt_tokens = np.zeros(n + 1, np.int64)
        self.generated_tokens = np.zeros(n + 1, np.int64)
        self.ring_ttft = np.zeros((self.ring, _NBINS), np.int64)
        self.ring_itl = np.zeros((self.ring, _NBINS), np.int64)
        self._ring_second = np.full(self.ring, -1, np.int64)  # which second each slot holds
        windows = -(-n // SLO_WINDOW) + 1
        self.win_requests = np.zeros(windows, np.int64)
        self.win_ttft_slow = np.zeros(windows, np.int64)
        self.win_gaps = np.zeros(windows, np.int64)
        self.win_itl_slow = np.zeros(windows, np.int64)
        self.win_ttft_hist = np.zeros((windows, _NBINS), np.int64)
        self.win_itl_hist = np.zeros((windows, _NBINS), np.int64)
        self.window_of = (requests.arrivals // SLO_WINDOW).astype(np.int64)
        self.refused = 0
        self.queued = 0
        self.pods: list[_Pod] = [
            self._new_pod(-startup_seconds, 0.0) for _ in range(initial_replicas)
        ]
        self.replica_seconds = 0.0
        self.actions = 0
        self.direction_changes = 0
        self._last_direction = 0
        self._ttft_s = objectives.ttft_ms / 1000.0
        self._itl_s = objectives.itl_ms / 1000.0

    def _new_pod(self, ordered_at: float, ready_at: float) -> _Pod:
        return _Pod(
            ordered_at=ordered_at,
            ready_at=ready_at,
            engine=self.serving.replica(ready_at),
            ring_waiting=np.zeros(self.ring, np.int64),
            ring_running=np.zeros(self.ring, np.int64),
            ring_kv=np.zeros(self.ring, np.float64),
        )

    # --- the Sink the replicas report to ------------------------------------------

    def _ring_slot(self, at: float) -> int | None:
        second = int(at)
        if second > self.duration:
            return None
        slot = second % self.ring
        if self._ring_second[slot] != second:
            self._ring_second[slot] = second
            self.ring_ttft[slot] = 0
            self.ring_itl[slot] = 0
        return slot

    def first_token(self, request: int, at: float, ttft: float) -> None:
        window = self.window_of[request]
        b = _bin(ttft)
        self.win_ttft_hist[window, b] += 1
        if ttft > self._ttft_s:
            self.win_ttft_slow[window] += 1
        slot = self._ring_slot(at)
        if slot is not None:
            self.ring_ttft[slot, b] += 1

    def gaps(self, request: int, at: float, gap: float, count: int) -> None:
        window = self.window_of[request]
        b = _bin(gap)
        self.win_gaps[window] += count
        self.win_itl_hist[window, b] += count
        if gap > self._itl_s:
            self.win_itl_slow[window] += count
        slot = self._ring_slot(at)
        if slot is not None:
            self.ring_itl[slot, b] += count

    def tokens(self, at: float, prompt: int, generated: int) -> None:
        second = min(int(at), self.duration)
        self.prompt_tokens[second] += prompt
        self.generated_tokens[second] += generated

    def finished(self, request: int, at: float) -> None:
        self.completed[min(int(at), self.duration)] += 1

    # --- scaling ------------------------------------------------------------------

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
        order = sorted(self.pods, key=lambda p: (p.ready(now), -p.ordered_at))
        for pod in order[: current - wanted]:
            self.pods.remove(pod)
            self.replica_seconds += now - max(pod.ordered_at, 0.0)
            pod.engine.advance(math.inf, self)  # it finishes what it holds
            self.queued += pod.engine.waited

    # --- the run ------------------------------------------------------------------

    def run(self) -> TokenResult:
        arrivals = self.requests.arrivals
        prompts = self.requests.context_tokens
        n = self.duration
        replicas = np.zeros(n, np.int64)
        ready_counts = np.zeros(n, np.int64)
        bounds = np.searchsorted(arrivals, np.arange(n + 1, dtype=np.float64), side="left")
        context = self.serving.context_length
        for t in range(n):
            if t % self.autoscaler.period == 0:
                self._scale(t, self.autoscaler.desired(TokenView(self, t)))
            ready = [p for p in self.pods if p.ready(t)]
            replicas[t] = len(self.pods)
            ready_counts[t] = len(ready)
            first, last = int(bounds[t]), int(bounds[t + 1])
            if last > first:
                picks = self.rng.integers(0, len(ready), last - first) if ready else None
                for k, i in enumerate(range(first, last)):
                    prompt = int(prompts[i])
                    self.win_requests[self.window_of[i]] += 1
                    if not 0 < prompt < context or picks is None:
                        self.refused += 1
                        self.win_ttft_slow[self.window_of[i]] += 1
                        continue
                    pod = ready[int(picks[k])]
                    pod.engine.submit(i, float(arrivals[i]), prompt, int(self.outputs[i]))
            slot = t % self.ring
            for pod in self.pods:
                pod.engine.advance(t + 1.0, self)
                pod.ring_waiting[slot] = pod.engine.queued(t + 1.0)
                pod.ring_running[slot] = pod.engine.running
                pod.ring_kv[slot] = pod.engine.kv_usage()
            if self.progress is not None and t % 300 == 0:
                self.progress(t, n)
        for pod in self.pods:
            pod.engine.advance(math.inf, self)
            self.queued += pod.engine.waited
            self.replica_seconds += n - max(pod.ordered_at, 0.0)
        return self._result(replicas, ready_counts)

    def _result(self, replicas: IntArray, ready: IntArray) -> TokenResult:
        ttft_bad = self.win_ttft_slow * 100 > self.win_requests
        itl_bad = self.win_itl_slow * 100 > self.win_gaps
        violated = (ttft_bad | itl_bad)[: -(-self.duration // SLO_WINDOW)]
        ttft = [request_engine._quantile_ms(h, 0.99) for h in self.win_ttft_hist]
        itl = [request_engine._quantile_ms(h, 0.99) for h in self.win_itl_hist]
        return TokenResult(
            policy=self.autoscaler.name,
            trace=self.requests.name,
            duration=self.duration,
            requests=len(self.requests.arrivals),
            violation_seconds=int(violated.sum()) * SLO_WINDOW,
            replica_seconds=self.replica_seconds,
            actions=self.actions,
            direction_changes=self.direction_changes,
            worst_ttft_p99_ms=max((v for v in ttft if v is not None), default=0.0),
            worst_itl_p99_ms=max((v for v in itl if v is not None), default=0.0),
            refused=self.refused,
            queued=self.queued,
            replicas=replicas,
            ready=ready,
            violated=violated,
        )


@dataclasses.dataclass(frozen=True)
class Options:
    """Everything about a generative replay that is not in the GeoDeployment."""

    startup_seconds: float = 30.0  # pod scheduled, image present, model loaded
    metrics_lag_seconds: int = 5
    seed: int = 0
    profile: token_replica.TokenProfile | None = None  # None: the calibrated one


def serving(spec: models.GeoDeploymentSpec, profile: token_replica.TokenProfile) -> Serving:
    """The replica as the spec's engine levers set it (context: the spec's, else 4096)."""
    engine = spec.triton.engine or models.EngineSpec()
    return Serving(
        profile,
        slots=engine.slots,
        context_length=engine.context_length or DEFAULT_CONTEXT,
        batch_tokens=engine.batch_tokens,
        max_tokens_cap=engine.max_tokens_cap,
    )


DEFAULT_CONTEXT = 4096


def replay(
    spec: models.GeoDeploymentSpec,
    requests: TokenRequests,
    name: str,
    options: Options = Options(),
    progress: Callable[[int, int], None] | None = None,
) -> TokenResult:
    """One policy's replay of ``requests`` for the generative ``spec``."""
    from geo_operator.simulation import token_autoscalers

    profile = options.profile or token_replica.TokenProfile.load()
    replica = serving(spec, profile)
    ttft, itl = token_autoscalers.objectives(spec)
    scaler = token_autoscalers.make(name, spec, replica, requests, options.startup_seconds)
    oracle = token_autoscalers.Oracle(spec.autoscaling, replica, requests, options.startup_seconds)
    # A running system is not cold at the trace's first second: every policy starts at
    # what the first minute needs at the target (the oracle's plan).
    initial = int(oracle.plan[: min(60, len(oracle.plan))].max())
    a = spec.autoscaling
    sim = TokenSimulation(
        requests,
        replica,
        scaler,
        TokenObjectives(ttft, itl),
        min_replicas=a.min_replicas,
        max_replicas=a.max_replicas,
        initial_replicas=max(a.min_replicas, min(a.max_replicas, initial)),
        startup_seconds=options.startup_seconds,
        metrics_lag_seconds=options.metrics_lag_seconds,
        seed=options.seed,
        progress=progress,
    )
    return sim.run()
