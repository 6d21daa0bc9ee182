"""The Grafana dashboard of GEO's GeoDeployments, built with Grafana's own Foundation SDK.

Pure: panels as data, encoded to the dashboard JSON by `geo dashboard` (what `make crd`
writes to the chart's `files/geo-dashboard.json`; the chart ships it in a ConfigMap with
the `grafana_dashboard` label that kube-prometheus-stack's Grafana sidecar loads, value
`dashboards.enabled`). Every query reads the series the alerts read (`triton.promql`,
`builders.alerts`) and is filtered by the dashboard's `namespace` and `geodeployment`
variables; `PANELS` lists each panel's queries so the e2e can ask a real Prometheus
each one (`queries()`).
"""

from __future__ import annotations

import dataclasses
import json

from grafana_foundation_sdk.builders import common, dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as options
from grafana_foundation_sdk.models import dashboard as model

from geo_operator.builders import alerts

UID = "geo-geodeployments"
TITLE = "GEO / GeoDeployments"
WHO = 'namespace=~"$namespace", geodeployment=~"$geodeployment"'
BY = "namespace, geodeployment"
RATE = "$__rate_interval"
_SOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")


@dataclasses.dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclasses.dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    description: str
    queries: tuple[Query, ...]


def _gd(suffix: str = "") -> str:
    return "{{namespace}}/{{geodeployment}}" + suffix


PANELS = (
    Panel(
        "Load",
        "reqps",
        "Requests served per second (Triton's nv_inference_request_success) and refused "
        "after their queue timeout (counted as demand by the autoscaler).",
        (
            Query(
                f"sum by ({BY}) (rate(nv_inference_request_success{{{WHO}}}[{RATE}]))",
                _gd(" served"),
            ),
            Query(
                f"sum by ({BY}) "
                f'(rate(nv_inference_request_failure{{{WHO}, reason="REJECTED"}}[{RATE}]))',
                _gd(" refused"),
            ),
        ),
    ),
    Panel(
        "p99 against the objective",
        "ms",
        "The worst stable pod's p99 (the alert's recording rule) and the GeoDeployment's "
        "objectives.p99LatencyMs.",
        (
            Query(f"{alerts.P99_RECORD}{{{WHO}}}", _gd(" p99")),
            Query(f"geo_objective_p99_milliseconds{{{WHO}}}", _gd(" objective")),
        ),
    ),
    Panel(
        "Replicas",
        "short",
        "Replicas the autoscaler decided, its maxReplicas, and the Triton pods Prometheus scrapes.",
        (
            Query(f"geo_autoscaler_desired_replicas{{{WHO}}}", _gd(" decided")),
            Query(f"geo_autoscaler_max_replicas{{{WHO}}}", _gd(" max")),
            Query(f"count by ({BY}) (up{{{WHO}}} == 1)", _gd(" pods up")),
        ),
    ),
    Panel(
        "Decisions",
        "short",
        "Autoscaling decisions per interval, by action (scale_out, scale_in, maintain).",
        (
            Query(
                f"sum by ({BY}, action) "
                f"(increase(geo_autoscaler_decisions_total{{{WHO}}}[{RATE}]))",
                _gd(" {{action}}"),
            ),
        ),
    ),
    Panel(
        "Queue",
        "short",
        "Requests waiting in Triton's queues, summed over the pods.",
        (Query(f"sum by ({BY}) (nv_inference_pending_request_count{{{WHO}}})", _gd(" queued")),),
    ),
    Panel(
        "Batch size",
        "short",
        "Requests per model execution: how full the dynamic batcher's batches are.",
        (
            Query(
                f"sum by ({BY}) (rate(nv_inference_count{{{WHO}}}[{RATE}])) / "
                f"sum by ({BY}) (rate(nv_inference_exec_count{{{WHO}}}[{RATE}]))",
                _gd(" avg batch"),
            ),
        ),
    ),
    Panel(
        "Utilization",
        "percentunit",
        "The busiest pod's GPU utilization (nv_gpu_utilization) or, on CPU, its "
        "nv_cpu_utilization.",
        (
            Query(
                f"max by ({BY}) (nv_gpu_utilization{{{WHO}}}) "
                f"or max by ({BY}) (nv_cpu_utilization{{{WHO}}})",
                _gd(" utilization"),
            ),
        ),
    ),
    Panel(
        "Response cache hits",
        "percentunit",
        "Hits per lookup of Triton's response cache (no data: the cache is off).",
        (
            Query(
                f"sum by ({BY}) (rate(nv_cache_num_hits_per_model{{{WHO}}}[{RATE}])) / "
                f"(sum by ({BY}) (rate(nv_cache_num_hits_per_model{{{WHO}}}[{RATE}])) + "
                f"sum by ({BY}) (rate(nv_cache_num_misses_per_model{{{WHO}}}[{RATE}])))",
                _gd(" hit ratio"),
            ),
        ),
    ),
    Panel(
        "Tuning and rollout",
        "short",
        "The status conditions Ready, BatchTuned, Progressing and MetricsAvailable, one "
        "series per status and reason (1 while it holds).",
        (
            Query(
                f"geo_geodeployment_condition{{{WHO}, "
                'type=~"Ready|BatchTuned|Progressing|MetricsAvailable"}',
                _gd(" {{type}}={{status}} {{reason}}"),
            ),
        ),
    ),
)


