"""The batching search on synthetic landscapes: as good as the sweep, for a third of the cost.

Each landscape is a throughput function and a p99 function of (max_batch_size,
queue delay) with a latency budget, shaped after what Triton does on CPU and GPU:

* saturating — throughput grows with the batch until 16, delay helps a little,
  p99 grows with both; the budget cuts the big batches and long delays;
* peaked — per-batch overhead: throughput peaks at batch 8, any delay hurts;
* budget-bound — throughput rises with batch and delay, so the best is on the
  edge of the budget;
* batching-hurts — a tiny model: batch 1, delay 0 is best (the climb walks down);
* start-over-budget — the middle of the grid is over budget; only batches ≤ 2 fit;
* noisy — the saturating landscape with ±3 % deterministic noise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geo_operator.tuning import search
from geo_operator.tuning.search import Config

BATCHES = [1, 2, 4, 8, 16, 32, 64]
DELAYS: list[int | None] = [0, 100, 500, 2000]


@dataclasses.dataclass(frozen=True)
class Fake:
    throughput: float
    p99_ms: float
    within_budget: bool


Landscape = Callable[[int, int], tuple[float, float]]  # (batch, delay) -> (throughput, p99)


def _noise(b: int, d: int) -> float:
    digest = hashlib.sha256(f"{b},{d}".encode()).digest()
    return 1.0 + 0.06 * (digest[0] / 255.0 - 0.5)


LANDSCAPES: dict[str, tuple[Landscape, float]] = {
    "saturating": (
        lambda b, d: (
            1000 * min(b, 16) ** 0.7 * (1 + 0.1 * math.log1p(d / 100)),
            1 + 0.5 * b + d / 200,
        ),
        15.0,
    ),
    "peaked": (lambda b, d: (1000 * b / (1 + (b / 8) ** 2) / (1 + d / 5000), 2.0), 10.0),
    "budget-bound": (lambda b, d: (100 * b * (1 + d / 1000), 0.2 * b * (1 + d / 500)), 10.0),
    "batching-hurts": (
        lambda b, d: (1000 / (1 + 0.05 * math.log2(b)) / (1 + d / 1000), 1 + d / 1000),
        10.0,
    ),
    "start-over-budget": (lambda b, d: (100 * b, 5.0 * b + d / 1000), 10.0),
    "noisy": (
        lambda b, d: (
            1000 * min(b, 16) ** 0.7 * (1 + 0.1 * math.log1p(d / 100)) * _noise(b, d),
            1 + 0.5 * b + d / 200,
        ),
        15.0,
    ),
}


def _measure(landscape: Landscape, budget: float) -> Callable[[Config], Fake]:
    def measure(config: Config) -> Fake:
        delay = config.max_queue_delay_us
        throughput, p99 = landscape(config.max_batch_size, 0 if delay is None else delay)
        ok = p99 <= budget
        # Like measure.Result: no throughput counts when nothing fits the budget.
        return Fake(throughput if ok else 0.0, p99, ok)

    return measure


@pytest.mark.parametrize("name", sorted(LANDSCAPES))
def test_quick_search_is_within_5_percent_of_the_sweep_for_a_third_of_the_cost(name: str) -> None:
    landscape, budget = LANDSCAPES[name]
    measure = _measure(landscape, budget)
    sweep = search.full_sweep(measure, BATCHES, DELAYS)
    quick = search.quick_search(measure, BATCHES, DELAYS)
    assert sweep.measurements == len(BATCHES) * len(DELAYS) == 28
    assert sweep.chosen is not None and quick.chosen is not None
    best = sweep.result(sweep.chosen).throughput
    found = quick.result(quick.chosen)
    assert found.within_budget
    assert found.throughput >= 0.95 * best, (name, quick.chosen, sweep.chosen)
    assert quick.measurements <= sweep.measurements // 3, (name, quick.measurements)


def test_sweep_never_picks_a_config_over_budget_even_when_it_is_fastest() -> None:
    landscape, budget = LANDSCAPES["budget-bound"]
    measure = _measure(landscape, budget)
    sweep = search.full_sweep(measure, BATCHES, DELAYS)
    raw = {c: landscape(c.max_batch_size, c.max_queue_delay_us or 0) for c, _ in sweep.measured}
    fastest = max(raw, key=lambda c: raw[c][0])
    assert raw[fastest][1] > budget  # the fastest configuration is over budget...
    assert sweep.chosen is not None and sweep.chosen != fastest  # ...and is not chosen
    assert sweep.chosen == Config(32, 100)


def test_nothing_within_budget_chooses_nothing() -> None:
    measure = _measure(lambda b, d: (100.0 * b, 50.0), 10.0)
    assert search.full_sweep(measure, BATCHES, DELAYS).chosen is None
    quick = search.quick_search(measure, BATCHES, DELAYS)
    assert quick.chosen is None
    # It walked down to the lowest-latency corner before giving up.
    assert quick.measured[-1][0] == Config(1, 0)


def test_dynamic_batching_off_is_the_low_end_of_the_delay_axis() -> None:
    grid = search.grid([4, 1], [500, None, 0])
    assert grid[:3] == [Config(1, None), Config(1, 0), Config(1, 500)]
    assert Config(8, None).describe() == "mbs=8 delay=off"
    # Ties go to the lower-latency configuration, "off" included.
    flat = search.full_sweep(lambda c: Fake(100.0, 1.0, True), [4, 1], [500, None, 0])
    assert flat.chosen == Config(1, None)
    with pytest.raises(ValueError):
        search.grid([0, 1], [0])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0, 1000), min_size=28, max_size=28),
    st.lists(st.floats(0, 30), min_size=28, max_size=28),
)
def test_any_landscape_no_config_over_budget_and_each_measured_once(
    throughputs: list[float], p99s: list[float]
) -> None:
    table = dict(
        zip(search.grid(BATCHES, DELAYS), zip(throughputs, p99s, strict=True), strict=True)
    )
    measure = _measure(lambda b, d: table[Config(b, d)], 10.0)
    for run in (search.quick_search, search.full_sweep):
        outcome = run(measure, BATCHES, DELAYS)
        configs = [c for c, _ in outcome.measured]
        assert len(configs) == len(set(configs))
        if outcome.chosen is not None:
            assert table[outcome.chosen][1] <= 10.0
        else:
            assert not any(outcome.result(c).within_budget for c in configs)
