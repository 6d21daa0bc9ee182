"""Search the batching grid (max_batch_size × dynamic-batching queue delay) for the best config.

Pure: it is handed a ``measure(config) -> result`` callable and never talks to
Triton itself. ``geo tune`` passes `tuning.measure.Measurer.measure`; the unit
tests pass synthetic landscapes. Two strategies:

* `quick_search`: a coordinate hill climb in the spirit of Triton Model
  Analyzer's "quick" search — start at the middle of the grid, climb along
  max_batch_size while the throughput within the latency budget improves, then
  along the queue delay, and go back to the batch axis only if the delay moved.
  It typically needs a quarter to a third of the grid's measurements.
* `full_sweep`: measure every point (the reference the quick search is judged by).

Both pick the highest throughput among the configurations within the budget; a
configuration over budget is never chosen, whatever its throughput.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar


@dataclasses.dataclass(frozen=True)
class Config:
    """One point of the grid. ``max_queue_delay_us is None`` means dynamic batching off."""

    max_batch_size: int
    max_queue_delay_us: int | None

    def sort_key(self) -> tuple[int, int]:
        """Batch size, then delay, "off" first (it has the lowest latency)."""
        return (
            self.max_batch_size,
            -1 if self.max_queue_delay_us is None else self.max_queue_delay_us,
        )

    def describe(self) -> str:
        delay = "off" if self.max_queue_delay_us is None else f"{self.max_queue_delay_us}us"
        return f"mbs={self.max_batch_size} delay={delay}"


class Outcome(Protocol):
    """What the search needs to know of a measurement."""

    @property
    def throughput(self) -> float: ...

    @property
    def within_budget(self) -> bool: ...


R = TypeVar("R", bound=Outcome)


@dataclasses.dataclass(frozen=True)
class SearchResult(Generic[R]):
    """The measurements in the order they were taken, and the chosen one (None: none fits)."""

    measured: tuple[tuple[Config, R], ...]
    chosen: Config | None

    @property
    def measurements(self) -> int:
        return len(self.measured)

    def result(self, config: Config) -> R:
        for c, r in self.measured:
            if c == config:
                return r
        raise KeyError(config)


def grid(batch_sizes: Sequence[int], delays: Sequence[int | None]) -> list[Config]:
    """Every configuration of the grid, batch size major."""
    return [Config(b, d) for b in _axis(batch_sizes) for d in _delay_axis(delays)]


def _axis(values: Sequence[int]) -> list[int]:
    axis = sorted(set(values))
    if not axis or axis[0] < 1:
        raise ValueError(f"batch sizes must be positive and not empty: {list(values)}")
    return axis


def _delay_axis(values: Sequence[int | None]) -> list[int | None]:
    # "off" (None) sorts first: it is the lowest-latency end of the delay axis.
    ints = sorted({v for v in values if v is not None})
    if any(v < 0 for v in ints):
        raise ValueError(f"delays must be >= 0: {list(values)}")
    axis: list[int | None] = [None] if None in values else []
    axis += ints
    if not axis:
        raise ValueError("no delays given")
    return axis


def _best(measured: Sequence[tuple[Config, R]]) -> Config | None:
    fitting = [(r.throughput, c) for c, r in measured if r.within_budget]
    if not fitting:
        return None
    # Ties go to the smaller batch and delay (the lower-latency configuration).
    top = max(t for t, _ in fitting)
    return min((c for t, c in fitting if t == top), key=Config.sort_key)


def full_sweep(
    measure: Callable[[Config], R],
    batch_sizes: Sequence[int],
    delays: Sequence[int | None],
) -> SearchResult[R]:
    """Measure every configuration of the grid."""
    measured = tuple((c, measure(c)) for c in grid(batch_sizes, delays))
    return SearchResult(measured=measured, chosen=_best(measured))


def quick_search(
    measure: Callable[[Config], R],
    batch_sizes: Sequence[int],
    delays: Sequence[int | None],
) -> SearchResult[R]:
    """Coordinate hill climb over (batch size, delay); each point is measured at most once."""
    batches = _axis(batch_sizes)
    delay_axis = _delay_axis(delays)
    cache: dict[Config, R] = {}
    order: list[tuple[Config, R]] = []

    def at(bi: int, di: int) -> R:
        config = Config(batches[bi], delay_axis[di])
        if config not in cache:
            cache[config] = measure(config)
            order.append((config, cache[config]))
        return cache[config]

    def score(bi: int, di: int) -> float:
        r = at(bi, di)
        return r.throughput if r.within_budget else -1.0

    def score_batch(i: int, *, di: int) -> float:
        return score(i, di)

    def score_delay(i: int, *, bi: int) -> float:
        return score(bi, i)

    # Start in the middle of the batch axis, at the smallest real delay: the
    # cheap end of the delay axis, which is also the likeliest to fit the budget.
    bi = (len(batches) - 1) // 2
    ints = [i for i, d in enumerate(delay_axis) if d is not None]
    di = (ints or [0])[0]

    # Over budget at the start: step towards lower latency (smaller batches,
    # then smaller delays) until something fits, since everything the climb
    # compares must be within the budget.
    while not at(bi, di).within_budget and (bi > 0 or di > 0):
        if bi > 0:
            bi -= 1
        else:
            di -= 1
    if not at(bi, di).within_budget:
        return SearchResult(measured=tuple(order), chosen=None)

    def climb(index: int, size: int, value: Callable[[int], float]) -> int:
        """Hill-climb one axis from ``index``: up first, down only if up did not help."""
        here = value(index)
        moved = False
        for step in (1, -1):
            while 0 <= index + step < size:
                there = value(index + step)
                if there <= here:
                    break
                index, here, moved = index + step, there, True
            if moved:
                break
        return index

    axis_is_batch = True
    stalled = 0
    # Alternate axes until neither moves (at most a few rounds on these small grids).
    while stalled < 2:
        if axis_is_batch:
            new = climb(bi, len(batches), functools.partial(score_batch, di=di))
            stalled = stalled + 1 if new == bi else 1
            bi = new
        else:
            new = climb(di, len(delay_axis), functools.partial(score_delay, bi=bi))
            stalled = stalled + 1 if new == di else 1
            di = new
        axis_is_batch = not axis_is_batch
    return SearchResult(measured=tuple(order), chosen=_best(order))
