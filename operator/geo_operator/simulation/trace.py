"""Request-rate traces: read an Azure-LLM-format CSV, make synthetic ones, scale them.

The simulator is driven by a *rate*: requests per second for every second of the
trace. Arrivals are drawn from it (Poisson within each second, seeded), so a
trace of a few thousand requests can be scaled to the tens of thousands of
requests per second a real Triton replica serves, and the same trace at the same
seed always gives the same arrivals.

- `load_csv` reads any CSV with a ``TIMESTAMP`` column, one row per request (the
  Azure LLM inference trace format: ``2023-11-16 18:17:03.9799600``, optionally
  with a UTC offset). Rows need not be sorted; other columns are ignored.
- `rate_from_arrivals` turns arrival times into a per-second rate, averaged over
  ``resolution`` seconds (default 10, the SLO window): the trace decides how the
  rate moves from one window to the next; within a window arrivals are random.
- `synthetic` gives step, ramp, spike and diurnal shapes for tests.
- `scale_to_peak` scales a rate so its busiest ``peak_window`` seconds need
  ``replicas`` replicas at ``per_replica`` requests per second.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import math
import pathlib
import re

import numpy as np
import numpy.typing as npt

from geo_operator.simulation.replica import FloatArray

SHAPES = ("step", "ramp", "spike", "diurnal", "steady-low", "steady-mid", "steady-high")
# Stationary load with over-dispersed 10-second counts: the coefficient of variation
# of each window's rate around a constant mean (gamma-distributed, independent
# windows, seeded). "high" spans about 0.4x to 2x the mean, like the noisy
# production traces GEO over-provisioned on (issue 16).
STEADY_NOISE = {"steady-low": 0.1, "steady-mid": 0.25, "steady-high": 0.4}
_TIMESTAMP = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:\.(\d+))?\s*(Z|[+-]\d{2}:?\d{2})?$"
)


class TraceError(ValueError):
    """The trace file cannot be used: says which file, which row and why."""


@dataclasses.dataclass(frozen=True)
class Trace:
    """A named request rate, one value (requests/s) per second from t = 0."""

    name: str
    rate: FloatArray

    @property
    def duration(self) -> int:
        return int(self.rate.shape[0])

    def peak(self, window: int) -> float:
        """Highest mean rate over any aligned ``window``-second span."""
        return float(window_means(self.rate, window).max(initial=0.0))


def window_means(rate: FloatArray, window: int) -> FloatArray:
    n = len(rate) // window * window
    if n == 0:
        return np.array([float(rate.mean())]) if len(rate) else np.zeros(1)
    means: FloatArray = rate[:n].reshape(-1, window).mean(axis=1)
    return means


def parse_timestamp(text: str) -> float:
    """Seconds since the epoch (UTC when no offset is given) of one TIMESTAMP cell.

    Date-times as the Azure traces write them, any number of fraction digits, an
    optional offset; a plain number is taken as seconds already.
    """
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"not a timestamp: {text!r}")
        return seconds
    match = _TIMESTAMP.match(text)
    if match is None:
        raise ValueError(f"not a timestamp: {text!r}")
    day, clock, fraction, zone = match.groups()
    base = datetime.datetime.fromisoformat(f"{day} {clock}")
    offset = 0.0
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        hours, minutes = int(zone[1:3]), int(zone[-2:])
        offset = sign * (hours * 3600 + minutes * 60)
    seconds = base.replace(tzinfo=datetime.UTC).timestamp() - offset
    return seconds + (float(f"0.{fraction}") if fraction else 0.0)


TOKEN_COLUMNS = ("ContextTokens", "GeneratedTokens")  # the Azure LLM format's token counts


def _read(
    path: pathlib.Path, columns: tuple[str, ...] = (), why: str = ""
) -> tuple[list[float], list[tuple[int, ...]]]:
    """TIMESTAMP of every row, and the integer ``columns`` beside it (non-negative)."""
    try:
        stream = path.open(encoding="utf-8", newline="")
    except OSError as error:
        raise TraceError(f"cannot read trace {path}: {error.strerror}") from error
    with stream:
        reader = csv.reader(stream)
        header = next(reader, None)
        if header is None:
            raise TraceError(f"{path} is empty")
        names = [h.strip().lstrip("\ufeff") for h in header]
        missing = [c for c in ("TIMESTAMP", *columns) if c not in names]
        if missing:
            raise TraceError(
                f"{path} has no {', '.join(missing)} column{'s' if len(missing) > 1 else ''} "
                f"(columns: {', '.join(names)}){why}"
            )
        at = names.index("TIMESTAMP")
        where = [names.index(c) for c in columns]
        times: list[float] = []
        values: list[tuple[int, ...]] = []
        for row_number, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                times.append(parse_timestamp(row[at]))
                counts = tuple(int(row[i]) for i in where)
            except (ValueError, IndexError) as error:
                raise TraceError(f"{path}, row {row_number}: {error}") from error
            if any(c < 0 for c in counts):
                raise TraceError(f"{path}, row {row_number}: a token count below 0: {counts}")
            values.append(counts)
    if len(times) < 2:
        raise TraceError(f"{path} has {len(times)} request(s): a trace needs at least 2")
    return times, values


def load_csv(path: pathlib.Path | str) -> FloatArray:
    """Arrival times in seconds from the first request, sorted."""
    times, _ = _read(pathlib.Path(path))
    arrivals = np.sort(np.asarray(times, dtype=np.float64))
    offsets: FloatArray = arrivals - arrivals[0]
    return offsets


@dataclasses.dataclass(frozen=True)
class TokenRequests:
    """A generative trace: each request's arrival (s from the first), prompt and output
    lengths in tokens, sorted by arrival."""

    name: str
    arrivals: FloatArray
    context_tokens: npt.NDArray[np.int64]
    generated_tokens: npt.NDArray[np.int64]


def load_token_csv(path: pathlib.Path | str) -> TokenRequests:
    """The Azure LLM format with its token columns: what a generative spec replays. A trace
    without them is refused, naming what is missing."""
    path = pathlib.Path(path)
    why = (
        ": a generative model's replay needs each request's prompt and output lengths "
        "(the Azure LLM format: TIMESTAMP,ContextTokens,GeneratedTokens)"
    )
    times, counts = _read(path, TOKEN_COLUMNS, why)
    order = np.argsort(np.asarray(times, dtype=np.float64), kind="stable")
    arrivals = np.asarray(times, dtype=np.float64)[order]
    table = np.asarray(counts, dtype=np.int64)[order]
    return TokenRequests(path.stem, arrivals - arrivals[0], table[:, 0], table[:, 1])


# A replay keeps per-second series over the trace's span (the rate, the engine's
# counters): a span beyond this is refused, naming it, rather than allocated (two rows ten
# years apart would ask for gigabytes). Two weeks hold the week-long production traces.
MAX_SPAN_SECONDS = 14 * 24 * 3600


def check_span(name: str, arrivals: FloatArray) -> None:
    """A TraceError naming the span when the trace's rows are further apart than a
    replay holds (`MAX_SPAN_SECONDS`)."""
    span = float(arrivals[-1] - arrivals[0]) if len(arrivals) else 0.0
    if span > MAX_SPAN_SECONDS:
        raise TraceError(
            f"{name} spans {span:.0f} s ({span / 86400:.1f} days) from its first request to "
            f"its last, over {len(arrivals)} requests: a replay holds at most "
            f"{MAX_SPAN_SECONDS} s ({MAX_SPAN_SECONDS // 86400} days) per second; cut the "
            "trace (or fix its timestamps)"
        )


def rate_from_arrivals(arrivals: FloatArray, resolution: int = 10) -> FloatArray:
    """Per-second rate: arrivals counted per ``resolution``-second span, spread evenly."""
    if resolution < 1:
        raise ValueError("resolution must be at least 1 second")
    check_span("the trace", arrivals)
    seconds = math.floor(arrivals[-1]) + 1
    spans = -(-seconds // resolution)
    counts = np.bincount((arrivals // resolution).astype(np.int64), minlength=spans)
    return np.repeat(counts / resolution, resolution)[: spans * resolution].astype(np.float64)


def from_csv(path: pathlib.Path | str, resolution: int = 10) -> Trace:
    arrivals = load_csv(path)
    check_span(str(path), arrivals)
    return Trace(pathlib.Path(path).stem, rate_from_arrivals(arrivals, resolution))


def synthetic(
    shape: str, duration: int = 1800, base: float = 1.0, peak: float = 4.0, seed: int = 0
) -> Trace:
    """A rate of ``shape`` between ``base`` and ``peak`` (any unit: scale it afterwards).

    step: base, then peak from 1/3 to 2/3 of the duration, then base.
    ramp: base, rising linearly to peak at the middle, falling back by 5/6.
    spike: base with a 60-second burst at peak at 40 % of the duration.
    diurnal: one sinusoidal day compressed into the duration, with ±5 % noise
    per minute (seeded), trough base at the start, crest peak at the middle.
    steady-low|mid|high: a constant mean (``base``) whose 10-second windows vary
    independently around it, gamma-distributed with a coefficient of variation of
    0.1, 0.25 or 0.4 (`STEADY_NOISE`, seeded); no trend, no long bursts.
    """
    t = np.arange(duration, dtype=np.float64)
    if shape == "step":
        rate = np.where((t >= duration / 3) & (t < 2 * duration / 3), peak, base)
    elif shape == "ramp":
        up = np.clip((t - duration / 6) / (duration / 3), 0, 1)
        down = np.clip((t - duration / 2) / (duration / 3), 0, 1)
        rate = base + (peak - base) * (up - down)
    elif shape == "spike":
        begin = 0.4 * duration
        rate = np.where((t >= begin) & (t < begin + 60), peak, base)
    elif shape == "diurnal":
        wave = 0.5 - 0.5 * np.cos(2 * np.pi * t / duration)
        noise = np.random.default_rng(seed).normal(1.0, 0.05, duration // 60 + 1)
        rate = (base + (peak - base) * wave) * np.repeat(noise, 60)[:duration]
    elif shape in STEADY_NOISE:
        shape_k = 1.0 / STEADY_NOISE[shape] ** 2  # gamma with mean 1 and this CV
        windows = -(-duration // 10)
        factors = np.random.default_rng(seed).gamma(shape_k, 1.0 / shape_k, windows)
        rate = base * np.repeat(factors, 10)[:duration]
    else:
        raise ValueError(f"unknown shape {shape!r}: one of {', '.join(SHAPES)}")
    return Trace(shape, rate.astype(np.float64))


def scale_to_peak(
    trace: Trace, replicas: float, per_replica: float, peak_window: int = 10
) -> Trace:
    """The trace with its rate scaled so the busiest window carries replicas × per_replica."""
    peak = trace.peak(peak_window)
    if peak <= 0:
        raise TraceError(f"trace {trace.name} has no requests to scale")
    factor = replicas * per_replica / peak
    return dataclasses.replace(trace, rate=trace.rate * factor)
