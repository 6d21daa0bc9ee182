"""The rollout policy: steps, verdicts, inconclusive, the deadline both ways, remembered
rejections, manual promote and abort, pause, and resuming from status."""

from __future__ import annotations

import dataclasses

from geo_operator.api import models
from geo_operator.rollout import analysis, policy
from geo_operator.rollout.analysis import Figures

SPEC = models.Rollout(
    steps=[10, 50, 100],
    analysis_interval_seconds=30,
    min_requests=200,
    max_failed_analyses=2,
    progress_deadline_seconds=600,
)
OBJECTIVE = 50.0
STABLE = policy.Configuration("a" * 16, "fp32", "http://models/fp32.onnx", 8)
CANARY = policy.Configuration("b" * 16, "int8", "http://models/int8.onnx", 32)
OTHER = policy.Configuration("c" * 16, "fp16", "http://models/fp16.onnx", 16)


STABLE_FIGURES = Figures(9000, 0, 30.0)


def _verdict(canary: Figures) -> analysis.Verdict:
    return analysis.analyse(SPEC, canary, STABLE_FIGURES, OBJECTIVE)


GOOD = _verdict(Figures(1000, 0, 20.0))
SLOW = _verdict(Figures(1000, 0, 80.0))  # a soft failure: p99 above the objective
ERRING = _verdict(Figures(1000, 100, 20.0))  # a hard failure: 10 % errors
QUIET = _verdict(Figures(40, 0, 20.0))  # too few requests
assert (GOOD.outcome, SLOW.outcome, ERRING.outcome, QUIET.outcome) == (
    "pass",
    "fail",
    "fail",
    "inconclusive",
)
assert not SLOW.hard and ERRING.hard


def _tick(
    state: policy.State,
    now: float,
    verdict: analysis.Verdict | None = None,
    *,
    spec: models.Rollout = SPEC,
    canary: policy.Configuration = CANARY,
    stable: str | None = STABLE.config_hash,
    manual: policy.Manual | None = None,
    measuring: tuple[str, ...] = (),
) -> tuple[policy.Decision, policy.State]:
    return policy.step(
        spec,
        state,
        verdict,
        now,
        canary=canary,
        stable_hash=stable,
        manual=manual,
        measuring=measuring,
    )


def _started(spec: models.Rollout = SPEC) -> policy.State:
    decision, state = _tick(policy.State(), 0, spec=spec)
    assert (decision.action, decision.weight, decision.step) == ("start", 10, 0)
    return state


def test_the_first_deployment_rolls_as_before_and_is_history() -> None:
    decision, state = _tick(policy.State(), 0, stable=None)
    assert (decision.action, decision.weight) == ("promote", 100)
    assert "nothing stable serves yet" in decision.reason
    assert state.phase == "Promoted" and state.stable_hash == CANARY.config_hash
    assert [p.configuration for p in state.history] == [CANARY]
    assert state.history[0].figures is None


def test_nothing_to_do_when_the_desired_is_the_stable() -> None:
    decision, state = _tick(policy.State(), 0, canary=STABLE)
    assert (decision.action, decision.weight) == ("wait", 0)
    assert "is the stable's" in decision.reason and not state.active


def test_strategy_rolling_promotes_without_a_canary() -> None:
    spec = models.Rollout(strategy="rolling")
    decision, state = _tick(policy.State(), 0, spec=spec)
    assert decision.action == "promote" and "strategy rolling" in decision.reason
    assert state.history[-1].configuration == CANARY


