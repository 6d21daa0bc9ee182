"""The two tracks of a rollout, as a pure function: from the rollout policy's decision to the
objects to apply, the Deployments to scale or delete, the Events and the Progressing
condition.

`tracks(target, stable, canary, state, verdict, now, manual)` is called by
`builders.desired` once the target (what the spec and the measurements ask to serve,
with ``replicas`` the total across both tracks) is known. It asks
`rollout.policy.step` what to do and turns the answer into:

- **a canary running** (start, wait, advance, hold): the Service, the canary's
  ConfigMap and Deployment (`children.canary_children`) at the canary's share of the
  total (`rollout.split`), and the stable Deployment *scaled* to the rest. The stable's
  template and ConfigMap are not touched: the stable keeps serving what it served;
- **the stable takes the desired template** (promote; the first deployment; strategy
  rolling; nothing changed): every child as before, at the total. A canary left over
  from a promotion stays until the stable has rolled onto the promoted template, every
  pod updated and ready, so no request meets a Service with nothing ready behind it;
- **the stable keeps its own template** (rollback; a rejected or paused change with
  no canary): the Service, and the stable scaled to the total. A canary left over goes
  as soon as one stable pod is ready (at once on a rollback below 100 %: a bad canary
  stops serving on the tick it is judged).

Replicas are never applied: every count goes out as a scale (`Tracks.scale`), the
field's one writer (`names.REPLICAS_MANAGER`), and only where the stored count differs,
the Deployment is new, or an older operator's apply still owns the field.

The stable's configuration, as the policy compares it, is the hash on the stable
Deployment's pod template; "nothing stable serves" is no Deployment, or one with no
ready pod whose template is not the desired one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from geo_operator.api import models
from geo_operator.builders import children
from geo_operator.rollout import policy, split
from geo_operator.rollout.analysis import Verdict

Event = tuple[str, str, str]  # (type, reason, message)
Condition = tuple[models.ConditionStatus, str, str]  # (status, reason, message): Progressing
Ref = tuple[str, str, str]  # (apiVersion, kind, name)

# Seconds between reconciles while a canary drains or a rollout waits on pods.
SETTLE_SECONDS = 2.0


@dataclasses.dataclass(frozen=True)
class Tracks:
    """What the reconcile does about the two tracks this time."""

    decision: policy.Decision
    state: policy.State
    objects: tuple[dict[str, Any], ...]
    scale: tuple[tuple[str, int], ...] = ()  # (Deployment, replicas)
    delete: tuple[Ref, ...] = ()
    events: tuple[Event, ...] = ()
    condition: Condition | None = None
    requeue_after: float | None = None
    stable_takes_template: bool = False  # the stable's pods roll onto the desired template


def configuration(target: children.Target) -> policy.Configuration:
    """What the target serves, as the policy compares it and the history shows it."""
    return policy.Configuration(
        config_hash=children.config_hash(target),
        artifact=target.artifact.name,
        uri=target.artifact.uri,
        max_batch_size=target.batch.max_batch_size,
        image=children.triton_image(target),
    )


def _replicas(deployment: Mapping[str, Any] | None) -> int:
    return int(((deployment or {}).get("spec") or {}).get("replicas") or 0)


def _ready(deployment: Mapping[str, Any] | None) -> int:
    return int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)


def rolled(deployment: Mapping[str, Any] | None, config_hash: str) -> bool:
    """The Deployment runs ``config_hash`` on every pod it wants, all updated and ready."""
    if deployment is None or children.template_hash(dict(deployment)) != config_hash:
        return False
    status = deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation") or 0
    wanted = _replicas(deployment)
    return (
        int(status.get("observedGeneration") or 0) >= int(generation)
        and int(status.get("updatedReplicas") or 0) >= wanted
        and int(status.get("readyReplicas") or 0) >= wanted
    )


def total_replicas(
    stable: Mapping[str, Any] | None,
    canary: Mapping[str, Any] | None,
    status: models.RolloutStatus | None,
) -> int | None:
    """The replicas the autoscaler's total is: both tracks while a canary runs, else the
    stable's alone (a canary draining after a promotion is not counted). None: nothing yet."""
    if stable is None and canary is None:
        return None
    running = status is not None and status.phase in policy.ACTIVE and status.canary_hash
    return _replicas(stable) + (_replicas(canary) if running and canary is not None else 0)


def stable_hash(stable: Mapping[str, Any] | None, desired: str) -> str | None:
    """The stable's configuration, or None while nothing stable serves."""
    found = children.template_hash(dict(stable)) if stable is not None else None
    if found is None:
        return None
    return found if found == desired or _ready(stable) > 0 else None


