"""Search the batching grid (max_batch_size × dynamic-batching queue delay) for the best config.

Pure: it is handed a ``measure(config) -> result`` callable and never talks to
Triton itself. ``geo tune`` passes `tuning.measure.Measurer.measure`; the unit
tests pass synthetic landscapes. Two strategies:

* `quick_search`: a coordinate hill climb in the spirit of Triton Model
  Analyzer's "quick" search — start at the middle of the grid, climb along
  max_batch_size while the throughput within the latency budget improves, then
  along the queue delay, and go back to the batch axis only if the delay moved.
  Then it *confirms*: the climb's best and its nearest neighbours on both axes
  are measured once more (or for the first time), so that one lucky or unlucky
  run cannot decide; a neighbour that proves better becomes the new centre, as
  long as measurements are left: the confirmation never takes the count past
  ``limit``, a third of the grid by default (the climb alone needs 4-8 of 28).
* `full_sweep`: measure every point (the reference the quick search is judged by).

Both pick the highest throughput among the configurations within the budget; a
configuration over budget is never chosen, whatever its throughput. A config
measured twice scores the mean of its runs, and counts as within the budget only
if every run was. Throughputs within ``margin`` (the noise a shared machine
shows between runs) of the best count as ties, won by the smaller batch and
delay: the lower-latency configuration.
"""

from __future__ import annotations

import dataclasses
import functools
import math
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

# Throughputs this close to the best are ties (see the module docstring): about
# the run-to-run spread of one configuration on a quiet machine.
DEFAULT_MARGIN = 0.02
# A neighbour measured once within this fraction of the best is measured again:
# one run of the same config varies by this much on a busy machine.
DEFAULT_NOISE = 0.05


@dataclasses.dataclass(frozen=True)
class SearchResult(Generic[R]):
    """The measurements in the order they were taken (a config may appear twice), and the
    chosen config (None: none fits)."""

    measured: tuple[tuple[Config, R], ...]
    chosen: Config | None

    @property
    def measurements(self) -> int:
        return len(self.measured)

    def results(self, config: Config) -> list[R]:
        """Every run of ``config``, oldest first."""
        found = [r for c, r in self.measured if c == config]
        if not found:
            raise KeyError(config)
        return found

    def result(self, config: Config) -> R:
        """The latest run of ``config``."""
        return self.results(config)[-1]

    def throughput(self, config: Config) -> float:
        """The mean throughput of ``config``'s runs (0 when any run was over the budget)."""
        return _score(self.results(config))


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


def _score(runs: Sequence[Outcome]) -> float:
    if not all(r.within_budget for r in runs):
        return 0.0
    return sum(r.throughput for r in runs) / len(runs)


def _scores(measured: Sequence[tuple[Config, R]]) -> dict[Config, float]:
    """Each config's mean throughput; configs with a run over the budget are left out."""
    runs: dict[Config, list[R]] = {}
    for c, r in measured:
        runs.setdefault(c, []).append(r)
    return {c: _score(rs) for c, rs in runs.items() if all(r.within_budget for r in rs)}


def _best(measured: Sequence[tuple[Config, R]], margin: float = 0.0) -> Config | None:
    fitting = _scores(measured)
    if not fitting:
        return None
    # Ties (within the margin) go to the smaller batch and delay: the lower-latency config.
    top = max(fitting.values())
    return min((c for c, t in fitting.items() if t >= top * (1 - margin)), key=Config.sort_key)


def full_sweep(
    measure: Callable[[Config], R],
    batch_sizes: Sequence[int],
    delays: Sequence[int | None],
    *,
    prior: Sequence[tuple[Config, R]] = (),
) -> SearchResult[R]:
    """Measure every configuration of the grid; ``prior`` runs (a quick search's) count as
    taken, so only the rest of the grid is measured and both agree on shared configs."""
    taken = {c for c, _ in prior}
    fresh = [(c, measure(c)) for c in grid(batch_sizes, delays) if c not in taken]
    measured = (*prior, *fresh)
    return SearchResult(measured=measured, chosen=_best(measured))


