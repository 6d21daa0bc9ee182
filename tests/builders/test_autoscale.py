"""What one autoscaling step writes and says (`builders.autoscale`), from plain inputs:
no cluster, no threads, no clock."""

from __future__ import annotations

import pathlib
from typing import Any

import yaml

from geo_operator.api import models
from geo_operator.builders import autoscale
from geo_operator.scaling import capacity, policy

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures"
TIME = "2026-12-06T03:00:00Z"
TARGET = capacity.Target(100.0, "declared", "declared")


def _spec() -> models.GeoDeploymentSpec:
    raw = yaml.safe_load((FIXTURES / "digits.yaml").read_text())["spec"]
    raw["autoscaling"] = {"enabled": True, "targetQpsPerReplica": 100, "intervalSeconds": 10}
    return models.parse_spec(raw)


def _seen(
    time: float = 100.0, qps: float | None = 150.0, missing: str | None = None
) -> policy.Observation:
    return policy.observation(time, 1, 1, qps, 20.0, missing=missing)


def _decision(action: models.Action = "scale_out", replicas: int = 2) -> policy.Decision:
    return policy.Decision(action, replicas, f"{action} for the test", 150.0, 20.0)


def _entry(action: models.Action, time: str = "2026-12-06T02:00:00Z") -> models.Decision:
    return models.Decision.model_validate(
        {"action": action, "from": 1, "to": 1, "reason": "before", "time": time}
    )


def _record(
    old: models.GeoDeploymentStatus | None = None,
    seen: policy.Observation | None = None,
    decision: policy.Decision | None = None,
    recall: autoscale.Recall | None = None,
    **kwargs: Any,
) -> autoscale.Record:
    return autoscale.record(
        old or models.GeoDeploymentStatus(),
        _spec(),
        3,
        seen or _seen(),
        decision or _decision(),
        TARGET,
        recall or autoscale.Recall(),
        time=TIME,
        **kwargs,
    )


