"""Hypothesis properties of the rollout policy: over any run of ticks, verdicts, pauses,
manual actions and spec changes, what it may and may not do."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from geo_operator.api import models
from geo_operator.rollout import analysis, policy
from geo_operator.rollout.analysis import Figures

SPEC = models.Rollout(steps=[10, 50, 100], analysis_interval_seconds=30, min_requests=200)
STABLE_FIGURES = Figures(9000, 0, 30.0)
VERDICTS = {
    "good": analysis.analyse(SPEC, Figures(1000, 0, 20.0), STABLE_FIGURES, 50.0),
    "slow": analysis.analyse(SPEC, Figures(1000, 0, 80.0), STABLE_FIGURES, 50.0),
    "erring": analysis.analyse(SPEC, Figures(1000, 100, 20.0), STABLE_FIGURES, 50.0),
    "quiet": analysis.analyse(SPEC, Figures(40, 0, 20.0), STABLE_FIGURES, 50.0),
}
CONFIGS = [
    policy.Configuration(f"{c * 16}", f"art-{c}", f"http://models/{c}.onnx", 8) for c in "abcd"
]

ticks = st.lists(
    st.tuples(
        st.integers(1, 120),  # seconds since the last tick
        st.sampled_from([None, None, "good", "slow", "erring", "quiet"]),
        st.sampled_from([None] * 8 + ["promote", "abort"]),
        st.sampled_from([None] * 12 + [0, 1, 2, 3]),  # now and then the spec asks for another
        st.sampled_from([False, False, False, True]),  # paused, now and then
        st.sampled_from(list(models.OnDeadline)),
        st.sampled_from([(), (), (), ("art-x",)]),  # a candidate measured, now and then
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ticks)
def test_the_policy_keeps_its_promises(
    run: list[
        tuple[int, str | None, str | None, int | None, bool, models.OnDeadline, tuple[str, ...]]
    ],
) -> None:
    now, stable, desired = 1_000_000, CONFIGS[0].config_hash, CONFIGS[1]
    state = policy.State(history=(policy.Promotion(CONFIGS[0], None, "first", now),))
    for dt, which, manual, wanted, paused, on_deadline, measuring in run:
        now += dt
        spec = SPEC.model_copy(update={"paused": paused, "on_deadline": on_deadline})
        verdict = None if which is None else VERDICTS[which]
        desired = desired if wanted is None else CONFIGS[wanted]
        before = state
        decision, state = policy.step(
            spec,
            before,
            verdict,
            now,
            canary=desired,
            stable_hash=stable,
            manual=manual,
            measuring=measuring,
        )
        rejected_before = {r.config_hash for r in before.rejected}
        # Weights are 0, a step's, or 100.
        assert decision.weight in {0, 100, *spec.steps}
        # A canary starts only for a change that was not rejected, never while paused, and
        # never while a candidate is still measured.
        if decision.action == "start":
            assert desired.config_hash != stable
            assert desired.config_hash not in rejected_before
            assert not paused and not measuring
            assert state.active and state.canary_hash == desired.config_hash
        # A step advances only on a pass, never while paused, held, or by hand.
        if decision.action == "advance":
            assert which == "good" and not paused and manual is None
            assert before.phase in ("Progressing", "Paused")
        same = before.active and desired.config_hash == before.canary_hash
        # Something stable serves and the strategy is canary: every promotion is a canary's,
        # earned by a pass at the last step, or by hand.
        if decision.action == "promote":
            assert same
            assert manual == "promote" or (which == "good" and before.step == len(spec.steps) - 1)
            assert state.history[-1].configuration == desired
            stable = desired.config_hash  # the stable Deployment takes the template
        # A rollback never touches the stable, and nothing runs after it.
        if decision.action == "rollback":
            assert not state.active and state.stable_hash == before.stable_hash
        # Too few requests never advance, promote or count as a failure.
        if which == "quiet" and same and manual is None:
            assert decision.action not in ("advance", "promote")
            assert state.failed == before.failed
            if decision.action == "rollback":
                assert "progressDeadlineSeconds" in decision.reason or (
                    "onDeadline is rollback" in decision.reason
                )
        # Bounded memory, and a state that survives the operator's restart.
        assert len(state.rejected) <= models.MAX_REJECTED
        assert len(state.history) <= models.MAX_HISTORY
        assert policy.State.of(state.status(spec)) == state