def quick_search(
    measure: Callable[[Config], R],
    batch_sizes: Sequence[int],
    delays: Sequence[int | None],
    *,
    margin: float = DEFAULT_MARGIN,
    noise: float = DEFAULT_NOISE,
    limit: int | None = None,
) -> SearchResult[R]:
    """Coordinate hill climb over (batch size, delay), then a confirmation round around its
    best that stops at ``limit`` measurements (default: a third of the grid)."""
    search = _Climb(measure, _axis(batch_sizes), _delay_axis(delays))
    if limit is None:
        limit = len(search.batches) * len(search.delays) // 3
    start = search.start()
    if start is None:
        return SearchResult(measured=tuple(search.order), chosen=None)
    bi, di = search.climb(*start)
    search.confirm(Config(search.batches[bi], search.delays[di]), limit, noise)
    return SearchResult(measured=tuple(search.order), chosen=_best(search.order, margin))


class _Climb(Generic[R]):
    """The quick search's state: every measurement in order, the first of each config."""

    def __init__(
        self, measure: Callable[[Config], R], batches: list[int], delays: list[int | None]
    ) -> None:
        self.measure, self.batches, self.delays = measure, batches, delays
        self.cache: dict[Config, R] = {}
        self.order: list[tuple[Config, R]] = []

    def take(self, config: Config) -> R:
        result = self.measure(config)
        self.cache.setdefault(config, result)
        self.order.append((config, result))
        return result

    def at(self, bi: int, di: int) -> R:
        config = Config(self.batches[bi], self.delays[di])
        return self.cache[config] if config in self.cache else self.take(config)

    def score(self, bi: int, di: int) -> float:
        r = self.at(bi, di)
        return r.throughput if r.within_budget else -1.0

    def start(self) -> tuple[int, int] | None:
        """The middle of the batch axis at the smallest real delay (the cheap end, likeliest
        to fit the budget); over budget there, towards lower latency (smaller batches, then
        smaller delays) until something fits: everything the climb compares must fit."""
        bi = (len(self.batches) - 1) // 2
        ints = [i for i, d in enumerate(self.delays) if d is not None]
        di = (ints or [0])[0]
        while not self.at(bi, di).within_budget and (bi > 0 or di > 0):
            if bi > 0:
                bi -= 1
            else:
                di -= 1
        return (bi, di) if self.at(bi, di).within_budget else None

    def climb(self, bi: int, di: int) -> tuple[int, int]:
        """Alternate axes until neither moves (at most a few rounds on these small grids)."""
        axis_is_batch, stalled = True, 0
        while stalled < 2:
            if axis_is_batch:
                new = _climb_axis(bi, len(self.batches), functools.partial(self._at_batch, di=di))
                stalled = stalled + 1 if new == bi else 1
                bi = new
            else:
                new = _climb_axis(di, len(self.delays), functools.partial(self._at_delay, bi=bi))
                stalled = stalled + 1 if new == di else 1
                di = new
            axis_is_batch = not axis_is_batch
        return bi, di

    def _at_batch(self, i: int, *, di: int) -> float:
        return self.score(i, di)

    def _at_delay(self, i: int, *, bi: int) -> float:
        return self.score(bi, i)

    def confirm(self, centre: Config, limit: int, noise: float) -> None:
        """The climb's best was measured once, and a config that won on one run is likelier
        than not to have been lucky: measure it again, then every neighbour that could
        still beat it (never measured, or measured once within ``noise`` of it), the
        likeliest first; move to a neighbour that now leads, and stop when the centre
        holds or the measurements run out."""
        while len(self.order) < limit:
            runs = {c: sum(1 for o, _ in self.order if o == c) for c in self.cache}
            scores = _scores(self.order)
            if centre not in scores:  # its second run went over the budget
                if not scores:
                    return
                centre = max(scores, key=lambda c: scores[c])
            if runs[centre] < 2:
                self.take(centre)
                continue
            contenders = [
                c
                for c in self._around(centre)
                if c not in self.cache
                or (runs[c] < 2 and c in scores and scores[c] >= scores[centre] * (1 - noise))
            ]
            if not contenders:
                return
            contender = max(contenders, key=lambda c: scores.get(c, math.inf))
            self.take(contender)
            scores = _scores(self.order)
            if scores.get(contender, 0.0) > scores.get(centre, 0.0):
                centre = contender

    def _around(self, centre: Config) -> list[Config]:
        ci = self.batches.index(centre.max_batch_size)
        cj = self.delays.index(centre.max_queue_delay_us)
        return [
            Config(self.batches[ci + a], self.delays[cj + b])
            for a, b in ((1, 0), (-1, 0), (0, 1), (0, -1))
            if 0 <= ci + a < len(self.batches) and 0 <= cj + b < len(self.delays)
        ]


def _climb_axis(index: int, size: int, value: Callable[[int], float]) -> int:
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
