"""The canary analysis: the gates, the exact binomial error-rate test at small and large
counts (numbers worked by hand), and inconclusive at small counts."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import pytest

from geo_operator.api import models
from geo_operator.rollout import analysis
from geo_operator.rollout.analysis import Figures

SPEC = models.Rollout()  # minRequests 200, maxErrorRate 0.01, p99Tolerance 1.2
OBJECTIVE = 50.0
STABLE = Figures(requests=9000, errors=0, p99_ms=30.0)


def _gate(verdict: analysis.Verdict, name: str) -> analysis.Gate:
    return next(g for g in verdict.gates if g.gate == name)


def _exact_at_least(errors: int, requests: int, rate: Fraction) -> float:
    """P(X >= errors), summed exactly with fractions: the reference for the fast sum."""
    below = sum(
        math.comb(requests, k) * rate**k * (1 - rate) ** (requests - k) for k in range(errors)
    )
    return float(1 - below)


def test_one_error_in_five_requests_is_not_beyond_doubt() -> None:
    # P(X >= 1 | 5, 0.01) = 1 - 0.99^5 = 0.04901: under 5 %, but 5 requests are under
    # minRequests and it is not under 0.1 %: inconclusive, never a fail.
    assert analysis.p_at_least(1, 5, 0.01) == pytest.approx(1 - 0.99**5)
    assert analysis.p_at_least(1, 5, 0.01) == pytest.approx(0.04901, abs=1e-5)
    verdict = analysis.analyse(SPEC, Figures(5, 1, 20.0), STABLE, OBJECTIVE)
    assert verdict.outcome == "inconclusive" and not verdict.hard
    assert _gate(verdict, "error-rate").outcome == "inconclusive"
    assert "only 5 requests of the 200" in verdict.reason


def test_two_errors_in_five_requests_fail_hard() -> None:
    # P(X >= 2 | 5, 0.01) = 1 - 0.99^5 - 5 × 0.01 × 0.99^4 = 0.00098 <= 0.001: no amount of
    # further traffic makes a 40 % error rate a 1 % one.
    expected = 1 - 0.99**5 - 5 * 0.01 * 0.99**4
    assert expected == pytest.approx(0.00098015, abs=1e-8)
    assert analysis.p_at_least(2, 5, 0.01) == pytest.approx(expected)
    verdict = analysis.analyse(SPEC, Figures(5, 2, 20.0), STABLE, OBJECTIVE)
    assert (verdict.outcome, verdict.hard) == ("fail", True)
    assert "2 of 5 failed (40.00%)" in verdict.reason and "beyond doubt" in verdict.reason


def test_no_errors_are_significantly_below_only_from_299_requests() -> None:
    # P(X <= 0 | n, 0.01) = 0.99^n: 0.99^298 = 0.05004 > 0.05, 0.99^299 = 0.04954 <= 0.05.
    spec = models.Rollout(min_requests=1000)
    assert analysis.p_at_most(0, 298, 0.01) == pytest.approx(0.99**298)
    at_298 = analysis.analyse(spec, Figures(298, 0, 20.0), STABLE, OBJECTIVE)
    at_299 = analysis.analyse(spec, Figures(299, 0, 20.0), STABLE, OBJECTIVE)
    assert _gate(at_298, "error-rate").outcome == "inconclusive"
    assert _gate(at_299, "error-rate").outcome == "pass"
    # The gate passes, but 299 requests are under minRequests: the verdict waits.
    assert at_299.outcome == "inconclusive"


def test_a_rate_above_the_bound_but_not_significantly_is_inconclusive() -> None:
    # 3 of 200 (1.5 %): P(X >= 3 | 200, 0.01) = 1 - (0.13398 + 0.27067 + 0.27203) = 0.3233.
    p = analysis.p_at_least(3, 200, 0.01)
    assert p == pytest.approx(0.3233, abs=1e-4)
    assert p == pytest.approx(_exact_at_least(3, 200, Fraction(1, 100)))
    verdict = analysis.analyse(SPEC, Figures(200, 3, 20.0), STABLE, OBJECTIVE)
    assert _gate(verdict, "error-rate").outcome == "inconclusive"
    assert verdict.outcome == "inconclusive"
    assert "not significantly" in verdict.reason


def test_large_counts_pass_at_the_bound_and_fail_above_it() -> None:
    at_bound = analysis.analyse(SPEC, Figures(10_000, 100, 20.0), STABLE, OBJECTIVE)
    assert at_bound.outcome == "pass"
    # 120 of 10 000 (1.2 %): mean 100, sd 9.95, z = (119.5 - 100) / 9.95 = 1.96: P ~ 0.025.
    p = analysis.p_at_least(120, 10_000, 0.01)
    assert 0.02 < p < 0.035
    above = analysis.analyse(SPEC, Figures(10_000, 120, 20.0), STABLE, OBJECTIVE)
    assert (above.outcome, above.hard) == ("fail", False)  # counted, not at once
    assert "at the 95 % level" in above.reason
    # 30 of 1000 (3 %): P = 2.1e-7, beyond doubt.
    assert analysis.p_at_least(30, 1000, 0.01) == pytest.approx(
        _exact_at_least(30, 1000, Fraction(1, 100)), rel=1e-6
    )
    far = analysis.analyse(SPEC, Figures(1000, 30, 20.0), STABLE, OBJECTIVE)
    assert (far.outcome, far.hard) == ("fail", True)


def test_the_fast_sum_matches_the_exact_one() -> None:
    for n, e in ((1, 1), (10, 0), (10, 3), (200, 2), (500, 9), (500, 12)):
        assert analysis.p_at_least(e, n, 0.01) == pytest.approx(
            _exact_at_least(e, n, Fraction(1, 100)), rel=1e-9, abs=1e-15
        )


def test_a_million_requests_are_judged_quickly() -> None:
    p = analysis.p_at_least(10_500, 1_000_000, 0.01)  # z = 5: far above
    assert p < 1e-5


def test_errors_on_both_tracks_are_not_the_canarys_doing() -> None:
    stable = Figures(9000, 300, 30.0)  # 3.3 %
    verdict = analysis.analyse(SPEC, Figures(1000, 30, 20.0), stable, OBJECTIVE)
    assert verdict.outcome == "inconclusive"
    assert "the stable errs too" in _gate(verdict, "error-rate").message


def test_zero_tolerance_fails_on_one_error() -> None:
    spec = models.Rollout(max_error_rate=0.0)
    verdict = analysis.analyse(spec, Figures(1000, 1, 20.0), STABLE, OBJECTIVE)
    assert (verdict.outcome, verdict.hard) == ("fail", True)
    clean = analysis.analyse(spec, Figures(1000, 0, 20.0), STABLE, OBJECTIVE)
    assert clean.outcome == "pass"


def test_p99_above_the_objective_the_stable_keeps_fails() -> None:
    verdict = analysis.analyse(SPEC, Figures(1000, 0, 60.0), STABLE, OBJECTIVE)
    assert (verdict.outcome, verdict.hard) == ("fail", False)
    assert _gate(verdict, "p99-objective").outcome == "fail"
    assert "canary p99 60.0 ms against the objective 50 ms" in verdict.reason


def test_p99_above_the_objective_with_the_stable_above_too_is_inconclusive() -> None:
    stable = Figures(9000, 0, 55.0)
    verdict = analysis.analyse(SPEC, Figures(1000, 0, 60.0), stable, OBJECTIVE)
    assert _gate(verdict, "p99-objective").outcome == "inconclusive"
    # 60 <= 55 × 1.2 + 2.5 = 68.5: not slower than the stable allows.
    assert _gate(verdict, "p99-relative").outcome == "pass"
    assert verdict.outcome == "inconclusive"


def test_p99_against_the_stables() -> None:
    # limit = 30 × 1.2 + 0.05 × 50 = 38.5 ms
    slow = analysis.analyse(SPEC, Figures(1000, 0, 45.0), STABLE, OBJECTIVE)
    assert _gate(slow, "p99-objective").outcome == "pass"
    assert _gate(slow, "p99-relative").outcome == "fail"
    assert "38.5 ms" in slow.reason and slow.outcome == "fail"
    ok = analysis.analyse(SPEC, Figures(1000, 0, 38.5), STABLE, OBJECTIVE)
    assert ok.outcome == "pass"


def test_at_weight_100_the_relative_gate_is_skipped() -> None:
    verdict = analysis.analyse(SPEC, Figures(1000, 0, 40.0), Figures(0), OBJECTIVE)
    assert _gate(verdict, "p99-relative").outcome == "skipped"
    assert verdict.outcome == "pass"


def test_a_stable_with_few_requests_cannot_be_compared() -> None:
    verdict = analysis.analyse(SPEC, Figures(1000, 0, 40.0), Figures(50, 0, 30.0), OBJECTIVE)
    assert _gate(verdict, "p99-relative").outcome == "inconclusive"
    assert verdict.outcome == "inconclusive"


def test_small_counts_never_pass_nor_fail_on_p99() -> None:
    verdict = analysis.analyse(SPEC, Figures(199, 0, 900.0), STABLE, OBJECTIVE)
    assert verdict.outcome == "inconclusive"
    assert _gate(verdict, "p99-objective").outcome == "inconclusive"
    assert analysis.analyse(SPEC, Figures(0), STABLE, OBJECTIVE).outcome == "inconclusive"


def test_a_held_out_score_under_the_floor_fails_hard_at_any_traffic() -> None:
    wrong = Figures(10, 0, 20.0, accuracy=0.62, samples=540)
    verdict = analysis.analyse(SPEC, wrong, STABLE, OBJECTIVE, accuracy_floor=0.95)
    assert (verdict.outcome, verdict.hard) == ("fail", True)
    assert (
        verdict.reason == "accuracy: held-out 0.62 on 540 samples against the floor 0.95: under it"
    )


def test_the_accuracy_gate_waits_for_a_score_and_passes_on_one() -> None:
    unscored = analysis.analyse(
        SPEC, Figures(1000, 0, 20.0), STABLE, OBJECTIVE, accuracy_floor=0.95
    )
    assert unscored.outcome == "inconclusive"
    assert "no held-out score yet" in unscored.reason
    scored = analysis.analyse(
        SPEC, Figures(1000, 0, 20.0, 0.97, 540), STABLE, OBJECTIVE, accuracy_floor=0.95
    )
    assert scored.outcome == "pass"
    no_set = analysis.analyse(SPEC, Figures(1000, 0, 20.0), STABLE, OBJECTIVE)
    assert "accuracy" not in {g.gate for g in no_set.gates}


def test_a_pass_names_every_gate_with_its_figures() -> None:
    verdict = analysis.analyse(SPEC, Figures(1000, 2, 20.0), STABLE, OBJECTIVE)
    assert verdict.outcome == "pass"
    assert [g.gate for g in verdict.gates] == [
        "traffic",
        "error-rate",
        "p99-objective",
        "p99-relative",
    ]
    assert "1000 requests (minRequests 200)" in verdict.reason
    assert "2 of 1000 failed (0.20%)" in verdict.reason
    status = verdict.status()
    assert status.outcome == "pass" and len(status.gates) == 4


def test_figures_round_trip_through_status() -> None:
    figures = Figures(1000, 3, 21.5, 0.97, 540)
    assert Figures.of(figures.status()) == figures


# ---- a generative model: time to first token and inter-token gates (issue 28)

TOKENS = (200.0, 50.0)  # objectives: TTFT p99 200 ms, inter-token p99 50 ms
GEN_STABLE = Figures(
    requests=900, p99_ms=4000.0, first_tokens=900, ttft_p99_ms=40.0, tokens=27_000, itl_p99_ms=9.0
)


def _generative(**fields: object) -> Figures:
    base = {"requests": 300, "p99_ms": 9000.0, "first_tokens": 300, "ttft_p99_ms": 45.0}
    base |= {"tokens": 9000, "itl_p99_ms": 10.0}
    return Figures(**(base | fields))  # type: ignore[arg-type]


def test_a_generative_canary_is_judged_on_first_tokens_and_inter_token_gaps() -> None:
    # Its request p99 (9 s: the whole answer) is no objective: the p99 gates give way.
    verdict = analysis.analyse(SPEC, _generative(), GEN_STABLE, OBJECTIVE, tokens=TOKENS)
    assert verdict.outcome == "pass", verdict.reason
    names = [g.gate for g in verdict.gates]
    assert names == [
        "traffic",
        "error-rate",
        "ttft-objective",
        "ttft-relative",
        "itl-objective",
        "itl-relative",
    ]
    assert "canary TTFT p99 45.0 ms against the objective 200 ms" in verdict.reason
    # 9 ms x 1.2 + 5 % of 50 ms = 13.3 ms
    assert "inter-token p99 10.0 ms against the stable's 9.0 ms" in verdict.reason
    assert "13.3 ms" in _gate(verdict, "itl-relative").message


def test_a_generative_canary_slower_between_tokens_fails_while_the_stable_keeps_it() -> None:
    slow = _generative(itl_p99_ms=70.0)
    verdict = analysis.analyse(SPEC, slow, GEN_STABLE, OBJECTIVE, tokens=TOKENS)
    assert verdict.outcome == "fail" and not verdict.hard
    assert _gate(verdict, "itl-objective").outcome == "fail"
    assert "inter-token p99 70.0 ms against the objective 50 ms" in verdict.reason
    # within its objective but three times the stable's first-token time: relative fails
    late = _generative(ttft_p99_ms=130.0)
    verdict = analysis.analyse(SPEC, late, GEN_STABLE, OBJECTIVE, tokens=TOKENS)
    assert _gate(verdict, "ttft-objective").outcome == "pass"
    assert _gate(verdict, "ttft-relative").outcome == "fail" and verdict.outcome == "fail"
    # both tracks over the objective: the load, not the canary
    both = dataclasses.replace(GEN_STABLE, itl_p99_ms=65.0)
    verdict = analysis.analyse(SPEC, slow, both, OBJECTIVE, tokens=TOKENS)
    assert _gate(verdict, "itl-objective").outcome == "inconclusive"


def test_inter_token_latency_waits_for_tokens_not_requests() -> None:
    # 300 requests (over minRequests) of one token each: 0 gaps, no p99 of them to judge
    short = _generative(tokens=60, itl_p99_ms=80.0)
    verdict = analysis.analyse(SPEC, short, GEN_STABLE, OBJECTIVE, tokens=TOKENS)
    assert verdict.outcome == "inconclusive"
    assert _gate(verdict, "itl-objective").message == "not judged under 100 tokens"
    assert _gate(verdict, "ttft-objective").outcome == "pass"
    # the stable's own gaps too few: the relative gate cannot compare yet
    thin = dataclasses.replace(GEN_STABLE, tokens=50)
    verdict = analysis.analyse(SPEC, _generative(), thin, OBJECTIVE, tokens=TOKENS)
    assert _gate(verdict, "itl-relative").message == (
        "the stable's inter-token p99 is from only 50 tokens"
    )
    assert verdict.outcome == "inconclusive"


def test_an_unset_token_objective_skips_its_gate_and_keeps_the_relative_one() -> None:
    verdict = analysis.analyse(SPEC, _generative(), GEN_STABLE, OBJECTIVE, tokens=(None, 50.0))
    assert _gate(verdict, "ttft-objective").outcome == "skipped"
    assert _gate(verdict, "ttft-relative").outcome == "pass"
    assert verdict.outcome == "pass"


def test_an_engine_without_latency_histograms_is_judged_by_the_p99_gates() -> None:
    # TensorRT-LLM's metrics have no TTFT or inter-token histograms: first_tokens None
    canary = Figures(requests=300, p99_ms=45.0)
    stable = Figures(requests=900, p99_ms=40.0)
    verdict = analysis.analyse(SPEC, canary, stable, OBJECTIVE, tokens=TOKENS)
    assert [g.gate for g in verdict.gates][2:] == ["p99-objective", "p99-relative"]
    assert verdict.outcome == "pass"
    assert "the engine reports no token latencies: p99 gates" in verdict.reason


def test_track_figures_keep_the_token_fields_through_the_status() -> None:
    figures = _generative()
    status = figures.status()
    assert status.model_dump(by_alias=True, exclude_none=True)["itlP99Ms"] == 10.0
    assert Figures.of(status) == figures
    assert "inter-token p99 10.0 ms over 9000 tokens" in figures.words()
