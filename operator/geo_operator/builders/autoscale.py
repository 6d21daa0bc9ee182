"""What one autoscaling step says, as pure functions: its status fields and its Events.

`controller.autoscaler` gathers (the body as kopf's index holds it, a scrape or a
Prometheus answer), runs `scaling.policy.decide`, then calls `record` (or
`disabled`, or `failed` when the step raised) for the status to write and the Events
to post, and writes once under its own field manager (`api.status.AUTOSCALER`).
Nothing here touches the cluster or a clock; tests/builders/test_autoscale.py drives
it with hand-made inputs.

The body a step reads may lag behind what this process last wrote (kopf's index
catches up on the writes under load), so what was written and said is remembered
(`Recall`) and wins over the body: the decision history, and whether metrics were
missing (one MetricsMissing Event per outage).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from geo_operator.api import conditions, models
from geo_operator.api import status as status_io
from geo_operator.builders import desired
from geo_operator.scaling import capacity, policy

Event = desired.Event  # (type, reason, message)

HISTORY = 10
# Metrics that go missing again, for the same reason, less than this long after they
# came back are the same outage (a flapping source): no second MetricsMissing Event.
METRICS_FLAP_SECONDS = 60.0


@dataclasses.dataclass(frozen=True)
class Recall:
    """What this process last wrote and said for one GeoDeployment (None: nothing since
    its start, the body's word holds)."""

    decisions: tuple[models.Decision, ...] | None = None  # status.decisions as written
    # Whether metrics were there at the last step.
    metrics_ok: bool | None = None
    # The last MetricsMissing Event's message, and when the metrics came back after it
    # (observation time): the same message again soon after is a flap.
    missing_said: str | None = None
    metrics_back: float | None = None


@dataclasses.dataclass(frozen=True)
class Record:
    """One step's status, its Events, and what to remember once they are out."""

    status: models.GeoDeploymentStatus
    events: tuple[Event, ...]
    recall: Recall
    # A MetricsMissing Event held back: the same outage again, flapping.
    flapping: bool = False


def history(
    old: models.GeoDeploymentStatus, recall: Recall
) -> tuple[models.Decision | None, tuple[models.Decision, ...]]:
    """The last decision and the history as last written: this process's when it wrote
    any, else the body's."""
    decisions = tuple(old.decisions) if recall.decisions is None else recall.decisions
    return (decisions[-1] if decisions else old.last_decision), decisions


def _kept(old: models.GeoDeploymentStatus, recall: Recall) -> dict[str, Any]:
    """The status update that keeps the history as written (nothing when the body's
    is all there is: it stays as it is)."""
    if recall.decisions is None:
        return {}
    last, decisions = history(old, recall)
    return {"last_decision": last, "decisions": list(decisions)}


def decision_record(
    observation: policy.Observation, decision: policy.Decision, time: str
) -> models.Decision:
    def rounded(value: float | None) -> float | None:
        return round(value, 2) if value is not None else None

    return models.Decision.model_validate(
        {
            "action": decision.action,
            "from": observation.replicas,
            "to": decision.replicas,
            "qpsPerReplica": rounded(decision.qps_per_replica),
            "p99LatencyMs": rounded(decision.p99_ms),
            "rejectedQps": rounded(decision.rejected_qps),
            "reason": decision.reason,
            "time": time,
        }
    )


def scaling_conditions(
    old: models.GeoDeploymentStatus,
    spec: models.GeoDeploymentSpec,
    observation: policy.Observation,
    generation: int | None,
    target: capacity.Target,
    warming: bool = False,
) -> list[models.Condition]:
    """ScalingActive and MetricsAvailable after a step (``warming``: only new pods' first
    scrape is missing, no outage)."""
    source = spec.autoscaling.metrics.source
    aim = (
        f"target {target.value:g} QPS/replica ({target.source})"
        if target.value is not None
        else "target unknown (nothing measured yet): p99 alone, never scaling in"
    )
    conds = conditions.set_condition(
        old.conditions,
        conditions.SCALING_ACTIVE,
        "True",
        "Active",
        f"deciding every {spec.autoscaling.interval_seconds:g}s from {source} metrics; {aim}",
        generation=generation,
    )
    ok = observation.missing is None
    before = conditions.get(old.conditions, conditions.METRICS_AVAILABLE)
    if warming and not ok:
        if before is not None and before.status == "True":
            return conds  # new pods' first scrape: the metrics are not missing, only late
        return conditions.set_condition(
            conds,
            conditions.METRICS_AVAILABLE,
            "Unknown",
            "FirstScrape",
            f"{observation.missing}; holding replicas until the next scrape",
            generation=generation,
        )
    prometheus_source = source is models.MetricsSourceKind.PROMETHEUS
    return conditions.set_condition(
        conds,
        conditions.METRICS_AVAILABLE,
        "True" if ok else "False",
        ("Queried" if prometheus_source else "Scraped") if ok else "MetricsMissing",
        f"{observation.ready_replicas} ready pod(s) scraped"
        if ok
        else f"{observation.missing}; holding replicas (never scaling in blind)",
        generation=generation,
    )


def events(
    old: models.GeoDeploymentStatus,
    observation: policy.Observation,
    decision: policy.Decision,
    recall: Recall,
    warming: bool = False,
) -> tuple[tuple[Event, ...], str | None, bool]:
    """The Events of a step: a scale, and metrics going missing (once per outage: by
    ``recall.metrics_ok``, the last step's, else by the condition in the body; not when
    the Event would say the last one's message again soon after the metrics came back:
    the same outage, flapping; not while ``warming``). Returns the Events, the
    MetricsMissing message among them if any, and whether one was held back as a flap."""
    out: list[Event] = []
    if decision.action in ("scale_out", "scale_in"):
        out.append(
            (
                "Normal",
                "ScaledOut" if decision.action == "scale_out" else "ScaledIn",
                f"{observation.replicas} -> {decision.replicas}: {decision.reason}",
            )
        )
    metrics_ok = recall.metrics_ok
    if metrics_ok is None:
        before = conditions.get(old.conditions, conditions.METRICS_AVAILABLE)
        metrics_ok = before is None or before.status == "True"
    if observation.missing is None or not metrics_ok or warming:
        return tuple(out), None, False
    back = recall.metrics_back
    recent = back is not None and observation.time - back < METRICS_FLAP_SECONDS
    message = f"{observation.missing}; holding {observation.replicas} replicas"
    if recent and message == recall.missing_said:
        return tuple(out), None, True
    out.append(("Warning", "MetricsMissing", message))
    return tuple(out), message, False


def record(
    old: models.GeoDeploymentStatus,
    spec: models.GeoDeploymentSpec,
    generation: int | None,
    observation: policy.Observation,
    decision: policy.Decision,
    target: capacity.Target,
    recall: Recall,
    *,
    time: str,
    startup_samples: int = 0,
    warming: bool = False,
) -> Record:
    """A decided step's status fields, Events and what to remember. A maintain is
    recorded once, when it replaces another kind of decision, so that status is not
    rewritten every tick with a new timestamp."""
    conds = scaling_conditions(old, spec, observation, generation, target, warming)
    autoscaling = target.status()
    if observation.startup_seconds is not None:
        autoscaling = autoscaling.model_copy(
            update={
                "pod_startup_seconds": round(observation.startup_seconds, 1),
                "pod_startup_samples": startup_samples,
            }
        )
    update: dict[str, Any] = {"conditions": conds, "autoscaling": autoscaling}
    last, decisions = history(old, recall)
    if decision.action != "maintain" or last is None or last.action != "maintain":
        entry = decision_record(observation, decision, time)
        decisions = (*decisions, entry)[-HISTORY:]
        update["last_decision"] = entry
        update["decisions"] = list(decisions)
    else:  # nothing new: what was written stays
        update.update(_kept(old, recall))
    said_events, said, flapping = events(old, observation, decision, recall, warming)
    ok = observation.missing is None
    after = Recall(
        decisions=decisions,
        metrics_ok=recall.metrics_ok if warming else ok,  # no outage begins or ends
        missing_said=said if said is not None else recall.missing_said,
        metrics_back=observation.time if ok and recall.metrics_ok is False else recall.metrics_back,
    )
    return Record(old.model_copy(update=update), said_events, after, flapping)


def disabled(
    old: models.GeoDeploymentStatus, generation: int | None, recall: Recall
) -> models.GeoDeploymentStatus:
    """Autoscaling off: ScalingActive=False, the history as last written."""
    conds = conditions.set_condition(
        old.conditions,
        conditions.SCALING_ACTIVE,
        "False",
        "AutoscalingDisabled",
        "spec.autoscaling.enabled is false: spec.replicas rules",
        generation=generation,
    )
    return old.model_copy(update={"conditions": conds, **_kept(old, recall)})


def failed(
    old: models.GeoDeploymentStatus, generation: int | None, error: str, recall: Recall
) -> models.GeoDeploymentStatus:
    """A step that raised (``error``: the exception, in words): MetricsAvailable=False,
    holding replicas, the history as last written (never the lagging body's)."""
    conds = conditions.set_condition(
        old.conditions,
        conditions.METRICS_AVAILABLE,
        "False",
        "StepFailed",
        f"the autoscaling step failed: {error}"[:300] + "; holding replicas",
        generation=generation,
    )
    return old.model_copy(update={"conditions": conds, **_kept(old, recall)})


def comparable(new: models.GeoDeploymentStatus) -> dict[str, Any]:
    """The autoscaler's status fields without the conditions' transition times, to tell
    whether a write would change anything: a body that lags has no condition yet, so
    each step would set it anew at a new time."""
    owned: Mapping[str, Any] = status_io.AUTOSCALER.owned(status_io.dump(new))
    conds = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"}
        for c in owned.get("conditions") or []
    ]
    return {**owned, "conditions": conds}
