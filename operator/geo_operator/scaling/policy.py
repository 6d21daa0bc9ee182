"""The autoscaling decision: QPS and p99 in, scale_out / scale_in / maintain out.

Pure and deterministic: `decide(autoscaling_spec, observation, memory)` returns
the decision and the memory for the next tick. Called by `geo decide`, by the
operator's loop and by the trace simulator (`geo simulate`): one code path.

The rule (DESIGN.md), per ready replica:

- **scale_out** when QPS per replica > target × scaleOutRatio, or p99 > the p99
  target (an SLO breach is never read as "maintain", except at maxReplicas,
  while replicas already ordered are still starting, or while a known queue is
  shrinking with enough replicas for the arrivals — each named in the reason:
  the slow requests then sit in the old pods' queues, where new pods can't help);
- **scale_in** when QPS per replica < target × scaleInRatio **and** p99 < the p99
  target × latencyHeadroom, once scaleInStabilizationSeconds have passed with no
  scale-out and no blind tick (ticks within band count as evidence: they do not
  restart the window, or steady noisy load would never scale in);
- **maintain** otherwise, and always when metrics are missing or stale: a
  missing number is never read as zero, so we never scale in blind.

The target QPS per replica is the caller's (`scaling.capacity` resolves it:
declared, measured × utilization, or learned). With no target at all, only the
p99 rule scales out and nothing scales in.

Arrivals are the QPS served plus the queue's growth since the last tick (what
the pods did not keep up with); demand adds the backlog over DRAIN_SECONDS.
The arrivals' trend, when it stands out of the noise (a t-test on the slope),
projected ahead by the pods' measured start-up time (LEAD_SECONDS until one is
seen; rising only, at most +50 %) and added to the demand, is the "projected"
load. A projected load above target × scaleOutRatio is a reason to scale out
now, so the new pods are ready when it arrives (predictive scale-out).

How far one decision moves (the anchors are HPA and KPA):

- out: proportional, like HPA — enough replicas that each carries the target
  (`ceil(max(demand, projected) / targetQpsPerReplica)`, within 10 %), and on
  a latency breach with the queue unknown at least `ceil(replicas × min(p99 /
  target, 2))`; always at least one more; capped by maxReplicas. Pods that
  are ordered but not ready count as capacity, so a second tick during
  start-up does not pile on more.
- in: once the load has been low for the whole stabilization window, to the
  highest recommendation seen during the window (HPA's scale-down
  stabilization), never below minReplicas, at most halving in one step; the
  window keeps its evidence, so the next ticks may halve again (20 -> 10 -> 5
  in two intervals) instead of waiting a whole window per step.

**A generative model** (an `Observation` with `tokens`: its TTFT and inter-token
objectives and the measured engine-seconds per prompt and per generated token) is sized
in tokens, not requests (`_decide_tokens`): the demand is the prompt and generated tokens
per second weighted by their measured cost (busy engines), plus the waiting requests'
growth and backlog at the mean request's cost; the target is ``targetUtilization`` of
an engine. It scales out when that demand needs more engines than are ordered, or when
requests wait (every slot taken) with the KV cache nearly full, or with the queue growing
beyond what one engine serves within the TTFT objective (the waiting requests at the
mean request's cost: a queue of a few requests that arrived together is served in time
and is no reason; its figures are in the reason); a TTFT or inter-token p99 over its
objective is a reason only with a queue or a full cache behind it: a slow first token
with an empty queue and free KV cache is a long prompt's prefill, which more replicas do
not shorten (the reason says so). It scales in as above (the same window, halving, bursts
kept warm), when the demand is below ``scaleInRatio`` of the target, nothing waits and
both p99s are within ``latencyHeadroom`` of their objectives, to no fewer replicas than
carry the window's highest projected demand at the target (without the scale-out
tolerance, which would leave them at 111 % of it, one rise from the next scale-out).
Missing numbers hold, as above.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

from geo_operator.api import models

# Proportional moves ignore changes within 10 % of the target, like HPA's
# --horizontal-pod-autoscaler-tolerance default.
TOLERANCE = 0.10
# One latency-driven step at most doubles the replicas (when the queue is unknown).
MAX_LATENCY_FACTOR = 2.0
# QPS is counted at completion, so under overload it shows what the pods
# manage, not what arrives; the queue shows the rest. A queue that grew since the
# last tick means arrivals beyond what was served: its growth rate is added to
# the demand. The backlog itself is to be worked off within DRAIN_SECONDS; it
# sits in the old pods' queues (Triton queues per process, a Service cannot move
# it), so sizing for a faster drain buys little: new pods only take new arrivals.
DRAIN_SECONDS = 60.0
# The trend: a least-squares slope of arrivals over the last TREND_SECONDS (at
# least TREND_MIN_SAMPLES ticks), projected ahead by the time a new pod takes to
# be scheduled, load its model and pass readiness: as measured on this
# deployment's own pods (`Observation.startup_seconds`), LEAD_SECONDS until one
# has been seen start.
TREND_SECONDS = 120.0
TREND_MIN_SAMPLES = 5
LEAD_SECONDS = 30.0
# The projection adds at most this fraction of the demand: a step is not a trend.
MAX_TREND_GAIN = 0.5
# A slope counts only when it stands out of the noise: above TREND_T times its
# standard error (one-sided, about 2.5 % false trends on stationary noise). Ticks
# are closer together than the load changes (a 30 s rate window read every 2 s),
# so successive residuals are correlated; the error is widened by the lag-1
# autocorrelation (effective samples n(1-rho)/(1+rho)), or a noisy flat load
# would look like a trend half the time (the positive half of zero-mean noise).
TREND_T = 2.0
MAX_RHO = 0.9


# Triton's p99 is a summary of the last minute: after a backlog is served it stays
# high for up to a minute. A breach whose queues hold less than this fraction of the
# objective's worth of work (queued / QPS, the mean wait by Little's law), with the
# replicas covering the arrivals, is of requests already served: more replicas can't
# make it better (the same rule `scaling.capacity` learns by).
BACKLOG_FRACTION = 0.1
# Shed load is demand. Requests Triton refused after a queue timeout are counted
# (failure reason REJECTED) and added to the arrivals. Requests refused because the
# queue was full are counted by no metric of Triton 2.51: when the ready pods' queues
# hold at least SATURATED_FRACTION of their bound, the arrivals served are a floor,
# not the demand, and the demand is taken as SATURATION_GAIN times them: the loop
# scales out geometrically (from the ready pods' figures, so pods still starting
# aren't ordered again) until the queues are no longer full.
SATURATED_FRACTION = 0.8
SATURATION_GAIN = 1.5
# Bursts: scale-outs for load within BURST_MERGE_SECONDS of the last one belong to
# the same burst (one burst is ordered in steps); the last BURST_HISTORY bursts of
# the last BURST_HORIZON_SECONDS are remembered, each marked when p99 went over the
# objective within BURST_MERGE_SECONDS of its start. Only those cost anything cold:
# a burst the headroom served (steady noisy load) is no reason to keep replicas.
# The rhythm is broken (nothing is kept warm) once the time since the last costly
# burst exceeds RHYTHM_SLACK × the longest gap seen.
BURST_MERGE_SECONDS = 90.0
BURST_HISTORY = 8
BURST_HORIZON_SECONDS = 3600.0
RHYTHM_SLACK = 1.5


@dataclasses.dataclass(frozen=True)
class TokenTargets:
    """A generative model's objectives and measured costs: what turns token signals into
    engines (the loop and the simulator fill it from the spec and the tuning result)."""

    ttft_p99_ms: float  # objectives.timeToFirstTokenP99Ms
    itl_p99_ms: float  # objectives.interTokenLatencyP99Ms
    prompt_token_seconds: float  # engine-seconds per prompt token (prefill)
    generated_token_seconds: float  # engine-seconds per generated token, slots all decoding
    slots: int = 1  # sequences one engine decodes together


@dataclasses.dataclass(frozen=True)
class Observation:
    """What the loop saw at `time` (seconds, any monotonic origin)."""

    time: float
    replicas: int  # replicas asked of the Deployment
    ready_replicas: int
    qps: float | None  # total successful requests per second over the ready pods
    p99_ms: float | None  # worst p99 among the ready pods
    missing: str | None = None  # why the metrics are missing or stale, if they are
    queued: float | None = None  # requests waiting in the ready pods' queues, when known
    # How long this deployment's pods took from creation to Ready (measured by the
    # loop, a median of recent pods); None: none seen yet, LEAD_SECONDS is assumed.
    startup_seconds: float | None = None
    rejected_qps: float | None = None  # requests refused after a queue timeout, per second
    queue_bound: float | None = None  # most requests the ready pods' queues hold; None: no bound
    cache_hit_ratio: float | None = None  # shown in the figures; the policy doesn't use it
    # A generative model's signals (vLLM's metric names), None where not known or not
    # generative; `tokens` set makes the decision one in tokens (`_decide_tokens`).
    prompt_tps: float | None = None  # vllm:prompt_tokens_total per second, ready pods
    generated_tps: float | None = None  # vllm:generation_tokens_total per second
    waiting: float | None = None  # vllm:num_requests_waiting, summed over the ready pods
    kv_usage: float | None = None  # vllm:kv_cache_usage_perc, the ready pods' mean, 0..1
    ttft_p99_ms: float | None = None  # vllm:time_to_first_token_seconds p99
    itl_p99_ms: float | None = None  # vllm:time_per_output_token_seconds p99
    tokens: TokenTargets | None = None


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def observation(
    time: float,
    replicas: int,
    ready_replicas: int,
    qps: float | None,
    p99_ms: float | None,
    queued: float | None = None,
    *,
    missing: str | None = None,
    no_p99: str = "no p99 yet",
    startup_seconds: float | None = None,
    rejected_qps: float | None = None,
    queue_bound: float | None = None,
    cache_hit_ratio: float | None = None,
    prompt_tps: float | None = None,
    generated_tps: float | None = None,
    waiting: float | None = None,
    kv_usage: float | None = None,
    ttft_p99_ms: float | None = None,
    itl_p99_ms: float | None = None,
    tokens: TokenTargets | None = None,
) -> Observation:
    """The one rule that turns measured numbers into an Observation (the loop, the
    simulator and `geo decide` all call it).

    A known reason for missing data wins. A number that is not finite (NaN, +Inf from a
    Prometheus answer) is missing data, never a load. No p99 with no traffic is an idle
    server: a latency of 0 is the truth, not a guess. No p99 with traffic is missing
    (``no_p99`` says why), and so is no request rate.
    """
    qps, p99_ms, queued = _finite(qps), _finite(p99_ms), _finite(queued)
    prompt_tps, generated_tps = _finite(prompt_tps), _finite(generated_tps)
    ttft_p99_ms, itl_p99_ms = _finite(ttft_p99_ms), _finite(itl_p99_ms)
    if tokens is not None:
        # A generative model's p99 is its first token's; its load, tokens.
        p99_ms = ttft_p99_ms if p99_ms is None else p99_ms
        if missing is None and (prompt_tps is None or generated_tps is None):
            missing = "no token rates yet"
        if missing is None and qps == 0 and ttft_p99_ms is None and itl_p99_ms is None:
            ttft_p99_ms = itl_p99_ms = 0.0  # idle: no token was slow
    startup = _finite(startup_seconds)
    startup = startup if startup is not None and startup >= 0 else None
    if missing is None and qps is None:
        missing = "no request rate yet"
    if missing is None and p99_ms is None:
        if qps != 0:
            missing = no_p99
        else:
            p99_ms = 0.0
    if missing is not None:
        return Observation(
            time, replicas, ready_replicas, None, None, missing, startup_seconds=startup
        )
    return Observation(
        time,
        replicas,
        ready_replicas,
        qps,
        p99_ms,
        queued=queued,
        startup_seconds=startup,
        rejected_qps=_finite(rejected_qps),
        queue_bound=queue_bound,
        cache_hit_ratio=_finite(cache_hit_ratio),
        prompt_tps=prompt_tps,
        generated_tps=generated_tps,
        waiting=_finite(waiting),
        kv_usage=_finite(kv_usage),
        ttft_p99_ms=ttft_p99_ms,
        itl_p99_ms=itl_p99_ms,
        tokens=tokens,
    )


@dataclasses.dataclass(frozen=True)
class Memory:
    """What the policy remembers between ticks (kept by the loop, per object)."""

    low_since: float | None = None  # start of the current run of scale-in conditions
    recommendations: tuple[tuple[float, int], ...] = ()  # (time, replicas) in the window
    samples: tuple[tuple[float, float], ...] = ()  # (time, arrivals) over TREND_SECONDS
    queued: tuple[float, float] | None = None  # (time, queued) at the last tick
    # The load bursts the loop has seen: (start, replicas ordered for it, whether p99
    # went over the objective during it), newest last.
    bursts: tuple[tuple[float, int, bool], ...] = ()


@dataclasses.dataclass(frozen=True)
class Decision:
    """One decision and the numbers behind it."""

    action: models.Action
    replicas: int
    reason: str
    qps_per_replica: float | None
    p99_ms: float | None
    rejected_qps: float | None = None  # refused after a queue timeout, counted as demand


def target_p99_of(spec: models.Autoscaling) -> float:
    """The p99 target (the caller resolves the objective; unset: the default)."""
    return spec.target_p99_latency_ms or models.DEFAULT_P99_LATENCY_MS


def _needed(load: float, target_qps: float | None) -> int:
    """Replicas that carry ``load`` at the target; 0 with no target (latency rules alone)."""
    if load <= 0 or target_qps is None:
        return 0
    return math.ceil(load / target_qps * (1 - TOLERANCE))


def _lead(obs: Observation) -> float:
    """How far ahead a pod ordered now will serve: the measured start-up, else assumed."""
    return LEAD_SECONDS if obs.startup_seconds is None else obs.startup_seconds


def _clamp(spec: models.Autoscaling, n: int) -> int:
    return max(spec.min_replicas, min(spec.max_replicas, n))


def _slope(samples: tuple[tuple[float, float], ...]) -> float:
    """Least-squares slope of (time, arrivals) in requests/s per second, when it stands
    out of the noise (`TREND_T` standard errors, widened for correlated ticks); else 0."""
    n = len(samples)
    if n < TREND_MIN_SAMPLES:
        return 0.0
    mean_t = sum(t for t, _ in samples) / n
    mean_d = sum(d for _, d in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var <= 0:
        return 0.0
    slope = sum((t - mean_t) * (d - mean_d) for t, d in samples) / var
    residuals = [d - mean_d - slope * (t - mean_t) for t, d in samples]
    rss = sum(r * r for r in residuals)
    if rss <= 0:
        return slope  # a perfect line: no noise to stand out of
    rho = sum(a * b for a, b in itertools.pairwise(residuals)) / rss
    rho = min(max(rho, 0.0), MAX_RHO)
    stderr = math.sqrt(rss / (n - 2) / var * (1 + rho) / (1 - rho))
    return slope if abs(slope) > TREND_T * stderr else 0.0


@dataclasses.dataclass(frozen=True)
class _Load:
    """What one tick's observation says about the load, in the policy's terms."""

    qps_pr: float  # QPS per ready replica, as served
    growth: float  # the queue's growth per second since the last tick (arrivals not served)
    demand: float  # arrivals plus the backlog to drain
    projected: float  # demand plus the arrivals' rising trend, a pod start-up ahead
    by_load: int  # replicas that carry the demand at the target
    by_trend: int  # replicas that carry the projected load at the target
    saturated: bool  # bounded queues at their bound: refusals Triton does not count
    numbers: str  # the figures, for every reason
    kept: Memory  # the memory a tick that does not scale in keeps
    # The fewest replicas a scale-in may leave for this tick's load (its recommendation
    # to the stabilization window); None: by_trend.
    settle: int | None = None


def _load(spec: models.Autoscaling, obs: Observation, memory: Memory) -> _Load:
    assert obs.qps is not None and obs.p99_ms is not None
    current = obs.replicas
    target_qps, target_p99 = spec.target_qps_per_replica, target_p99_of(spec)
    backlog = max(0.0, obs.queued or 0.0) / DRAIN_SECONDS
    growth = 0.0
    if obs.queued is not None and memory.queued is not None and obs.time > memory.queued[0]:
        growth = max(0.0, (obs.queued - memory.queued[1]) / (obs.time - memory.queued[0]))
    rejected = max(0.0, obs.rejected_qps or 0.0)
    arrivals = obs.qps + rejected + growth
    saturated = (
        obs.queue_bound is not None
        and obs.queued is not None
        and obs.queued >= SATURATED_FRACTION * obs.queue_bound
    )
    if saturated:
        arrivals *= SATURATION_GAIN
    demand = arrivals + backlog
    # The trend is that of arrivals: a backlog growing while pods start is not more load.
    samples = (
        *(s for s in memory.samples if s[0] >= obs.time - TREND_SECONDS and s[0] < obs.time),
        (obs.time, arrivals),
    )
    lead = _lead(obs)
    trend = min(max(0.0, _slope(samples)) * lead, MAX_TREND_GAIN * arrivals)
    projected = demand + trend
    qps_pr = obs.qps / obs.ready_replicas
    target_text = f"{target_qps:g}" if target_qps is not None else "unknown"
    numbers = (
        f"{qps_pr:.1f} QPS/replica (target {target_text}), p99 {obs.p99_ms:.0f} ms "
        f"(target {target_p99:g})"
    )
    if backlog > 0:
        numbers += f", {obs.queued:.0f} queued"
    if rejected > 0:
        numbers += f", {rejected:.1f} req/s refused after the queue timeout (counted as demand)"
    if obs.cache_hit_ratio is not None:
        numbers += f", response cache hits {obs.cache_hit_ratio:.0%}"
    if saturated:
        numbers += (
            f", queues full ({obs.queued:.0f} of {obs.queue_bound:.0f}: refusals uncounted, "
            f"demand taken as {SATURATION_GAIN:g}x served)"
        )
    if projected > demand:
        measured = "" if obs.startup_seconds is None else ", the pods' measured start-up"
        numbers += (
            f", rising to {projected / max(current, 1):.1f} QPS/replica in {lead:.0f}s{measured}"
        )
    queued_at = None if obs.queued is None else (obs.time, obs.queued)
    return _Load(
        qps_pr=qps_pr,
        growth=growth,
        demand=demand,
        projected=projected,
        by_load=_needed(demand, target_qps),
        by_trend=_needed(projected, target_qps),
        saturated=saturated,
        numbers=numbers,
        kept=Memory(samples=samples, queued=queued_at, bursts=memory.bursts),
    )


def decide(
    spec: models.Autoscaling, obs: Observation, memory: Memory = Memory()
) -> tuple[Decision, Memory]:
    """The decision for one tick, and the memory for the next."""
    decision, kept = _decide(spec, obs, memory)
    if obs.rejected_qps and decision.qps_per_replica is not None:
        decision = dataclasses.replace(decision, rejected_qps=obs.rejected_qps)
    return decision, kept


def _decide(spec: models.Autoscaling, obs: Observation, memory: Memory) -> tuple[Decision, Memory]:
    current = obs.replicas
    if obs.missing is not None or obs.qps is None or obs.p99_ms is None:
        why = obs.missing or "no QPS or p99 reading"
        return (
            Decision("maintain", current, f"metrics unavailable ({why}): holding", None, None),
            # A gap restarts the scale-in window (never scale in across blind time); the
            # bursts seen are the traffic's history, not the metrics', and stay.
            Memory(bursts=memory.bursts),
        )
    if obs.ready_replicas <= 0:
        return (
            Decision("maintain", current, "no ready replica to measure: holding", None, obs.p99_ms),
            Memory(bursts=memory.bursts),
        )
    if obs.tokens is not None:
        decision, kept = _decide_tokens(spec, obs, obs.tokens, memory)
        # The decision's figure stays requests per ready replica (status.lastDecision).
        return dataclasses.replace(decision, qps_per_replica=obs.qps / obs.ready_replicas), kept
    breach = obs.p99_ms > target_p99_of(spec)
    if breach and memory.bursts and not memory.bursts[-1][2]:
        start, height, _ = memory.bursts[-1]
        if obs.time - start <= BURST_MERGE_SECONDS:  # the last burst cost misses
            marked = (*memory.bursts[:-1], (start, height, True))
            memory = dataclasses.replace(memory, bursts=marked)
    load = _load(spec, obs, memory)
    # No target (nothing measured, nothing declared): the load says nothing; p99 alone.
    target_qps = spec.target_qps_per_replica
    threshold = math.inf if target_qps is None else target_qps * spec.scale_out_ratio
    overloaded = load.qps_pr > threshold or load.demand / obs.ready_replicas > threshold
    rising = load.projected / max(current, 1) > threshold
    if overloaded or breach or rising or load.saturated:
        return _out(spec, obs, memory, load, overloaded, rising, breach)
    return _in(spec, obs, memory, load)


def _hold(
    obs: Observation, load: _Load, reason: str, memory: Memory | None = None
) -> tuple[Decision, Memory]:
    """maintain, with the numbers."""
    decision = Decision("maintain", obs.replicas, reason, load.qps_pr, obs.p99_ms)
    return decision, load.kept if memory is None else memory


def _out(
    spec: models.Autoscaling,
    obs: Observation,
    memory: Memory,
    load: _Load,
    overloaded: bool,
    rising: bool,
    breach: bool,
) -> tuple[Decision, Memory]:
    """Scale out, proportionally, unless the replicas already ordered or a draining queue
    will do (each hold named in its reason)."""
    assert obs.p99_ms is not None
    current, target_p99 = obs.replicas, target_p99_of(spec)
    wanted = max(load.by_load, load.by_trend, current + 1)
    if breach and obs.queued is None:
        factor = min(obs.p99_ms / target_p99, MAX_LATENCY_FACTOR)
        wanted = max(wanted, math.ceil(current * factor))
    wanted = _clamp(spec, wanted)
    causes = [
        c
        for c, on in (
            ("p99 above target", breach),
            ("load above scale-out threshold", overloaded),
            ("load trend will cross the scale-out threshold", rising and not overloaded),
            ("bounded queues full", load.saturated),
        )
        if on
    ]
    cause, numbers = " and ".join(causes), load.numbers
    starting = current - obs.ready_replicas
    if wanted <= current and current >= spec.max_replicas:
        return _hold(obs, load, f"{cause} but at maxReplicas {spec.max_replicas}: {numbers}")
    needed = max(load.by_load, load.by_trend)
    if starting > 0 and needed <= current and not (breach and obs.p99_ms > 2 * target_p99):
        return _hold(
            obs,
            load,
            f"{cause}; waiting for {starting} starting replica(s) already ordered: {numbers}",
        )
    draining = obs.queued is not None and memory.queued is not None and load.growth <= 0
    if needed <= current and draining and not (overloaded or rising or load.saturated):
        return _hold(
            obs,
            load,
            f"{cause}, but the queue is shrinking and {current} replicas cover the "
            f"arrivals: the backlog is draining: {numbers}",
        )
    drained = (
        obs.queued is not None
        and obs.qps is not None
        and obs.queued <= BACKLOG_FRACTION * target_p99 / 1000.0 * obs.qps
    )
    if needed <= current and drained and not overloaded and not rising:
        return _hold(
            obs,
            load,
            f"{cause}, but the queues are empty and {current} replicas cover the arrivals: "
            f"the p99 (Triton's summary of the last minute) is of requests already served: "
            f"{numbers}",
        )
    if starting > 0 and needed <= current and obs.queued is not None:
        # The queue is known and the ordered replicas cover it: more would only cost.
        return _hold(
            obs,
            load,
            f"{cause}; {starting} starting replica(s) cover the demand and backlog: {numbers}",
        )
    reason = f"{cause}: {numbers}; {current} -> {wanted}"
    kept = load.kept
    if overloaded or rising:  # a burst of load (a breach alone may be a slow pod)
        kept = dataclasses.replace(kept, bursts=_burst(memory.bursts, obs.time, wanted, breach))
    return Decision("scale_out", wanted, reason, load.qps_pr, obs.p99_ms), kept


def _burst(
    bursts: tuple[tuple[float, int, bool], ...], now: float, replicas: int, breach: bool
) -> tuple[tuple[float, int, bool], ...]:
    """The bursts with a scale-out to ``replicas`` at ``now``: a new burst, or the last
    one's height raised when it started less than BURST_MERGE_SECONDS ago."""
    recent = [b for b in bursts if b[0] >= now - BURST_HORIZON_SECONDS]
    if recent and now - recent[-1][0] <= BURST_MERGE_SECONDS:
        start, height, breached = recent[-1]
        recent[-1] = (start, max(height, replicas), breached or breach)
    else:
        recent.append((now, replicas, breach))
    return tuple(recent[-BURST_HISTORY:])


