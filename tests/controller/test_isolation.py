"""Each GeoDeployment's autoscaling step is its own: a bad answer, a failing call or a slow
source holds only the objects that meet it (issue: one object could stop them all)."""

from __future__ import annotations

import asyncio
import copy
import math
import time
from typing import Any

import pytest
from tests.support.kube import SELECTED, FakeKube

from geo_operator.api import models
from geo_operator.controller import autoscaler
from geo_operator.scaling import policy
from geo_operator.triton import prometheus


def _object(body: dict[str, Any], name: str, **autoscaling: Any) -> dict[str, Any]:
    gd = copy.deepcopy(body)
    gd["metadata"]["name"] = name
    gd["spec"]["autoscaling"] = {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": 4,
        "targetQpsPerReplica": 100,
        "intervalSeconds": 1,
        **autoscaling,
    }
    gd["status"] = {
        "observedGeneration": 1,
        "selectedArtifact": dict(SELECTED),
    }
    return gd


def _prometheus(url: str) -> dict[str, Any]:
    return {"source": "prometheus", "prometheusUrl": url}


POD = autoscaler.PodView("p0", True, "http://p0/metrics")


def _conditions(kube: FakeKube, name: str) -> dict[str, dict[str, Any]]:
    status = kube.objects[(models.KIND, "ml", name)]["status"]
    return {c["type"]: c for c in status.get("conditions", [])}


def test_prometheus_infinities_and_garbage_are_missing_data() -> None:
    answer = [
        {"metric": {"namespace": "ml", "geodeployment": "a"}, "value": [1, "+Inf"]},
        {"metric": {"namespace": "ml", "geodeployment": "b"}, "value": [1, "NaN"]},
        {"metric": {"namespace": "ml", "geodeployment": "c"}, "value": [1, "lots"]},
        {"metric": {"namespace": "ml", "geodeployment": "d"}, "value": [1, "2"]},
    ]
    assert prometheus._by_key(answer) == {("ml", "d"): 2.0}
    up = prometheus._by_key(answer)  # an "up" of +Inf no longer reaches int()
    loads = prometheus.loads({}, {}, up, {})
    assert loads == {("ml", "d"): prometheus.Load(qps=None, p99_ms=None, pods_up=2)}


def test_non_finite_numbers_never_read_as_load() -> None:
    for qps, p99 in ((math.inf, 5.0), (10.0, math.nan), (math.nan, None)):
        obs = policy.observation(0.0, 2, 2, qps, p99)
        assert obs.missing is not None and obs.qps is None and obs.p99_ms is None
    idle = policy.observation(0.0, 2, 2, 0.0, None)
    assert (idle.missing, idle.p99_ms) == (None, 0.0)  # no traffic: latency 0 is the truth


def test_one_failing_step_is_its_own(kube: FakeKube, body: dict[str, Any]) -> None:
    bad, good = _object(body, "bad"), _object(body, "good")
    for gd in (bad, good):
        kube.objects[(models.KIND, "ml", gd["metadata"]["name"])] = gd

    def query(url: str, window: int) -> dict[tuple[str, str], prometheus.Load]:
        return {("ml", "good"): prometheus.Load(qps=900.0, p99_ms=5.0, pods_up=1)}

    bad["spec"]["autoscaling"]["metrics"] = _prometheus("http://prom:9090")
    good["spec"]["autoscaling"]["metrics"] = _prometheus("http://prom:9090")
    real_scale = kube.scale_deployment

    def scale(namespace: str, name: str, replicas: int) -> None:
        if name == "bad":
            raise RuntimeError('404: deployments.apps "bad" not found')
        real_scale(namespace, name, replicas)

    kube.scale_deployment = scale  # type: ignore[method-assign]
    query_bad = {("ml", "bad"): prometheus.Load(qps=900.0, p99_ms=5.0, pods_up=1)}
    scaler = autoscaler.Autoscaler(
        kube, clock=lambda: 0.0, query=lambda u, w: {**query(u, w), **query_bad}
    )
    scaler.tick([bad, good], lambda key: [POD], lambda key: 1)
    assert kube.scaled == [("ml", "good", 4)]
    assert _conditions(kube, "bad")["MetricsAvailable"]["reason"] == "StepFailed"
    assert "404" in _conditions(kube, "bad")["MetricsAvailable"]["message"]
    assert _conditions(kube, "good")["MetricsAvailable"]["reason"] == "Queried"


def test_a_slow_source_delays_no_other_object(kube: FakeKube, body: dict[str, Any]) -> None:
    """Three objects on a Prometheus that answers after 1.5 s; an unrelated object on a
    1 s interval still decides about every second (the loop hands steps to workers)."""
    slow = [
        _object(body, f"slow{i}", metrics=_prometheus(f"http://slow{i}:9090")) for i in range(3)
    ]
    direct = _object(body, "direct")
    objects = [*slow, direct]
    for gd in objects:
        kube.objects[(models.KIND, "ml", gd["metadata"]["name"])] = gd

    def query(url: str, window: int) -> dict[tuple[str, str], prometheus.Load]:
        time.sleep(1.5)
        raise prometheus.PrometheusError(f"Prometheus at {url}: ReadTimeout")

    scrapes = {"n": 0}

    def fetch(url: str) -> str:
        scrapes["n"] += 1
        return (
            "# TYPE nv_inference_request_success counter\n"
            f'nv_inference_request_success{{model="digits",version="1"}} {scrapes["n"] * 10}\n'
        )

    scaler = autoscaler.Autoscaler(kube, fetch=fetch, query=query)

    async def main() -> None:
        scaler.start(
            lambda: scaler.due(objects, lambda key: [POD], lambda key: 1, scaler.clock()),
            period=0.2,
        )
        await asyncio.sleep(4.2)
        await scaler.stop()

    asyncio.run(main())
    assert scrapes["n"] >= 3  # the direct object was observed on time, about every second
    for gd in slow:  # the slow ones: each its own, missing, held
        conds = _conditions(kube, gd["metadata"]["name"])
        assert "ReadTimeout" in conds["MetricsAvailable"]["message"]
    assert kube.scaled == []  # nobody scaled on missing data


@pytest.mark.parametrize("ready", [True, False])
def test_pod_view_reads_readiness_and_metrics_url(ready: bool) -> None:
    pod = {
        "metadata": {"name": "p", "annotations": {}},
        "status": {
            "phase": "Running",
            "podIP": "10.1.2.3",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }
    assert autoscaler.pod_view(pod) == autoscaler.PodView(
        "p", ready, "http://10.1.2.3:8002/metrics"
    )