def tracks(
    target: children.Target,
    stable: Mapping[str, Any] | None,
    canary: Mapping[str, Any] | None,
    state: policy.State,
    verdict: Verdict | None,
    now: float,
    manual: policy.Manual | None = None,
    measuring: tuple[str, ...] = (),
) -> Tracks:
    """The two tracks' objects and actions for this reconcile (see the module docstring);
    ``measuring``: the candidates still being tuned (no new canary meanwhile)."""
    spec = target.spec.rollout
    desired = configuration(target)
    was_active = state.active
    decision, new = policy.step(
        spec,
        state,
        verdict,
        now,
        canary=desired,
        stable_hash=stable_hash(stable, desired.config_hash),
        manual=manual,
        measuring=measuring,
    )
    total = target.replicas
    events = _events(state, new, decision, verdict, was_active)
    condition = _condition(new)
    name = target.name
    canary_refs: tuple[Ref, ...] = (
        ("apps/v1", "Deployment", children.canary_name(name)),
        ("v1", "ConfigMap", children.canary_config_map_name(name)),
    )
    if new.active:
        stable_n, canary_n = split.split(total, decision.weight)
        objects = (
            children.service(target),
            *children.canary_children(dataclasses.replace(target, replicas=canary_n)),
        )
        scale = (
            *_scale(name, stable, stable_n, applied=False),
            *_scale(children.canary_name(name), canary, canary_n, applied=True),
        )
        return Tracks(
            decision, new, objects, scale, (), events, condition, _next_tick(spec, new, now)
        )
    takes = (
        decision.action == "promote"
        or children.template_hash(dict(stable) if stable is not None else None)
        == desired.config_hash
    )
    if takes:
        objects = tuple(children.all_children(target))
        drained = canary is None or rolled(stable, desired.config_hash)
        delete = canary_refs if canary is not None and drained else ()
        after = None if drained else SETTLE_SECONDS
        scale = _scale(name, stable, total, applied=True)
        return Tracks(decision, new, objects, scale, delete, events, condition, after, True)
    # The stable keeps its template: a rollback, or a change that waits (rejected, paused).
    scale = _scale(name, stable, total, applied=False)
    drained = canary is None or _ready(stable) > 0
    delete = canary_refs if canary is not None and drained else ()
    after = None if drained else SETTLE_SECONDS
    objects = (children.service(target),)
    return Tracks(decision, new, objects, scale, delete, events, condition, after)


def _scale(
    name: str, stored: Mapping[str, Any] | None, replicas: int, applied: bool
) -> tuple[tuple[str, int], ...]:
    """Scale Deployment ``name`` to ``replicas``, or not: one this reconcile creates
    (``applied`` and not ``stored``: applied without replicas, it starts at 1); one
    stored with another count, or whose count `names.REPLICAS_MANAGER` does not own yet
    (created by an older operator: the apply owned it and leaving it out would reset it)."""
    if stored is None:
        return ((name, replicas),) if applied else ()
    if _replicas(stored) != replicas or not children.replicas_owned(stored):
        return ((name, replicas),)
    return ()


def _next_tick(spec: models.Rollout, state: policy.State, now: float) -> float:
    """Seconds until the running rollout's next analysis (or its deadline) is due."""
    if state.phase != "Progressing":
        return float(spec.analysis_interval_seconds)  # paused or held: look again later
    since = state.last_analysis_at or state.step_since or now
    due = since + spec.analysis_interval_seconds - now
    return max(1.0, min(due, float(spec.analysis_interval_seconds)))


def _events(
    old: policy.State,
    new: policy.State,
    decision: policy.Decision,
    verdict: Verdict | None,
    was_active: bool,
) -> tuple[Event, ...]:
    """An Event at every step of a rollout, with the figures in its words."""
    action, reason = decision.action, decision.reason
    if action == "start":
        return (("Normal", "CanaryStarted", reason),)
    if action == "advance":
        return (("Normal", "CanaryAdvanced", reason),)
    if action == "promote" and was_active:
        return (("Normal", "Promoted", reason),)
    if action == "rollback":
        return (("Warning", "RolledBack", reason),)
    if new.phase != old.phase and new.phase == "Paused":
        return (("Normal", "RolloutPaused", reason),)
    if new.phase != old.phase and new.phase == "Inconclusive":
        return (("Warning", "RolloutInconclusive", reason),)
    if verdict is not None and new.active and new.last_analysis_at != old.last_analysis_at:
        previous = old.verdict.outcome if old.verdict is not None else None
        if verdict.outcome == "fail":
            return (("Warning", "CanaryAnalysisFailed", reason),)
        if verdict.outcome != previous:
            return (("Normal", "CanaryAnalysis", reason),)
    return ()


def _condition(state: policy.State) -> Condition | None:
    """Progressing, by the API conventions (as a Deployment's, with a rollout's reasons)."""
    phase = state.phase
    if phase == "Progressing":
        return ("True", "CanaryAnalysis", state.reason)
    if phase == "Paused":
        return ("Unknown", "Paused", state.reason)
    if phase == "Inconclusive":
        return ("False", "Inconclusive", state.reason)
    if phase == "Promoted":
        return ("True", "Promoted", state.reason)
    if phase == "RolledBack":
        return ("False", "RolledBack", state.reason)
    return None