def _keep_warm(
    spec: models.Autoscaling,
    obs: Observation,
    seen: tuple[tuple[float, int, bool], ...],
    wanted: int,
) -> tuple[int, str] | None:
    """The replicas to keep warm for the next burst instead of scaling in to ``wanted``,
    and why; None when keeping them costs more than the misses they prevent.

    From the bursts the loop has seen go over the p99 objective (at least two: a
    spacing): a burst that finds its replicas gone waits a pod start-up for them, about
    that many seconds over SLO, worth ``violationCostReplicaSeconds`` each; keeping the
    last bursts' height costs the extra replicas until the next burst is due (the mean
    spacing from the last one).
    """
    value = spec.violation_cost_replica_seconds
    bursts = [(start, height) for start, height, breached in seen if breached]
    if value <= 0 or len(bursts) < 2:
        return None
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(bursts)]
    since = obs.time - bursts[-1][0]
    if since > RHYTHM_SLACK * max(gaps):
        return None  # the rhythm is broken: no burst came when one was due
    height = min(obs.replicas, max(h for _, h in bursts[-3:]))
    extra = height - wanted
    if extra <= 0:
        return None
    spacing = sum(gaps) / len(gaps)
    remaining = max(spacing - since, spec.interval_seconds)
    lead = _lead(obs)
    cost, prevented = extra * remaining, lead * value
    if cost > prevented:
        return None
    return height, (
        f"keeping {height} warm: {len(bursts)} bursts over SLO seen about every "
        f"{spacing:.0f}s, up to "
        f"{height} replicas; {extra} more until the next costs ~{cost:.0f} replica-s, less "
        f"than the ~{lead:.0f}s over SLO a cold burst costs x {value:g}"
    )


