"""Benchmark: the autoscaler's cost per tick at 10, 100 and 1000 GeoDeployments.

Prometheus source (one shared query round per second for all objects) against
an in-process stand-in for Prometheus and the cluster seam, so the figure is the
autoscaler's own work: parsing specs, deciding, building status. Every step runs
in this one thread (`Autoscaler.tick`), so the figure is the CPU cost, not the
operator's latency (there the steps run side by side on workers). Prints a
table; run with `.venv/bin/python e2e/bench_loop.py`.
"""

from __future__ import annotations

import copy
import pathlib
import statistics
import sys
import time
from typing import Any

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))

from geo_operator.api import names  # noqa: E402
from geo_operator.controller import autoscaler  # noqa: E402
from geo_operator.triton import prometheus  # noqa: E402


class Cluster:
    def __init__(self) -> None:
        self.calls = 0

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        self.calls += 1

    def apply_status(self, namespace: str, name: str, manager: str, status: dict[str, Any]) -> None:
        self.calls += 1

    def event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.calls += 1


def bench(n: int, ticks: int = 5) -> tuple[float, int, int]:
    base = yaml.safe_load((ROOT / "manifests/examples/digits-autoscaling.yaml").read_text())
    base["spec"]["autoscaling"]["metrics"] = {
        "source": "prometheus",
        "prometheusUrl": "http://prom:9090",
    }
    queries = 0

    def query(url: str, window: int) -> dict[tuple[str, str], prometheus.Load]:
        nonlocal queries
        queries += 1
        return {
            ("ns", f"gd-{i}"): prometheus.Load(qps=10.0 + i % 50, p99_ms=20.0, pods_up=1)
            for i in range(n)
        }

    now = [0.0]
    cluster = Cluster()
    scaler = autoscaler.Autoscaler(cluster, clock=lambda: now[0], query=query)
    objects, pods = [], {}
    for i in range(n):
        body = copy.deepcopy(base)
        body["metadata"] = {
            "name": f"gd-{i}",
            "namespace": "ns",
            "generation": 1,
            "resourceVersion": "1",
        }
        body["status"] = {
            "observedGeneration": 1,
            "replicas": 1,
            "selectedArtifact": {
                "name": "int8",
                "precision": "int8",
                "format": "python",
                "uri": "x://y",
                "reason": "r",
            },
        }
        objects.append(body)
        pods[("ns", f"gd-{i}")] = autoscaler.pod_view(
            {
                "metadata": {
                    "name": f"gd-{i}-0",
                    "namespace": "ns",
                    "labels": {names.OWNER_LABEL: f"gd-{i}"},
                },
                "status": {
                    "phase": "Running",
                    "podIP": "10.0.0.1",
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }
        )
    durations = []
    for _ in range(ticks):
        now[0] += 3
        started = time.perf_counter()
        scaler.tick(objects, lambda key: [pods[key]], lambda key: 1)
        durations.append(time.perf_counter() - started)
    return statistics.median(durations), queries, cluster.calls


def main() -> None:
    print(
        f"{'GeoDeployments':>15} {'tick median ms':>15} {'per object us':>14} {'queries/tick':>13}"
    )
    for n in (10, 100, 1000):
        median, queries, _ = bench(n)
        print(f"{n:>15} {median * 1000:>15.1f} {median / n * 1e6:>14.0f} {queries / 5:>13.0f}")


if __name__ == "__main__":
    main()
