"""Alerting rules that follow each GeoDeployment's own objectives: a Prometheus rule file.

Pure: the rules as data, rendered as YAML by `geo alerts` (what `make crd` writes to
the chart's `files/geo-alerts.rules.yaml`: the chart's PrometheusRule embeds that file,
and Prometheus without the Prometheus Operator loads it as it is).

Each alert compares Triton's series with what the operator exports per GeoDeployment
(`controller.telemetry`): the p99 objective, `maxReplicas`, and every status condition
with its status and reason. So one rule set serves every GeoDeployment, each against
its own SLO, and a rule needs no change when a user edits an objective. Triton's
series need the `namespace` and `geodeployment` labels (`triton.promql`), the
operator's carry them already.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from geo_operator.triton import promql

GROUP = "geo-operator"
# Recording rules: Triton's figures per GeoDeployment, in the units the alerts compare.
P99_RECORD = "geodeployment:triton_p99_milliseconds:max"
ERROR_RATIO_RECORD = "geodeployment:triton_request_error_ratio:rate5m"
ERROR_RATIO_LIMIT = 0.001  # 0.1 % of requests failed
ON = f"on ({promql.BY})"
_BREACHING = f"{P99_RECORD} > {ON} geo_objective_p99_milliseconds"
_WHO = "{{ $labels.namespace }}/{{ $labels.geodeployment }}"


@dataclasses.dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_seconds: int
    severity: str
    summary: str
    description: str


ALERTS = (
    Alert(
        "GeoDeploymentP99AboveObjective",
        _BREACHING,
        300,
        "warning",
        f"{_WHO}: p99 above its objective",
        "The worst stable pod's p99 is {{ $value | humanize }} ms, above the "
        "GeoDeployment's objectives.p99LatencyMs, for 5 minutes. The autoscaler should "
        "be scaling out: see `kubectl get geod -n {{ $labels.namespace }} "
        "{{ $labels.geodeployment }} -o yaml` (status.lastDecision).",
    ),
    Alert(
        "GeoDeploymentErrorRateHigh",
        f"{ERROR_RATIO_RECORD} > {ERROR_RATIO_LIMIT:g}",
        300,
        "warning",
        f"{_WHO}: more than 0.1 % of requests fail",
        "{{ $value | humanizePercentage }} of the requests failed over 5 minutes "
        "(Triton's nv_inference_request_failure, every reason: refused queue timeouts, "
        "backend errors, cancellations).",
    ),
    Alert(
        "GeoDeploymentMetricsMissing",
        'geo_geodeployment_condition{type="MetricsAvailable",status="False"} == 1',
        300,
        "warning",
        f"{_WHO}: the autoscaler is blind",
        "MetricsAvailable has been False for 5 minutes (reason {{ $labels.reason }}): the "
        "autoscaler holds the replicas and never scales in blind. Its message says what is "
        "missing: `kubectl describe geod -n {{ $labels.namespace }} "
        "{{ $labels.geodeployment }}`.",
    ),
    Alert(
        "GeoDeploymentPinnedAtMaxReplicas",
        f"(geo_autoscaler_desired_replicas >= {ON} geo_autoscaler_max_replicas) "
        f"and {ON} ({_BREACHING})",
        600,
        "critical",
        f"{_WHO}: at maxReplicas and still above its p99 objective",
        "The autoscaler wants {{ $value }} replicas, its maxReplicas, and the p99 is still "
        "above the objective after 10 minutes: raise autoscaling.maxReplicas or the "
        "capacity per replica.",
    ),
    Alert(
        "GeoDeploymentTuningFailed",
        'geo_geodeployment_condition{type="BatchTuned",status="False",'
        'reason=~"TuningFailed|TuningTimedOut"} == 1',
        60,
        "warning",
        f"{_WHO}: batch tuning failed",
        "The latest tuning Job ended {{ $labels.reason }}; the untuned batch size serves "
        "until a retry succeeds (status.tuning has the failure message).",
    ),
    Alert(
        "GeoDeploymentRolloutFailed",
        'geo_geodeployment_condition{type="Progressing",status="False",'
        'reason=~"RolledBack|Inconclusive"} == 1',
        0,
        "warning",
        f"{_WHO}: the latest rollout was not promoted",
        "The canary ended {{ $labels.reason }}: the previous configuration still serves "
        "all traffic while the spec asks for the new one (status.rollout.verdict says why).",
    ),
)


def _duration(seconds: int) -> str:
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


def groups(for_seconds: int | None = None) -> dict[str, Any]:
    """The rule file: recording rules, then the alerts. ``for_seconds`` replaces every
    alert's hold time (tests and demos that can't wait minutes); None: as shipped."""
    rules: list[dict[str, Any]] = [
        {"record": P99_RECORD, "expr": f"({promql.P99_QUERY}) / 1000"},
        {"record": ERROR_RATIO_RECORD, "expr": promql.ERROR_RATIO_QUERY.format(window=300)},
    ]
    for alert in ALERTS:
        hold = alert.for_seconds if for_seconds is None else for_seconds
        rule: dict[str, Any] = {"alert": alert.name, "expr": alert.expr}
        if hold:
            rule["for"] = _duration(hold)
        rule["labels"] = {"severity": alert.severity}
        rule["annotations"] = {"summary": alert.summary, "description": alert.description}
        rules.append(rule)
    return {"groups": [{"name": GROUP, "rules": rules}]}


HEADER = (
    "# GEO's alerting rules, generated by `geo alerts` (`make crd` writes this file):\n"
    "# edit builders/alerts.py, not this file. Load it into Prometheus (rule_files), or\n"
    "# install the chart with prometheusRule.enabled=true for the Prometheus Operator.\n"
)


def rule_file(for_seconds: int | None = None) -> str:
    return HEADER + yaml.safe_dump(groups(for_seconds), sort_keys=False, width=100)