def _in(
    spec: models.Autoscaling,
    obs: Observation,
    memory: Memory,
    load: _Load,
    calm: bool | None = None,
) -> tuple[Decision, Memory]:
    """Scale in once the load has been low for the whole window, at most halving.
    ``calm``: the latencies are within headroom (None: p99 against the p99 target)."""
    assert obs.p99_ms is not None
    current, numbers = obs.replicas, load.numbers
    # No target: a load is never "low" (never scale in on a number nobody measured).
    target_qps = spec.target_qps_per_replica
    floor_qps = -math.inf if target_qps is None else target_qps * spec.scale_in_ratio
    if calm is None:
        calm = obs.p99_ms < target_p99_of(spec) * spec.latency_headroom
    low = load.qps_pr < floor_qps and load.projected / max(current, 1) < floor_qps and calm
    # Every tick since the last scale-out (or gap) is evidence, low or within band:
    # the window holds their recommendations.
    window = spec.scale_in_stabilization_seconds
    since = memory.low_since if memory.low_since is not None else obs.time
    settle = load.by_trend if load.settle is None else load.settle
    recommendation = _clamp(spec, max(settle, 1))
    recent = tuple(
        (t, r)
        for t, r in (*memory.recommendations, (obs.time, recommendation))
        if t >= obs.time - window
    )
    # The window keeps its evidence: the next tick may halve again, and as high
    # recommendations age out of it, step further down, without a new window.
    kept = Memory(since, recent, load.kept.samples, load.kept.queued, memory.bursts)
    if not low:
        return _hold(obs, load, f"within band: {numbers}", kept)
    held = obs.time - since
    if held < window:
        reason = f"low load; {held:.0f}s of the {window:g}s stabilization window seen: {numbers}"
        return _hold(obs, load, reason, kept)
    stable = max(r for _, r in recent)
    wanted = _clamp(spec, max(stable, math.ceil(current / 2)))
    warm = _keep_warm(spec, obs, memory.bursts, wanted) if wanted < current else None
    if warm is not None:
        wanted = max(wanted, warm[0])
    if wanted >= current:
        which = "minReplicas" if current <= spec.min_replicas else "the window max"
        floor = f"{current} replicas are the floor ({which})" if warm is None else warm[1]
        return _hold(obs, load, f"low load, but {floor}: {numbers}", kept)
    because = f"; {warm[1]}" if warm is not None else ""
    reason = (
        f"low load, {held:.0f}s without scale-out (window {window:g}s, its highest "
        f"recommendation {stable}{because}): {numbers}; {current} -> {wanted}"
    )
    return Decision("scale_in", wanted, reason, load.qps_pr, obs.p99_ms), kept


