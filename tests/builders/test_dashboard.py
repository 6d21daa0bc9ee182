"""GEO's Grafana dashboard: the shipped JSON is the generated one, every panel asks
Prometheus for series that exist, and the variables filter every query."""

from __future__ import annotations

import json
import pathlib

from tests.support.series import exported_series, series_read

from geo_operator.builders import dashboard

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "charts" / "geo-operator" / "files" / "geo-dashboard.json"


def test_the_shipped_dashboard_is_the_generated_one() -> None:
    assert SHIPPED.read_text() == dashboard.dashboard_json(), "drifted: run `make crd`"


def test_the_panels_the_issue_asks_for() -> None:
    board = json.loads(SHIPPED.read_text())
    titles = [p["title"] for p in board["panels"]]
    assert titles == [p.title for p in dashboard.PANELS]
    for needed in ("Load", "p99", "Replicas", "Decisions", "Queue", "Batch", "Utilization",
                   "cache", "Tuning and rollout"):  # fmt: skip
        assert any(needed.lower() in t.lower() for t in titles), needed
    assert board["uid"] == dashboard.UID
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) == {"datasource", "namespace", "geodeployment"}
    assert variables["datasource"]["query"] == "prometheus"


def test_every_query_is_filtered_and_reads_series_that_exist() -> None:
    known = exported_series()
    board = json.loads(SHIPPED.read_text())
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert 'namespace=~"$namespace"' in expr and 'geodeployment=~"$geodeployment"' in expr
            read = series_read(expr)
            assert read and not read - known, (panel["title"], read - known)


def test_queries_fill_in_the_variables_for_one_geodeployment() -> None:
    filled = dashboard.queries("ml", "digits")
    assert len(filled) == sum(len(p.queries) for p in dashboard.PANELS)
    for _, expr in filled:
        assert "$" not in expr and 'geodeployment=~"digits"' in expr
