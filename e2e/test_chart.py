"""The Helm chart and plain manifests: lint, one CRD source, no drift, valid on a real server."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import yaml
from e2e.harness import ROOT, Cluster

from geo_operator.api import crd
from geo_operator.builders import alerts, dashboard

CHART = ROOT / "charts" / "geo-operator"
MANIFESTS = ROOT / "manifests" / "geo-operator.yaml"


def _render(cluster: Cluster, *args: str) -> list[dict[str, Any]]:
    out = cluster.helm("template", "geo-operator", "charts/geo-operator", "-n", "geo-system", *args)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_helm_lint_is_clean(cluster: Cluster) -> None:
    out = cluster.helm("lint", "--strict", "charts/geo-operator")
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


def test_chart_crd_is_the_generated_one(cluster: Cluster) -> None:
    crds = [d for d in _render(cluster) if d["kind"] == "CustomResourceDefinition"]
    assert len(crds) == 1
    assert crds[0]["spec"] == crd.crd()["spec"]
    assert crds[0]["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert not [
        d
        for d in _render(cluster, "--set", "crds.enabled=false")
        if d["kind"] == "CustomResourceDefinition"
    ]
    kept = [
        d
        for d in _render(cluster, "--set", "crds.keep=false")
        if d["kind"] == "CustomResourceDefinition"
    ]
    assert "annotations" not in kept[0]["metadata"]


def test_chart_prometheus_rule_is_the_shipped_rule_file(cluster: Cluster) -> None:
    assert not [d for d in _render(cluster) if d["kind"] == "PrometheusRule"]  # off by default
    rendered = _render(
        cluster,
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "prometheusRule.labels.release=kube-prometheus-stack",
    )
    (rule,) = [d for d in rendered if d["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # The {{ $labels }} templates reach Prometheus as written, not rendered by Helm.
    assert rule["spec"] == yaml.safe_load(alerts.rule_file())
    assert "{{ $labels.namespace }}" in yaml.safe_dump(rule["spec"])


def test_chart_dashboard_configmap_is_the_generated_dashboard(cluster: Cluster) -> None:
    assert not [d for d in _render(cluster) if d["kind"] == "ConfigMap"]  # off by default
    rendered = _render(
        cluster,
        "--set",
        "dashboards.enabled=true",
        "--set",
        "dashboards.annotations.grafana_folder=ML",
    )
    (config_map,) = [d for d in rendered if d["kind"] == "ConfigMap"]
    # The label kube-prometheus-stack's Grafana sidecar selects on, and the folder.
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "ML"}
    (text,) = config_map["data"].values()
    assert json.loads(text) == dashboard.build()


def test_manifests_are_the_chart_rendered() -> None:
    rendered = subprocess.run(
        ["bash", str(ROOT / "e2e" / "render-manifests.sh")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert MANIFESTS.read_text() == rendered, "manifests/ drifted: run `make manifests`"


def test_manifests_are_accepted_by_the_api_server(chart: Cluster) -> None:
    # After the chart's install, so that namespace geo-system exists for the dry run.
    out = chart.kubectl("apply", "--dry-run=server", "-f", str(MANIFESTS))
    assert "geodeployments.geo.ai" in out.stdout


def test_values_are_documented_and_schema_checked(cluster: Cluster) -> None:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    for key in values:
        assert re.search(rf"^# {key} -- ", text, re.MULTILINE), f"{key} is not documented"
    bad = cluster.helm(
        "template", "x", "charts/geo-operator", "--set", "logLevel=loud", check=False
    )
    assert bad.returncode != 0 and "logLevel" in bad.stderr


def test_rbac_framework_and_application_apart(cluster: Cluster) -> None:
    roles = {d["metadata"]["name"]: d for d in _render(cluster) if d["kind"] == "ClusterRole"}
    assert set(roles) == {"geo-operator-framework", "geo-operator-application"}
    rules = [rule for r in roles.values() for rule in r["rules"]]
    assert "*" not in {v for rule in rules for v in rule["verbs"]}
    # Delete only for tuning Jobs of outdated inputs and a rollout's canary (its Deployment
    # and ConfigMap) once it ends; every other child goes by ownerReferences.
    deleting = [rule for rule in rules if "delete" in rule["verbs"]]
    assert [(rule["apiGroups"], rule["resources"]) for rule in deleting] == [
        (["apps"], ["deployments"]),
        ([""], ["configmaps", "services"]),
        (["batch"], ["jobs"]),
    ]
    resources = {res for r in roles.values() for rule in r["rules"] for res in rule["resources"]}
    assert "secrets" not in resources
