"""One call from a GeoDeployment spec, a trace and a policy name to an `engine.Result`.

Every policy starts from the same target (`target`): the declared one, else the
measured capacity (a tuning result given in `Options.capacity`, else what the
tuning Job would measure on the profile: `tuned.within_slo`) × targetUtilization,
through `scaling.capacity` as the operator resolves it. GEO then learns a
correction each tick as the operator's loop does; the anchors keep the target.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from geo_operator.api import models
from geo_operator.builders import plan
from geo_operator.scaling import capacity
from geo_operator.simulation import autoscalers, engine, replica, tuned
from geo_operator.simulation.trace import Trace, window_means


@dataclasses.dataclass(frozen=True)
class Options:
    """Everything about a replay that is not in the GeoDeployment."""

    startup_seconds: float = 30.0  # pod scheduled, image present, model loaded
    metrics_lag_seconds: int = 5  # scrape interval and query delay
    seed: int = 0
    profile: replica.Profile | None = None  # None: the calibrated example profile
    # A tuning result: one replica's req/s within the p99 objective (None: `tuned` measures
    # the profile, as the tuning Job would).
    capacity: float | None = None
    # Production replicas serve this fraction of what the lab measured: their service
    # time is the profile's / capacity_error, the measured capacity stays the lab's.
    capacity_error: float = 1.0
    learn: bool = True  # False: GEO keeps the target it started with (a benchmark's baseline)
    # "fair": every policy starts at the replicas the trace's first minute needs (a running
    # system is not cold at the trace's first second); "cold": at the first 10 s window's.
    start: str = "fair"


def batching(spec: models.GeoDeploymentSpec, profile: replica.Profile) -> engine.Batching:
    """The replica's batcher settings, as the operator would deploy them before tuning;
    its queue bounded as the spec's default queue policy bounds it (one queue: priority
    levels are not simulated, their bounds add up)."""
    size = spec.triton.max_batch_size or plan.UNTUNED_MAX_BATCH_SIZE
    dynamic = spec.triton.dynamic_batching
    delay = dynamic.max_queue_delay_microseconds if dynamic.enabled else None
    policy = dynamic.default_queue_policy if dynamic.enabled else None
    timeout = None
    if (
        policy is not None
        and policy.default_timeout_microseconds
        and policy.timeout_action is models.TimeoutAction.REJECT
    ):
        timeout = policy.default_timeout_microseconds / 1e6
    return engine.Batching(
        profile,
        size,
        delay,
        spec.triton.instances(),
        max_queue_size=spec.triton.queue_bound() or 0,
        timeout_s=timeout,
    )


def measured(
    spec: models.GeoDeploymentSpec, profile: replica.Profile, given: float | None = None
) -> float:
    """The capacity the targets derive from: ``given`` (a tuning result), else what the
    tuning Job would measure on ``profile`` (`tuned.within_slo`, at the deployed batching
    and the p99 objective)."""
    if given is not None:
        return given
    budget = spec.tuning_budget_ms()
    result = tuned.within_slo(batching(spec, profile), budget)
    if result.throughput <= 0:
        raise ValueError(f"no load fits the p99 objective {budget:g} ms on this replica profile")
    return result.throughput


def target(
    spec: models.GeoDeploymentSpec, profile: replica.Profile, given: float | None = None
) -> capacity.Target:
    """The effective target every policy starts from: declared, else measured × utilization."""
    return capacity.target(spec, measured(spec, profile, given))


def resolved(
    spec: models.GeoDeploymentSpec, profile: replica.Profile, given: float | None = None
) -> models.Autoscaling:
    """The autoscaling spec the anchors get: `target`'s, and the p99 objective."""
    return capacity.resolve(spec, target(spec, profile, given))


def production(profile: replica.Profile, capacity_error: float) -> replica.Profile:
    """The replicas production runs: ``capacity_error`` of the lab's throughput."""
    if capacity_error == 1.0:
        return profile
    return dataclasses.replace(
        profile,
        service_a_ms=profile.service_a_ms / capacity_error,
        service_b_ms=profile.service_b_ms / capacity_error,
    )


# What a fair start covers: the first minute of the trace.
FAIR_START_SECONDS = 60
STARTS = ("fair", "cold")


def initial_replicas(spec: models.Autoscaling, trace: Trace, start: str = "fair") -> int:
    """What every policy starts with, ready: enough at the target for the busiest 10 s
    window of the trace's first minute ("fair"), or of its first window only ("cold")."""
    if start not in STARTS:
        raise ValueError(f"unknown start {start!r}: one of {', '.join(STARTS)}")
    seconds = FAIR_START_SECONDS if start == "fair" else engine.SLO_WINDOW
    head = trace.rate[:seconds]
    first = float(window_means(head, engine.SLO_WINDOW).max()) if len(head) else 0.0
    wanted = math.ceil(first / autoscalers.target_qps(spec) - 1e-9)
    return max(spec.min_replicas, min(spec.max_replicas, wanted))


def replay(
    spec: models.GeoDeploymentSpec,
    trace: Trace,
    policy: str,
    options: Options = Options(),
    progress: Callable[[int, int], None] | None = None,
) -> tuple[engine.Result, autoscalers.Geo | autoscalers.Hpa | autoscalers.Kpa | autoscalers.Oracle]:
    profile = options.profile or replica.Profile.load()
    lab = measured(spec, profile, options.capacity)
    scaling = capacity.resolve(spec, capacity.target(spec, lab))
    scaler = autoscalers.make(policy, spec, lab, trace, options.startup_seconds)
    if isinstance(scaler, autoscalers.Geo):
        scaler.learning = options.learn
    history = max(
        autoscalers.Kpa.STABLE_WINDOW,
        scaling.metrics.rate_window_seconds,
        round(scaling.interval_seconds),
    )
    sim = engine.Simulation(
        trace,
        batching(spec, production(profile, options.capacity_error)),
        scaler,
        target_p99_ms=spec.target_p99_ms(),
        min_replicas=scaling.min_replicas,
        max_replicas=scaling.max_replicas,
        initial_replicas=initial_replicas(scaling, trace, options.start),
        startup_seconds=options.startup_seconds,
        metrics_lag_seconds=options.metrics_lag_seconds,
        history_seconds=history,
        seed=options.seed,
        progress=progress,
    )
    return sim.run(), scaler
