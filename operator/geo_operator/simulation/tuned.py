"""What the tuning Job would measure on a simulated replica: its throughput within the p99 SLO.

`geo tune` drives a live Triton at rising load and reports the best throughput
whose p99 stays within the latency budget, at the deployed max_batch_size and
queue delay (`tuning.measure`); the operator derives the autoscaler's target
from that figure (`scaling.capacity`). `within_slo(batching, budget_ms)` takes
the same measurement on the engine's replica model (`replica.serve`, the code
every replay runs), not by a formula: one replica, a constant load at rising
levels for LEVEL_SECONDS of simulated time each, Poisson arrivals as in a
replay; a level fits when every 10-second window keeps its p99 within the
budget (the replay's SLO test, exact). Levels rise by COARSE of the replica's
capacity at full batches up to the first that does not fit, then by FINE from
the last that did; the result is the completed requests per second of the
highest level that fits. Pure and deterministic for a seed; about a second of
wall time, cached per settings (every policy of a replay asks for it).

The load is open loop (arrivals do not wait for answers), as production
traffic is; the real tuner's closed loop (a fixed number of requests in
flight) cannot build a queue longer than its concurrency, so where the batch
service time is far below the budget it reports about the capacity at full
batches. For the calibrated digits profile (a batch of 8 takes 0.29 ms, the
budget 50 ms) the two differ by about 1 %.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from geo_operator.simulation import engine, replica
from geo_operator.simulation.trace import Trace

LEVEL_SECONDS = 60  # six SLO windows: a queue that grows shows within one level
COARSE = 0.10  # of the capacity at full batches
FINE = 0.01
MAX_LEVEL = 1.5  # a replica never serves more than its capacity at full batches


@dataclasses.dataclass(frozen=True)
class Level:
    """One constant load: offered and completed requests/s, the worst 10-second p99."""

    offered: float
    throughput: float
    worst_p99_ms: float
    fits: bool


@dataclasses.dataclass(frozen=True)
class Tuned:
    """The best throughput within the budget (0: not even the lowest level fits), and the levels."""

    throughput: float
    budget_ms: float
    levels: tuple[Level, ...]


class _One:
    """One replica, always."""

    name = "tuning"
    period = LEVEL_SECONDS

    def desired(self, view: engine.View) -> int:
        return 1


def _level(batching: engine.Batching, rate: float, budget_ms: float, seed: int) -> Level:
    trace = Trace("tuning", np.full(LEVEL_SECONDS, rate))
    result = engine.Simulation(
        trace, batching, _One(), target_p99_ms=budget_ms, min_replicas=1, max_replicas=1,
        initial_replicas=1, seed=seed,
    ).run()  # fmt: skip
    return Level(
        offered=rate,
        throughput=result.requests / LEVEL_SECONDS,
        worst_p99_ms=result.worst_p99_ms,
        fits=result.violation_seconds == 0,
    )


@functools.lru_cache(maxsize=32)
def _within_slo(
    a_ms: float,
    b_ms: float,
    overhead_ms: float,
    max_batch_size: int,
    delay_us: int | None,
    instances: int,
    budget_ms: float,
    seed: int,
) -> Tuned:
    profile = replica.Profile(a_ms, b_ms, overhead_ms)
    batching = engine.Batching(profile, max_batch_size, delay_us, instances)
    full = profile.capacity(max_batch_size, instances)
    levels: list[Level] = []
    best: Level | None = None
    for step, start in ((COARSE, COARSE), (FINE, None)):
        fraction = start if start is not None else (best.offered / full if best else 0.0) + step
        while fraction <= MAX_LEVEL + 1e-9:
            level = _level(batching, round(fraction, 4) * full, budget_ms, seed)
            levels.append(level)
            if not level.fits:
                break
            best = level
            fraction += step
    return Tuned(best.throughput if best else 0.0, budget_ms, tuple(levels))


def within_slo(batching: engine.Batching, budget_ms: float, seed: int = 0) -> Tuned:
    """One replica's best throughput (req/s) whose p99 stays within ``budget_ms``."""
    p = batching.profile
    return _within_slo(
        p.service_a_ms, p.service_b_ms, p.overhead_ms, batching.max_batch_size,
        batching.max_queue_delay_us, batching.instances, budget_ms, seed,
    )  # fmt: skip
