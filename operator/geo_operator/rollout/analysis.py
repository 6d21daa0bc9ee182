"""The canary analysis: one verdict from the canary's and the stable's figures. Pure.

`analyse(spec, canary, stable, objective_p99_ms, accuracy_floor, tokens)` runs the gates
on what each track served over one analysis window and returns a `Verdict`:
pass, fail or inconclusive, with every gate's outcome and the figures in words.
The policy (`rollout.policy`) acts on it; the controller gathers the figures
(the same metrics sources the autoscaler reads, grouped by track).

The gates:

- **traffic**: the canary served at least `rollout.minRequests` in the window.
  Fewer is **inconclusive**, never a pass: the p99 gates are not judged (a p99
  of a few requests is noise) and the verdict is inconclusive, unless a gate
  below fails beyond doubt (a hard failure needs no minimum of traffic).
- **error-rate**: an exact one-sided binomial test of the canary's errors ``e``
  out of ``n`` requests against `maxErrorRate` ``p``. Normal approximations
  and the Wilson interval are poor exactly where a canary lives (a handful of
  requests, zero or one error); the exact binomial tail is cheap to sum.

  - fail **hard** when P(X ≥ e | n, p) ≤ HARD_ALPHA (0.001): a rate this far
    above ``p`` is not bad luck at any n (2 errors in 5 requests at p = 1 %:
    P = 0.00098); it rolls back at once;
  - fail when n ≥ minRequests and P(X ≥ e | n, p) ≤ ALPHA (0.05): above ``p``
    at the 95 % level (soft: counted toward maxFailedAnalyses);
  - pass when P(X ≤ e | n, p) ≤ ALPHA (significantly below ``p``: 0 errors in
    299 requests at p = 1 %), or when n ≥ minRequests and e / n ≤ p;
  - inconclusive otherwise (1 error in 5: P = 0.049, not beyond doubt; 3 in
    200: a 1.5 % rate, P = 0.32, not shown to be above ``p``).

  A canary failure is inconclusive instead when the stable's own error rate is
  above ``p`` at the 95 % level as well: both tracks erring says the load or
  the clients, not the canary.
- **p99-objective** (n ≥ minRequests): the canary's p99 within the objective
  passes; above it fails, unless the stable (with enough requests) is above it
  too: then inconclusive (the load, not the canary).
- **p99-relative** (n ≥ minRequests): the canary's p99 at most the stable's ×
  `p99Tolerance`, plus a slack of P99_SLACK × the objective (5 %: histogram
  resolution and noise on fast models, where 2 ms against 1.5 ms is no
  regression). Skipped when the stable served nothing (weight 100: nothing to
  compare); inconclusive when it served fewer than minRequests.
- **ttft-objective**, **ttft-relative**, **itl-objective**, **itl-relative**: a
  generative model's latency gates, in place of the p99 ones (its request latency is the
  whole generation, as long as the answer: no objective). The same two tests as the p99
  gates, on the time to first token (its p99 over the window's first tokens: one a
  request, so judged with the traffic gate) and on the time between tokens (its p99 over
  the window's inter-token gaps: judged once the canary streamed MIN_TOKENS of them, the
  token count being the honest denominator), against `objectives.timeToFirstTokenP99Ms`
  and `interTokenLatencyP99Ms` (an objective unset: its objective gate skipped) and
  the stable's × `p99Tolerance`. An engine that exports no latency histograms
  (TensorRT-LLM's metrics) is judged by the p99 gates instead, and the verdict says so.
- **accuracy**, only when an accuracy floor is given (the GeoDeployment has an
  evaluation set): the canary's held-out score, measured through one canary pod,
  at least the floor passes; under it fails **hard** (the held-out set is scored
  in full each time: a wrong model does not get right by waiting); no score yet
  is inconclusive.

The verdict: a hard failure fails (hard); else too little traffic is
inconclusive; else any failure fails, any inconclusive gate is inconclusive,
and all passing (or skipped) passes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from geo_operator.api import models

ALPHA = 0.05
HARD_ALPHA = 0.001
P99_SLACK = 0.05
# Inter-token gaps a p99 of them needs before it is judged (fewer: its worst one).
MIN_TOKENS = 100
# Terms of the binomial sum further than this many standard deviations from the mean
# are below e^-800 and left out, so the sum stays short at millions of requests.
_TAIL_SDS = 40.0


@dataclasses.dataclass(frozen=True)
class Figures:
    """What one track served over the analysis window."""

    requests: int
    errors: int = 0
    p99_ms: float | None = None
    accuracy: float | None = None  # held-out score measured through one of its pods
    samples: int | None = None  # held-out samples scored
    # A generative engine's, from its latency histograms (None: it exports none).
    first_tokens: int | None = None  # time-to-first-token observations in the window
    ttft_p99_ms: float | None = None
    tokens: int | None = None  # inter-token gaps observed in the window
    itl_p99_ms: float | None = None

    def status(self) -> models.TrackFigures:
        return models.TrackFigures(
            requests=self.requests,
            errors=self.errors,
            p99_ms=self.p99_ms,
            accuracy=self.accuracy,
            samples=self.samples,
            first_tokens=self.first_tokens,
            ttft_p99_ms=self.ttft_p99_ms,
            tokens=self.tokens,
            itl_p99_ms=self.itl_p99_ms,
        )

    @classmethod
    def of(cls, figures: models.TrackFigures) -> Figures:
        return cls(
            figures.requests,
            figures.errors,
            figures.p99_ms,
            figures.accuracy,
            figures.samples,
            figures.first_tokens,
            figures.ttft_p99_ms,
            figures.tokens,
            figures.itl_p99_ms,
        )

    def words(self) -> str:
        text = f"{self.errors}/{self.requests} failed"
        if self.p99_ms is not None:
            text += f", p99 {self.p99_ms:.1f} ms"
        if self.ttft_p99_ms is not None:
            text += f", TTFT p99 {self.ttft_p99_ms:.1f} ms"
        if self.itl_p99_ms is not None:
            text += f", inter-token p99 {self.itl_p99_ms:.1f} ms over {self.tokens} tokens"
        if self.accuracy is not None:
            text += f", held-out {self.accuracy:.4g}"
            if self.samples is not None:
                text += f" on {self.samples} samples"
        return text


@dataclasses.dataclass(frozen=True)
class Gate:
    """One gate's outcome and the figures behind it."""

    gate: str
    outcome: models.GateOutcome
    message: str
    hard: bool = False  # a failure that rolls back at once

    def status(self) -> models.RolloutGate:
        return models.RolloutGate(gate=self.gate, outcome=self.outcome, message=self.message)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The analysis' outcome, its gates, and the figures it was reached on."""

    outcome: models.VerdictOutcome
    gates: tuple[Gate, ...]
    canary: Figures
    stable: Figures
    hard: bool = False

    @property
    def reason(self) -> str:
        """The gates that decided, in words (all of them on a pass)."""
        deciding = {"pass": ("pass",), "fail": ("fail",), "inconclusive": ("inconclusive",)}
        picked = [g for g in self.gates if g.outcome in deciding[self.outcome]]
        if self.outcome == "fail" and self.hard:
            picked = [g for g in picked if g.hard]
        return "; ".join(f"{g.gate}: {g.message}" for g in picked)

    def status(self) -> models.RolloutVerdict:
        return models.RolloutVerdict(
            outcome=self.outcome,
            hard=self.hard,
            reason=self.reason[:2048],
            gates=[g.status() for g in self.gates],
        )