def test_a_good_canary_goes_through_every_step_and_is_promoted() -> None:
    state = _started()
    assert state.phase == "Progressing" and state.weight(SPEC) == 10
    # Before the interval, a verdict is not acted on.
    decision, state = _tick(state, 10, GOOD)
    assert (decision.action, decision.weight) == ("wait", 10)
    assert "next analysis in 20s" in decision.reason
    decision, state = _tick(state, 30, GOOD)
    assert (decision.action, decision.weight, decision.step) == ("advance", 50, 1)
    assert "passed at 10 % (step 1 of 3), advancing to 50 % (step 2 of 3)" in decision.reason
    decision, state = _tick(state, 45)
    assert decision.action == "wait" and "next analysis in 15s" in decision.reason
    decision, state = _tick(state, 60, GOOD)
    assert (decision.action, decision.weight) == ("advance", 100)
    decision, state = _tick(state, 90, GOOD)
    assert (decision.action, decision.weight) == ("promote", 100)
    assert "passed every step, the last at 100 % (step 3 of 3)" in decision.reason
    assert state.phase == "Promoted" and not state.active
    assert state.stable_hash == CANARY.config_hash
    promoted = state.history[-1]
    assert promoted.configuration == CANARY and promoted.figures == GOOD.canary
    assert promoted.time == 90
    # The stable Deployment is still taking the template: no second canary of it.
    decision, state = _tick(state, 100, stable=STABLE.config_hash)
    assert decision.action == "wait" and not state.active
    decision, _ = _tick(state, 130, stable=CANARY.config_hash)
    assert decision.action == "wait"


def test_going_back_to_an_earlier_promoted_configuration_is_a_canary() -> None:
    _, state = _tick(policy.State(), 0, canary=STABLE, stable=None)  # history: [STABLE]
    _, state = _tick(state, 10, canary=CANARY, stable=None)  # rolled, history [STABLE, CANARY]
    decision, state = _tick(state, 20, canary=STABLE, stable=CANARY.config_hash)
    assert decision.action == "start" and state.canary_hash == STABLE.config_hash


def test_failed_analyses_count_over_the_rollout_and_roll_back() -> None:
    state = _started()
    decision, state = _tick(state, 30, SLOW)
    assert (decision.action, decision.weight) == ("wait", 10)
    assert "analysis failed at 10 % (step 1 of 3) (1 of maxFailedAnalyses 2)" in decision.reason
    assert state.failed == 1 and state.window_since == 30
    decision, state = _tick(state, 60, GOOD)
    assert decision.action == "advance"
    decision, state = _tick(state, 90, SLOW)
    assert (decision.action, decision.weight) == ("rollback", 0)
    assert "2 failed analyses (maxFailedAnalyses 2), the last at 50 %" in decision.reason
    assert "p99-objective: canary p99 80.0 ms" in decision.reason
    assert state.phase == "RolledBack" and not state.active
    assert state.stable_hash == STABLE.config_hash  # the stable is kept as it was
    assert [r.config_hash for r in state.rejected] == [CANARY.config_hash]


def test_a_hard_failure_rolls_back_at_once_and_is_remembered() -> None:
    state = _started()
    decision, state = _tick(state, 30, ERRING)
    assert decision.action == "rollback" and "hard failure at 10 %" in decision.reason
    assert "100 of 1000 failed (10.00%)" in decision.reason
    rejected = state.rejected[-1]
    assert (rejected.config_hash, rejected.artifact, rejected.time) == (
        CANARY.config_hash,
        "int8",
        30,
    )
    # The same configuration is not retried ...
    decision, state = _tick(state, 60)
    assert (decision.action, decision.weight) == ("wait", 0)
    assert "was rolled back at 1970-01-01T00:00:30Z" in decision.reason
    assert "not retried until the spec or the measurements change" in decision.reason
    decision, state = _tick(state, 3600)
    assert decision.action == "wait"
    # ... until the spec or the measurements change its hash.
    decision, state = _tick(state, 3630, canary=OTHER)
    assert decision.action == "start" and state.canary_hash == OTHER.config_hash


def test_inconclusive_waits_with_the_window_open() -> None:
    state = _started()
    for now in (30, 60, 90):
        decision, state = _tick(state, now, QUIET)
        assert (decision.action, decision.weight) == ("wait", 10)
        assert "inconclusive at 10 %" in decision.reason
        assert "window open since 1970-01-01T00:00:00Z" in decision.reason
        assert state.window_since == 0 and state.failed == 0
    decision, state = _tick(state, 120, GOOD)
    assert decision.action == "advance" and state.window_since == 120


