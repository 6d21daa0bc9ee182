"""The rollout policy: what to do with a change to what serves, one tick at a time. Pure.

`step(spec, state, verdict, now, canary=..., stable_hash=..., manual=...)` returns
the decision and the state for the next tick; the state converts to and from
`status.rollout` (`State.status()`, `State.of()`), so an operator restarted
mid-rollout resumes at the same step. The controller calls it on every
reconcile: it gathers the desired configuration (``canary``: what the spec and
the measurements ask to serve, with a hash that covers both), the stable's hash
(None while nothing stable serves: no Deployment, or none of its pods ready),
and, when `analysis_due`, the verdict of `rollout.analysis` over
[`state.window_since`, now]; it applies the decision's action:

- **start**: a canary Deployment with the desired template, at ``weight`` (the
  replicas by `rollout.split`); also when the desired configuration changed
  mid-rollout (the new one replaces the old canary, which is not rejected);
- **wait** / **hold**: keep both tracks at ``weight`` (hold: by a pause, or past
  the deadline with onDeadline hold);
- **advance**: the canary to the next step's ``weight``; at the last step (100) the
  stable has no pod and the canary serves everything until the verdict (Ready and
  status.replicas count both tracks, so that is not an outage). The first step is below
  100 (refused at admission otherwise): a canary is judged on part of the traffic, with
  the stable warm beside it, before it takes all of it;
- **promote**: the stable Deployment takes the desired template, the canary goes
  (``weight`` 100). Also how a change goes out with no canary: the first
  deployment (nothing stable serves) and strategy rolling, as before;
- **rollback**: the canary scales to zero and goes; the stable is left as it was.

The rules, in order, while a canary runs:

1. the desired configuration changed: back to the stable (it is the stable
   again), or the new one starts in the old one's place; the old one is not
   rejected (it was not judged);
2. strategy switched to rolling: promote now;
3. by hand: abort rolls back (and remembers it, so it does not restart on the
   next tick); promote promotes;
4. a hard failure (held-out score under the floor, an error rate above
   maxErrorRate beyond doubt) rolls back at once, even when paused or held;
5. paused: hold at the weight; the step's deadline clock restarts when the pause
   ends;
6. held past the deadline (onDeadline hold): hold until promoted or aborted;
7. an analysis, once `analysisIntervalSeconds` passed since the last one (or the
   step's start): pass advances (promotes after the last step); fail counts, and
   `maxFailedAnalyses` failures over the rollout roll back; inconclusive waits
   with the window still open, so a trickle of requests adds up to minRequests;
8. no pass within `progressDeadlineSeconds` of the step's start: onDeadline
   (rollback, the default, or hold).

With no canary running, a change starts one only when something stable serves,
the strategy is canary, rollouts are not paused, no candidate is still being
measured (``measuring``: the tuning Jobs running or queued; the next result may
change the choice, and a canary starting beside a tuning pod would skew its
figures), and the desired configuration
is neither the stable's (nor the one last promoted, which the stable is taking)
nor one rolled back before (that holds even while the stable has no ready pod:
a rejected configuration never rolls out unjudged). A rolled-back configuration
is remembered (the last MAX_REJECTED) until its hash changes: the hash covers the spec and the
measurements, so editing either retries it. Going back to an earlier promoted
configuration is itself a canary. Each promotion is kept in the history (the
last MAX_HISTORY), with the figures it was promoted on.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from geo_operator.api import models, names
from geo_operator.rollout.analysis import Figures, Verdict

Action = Literal["start", "wait", "advance", "promote", "rollback", "hold"]
Manual = Literal["promote", "abort"]

ACTIVE: tuple[models.RolloutPhase, ...] = ("Progressing", "Paused", "Inconclusive")


@dataclasses.dataclass(frozen=True)
class Configuration:
    """What a track serves: the hash the policy compares and what the history shows."""

    config_hash: str
    artifact: str
    uri: str
    max_batch_size: int | None = None
    image: str | None = None


@dataclasses.dataclass(frozen=True)
class Rejection:
    """A configuration rolled back, and why."""

    config_hash: str
    artifact: str | None
    reason: str
    time: float


@dataclasses.dataclass(frozen=True)
class Promotion:
    """A configuration promoted to stable, and the canary's figures it was promoted on."""

    configuration: Configuration
    figures: Figures | None
    reason: str
    time: float