def _conditions(status: models.GeoDeploymentStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def test_a_scale_out_is_recorded_with_its_event_and_conditions() -> None:
    done = _record(startup_samples=0)
    patch = autoscale.comparable(done.status)
    assert patch["lastDecision"] == {
        "action": "scale_out",
        "from": 1,
        "to": 2,
        "qpsPerReplica": 150.0,
        "p99LatencyMs": 20.0,
        "reason": "scale_out for the test",
        "time": TIME,
    }
    assert patch["decisions"] == [patch["lastDecision"]]
    assert patch["autoscaling"]["effectiveTargetQpsPerReplica"] == 100.0
    assert patch["conditions"] == [
        {
            "type": "ScalingActive",
            "status": "True",
            "reason": "Active",
            "message": "deciding every 10s from direct metrics; target 100 QPS/replica (declared)",
            "observedGeneration": 3,
        },
        {
            "type": "MetricsAvailable",
            "status": "True",
            "reason": "Scraped",
            "message": "1 ready pod(s) scraped",
            "observedGeneration": 3,
        },
    ]
    assert done.events == (("Normal", "ScaledOut", "1 -> 2: scale_out for the test"),)
    assert done.recall.metrics_ok is True and done.recall.decisions == (done.status.last_decision,)


def test_the_history_is_what_was_last_written_not_a_lagging_body() -> None:
    lagging = models.GeoDeploymentStatus(decisions=[_entry("scale_out")])
    written = (_entry("scale_out"), _entry("scale_in", "2026-12-06T02:30:00Z"))
    done = _record(lagging, recall=autoscale.Recall(decisions=written))
    assert [d.action for d in done.status.decisions] == ["scale_out", "scale_in", "scale_out"]
    assert done.recall.decisions == tuple(done.status.decisions)


def test_the_history_keeps_the_last_ten() -> None:
    written = tuple(_entry("scale_out", f"2026-12-06T02:{m:02}:00Z") for m in range(10))
    done = _record(recall=autoscale.Recall(decisions=written))
    assert len(done.status.decisions) == autoscale.HISTORY
    assert done.status.decisions[0] == written[1] and done.status.decisions[-1].time == TIME


def test_a_maintain_after_a_maintain_adds_nothing_and_keeps_what_was_written() -> None:
    body = models.GeoDeploymentStatus(
        decisions=[_entry("scale_out")], last_decision=_entry("scale_out")
    )
    maintain = _decision("maintain", 1)
    # Only the body's word: a maintain after its scale_out is new.
    first = _record(body, decision=maintain)
    assert [d.action for d in first.status.decisions] == ["scale_out", "maintain"]
    # The body lags (still the scale_out): the maintain written stays, none is added.
    again = _record(body, decision=maintain, recall=first.recall)
    assert again.status.decisions == first.status.decisions
    assert again.status.last_decision == first.status.last_decision
    assert again.events == ()


def test_metrics_going_missing_is_one_warning_per_outage() -> None:
    gone = _seen(missing="pod-0: connection refused")
    maintain = _decision("maintain", 1)
    first = _record(seen=gone, decision=maintain, recall=autoscale.Recall(metrics_ok=True))
    message = "pod-0: connection refused; holding 1 replicas"
    assert first.events == (("Warning", "MetricsMissing", message),)
    assert _conditions(first.status)["MetricsAvailable"] == ("False", "MetricsMissing")
    assert first.recall.metrics_ok is False and first.recall.missing_said == message
    # The body still says True (it lags): what this process said wins, no second Event.
    again = _record(seen=gone, decision=maintain, recall=first.recall)
    assert again.events == () and not again.flapping


def test_a_flap_is_the_same_outage() -> None:
    message = "pod-0: connection refused; holding 1 replicas"
    said = autoscale.Recall(metrics_ok=False, missing_said=message)
    back = _record(seen=_seen(time=100.0), decision=_decision("maintain", 1), recall=said)
    assert back.recall.metrics_ok is True and back.recall.metrics_back == 100.0
    gone = _seen(time=130.0, missing="pod-0: connection refused")
    flap = _record(seen=gone, decision=_decision("maintain", 1), recall=back.recall)
    assert flap.events == () and flap.flapping
    later = _seen(time=100.0 + autoscale.METRICS_FLAP_SECONDS, missing="pod-0: connection refused")
    outage = _record(seen=later, decision=_decision("maintain", 1), recall=back.recall)
    assert outage.events == (("Warning", "MetricsMissing", message),)


def test_new_pods_first_scrape_is_no_outage() -> None:
    old = models.GeoDeploymentStatus()
    late = _seen(missing="pod-1: first scrape, no rate yet")
    done = _record(old, seen=late, decision=_decision("maintain", 1), warming=True)
    assert _conditions(done.status)["MetricsAvailable"] == ("Unknown", "FirstScrape")
    assert done.events == () and done.recall.metrics_ok is None


def test_measured_startup_goes_to_status() -> None:
    seen = policy.observation(100.0, 1, 1, 150.0, 20.0, startup_seconds=12.34)
    done = _record(seen=seen, startup_samples=3)
    assert done.status.autoscaling is not None
    assert done.status.autoscaling.pod_startup_seconds == 12.3
    assert done.status.autoscaling.pod_startup_samples == 3


def test_a_failed_step_keeps_the_history_as_written() -> None:
    lagging = models.GeoDeploymentStatus(
        decisions=[_entry("scale_out")], last_decision=_entry("scale_out")
    )
    written = (_entry("scale_out"), _entry("scale_in", "2026-12-06T02:30:00Z"))
    new = autoscale.failed(lagging, 3, "RuntimeError: boom", autoscale.Recall(decisions=written))
    assert tuple(new.decisions) == written and new.last_decision == written[-1]
    assert _conditions(new)["MetricsAvailable"] == ("False", "StepFailed")
    assert new.conditions[0].message == (
        "the autoscaling step failed: RuntimeError: boom; holding replicas"
    )
    # Nothing written yet by this process: the body's history stays as it is.
    alone = autoscale.failed(lagging, 3, "RuntimeError: boom", autoscale.Recall())
    assert alone.decisions == lagging.decisions


def test_disabled_autoscaling_keeps_the_history_as_written() -> None:
    lagging = models.GeoDeploymentStatus(decisions=[_entry("scale_out")])
    written = (_entry("scale_out"), _entry("scale_in", "2026-12-06T02:30:00Z"))
    new = autoscale.disabled(lagging, 3, autoscale.Recall(decisions=written))
    assert tuple(new.decisions) == written
    assert _conditions(new) == {"ScalingActive": ("False", "AutoscalingDisabled")}


def test_comparable_ignores_transition_times_and_fields_of_others() -> None:
    one = _record().status
    later = one.model_copy(
        update={
            "conditions": [
                c.model_copy(update={"last_transition_time": "2027-01-01T00:00:00Z"})
                for c in one.conditions
            ],
            "max_batch_size": 32,  # the reconcile's
        }
    )
    assert autoscale.comparable(later) == autoscale.comparable(one)