def _log_pmf(n: int, p: float, i: int) -> float:
    return (
        math.lgamma(n + 1)
        - math.lgamma(i + 1)
        - math.lgamma(n - i + 1)
        + i * math.log(p)
        + (n - i) * math.log1p(-p)
    )


def _sum_pmf(n: int, p: float, low: int, high: int) -> float:
    """P(low ≤ X ≤ high) for X ~ Binomial(n, p), 0 < p < 1."""
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    low = max(low, 0, math.floor(mean - _TAIL_SDS * sd) - 1)
    high = min(high, n, math.ceil(mean + _TAIL_SDS * sd) + 1)
    return min(1.0, sum(math.exp(_log_pmf(n, p, i)) for i in range(low, high + 1)))


def p_at_least(errors: int, requests: int, rate: float) -> float:
    """P(X ≥ errors) for X ~ Binomial(requests, rate): how likely this many errors or more
    would be if the true error rate were ``rate``."""
    if errors <= 0:
        return 1.0
    if errors > requests or rate <= 0:
        return 0.0
    if rate >= 1:
        return 1.0
    return _sum_pmf(requests, rate, errors, requests)


def p_at_most(errors: int, requests: int, rate: float) -> float:
    """P(X ≤ errors) for X ~ Binomial(requests, rate)."""
    if errors >= requests or rate <= 0:
        return 1.0
    if errors < 0 or rate >= 1:
        return 0.0
    return _sum_pmf(requests, rate, 0, errors)


