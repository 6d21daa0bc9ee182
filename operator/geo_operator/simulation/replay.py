"""One call from a GeoDeployment spec, a trace and a policy name to a `engine.Result`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from geo_operator.api import models
from geo_operator.builders import plan
from geo_operator.scaling import capacity
from geo_operator.simulation import autoscalers, engine, replica
from geo_operator.simulation.trace import Trace


@dataclasses.dataclass(frozen=True)
class Options:
    """Everything about a replay that is not in the GeoDeployment."""

    startup_seconds: float = 30.0  # pod scheduled, image present, model loaded
    metrics_lag_seconds: int = 5  # scrape interval and query delay
    seed: int = 0
    profile: replica.Profile | None = None  # None: the calibrated example profile


def batching(spec: models.GeoDeploymentSpec, profile: replica.Profile) -> engine.Batching:
    """The replica's batcher settings, as the operator would deploy them before tuning."""
    size = spec.triton.max_batch_size or plan.UNTUNED_MAX_BATCH_SIZE
    dynamic = spec.triton.dynamic_batching
    delay = dynamic.max_queue_delay_microseconds if dynamic.enabled else None
    return engine.Batching(profile, size, delay, spec.triton.instance_count)


def resolved(spec: models.GeoDeploymentSpec, profile: replica.Profile) -> models.Autoscaling:
    """The autoscaling spec every policy gets: the declared target, else the profile's
    capacity at the deployed batch size × targetUtilization; the p99 objective."""
    batch = batching(spec, profile)
    measured = profile.capacity(batch.max_batch_size, batch.instances)
    return capacity.resolve(spec, capacity.target(spec, measured))


def initial_replicas(spec: models.Autoscaling, trace: Trace) -> int:
    """What every policy starts with: enough for the first window at the target, ready."""
    first = float(trace.rate[: engine.SLO_WINDOW].mean()) if trace.duration else 0.0
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
    scaling = resolved(spec, profile)
    scaler = autoscalers.make(policy, scaling, trace, options.startup_seconds)
    history = max(
        autoscalers.Kpa.STABLE_WINDOW,
        scaling.metrics.rate_window_seconds,
        round(scaling.interval_seconds),
    )
    sim = engine.Simulation(
        trace,
        batching(spec, profile),
        scaler,
        target_p99_ms=spec.target_p99_ms(),
        min_replicas=scaling.min_replicas,
        max_replicas=scaling.max_replicas,
        initial_replicas=initial_replicas(scaling, trace),
        startup_seconds=options.startup_seconds,
        metrics_lag_seconds=options.metrics_lag_seconds,
        history_seconds=history,
        seed=options.seed,
        progress=progress,
    )
    return sim.run(), scaler