def test_past_the_deadline_an_inconclusive_rollout_rolls_back() -> None:
    state = _started()
    for now in range(30, 601, 30):
        decision, state = _tick(state, now, QUIET)
        assert decision.action == "wait", now  # 600 s is not past 600 s
    decision, state = _tick(state, 630, QUIET)
    assert decision.action == "rollback"
    assert "no passing analysis within progressDeadlineSeconds 600 at 10 %" in decision.reason
    assert "only 40 requests" in decision.reason
    assert state.phase == "RolledBack" and state.rejected[-1].config_hash == CANARY.config_hash


def test_past_the_deadline_with_hold_the_canary_keeps_its_share() -> None:
    spec = SPEC.model_copy(update={"on_deadline": models.OnDeadline.HOLD})
    state = _started(spec)
    decision, state = _tick(state, 601, spec=spec)
    assert (decision.action, decision.weight) == ("hold", 10)
    assert state.phase == "Inconclusive" and state.active
    assert "holding for promote or abort" in decision.reason
    # Held: a pass no longer advances it ...
    decision, state = _tick(state, 660, GOOD, spec=spec)
    assert (decision.action, decision.weight) == ("hold", 10)
    assert not policy.analysis_due(spec, state, 660)
    # ... a hard failure still rolls it back,
    decision, rolled = _tick(state, 690, ERRING, spec=spec)
    assert decision.action == "rollback" and rolled.phase == "RolledBack"
    # and by hand it is promoted.
    decision, promoted = _tick(state, 690, spec=spec, manual="promote")
    assert decision.action == "promote" and promoted.phase == "Promoted"


def test_the_deadline_restarts_at_each_step() -> None:
    state = _started()
    _, state = _tick(state, 590, GOOD)
    assert state.step == 1 and state.step_since == 590
    decision, state = _tick(state, 1000)
    assert decision.action == "wait"
    decision, state = _tick(state, 1191)
    assert decision.action == "rollback" and "at 50 % (step 2 of 3)" in decision.reason


def test_manual_abort_rolls_back_and_is_not_restarted() -> None:
    state = _started()
    _, state = _tick(state, 30, GOOD)
    decision, state = _tick(state, 40, manual="abort")
    assert (decision.action, decision.weight) == ("rollback", 0)
    assert decision.reason == "aborted by hand at 50 % (step 2 of 3)"
    assert state.rejected[-1].reason == "aborted by hand at 50 % (step 2 of 3)"
    decision, _ = _tick(state, 50)
    assert decision.action == "wait"


def test_manual_promote_wins_over_the_steps() -> None:
    state = _started()
    _, state = _tick(state, 30, QUIET)
    decision, state = _tick(state, 31, manual="promote")
    assert (decision.action, decision.weight) == ("promote", 100)
    assert state.history[-1].reason == "promoted by hand at 10 % (step 1 of 3)"
    assert state.history[-1].figures == QUIET.canary


def test_manual_with_no_canary_is_ignored_and_says_so() -> None:
    decision, state = _tick(policy.State(), 0, canary=STABLE, manual="promote")
    assert decision.action == "wait" and not state.active
    assert decision.reason.startswith("no canary running (promote ignored): ")


def test_paused_holds_a_new_change() -> None:
    spec = SPEC.model_copy(update={"paused": True})
    decision, state = _tick(policy.State(), 0, spec=spec)
    assert (decision.action, decision.weight) == ("hold", 0)
    assert state.phase == "Paused" and not state.active
    decision, state = _tick(state, 30, spec=spec)
    assert decision.action == "hold"
    decision, state = _tick(state, 60)
    assert decision.action == "start" and state.phase == "Progressing"


def test_a_change_waits_while_candidates_are_measured_then_starts() -> None:
    """The next tuning result may change the choice, and a canary pod starting beside a
    tuning pod skews its figures: no canary while any candidate is measured."""
    decision, state = _tick(policy.State(), 0, measuring=("student",))
    assert (decision.action, decision.weight) == ("wait", 0) and not state.active
    assert decision.reason == (
        "the change to int8 (bbbbbbbb) waits until student is measured: the choice may "
        "change, and a rollout beside a tuning pod would skew its figures"
    )
    assert state.rejected == () and state.phase == "Idle"
    decision, _ = _tick(state, 5, measuring=("fp16", "student"))
    assert "waits until fp16, student are measured" in decision.reason
    decision, state = _tick(state, 10)
    assert decision.action == "start" and state.step_since == 10