def _rate(figures: Figures) -> str:
    if figures.requests <= 0:
        return "no requests"
    return (
        f"{figures.errors} of {figures.requests} failed ({figures.errors / figures.requests:.2%})"
    )


def _traffic(spec: models.Rollout, canary: Figures) -> Gate:
    if canary.requests >= spec.min_requests:
        return Gate(
            "traffic", "pass", f"{canary.requests} requests (minRequests {spec.min_requests})"
        )
    return Gate(
        "traffic",
        "inconclusive",
        f"only {canary.requests} requests of the {spec.min_requests} a verdict needs (minRequests)",
    )


def _error_rate(spec: models.Rollout, canary: Figures, stable: Figures) -> Gate:
    n, e, p = canary.requests, min(max(canary.errors, 0), canary.requests), spec.max_error_rate
    if n <= 0:
        return Gate("error-rate", "inconclusive", "no requests to judge")
    above, below = p_at_least(e, n, p), p_at_most(e, n, p)
    words = f"{_rate(canary)} against maxErrorRate {p:g}"
    hard = above <= HARD_ALPHA
    if hard or (n >= spec.min_requests and above <= ALPHA):
        stable_above = stable.requests > 0 and (
            p_at_least(stable.errors, stable.requests, p) <= ALPHA
        )
        if stable_above:
            return Gate(
                "error-rate",
                "inconclusive",
                f"{words}, but the stable errs too ({_rate(stable)}): the load or the "
                "clients, not the canary",
            )
        beyond = "beyond doubt" if hard else "at the 95 % level"
        return Gate(
            "error-rate",
            "fail",
            f"{words}: above it {beyond} (P(≥{e} errors at {p:g}) = {above:.2g})",
            hard=hard,
        )
    if below <= ALPHA:
        return Gate(
            "error-rate",
            "pass",
            f"{words}: below it at the 95 % level (P(≤{e} errors at {p:g}) = {below:.2g})",
        )
    if n >= spec.min_requests and e <= p * n:
        return Gate("error-rate", "pass", f"{words}: within it over {n} requests")
    if n >= spec.min_requests:
        return Gate(
            "error-rate",
            "inconclusive",
            f"{words}: above it, but not significantly (P(≥{e} errors at {p:g}) = {above:.2g})",
        )
    return Gate("error-rate", "inconclusive", f"{words}: too few requests to tell")


@dataclasses.dataclass(frozen=True)
class _Latency:
    """One latency the gates judge: its gates' prefix, its name in words, and where each
    track's value and evidence (observations, the minimum a p99 of them needs) are."""

    gate: str
    what: str
    value: Callable[[Figures], float | None]
    count: Callable[[Figures], int | None]
    unit: str  # what count counts, in words

    def judged(self, figures: Figures, least: int) -> bool:
        return (self.count(figures) or 0) >= least


P99 = _Latency("p99", "p99", lambda f: f.p99_ms, lambda f: f.requests, "requests")
TTFT = _Latency(
    "ttft", "TTFT p99", lambda f: f.ttft_p99_ms, lambda f: f.first_tokens, "first tokens"
)
ITL = _Latency("itl", "inter-token p99", lambda f: f.itl_p99_ms, lambda f: f.tokens, "tokens")


def _objective(
    latency: _Latency, canary: Figures, stable: Figures, objective: float, least: int
) -> Gate:
    gate, value = f"{latency.gate}-objective", latency.value(canary)
    if value is None:
        return Gate(gate, "inconclusive", f"no {latency.what} for the canary")
    words = f"canary {latency.what} {value:.1f} ms against the objective {objective:g} ms"
    if value <= objective:
        return Gate(gate, "pass", words)
    theirs = latency.value(stable)
    if theirs is not None and latency.judged(stable, least) and theirs > objective:
        return Gate(
            gate,
            "inconclusive",
            f"{words}, and the stable's {theirs:.1f} ms is above it too: the load, not the canary",
        )
    return Gate(gate, "fail", f"{words}: above it while the stable keeps it")