@dataclasses.dataclass(frozen=True)
class State:
    """Where the rollout stands (kept in status.rollout; times in epoch seconds)."""

    phase: models.RolloutPhase = "Idle"
    step: int | None = None
    canary_hash: str | None = None
    stable_hash: str | None = None
    started_at: float | None = None
    step_since: float | None = None
    window_since: float | None = None  # the analysis window: since the last conclusive one
    last_analysis_at: float | None = None
    failed: int = 0
    verdict: models.RolloutVerdict | None = None
    canary: Figures | None = None  # at the last analysis
    stable: Figures | None = None
    reason: str = ""
    rejected: tuple[Rejection, ...] = ()
    history: tuple[Promotion, ...] = ()

    @property
    def active(self) -> bool:
        """A canary is running (or held)."""
        return self.phase in ACTIVE and self.canary_hash is not None

    def weight(self, spec: models.Rollout) -> int:
        """The canary's share now, percent (0 with no canary)."""
        if not self.active or self.step is None:
            return 0
        return spec.steps[min(self.step, len(spec.steps) - 1)]

    def status(self, spec: models.Rollout) -> models.RolloutStatus:
        def at(t: float | None) -> str | None:
            return None if t is None else names.format_time(t)

        return models.RolloutStatus(
            phase=self.phase,
            step=self.step,
            weight=self.weight(spec),
            canary_hash=self.canary_hash,
            stable_hash=self.stable_hash,
            canary=None if self.canary is None else self.canary.status(),
            stable=None if self.stable is None else self.stable.status(),
            verdict=self.verdict,
            reason=self.reason[:2048],
            started_time=at(self.started_at),
            step_started_time=at(self.step_since),
            window_start_time=at(self.window_since),
            last_analysis_time=at(self.last_analysis_at),
            failed_analyses=self.failed,
            rejected=[
                models.RejectedConfiguration(
                    config_hash=r.config_hash,
                    artifact=r.artifact,
                    reason=r.reason[:2048],
                    time=names.format_time(r.time),
                )
                for r in self.rejected
            ],
            history=[
                models.PromotedConfiguration(
                    artifact=p.configuration.artifact,
                    uri=p.configuration.uri,
                    config_hash=p.configuration.config_hash,
                    max_batch_size=p.configuration.max_batch_size,
                    image=p.configuration.image,
                    figures=None if p.figures is None else p.figures.status(),
                    reason=p.reason[:1024],
                    time=names.format_time(p.time),
                )
                for p in self.history
            ],
        )

    @classmethod
    def of(cls, status: models.RolloutStatus | None) -> State:
        """The state a status.rollout block records (a fresh one for None)."""
        if status is None:
            return cls()

        def at(text: str | None) -> float | None:
            return None if text is None else names.parse_time(text)

        return cls(
            phase=status.phase,
            step=status.step,
            canary_hash=status.canary_hash,
            stable_hash=status.stable_hash,
            started_at=at(status.started_time),
            step_since=at(status.step_started_time),
            window_since=at(status.window_start_time),
            last_analysis_at=at(status.last_analysis_time),
            failed=status.failed_analyses,
            verdict=status.verdict,
            canary=None if status.canary is None else Figures.of(status.canary),
            stable=None if status.stable is None else Figures.of(status.stable),
            reason=status.reason,
            rejected=tuple(
                Rejection(r.config_hash, r.artifact, r.reason, names.parse_time(r.time))
                for r in status.rejected
            ),
            history=tuple(
                Promotion(
                    Configuration(p.config_hash, p.artifact, p.uri, p.max_batch_size, p.image),
                    None if p.figures is None else Figures.of(p.figures),
                    p.reason,
                    names.parse_time(p.time),
                )
                for p in status.history
            ),
        )


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the controller does this tick, and why (with the figures)."""

    action: Action
    weight: int  # the canary's share after the action, percent
    reason: str
    step: int | None = None  # index into rollout.steps, while a canary runs


def rejection_of(state: State, config_hash: str) -> Rejection | None:
    """The remembered rollback of ``config_hash``, if any."""
    return next((r for r in state.rejected if r.config_hash == config_hash), None)


def _last_analysis_or_step_start(state: State, now: float) -> float:
    for t in (state.last_analysis_at, state.step_since):
        if t is not None:
            return t
    return now


def analysis_due(spec: models.Rollout, state: State, now: float) -> bool:
    """Whether the controller should gather figures and analyse on this tick."""
    if not state.active or state.phase != "Progressing":
        return False
    return now - _last_analysis_or_step_start(state, now) >= spec.analysis_interval_seconds


def _short(config_hash: str | None) -> str:
    return "none" if config_hash is None else config_hash[:8]


def _at_step(spec: models.Rollout, index: int) -> str:
    return f"{spec.steps[index]} % (step {index + 1} of {len(spec.steps)})"


def _ended(state: State, phase: models.RolloutPhase, reason: str) -> State:
    """The state once no canary runs any more."""
    return dataclasses.replace(
        state,
        phase=phase,
        step=None,
        canary_hash=None,
        step_since=None,
        window_since=None,
        reason=reason,
    )


def _promote(
    state: State, canary: Configuration, figures: Figures | None, reason: str, now: float
) -> tuple[Decision, State]:
    history = (*state.history, Promotion(canary, figures, reason, now))[-models.MAX_HISTORY :]
    new = dataclasses.replace(
        _ended(state, "Promoted", reason), stable_hash=canary.config_hash, history=history
    )
    return Decision("promote", 100, reason), new


def _rollback(
    state: State, reason: str, now: float, *, reject: Configuration | None
) -> tuple[Decision, State]:
    rejected = state.rejected
    if reject is not None:
        kept = tuple(r for r in rejected if r.config_hash != reject.config_hash)
        entry = Rejection(reject.config_hash, reject.artifact, reason, now)
        rejected = (*kept, entry)[-models.MAX_REJECTED :]
    new = dataclasses.replace(_ended(state, "RolledBack", reason), rejected=rejected)
    return Decision("rollback", 0, reason), new


def _idle(
    spec: models.Rollout,
    state: State,
    now: float,
    canary: Configuration,
    stable_hash: str | None,
    manual: Manual | None,
    measuring: tuple[str, ...] = (),
) -> tuple[Decision, State]:
    """No canary runs: start one, roll as before, or wait."""
    desired = canary.config_hash
    promoted = state.history[-1].configuration.config_hash if state.history else None
    ignored = f"no canary running ({manual} ignored): " if manual else ""

    # A pause that held no canary ends when rollout.paused is cleared.
    settled: models.RolloutPhase = "Idle" if state.phase == "Paused" else state.phase

    def wait(reason: str, phase: models.RolloutPhase | None = None) -> tuple[Decision, State]:
        reason = ignored + reason
        new = dataclasses.replace(state, phase=phase or settled, reason=reason)
        return Decision("hold" if phase == "Paused" else "wait", 0, reason), new

    # Settled: the state (and its words: how the last rollout ended) stays as it is, so
    # that status is not rewritten on every reconcile.
    if desired == stable_hash and not ignored and state.phase != "Paused":
        reason = f"the desired configuration {_short(desired)} is the stable's: nothing to do"
        return Decision("wait", 0, reason), state
    if desired == stable_hash:
        return wait(f"the desired configuration {_short(desired)} is the stable's: nothing to do")
    if desired == promoted and stable_hash is not None:
        reason = (
            f"{canary.artifact} ({_short(desired)}) was promoted: the stable "
            f"({_short(stable_hash)}) takes its template"
        )
        if not ignored and state.phase != "Paused":
            return Decision("wait", 0, reason), state
        return wait(reason)
    if measuring and stable_hash is not None:
        # Not remembered as anything: the change starts once the last result is in.
        return wait(
            f"the change to {canary.artifact} ({_short(desired)}) waits until "
            f"{', '.join(measuring)} {'is' if len(measuring) == 1 else 'are'} measured: the "
            "choice may change, and a rollout beside a tuning pod would skew its figures"
        )
    if spec.strategy is models.RolloutStrategy.ROLLING:
        return _promote(
            state,
            canary,
            None,
            f"strategy rolling: {canary.artifact} ({_short(desired)}) replaces the stable "
            f"({_short(stable_hash)}) on every pod at once",
            now,
        )
    # Before "nothing stable serves": a stable scaling back up after a rollback has no
    # ready pod for a while, and the rejected configuration must not roll out meanwhile.
    rejected = rejection_of(state, desired)
    if rejected is not None:
        return wait(
            f"{canary.artifact} ({_short(desired)}) was rolled back at "
            f"{names.format_time(rejected.time)} ({rejected.reason}); not retried until the "
            "spec or the measurements change"
        )
    if stable_hash is None:
        return _promote(
            state,
            canary,
            None,
            f"{canary.artifact} ({_short(desired)}) rolled to every pod: nothing stable "
            "serves yet to judge a canary against",
            now,
        )
    if spec.paused:
        if state.phase == "Paused":
            return wait(state.reason.removeprefix(ignored), "Paused")
        return wait(
            f"rollout.paused: the change to {canary.artifact} ({_short(desired)}) waits",
            "Paused",
        )
    reason = (
        f"canary {canary.artifact} ({_short(desired)}) against the stable "
        f"({_short(stable_hash)}) at {_at_step(spec, 0)}"
    )
    new = dataclasses.replace(
        state,
        phase="Progressing",
        step=0,
        canary_hash=desired,
        stable_hash=stable_hash,
        started_at=now,
        step_since=now,
        window_since=now,
        last_analysis_at=None,
        failed=0,
        verdict=None,
        canary=None,
        stable=None,
        reason=reason,
    )
    return Decision("start", spec.steps[0], reason, 0), new


def step(
    spec: models.Rollout,
    state: State,
    verdict: Verdict | None,
    now: float,
    *,
    canary: Configuration,
    stable_hash: str | None,
    manual: Manual | None = None,
    measuring: tuple[str, ...] = (),
) -> tuple[Decision, State]:
    """The decision for one tick and the state for the next (the rules: module docstring).
    ``measuring``: the candidates whose tuning runs or waits its turn."""
    if not state.active:
        return _idle(spec, state, now, canary, stable_hash, manual, measuring)
    assert state.canary_hash is not None and state.step is not None
    index = min(state.step, len(spec.steps) - 1)  # the steps may have been edited meanwhile
    weight = spec.steps[index]
    at = _at_step(spec, index)

    # 1. The desired configuration changed under the running canary.
    if canary.config_hash != state.canary_hash:
        gone = (
            f"the canary ({_short(state.canary_hash)}) is superseded by "
            f"{_short(canary.config_hash)}"
        )
        if canary.config_hash == state.stable_hash:
            return _rollback(state, f"{gone}, the stable's: back to it", now, reject=None)
        ended = _ended(state, "RolledBack", gone)
        # The stable is the one this rollout started from (at weight 100 it has no pod, and
        # the new configuration must not be rolled out unjudged for that).
        decision, new = _idle(spec, ended, now, canary, state.stable_hash, None, measuring)
        if decision.action in ("start", "promote"):
            reason = f"{gone}; {decision.reason}"
            return dataclasses.replace(decision, reason=reason), dataclasses.replace(
                new, reason=reason
            )
        return _rollback(state, f"{gone}: back to the stable; {decision.reason}", now, reject=None)

    # 2. Strategy switched to rolling.
    if spec.strategy is models.RolloutStrategy.ROLLING:
        return _promote(
            state,
            canary,
            state.canary,
            f"strategy rolling: the canary {canary.artifact} ({_short(canary.config_hash)}) "
            f"at {at} is promoted without further analysis",
            now,
        )

    # 3. By hand.
    if manual == "abort":
        return _rollback(state, f"aborted by hand at {at}", now, reject=canary)
    if manual == "promote":
        return _promote(state, canary, state.canary, f"promoted by hand at {at}", now)

    recorded = state
    if verdict is not None:
        recorded = dataclasses.replace(
            state,
            verdict=verdict.status(),
            canary=verdict.canary,
            stable=verdict.stable,
            last_analysis_at=now,
        )

    # 4. A hard failure rolls back whatever else holds.
    if verdict is not None and verdict.outcome == "fail" and verdict.hard:
        return _rollback(recorded, f"hard failure at {at}: {verdict.reason}", now, reject=canary)

    # 5. Paused.
    if spec.paused:
        reason = f"rollout.paused: holding the canary at {at}"
        return Decision("hold", weight, reason, index), dataclasses.replace(
            state, phase="Paused", reason=reason
        )
    if state.phase == "Paused":  # the pause ended: the step's deadline starts over
        state = dataclasses.replace(state, phase="Progressing", step_since=now)

    # 6. Held past the deadline.
    if state.phase == "Inconclusive":
        if spec.on_deadline is models.OnDeadline.ROLLBACK:
            return _rollback(
                state, f"onDeadline is rollback: the held canary at {at} goes", now, reject=canary
            )
        return Decision("hold", weight, state.reason, index), state

    # 7. The analysis.
    if verdict is not None and analysis_due(spec, state, now):
        state = dataclasses.replace(recorded, phase="Progressing")
        if verdict.outcome == "fail":
            failed = state.failed + 1
            state = dataclasses.replace(state, failed=failed, window_since=now)
            if failed >= spec.max_failed_analyses:
                return _rollback(
                    state,
                    f"{failed} failed analyses (maxFailedAnalyses {spec.max_failed_analyses}), "
                    f"the last at {at}: {verdict.reason}",
                    now,
                    reject=canary,
                )
            reason = (
                f"analysis failed at {at} ({failed} of maxFailedAnalyses "
                f"{spec.max_failed_analyses}): {verdict.reason}"
            )
            return Decision("wait", weight, reason, index), dataclasses.replace(
                state, reason=reason
            )
        if verdict.outcome == "pass":
            if index + 1 >= len(spec.steps):
                return _promote(
                    state,
                    canary,
                    verdict.canary,
                    f"passed every step, the last at {at}: {verdict.reason}",
                    now,
                )
            reason = f"passed at {at}, advancing to {_at_step(spec, index + 1)}: {verdict.reason}"
            new = dataclasses.replace(
                state, step=index + 1, step_since=now, window_since=now, reason=reason
            )
            return Decision("advance", spec.steps[index + 1], reason, index + 1), new
        since = names.format_time(now if state.window_since is None else state.window_since)
        reason = f"inconclusive at {at} (window open since {since}): {verdict.reason}"
        state = dataclasses.replace(state, reason=reason)
        decision = Decision("wait", weight, reason, index)
    elif analysis_due(spec, state, now):
        decision = Decision("wait", weight, f"at {at}: waiting for the analysis", index)
    else:
        left = spec.analysis_interval_seconds - (now - _last_analysis_or_step_start(state, now))
        decision = Decision("wait", weight, f"at {at}: next analysis in {left:.0f}s", index)

    # 8. The deadline.
    assert state.step_since is not None
    if now - state.step_since > spec.progress_deadline_seconds:
        last = f"; last: {state.verdict.reason}" if state.verdict and state.verdict.reason else ""
        reason = (
            f"no passing analysis within progressDeadlineSeconds "
            f"{spec.progress_deadline_seconds} at {at}{last}"
        )
        if spec.on_deadline is models.OnDeadline.ROLLBACK:
            return _rollback(state, reason, now, reject=canary)
        reason += ": holding for promote or abort (onDeadline hold)"
        return Decision("hold", weight, reason, index), dataclasses.replace(
            state, phase="Inconclusive", reason=reason
        )
    if verdict is None:
        return decision, state  # a plain wait: the last analysis' words stay (no status churn)
    return decision, dataclasses.replace(state, reason=decision.reason)