def test_measuring_neither_delays_the_first_deployment_nor_a_running_canary() -> None:
    decision, _ = _tick(policy.State(), 0, stable=None, measuring=("student",))
    assert decision.action == "promote"
    state = _started()
    decision, state = _tick(state, 30, GOOD, measuring=("student",))
    assert (decision.action, decision.weight) == ("advance", 50)
    # Superseded mid-rollout while measuring: back to the stable, the new one waits.
    decision, state = _tick(state, 40, canary=OTHER, measuring=("student",))
    assert decision.action == "rollback" and state.rejected == ()
    assert decision.reason.startswith(
        "the canary (bbbbbbbb) is superseded by cccccccc: back to the stable; the change to "
        "fp16 (cccccccc) waits until student is measured"
    )


def test_paused_holds_a_running_canary_and_stops_its_deadline() -> None:
    paused = SPEC.model_copy(update={"paused": True})
    state = _started()
    decision, state = _tick(state, 30, GOOD, spec=paused)
    assert (decision.action, decision.weight) == ("hold", 10)
    assert state.phase == "Paused" and state.step == 0
    decision, state = _tick(state, 5000, GOOD, spec=paused)
    assert decision.action == "hold"  # no advance, no deadline
    decision, state = _tick(state, 5010)  # the pause ends: the step's clock starts over
    assert decision.action == "wait" and state.phase == "Progressing"
    assert state.step_since == 5010
    decision, state = _tick(state, 5040, GOOD)
    assert decision.action == "advance"


def test_a_hard_failure_rolls_back_even_when_paused() -> None:
    paused = SPEC.model_copy(update={"paused": True})
    _, state = _tick(_started(), 10, spec=paused)
    decision, state = _tick(state, 20, ERRING, spec=paused)
    assert decision.action == "rollback" and state.phase == "RolledBack"


def test_a_new_change_replaces_the_running_canary_unrejected() -> None:
    state = _started()
    _, state = _tick(state, 30, GOOD)
    decision, state = _tick(state, 40, canary=OTHER)
    assert (decision.action, decision.weight, decision.step) == ("start", 10, 0)
    assert decision.reason.startswith("the canary (bbbbbbbb) is superseded by cccccccc; canary")
    assert state.canary_hash == OTHER.config_hash and state.rejected == ()
    assert state.step_since == 40


def test_a_change_back_to_the_stable_removes_the_canary_unrejected() -> None:
    state = _started()
    decision, state = _tick(state, 10, canary=STABLE)
    assert decision.action == "rollback" and "the stable's: back to it" in decision.reason
    assert state.rejected == ()


def test_a_change_to_a_rejected_configuration_removes_the_canary() -> None:
    state = _started()
    _, state = _tick(state, 30, ERRING)  # CANARY rejected
    _, state = _tick(state, 40, canary=OTHER)
    decision, state = _tick(state, 50, canary=CANARY)  # back to the rejected one
    assert decision.action == "rollback"
    assert "superseded by bbbbbbbb: back to the stable; int8 (bbbbbbbb) was rolled" in (
        decision.reason
    )
    assert "not retried" in decision.reason
    assert [r.config_hash for r in state.rejected] == [CANARY.config_hash]


def test_switching_to_rolling_mid_rollout_promotes() -> None:
    state = _started()
    decision, state = _tick(state, 10, spec=models.Rollout(strategy="rolling"))
    assert decision.action == "promote" and state.stable_hash == CANARY.config_hash


def test_rejections_and_history_are_bounded() -> None:
    state = policy.State()
    for i in range(models.MAX_REJECTED + 2):
        config = dataclasses.replace(CANARY, config_hash=f"{i:016x}")
        _, state = _tick(state, 100 * i, canary=config)
        _, state = _tick(state, 100 * i + 30, ERRING, canary=config)
    assert len(state.rejected) == models.MAX_REJECTED
    assert state.rejected[0].config_hash == f"{2:016x}"  # the oldest went first
    for i in range(models.MAX_HISTORY + 3):
        config = dataclasses.replace(CANARY, config_hash=f"{i + 100:016x}")
        _, state = _tick(state, 10_000 + i, canary=config, stable=None)
    assert len(state.history) == models.MAX_HISTORY
    assert state.history[-1].configuration.config_hash == f"{112:016x}"