def _relative(
    spec: models.Rollout,
    latency: _Latency,
    canary: Figures,
    stable: Figures,
    objective: float,
    least: int,
) -> Gate:
    gate, value, theirs = f"{latency.gate}-relative", latency.value(canary), latency.value(stable)
    if not latency.count(stable) or theirs is None:
        return Gate(gate, "skipped", "the stable served nothing to compare with")
    if value is None:
        return Gate(gate, "inconclusive", f"no {latency.what} for the canary")
    if not latency.judged(stable, least):
        return Gate(
            gate,
            "inconclusive",
            f"the stable's {latency.what} is from only {latency.count(stable)} {latency.unit}",
        )
    limit = theirs * spec.p99_tolerance + P99_SLACK * objective
    words = (
        f"canary {latency.what} {value:.1f} ms against the stable's {theirs:.1f} ms × "
        f"p99Tolerance {spec.p99_tolerance:g} + {P99_SLACK * objective:.1f} ms slack = "
        f"{limit:.1f} ms"
    )
    return Gate(gate, "pass" if value <= limit else "fail", words)


def _latency_gates(
    spec: models.Rollout,
    canary: Figures,
    stable: Figures,
    objective_p99_ms: float,
    tokens: tuple[float | None, float | None] | None,
) -> list[Gate]:
    """The latency gates: p99's, or for a generative engine that reports them the time to
    first token's and the inter-token gaps' (each judged once its evidence is in)."""
    enough = canary.requests >= spec.min_requests
    checks: list[tuple[_Latency, float | None, int, bool, str]]
    if tokens is None or canary.first_tokens is None:
        checks = [(P99, objective_p99_ms, spec.min_requests, enough, "under minRequests")]
        note = None if tokens is None else "the engine reports no token latencies: p99 gates"
    else:
        ttft, itl = tokens
        itl_enough = ITL.judged(canary, MIN_TOKENS)
        checks = [
            (TTFT, ttft, spec.min_requests, enough, "under minRequests"),
            (ITL, itl, MIN_TOKENS, enough and itl_enough, f"under {MIN_TOKENS} tokens"),
        ]
        note = None
    gates = []
    for latency, objective, least, judged, why in checks:
        if not judged:
            for name in ("objective", "relative"):
                gates.append(Gate(f"{latency.gate}-{name}", "inconclusive", f"not judged {why}"))
            continue
        if objective is None:
            gates.append(Gate(f"{latency.gate}-objective", "skipped", "no objective set"))
        else:
            gates.append(_objective(latency, canary, stable, objective, least))
        slack = objective if objective is not None else objective_p99_ms
        gates.append(_relative(spec, latency, canary, stable, slack, least))
    if note is not None:
        gates = [dataclasses.replace(g, message=f"{g.message} ({note})") for g in gates]
    return gates


def _accuracy(canary: Figures, floor: float) -> Gate:
    if canary.accuracy is None:
        return Gate("accuracy", "inconclusive", f"no held-out score yet (floor {floor:.4g})")
    on = f" on {canary.samples} samples" if canary.samples is not None else ""
    words = f"held-out {canary.accuracy:.4g}{on} against the floor {floor:.4g}"
    if canary.accuracy >= floor:
        return Gate("accuracy", "pass", words)
    return Gate("accuracy", "fail", f"{words}: under it", hard=True)


def analyse(
    spec: models.Rollout,
    canary: Figures,
    stable: Figures,
    objective_p99_ms: float,
    accuracy_floor: float | None = None,
    tokens: tuple[float | None, float | None] | None = None,
) -> Verdict:
    """The verdict on one analysis window (see the module's docstring for the gates).
    ``tokens``: a generative model's (TTFT, inter-token) p99 objectives, None each unset."""
    enough = canary.requests >= spec.min_requests
    gates = [_traffic(spec, canary), _error_rate(spec, canary, stable)]
    gates += _latency_gates(spec, canary, stable, objective_p99_ms, tokens)
    if accuracy_floor is not None:
        gates.append(_accuracy(canary, accuracy_floor))
    outcomes = {g.outcome for g in gates}
    if any(g.outcome == "fail" and g.hard for g in gates):
        outcome: models.VerdictOutcome = "fail"
    elif not enough:
        outcome = "inconclusive"
    elif "fail" in outcomes:
        outcome = "fail"
    elif "inconclusive" in outcomes:
        outcome = "inconclusive"
    else:
        outcome = "pass"
    hard = outcome == "fail" and any(g.hard for g in gates if g.outcome == "fail")
    return Verdict(outcome, tuple(gates), canary, stable, hard)
