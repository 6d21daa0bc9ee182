"""The series names GEO's alerting rules and dashboard may read, and those a PromQL
expression reads: a renamed metric leaves a query that never has data."""

from __future__ import annotations

from tests.support.paths import ROOT


def exported_series() -> set[str]:
    """Every series name a GEO rule or panel may read: the operator's own metrics
    (controller.telemetry), Triton's (its exposition in tests/fixtures) and the alerts'
    recording rules. A renamed metric leaves a query that never has data: catch it."""
    import re

    from prometheus_client.metrics import MetricWrapperBase

    from geo_operator.builders import alerts
    from geo_operator.controller import telemetry

    names = {
        family.name + suffix
        for metric in vars(telemetry).values()
        if isinstance(metric, MetricWrapperBase)
        for family in metric.describe()
        for suffix in (("", "_total") if family.type == "counter" else ("",))
    }
    for fixture in (ROOT / "tests" / "fixtures").glob("triton_metrics*.txt"):
        names |= set(re.findall(r"^(nv_\w+)", fixture.read_text(), re.M))
    # GPU-only (Triton publishes it on a GPU; no GPU here: its panel falls back to CPU).
    names.add("nv_gpu_utilization")
    return names | {alerts.P99_RECORD, alerts.ERROR_RATIO_RECORD, "up"}


def series_read(expr: str) -> set[str]:
    """The series names a PromQL expression reads (ours, Triton's, recording rules, up)."""
    import re

    return set(re.findall(r"\b((?:geo|nv)_\w+|geodeployment:\w+:\w+|up)\b(?=\s*[{\[ )]|$)", expr))
