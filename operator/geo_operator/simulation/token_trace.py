"""Generative traces beyond the recorded one: rescaled in rate, and synthetic mixes.

- `rescale` draws a trace at ``factor`` times the recorded rate: per 10-second window of
  the original, a Poisson number of requests (mean ``factor`` x the window's count),
  uniform within the window, each with the prompt and output lengths of a request of
  that window drawn at random (seeded): the trace's shape and mix, at another scale.
- `synthetic` gives the mixes the issue asks for at a steady rate with 10-second windows
  varying (gamma, CV 0.25): ``long-prompt`` (long prompts, short answers), ``long-answer``
  (short prompts, long answers), ``shift`` (the first half long-prompt, the second
  long-answer), and ``burst`` (long-prompt with the rate tripled for a fifth of the time).

Called by `cli.simulate` and e2e/bench_simulate_llm.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from geo_operator.simulation.trace import TokenRequests

MIXES = ("long-prompt", "long-answer", "shift", "burst")
WINDOW = 10


def rescale(requests: TokenRequests, factor: float, seed: int = 0) -> TokenRequests:
    """The trace at ``factor`` times its rate (shape and per-window mix kept)."""
    if factor <= 0:
        raise ValueError("a rate factor must be above 0")
    rng = np.random.default_rng(seed)
    window = (requests.arrivals // WINDOW).astype(np.int64)
    order = np.argsort(window, kind="stable")
    counts = np.bincount(window)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    draws = rng.poisson(counts * factor)
    arrivals, prompts, outputs = [], [], []
    for w in np.flatnonzero(draws):
        k = int(draws[w])
        members = order[starts[w] : starts[w] + counts[w]]
        pick = members[rng.integers(0, len(members), k)]
        arrivals.append(w * WINDOW + rng.uniform(0, WINDOW, k))
        prompts.append(requests.context_tokens[pick])
        outputs.append(requests.generated_tokens[pick])
    return _sorted(f"{requests.name}x{factor:g}", arrivals, prompts, outputs)


def _sorted(
    name: str,
    arrivals: Sequence[npt.NDArray[Any]],
    prompts: Sequence[npt.NDArray[Any]],
    outputs: Sequence[npt.NDArray[Any]],
) -> TokenRequests:
    a = np.concatenate(arrivals) if arrivals else np.zeros(0)
    order = np.argsort(a, kind="stable")
    p = np.concatenate(prompts)[order].astype(np.int64)
    o = np.concatenate(outputs)[order].astype(np.int64)
    a = a[order]
    return TokenRequests(name, a - a[0], p, o)


def _lengths(
    rng: np.random.Generator, kind: str, k: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    if kind == "long-prompt":  # prompts of thousands of tokens, answers of tens
        return rng.lognormal(np.log(2500), 0.5, k).clip(16, 7000), rng.lognormal(
            np.log(20), 0.6, k
        ).clip(1, 200)
    # short prompts, answers of hundreds of tokens
    return rng.lognormal(np.log(150), 0.6, k).clip(8, 2000), rng.lognormal(
        np.log(300), 0.5, k
    ).clip(16, 1500)


def synthetic(kind: str, duration: int = 1800, rate: float = 2.0, seed: int = 0) -> TokenRequests:
    """A synthetic generative trace of ``kind`` at ``rate`` requests/s on average."""
    if kind not in MIXES:
        raise ValueError(f"unknown mix {kind!r}: one of {', '.join(MIXES)}")
    rng = np.random.default_rng(seed)
    windows = -(-duration // WINDOW)
    shape = 16.0  # gamma with CV 0.25
    factors = rng.gamma(shape, 1.0 / shape, windows)
    if kind == "burst":
        begin = int(windows * 0.4)
        factors[begin : begin + max(1, windows // 5)] *= 3.0
    arrivals, prompts, outputs = [], [], []
    for w in range(windows):
        k = int(rng.poisson(rate * WINDOW * factors[w]))
        if k == 0:
            continue
        mix = kind
        if kind == "shift":
            mix = "long-prompt" if w < windows // 2 else "long-answer"
        elif kind == "burst":
            mix = "long-prompt"
        p, o = _lengths(rng, mix, k)
        arrivals.append(w * WINDOW + rng.uniform(0, WINDOW, k))
        prompts.append(np.round(p))
        outputs.append(np.round(o))
    return _sorted(kind, arrivals, prompts, outputs)