# --------------------------------------------------------------------- generative

# A KV cache this full (the ready pods' mean) admits no more long sequences soon.
KV_FULL = 0.9
# The backlog of waiting requests is to be served within this long (at the mean
# request's measured cost): a generative request waits for a slot, not a batch.
TOKEN_DRAIN_SECONDS = 30.0


def _decide_tokens(
    spec: models.Autoscaling, obs: Observation, tokens: TokenTargets, memory: Memory
) -> tuple[Decision, Memory]:
    """A generative model's decision: demand in busy engines, from its token rates."""
    assert obs.qps is not None and obs.p99_ms is not None
    current, ready = obs.replicas, obs.ready_replicas
    target = spec.target_utilization  # of one engine's time
    prompt_tps = max(0.0, obs.prompt_tps or 0.0)
    generated_tps = max(0.0, obs.generated_tps or 0.0)
    busy = prompt_tps * tokens.prompt_token_seconds + generated_tps * tokens.generated_token_seconds
    per_request = busy / obs.qps if obs.qps > 0 else 0.0
    if not math.isfinite(per_request):  # a rate too small to divide by: unknown
        per_request = 0.0
    waiting = obs.waiting
    growth = 0.0
    if waiting is not None and memory.queued is not None and obs.time > memory.queued[0]:
        growth = max(0.0, (waiting - memory.queued[1]) / (obs.time - memory.queued[0]))
    backlog = max(0.0, waiting or 0.0) / TOKEN_DRAIN_SECONDS
    # Arrivals beyond what was served (the queue's growth) and the backlog, at the mean
    # request's cost; with no request served yet, a waiting request costs a whole engine
    # for the drain time (a floor, not a guess of its length).
    cost = per_request if per_request > 0 else TOKEN_DRAIN_SECONDS / max(tokens.slots, 1)
    arrivals = busy + growth * cost
    demand = arrivals + backlog * cost
    samples = (
        *(s for s in memory.samples if s[0] >= obs.time - TREND_SECONDS and s[0] < obs.time),
        (obs.time, arrivals),
    )
    lead = _lead(obs)
    trend = min(max(0.0, _slope(samples)) * lead, MAX_TREND_GAIN * arrivals)
    projected = demand + trend
    ttft, itl = obs.ttft_p99_ms, obs.itl_p99_ms
    ttft_over = ttft is not None and ttft > tokens.ttft_p99_ms
    itl_over = itl is not None and itl > tokens.itl_p99_ms
    kv = obs.kv_usage
    queue = waiting is not None and waiting > 0
    full = kv is not None and kv >= KV_FULL
    # The waiting requests' work, at the mean request's cost: one engine serves it all
    # within the TTFT objective (the most a queue of one pod could hold), so the queue
    # is a moment's, not arrivals beyond the replicas.
    queue_work = max(0.0, waiting or 0.0) * cost
    in_time = queue_work * 1000.0 <= tokens.ttft_p99_ms
    cache_bound = queue and full  # admission waits for KV cache
    outgrown = queue and growth > 0 and not in_time  # arrivals beyond the replicas
    numbers = (
        f"{prompt_tps:.0f} prompt + {generated_tps:.0f} generated tokens/s = {busy:.2f} busy "
        f"engines over {ready} ready (target {target:g} each)"
    )
    if demand > busy:
        numbers += f", {demand:.2f} with the queue's growth and backlog"
    if projected > demand:
        numbers += f", rising to {projected:.2f} in {lead:.0f}s"
    numbers += f"; {waiting or 0:.0f} waiting" if waiting is not None else "; queue unknown"
    if queue:
        numbers += f" (~{queue_work:.2f} engine-seconds of work"
        numbers += ", one engine serves it within the TTFT objective)" if in_time else ")"
    numbers += f", KV cache {kv:.0%}" if kv is not None else ""
    numbers += (
        f"; TTFT p99 {ttft if ttft is not None else float('nan'):.0f} ms "
        f"(objective {tokens.ttft_p99_ms:g}), inter-token p99 "
        f"{itl if itl is not None else float('nan'):.0f} ms (objective {tokens.itl_p99_ms:g})"
    )
    by_load = _needed(demand, target)
    by_trend = _needed(projected, target)
    queued_at = None if waiting is None else (obs.time, waiting)
    kept = Memory(samples=samples, queued=queued_at, bursts=memory.bursts)
    load = _Load(
        qps_pr=demand / max(ready, 1),
        growth=growth,
        demand=demand,
        projected=projected,
        by_load=by_load,
        by_trend=by_trend,
        saturated=cache_bound or outgrown,
        numbers=numbers,
        kept=kept,
        # A scale-in leaves the projected load at or under the target on every replica
        # (not the scale-out tolerance's 111 %, where the next rise orders one back).
        settle=math.ceil(projected / target - 1e-9),
    )
    tspec = spec.model_copy(update={"target_qps_per_replica": target})
    pressure = load.saturated
    overloaded = by_load > current
    rising = by_trend > current and not overloaded
    breach = ttft_over or itl_over
    if overloaded or rising or pressure or (breach and queue):
        return _out_tokens(
            tspec, obs, memory, load, overloaded, rising, (cache_bound, outgrown, queue), breach
        )
    if breach:
        which = " and ".join(
            w for w, on in (("TTFT p99", ttft_over), ("inter-token p99", itl_over)) if on
        )
        cache = "free" if kv is None or kv < KV_FULL else "nearly full"
        return _hold(
            obs,
            load,
            f"{which} over the objective, but no request waits and the KV cache is {cache}: "
            f"the latency is the prompts' own (prefill, batch), which more replicas do not "
            f"shorten: {numbers}",
        )
    calm = (ttft or 0.0) < tokens.ttft_p99_ms * spec.latency_headroom and (
        itl or 0.0
    ) < tokens.itl_p99_ms * spec.latency_headroom
    return _in(tspec, obs, memory, load, calm=calm and not queue)