def test_the_state_round_trips_through_status_and_resumes_at_the_same_step() -> None:
    state = _started()
    _, state = _tick(state, 30, GOOD)
    _, state = _tick(state, 60, QUIET)
    status = state.status(SPEC)
    assert (status.phase, status.step, status.weight) == ("Progressing", 1, 50)
    assert status.canary is not None and status.canary.requests == 40
    assert status.verdict is not None and status.verdict.outcome == "inconclusive"
    # As the API server stores it, and an operator restarted reads it back.
    stored = models.GeoDeploymentStatus(rollout=status).model_dump(
        by_alias=True, exclude_none=True, mode="json"
    )
    resumed = policy.State.of(models.parse_status(stored).rollout)
    assert resumed == state
    assert _tick(resumed, 90, GOOD) == _tick(state, 90, GOOD)
    assert policy.State.of(None) == policy.State()


def test_analysis_is_due_once_per_interval() -> None:
    state = _started()
    assert not policy.analysis_due(SPEC, state, 29)
    assert policy.analysis_due(SPEC, state, 30)
    _, state = _tick(state, 30, QUIET)
    assert not policy.analysis_due(SPEC, state, 59) and policy.analysis_due(SPEC, state, 60)
    assert not policy.analysis_due(SPEC, policy.State(), 60)


def test_a_due_analysis_without_figures_waits_and_says_so() -> None:
    state = _started()
    decision, after = _tick(state, 30)
    assert decision.action == "wait" and "waiting for the analysis" in decision.reason
    assert after == state  # nothing changed: no status write


def test_a_pause_with_nothing_to_roll_out_ends_idle() -> None:
    paused = SPEC.model_copy(update={"paused": True})
    _, state = _tick(policy.State(), 0, spec=paused)
    assert state.phase == "Paused"
    decision, state = _tick(state, 10, canary=STABLE)  # the change was reverted meanwhile
    assert decision.action == "wait" and state.phase == "Idle"


def test_a_change_at_weight_100_is_a_canary_against_the_rollouts_stable() -> None:
    state = _started()
    _, state = _tick(state, 30, GOOD)
    _, state = _tick(state, 60, GOOD)
    assert state.weight(SPEC) == 100
    # The stable Deployment has no pod at 100 %: the controller may see nothing serving.
    decision, state = _tick(state, 70, canary=OTHER, stable=None)
    assert decision.action == "start" and state.stable_hash == STABLE.config_hash


def test_a_promoted_configuration_waits_for_the_stable_to_take_it() -> None:
    state = _started()
    _, state = _tick(state, 0, manual="promote")
    decision, _ = _tick(state, 10, stable=STABLE.config_hash)
    assert decision.action == "wait"
    assert (
        decision.reason == "int8 (bbbbbbbb) was promoted: the stable (aaaaaaaa) takes its template"
    )


def test_steps_edited_mid_rollout_keep_the_step_within_them() -> None:
    state = _started()
    _, state = _tick(state, 30, GOOD)
    _, state = _tick(state, 60, GOOD)  # step 3 of 3, at 100 %
    fewer = SPEC.model_copy(update={"steps": [50, 100]})
    decision, state = _tick(state, 70, spec=fewer)
    assert (decision.action, decision.weight, decision.step) == ("wait", 100, 1)
    decision, _ = _tick(state, 90, GOOD, spec=fewer)
    assert decision.action == "promote"


def test_a_held_rollout_goes_when_ondeadline_becomes_rollback() -> None:
    hold = SPEC.model_copy(update={"on_deadline": models.OnDeadline.HOLD})
    _, state = _tick(_started(hold), 601, spec=hold)
    assert state.phase == "Inconclusive"
    decision, state = _tick(state, 610)
    assert decision.action == "rollback" and "onDeadline is rollback" in decision.reason
    assert state.rejected[-1].config_hash == CANARY.config_hash