def _variables(board: dashboard.Dashboard) -> dashboard.Dashboard:
    board = board.with_variable(
        dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
    )
    for name, query in (
        ("namespace", "label_values(geo_objective_p99_milliseconds, namespace)"),
        (
            "geodeployment",
            'label_values(geo_objective_p99_milliseconds{namespace=~"$namespace"}, geodeployment)',
        ),
    ):
        board = board.with_variable(
            dashboard.QueryVariable(name)
            .label(name)
            .datasource(_SOURCE)
            .query(query)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        )
    return board


def build() -> dict[str, object]:
    """The dashboard as Grafana's JSON model."""
    board = (
        dashboard.Dashboard(TITLE)
        .uid(UID)
        .tags(["geo", "triton"])
        .refresh("30s")
        .time("now-1h", "now")
        .description(
            "Load, latency against each GeoDeployment's objective, replicas and "
            "decisions, Triton's queue, batches, utilization, cache, tuning and "
            "rollout state. Generated by `geo dashboard`."
        )
    )
    board = _variables(board)
    for i, panel in enumerate(PANELS):
        chart = (
            timeseries.Panel()
            .title(panel.title)
            .description(panel.description)
            .unit(panel.unit)
            .datasource(_SOURCE)
            .grid_pos(model.GridPos(h=8, w=12, x=12 * (i % 2), y=8 * (i // 2)))
            .legend(
                common.VizLegendOptions()
                .show_legend(True)
                .display_mode(options.LegendDisplayMode.LIST)
                .placement(options.LegendPlacement.BOTTOM)
            )
            .tooltip(
                common.VizTooltipOptions()
                .mode(options.TooltipDisplayMode.MULTI)
                .sort(options.SortOrder.NONE)
            )
        )
        for ref, query in zip("ABCDEFGH", panel.queries, strict=False):
            chart = chart.with_target(
                prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(ref)
            )
        board = board.with_panel(chart)
    encoded = JSONEncoder(sort_keys=True, indent=2).encode(board.build())
    out: dict[str, object] = json.loads(encoded)
    return out


def dashboard_json() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def queries(namespace: str, name: str, rate: str = "1m") -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel's every query, with the dashboard's variables
    filled in as Grafana would for one GeoDeployment."""
    out = []
    for panel in PANELS:
        for query in panel.queries:
            expr = (
                query.expr.replace("$namespace", namespace)
                .replace("$geodeployment", name)
                .replace("$__rate_interval", rate)
            )
            out.append((panel.title, expr))
    return out