def _out_tokens(
    spec: models.Autoscaling,
    obs: Observation,
    memory: Memory,
    load: _Load,
    overloaded: bool,
    rising: bool,
    queues: tuple[bool, bool, bool],
    breach: bool,
) -> tuple[Decision, Memory]:
    """Scale out to the engines the token demand needs (at least one more), unless the
    replicas already ordered cover it or maxReplicas is reached. ``queues``: requests wait
    with the KV cache full, the queue grows beyond what one engine serves within the TTFT
    objective, any request waits."""
    cache_bound, outgrown, queue = queues
    current, starting = obs.replicas, obs.replicas - obs.ready_replicas
    needed = max(load.by_load, load.by_trend)
    wanted = _clamp(spec, max(needed, current + 1))
    causes = [
        c
        for c, on in (
            ("token demand above the replicas' capacity", overloaded),
            ("token demand trend will exceed the replicas' capacity", rising),
            ("requests waiting with the KV cache full", cache_bound),
            (
                "the queue growing beyond what one engine serves within the TTFT objective",
                outgrown,
            ),
            (
                "latency over its objective with requests waiting",
                breach and queue and not (cache_bound or outgrown),
            ),
        )
        if on
    ]
    cause, numbers = " and ".join(causes), load.numbers
    if wanted <= current:
        return _hold(obs, load, f"{cause} but at maxReplicas {spec.max_replicas}: {numbers}")
    if starting > 0 and needed <= current:
        return _hold(
            obs,
            load,
            f"{cause}; waiting for {starting} starting replica(s) already ordered: {numbers}",
        )
    kept = dataclasses.replace(load.kept, bursts=_burst(memory.bursts, obs.time, wanted, breach))
    reason = f"{cause}: {numbers}; {current} -> {wanted}"
    return Decision("scale_out", wanted, reason, load.qps_pr, obs.p99_ms), kept
