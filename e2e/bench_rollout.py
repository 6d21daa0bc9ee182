"""Benchmark: a good and a bad canary under open-loop load, on the local cluster with a
real Triton for every pod. Prints, for each: the time from the change to the canary's
first ready pod, to the verdict (promotion, or the rollback: the time to detect), the
share of the requests the canary served between the change and the verdict, and the
failed requests. Run: `.venv/bin/python e2e/bench_rollout.py` (about 4 min; it brings the
local cluster up if it is not, installs the chart, and leaves the cluster up).

The GeoDeployment is the digits example on two replicas with steps 50 -> 100, analyses
every 5 s, minRequests 40, a 60 ms p99 objective; the load is 20 QPS round-robin over
every ready pod of both tracks. The good canary lengthens the batcher's queue delay to
300 us; the bad one to 150 ms (its p99 breaches the objective). Two cores: every pod is
a real tritonserver on this machine, so the figures are about the rollout's mechanics
(analysis intervals, pod start-up), not capacity.
"""

from __future__ import annotations

import json
import pathlib
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from e2e.harness import (
    ROOT,
    Cluster,
    OperatorProcess,
    example,
    fresh_namespace,
    install_chart,
    up,
    wait_for,
)
from e2e.harness.kubelet import KubeletRunner
from e2e.loadgen import Phase, ready_servers
from e2e.loadgen import run as run_load

NAMESPACE = "bench-rollout"
NAME = "digits"


def _body() -> dict[str, Any]:
    body = example(NAMESPACE, replicas=2)
    body["spec"]["rollout"] = {"steps": [50, 100], "analysisIntervalSeconds": 5, "minRequests": 40}
    body["spec"]["objectives"] = {"p99LatencyMs": 60}
    return body


def _rollout(cluster: Cluster) -> dict[str, Any]:
    body = cluster.get("geod", NAME, NAMESPACE) or {}
    return dict((body.get("status") or {}).get("rollout") or {})


def story(cluster: Cluster, runner: KubeletRunner, delay_us: int) -> dict[str, Any]:
    fresh_namespace(cluster, NAMESPACE)
    cluster.apply(_body())
    wait_for(
        lambda: (
            len(ready_servers(runner.pods_json, NAME)) == 2
            and _rollout(cluster).get("phase") == "Promoted"
        ),
        "the first deployment",
        timeout=120,
    )
    canary_urls: set[str] = set()
    first_canary: list[float] = []
    stop = threading.Event()

    def watch_pods() -> None:
        while not stop.wait(0.2):
            try:
                pods = json.loads(runner.pods_json.read_text())
            except (OSError, ValueError):
                continue
            for pod in pods:
                if pod.get("pod", "").startswith(f"{NAME}-canary-") and pod.get("ready"):
                    canary_urls.add(pod["http"])
                    if not first_canary:
                        first_canary.append(time.monotonic())

    inputs = np.load(ROOT / "examples/digits/artifacts/heldout.npz")["x"]
    seconds: list[Any] = []
    load = threading.Thread(
        target=lambda: seconds.extend(
            run_load([Phase(100, 20)], lambda: ready_servers(runner.pods_json, NAME), inputs)
        )
    )
    threading.Thread(target=watch_pods, daemon=True).start()
    load.start()
    began = time.monotonic()
    time.sleep(5)
    changed = time.monotonic()
    patch = {"spec": {"triton": {"dynamicBatching": {"maxQueueDelayMicroseconds": delay_us}}}}
    cluster.kubectl("patch", "geod", NAME, "-n", NAMESPACE, "--type=merge", "-p", json.dumps(patch))
    ended: float | None = None
    phase = ""
    while time.monotonic() - changed < 90:
        rollout = _rollout(cluster)
        phase = rollout.get("phase", "")
        if phase == "RolledBack" or (
            phase == "Promoted" and len(rollout.get("history") or []) == 2
        ):
            ended = time.monotonic()
            break
        time.sleep(0.25)
    load.join()
    stop.set()
    lo, hi = int(changed - began), int((ended or time.monotonic()) - began) + 1
    window = seconds[lo:hi]
    served = sum(s.completed for s in window)
    by_canary = sum(n for s in window for url, n in s.by_server.items() if url in canary_urls)
    return {
        "verdict": phase,
        "canary ready s": first_canary[0] - changed if first_canary else None,
        "verdict s": None if ended is None else ended - changed,
        "canary share": by_canary / served if served else None,
        "failed": sum(s.errors for s in seconds),
        "sent": sum(s.offered for s in seconds),
        "reason": _rollout(cluster).get("reason", ""),
    }


def main() -> int:
    cluster = up()
    install_chart(cluster)
    operator = OperatorProcess(cluster, pathlib.Path(tempfile.mkdtemp(prefix="geo-bench-")))
    operator.start()
    runner = KubeletRunner(
        cluster.kubeconfig, pathlib.Path(tempfile.mkdtemp()) / "runner", namespace=NAMESPACE
    ).start()
    try:
        results = {
            "good (queue delay 300 us)": story(cluster, runner, 300),
            "bad (queue delay 150 ms)": story(cluster, runner, 150_000),
        }
    finally:
        runner.stop()
        operator.stop()
    print(
        f"\n{'canary':<28}{'verdict':>11}{'ready s':>9}{'verdict s':>11}{'share':>8}{'failed':>12}"
    )
    for name, r in results.items():

        def num(v: float | None, f: str) -> str:
            return "-" if v is None else format(v, f)

        print(
            f"{name:<28}{r['verdict']:>11}{num(r['canary ready s'], '.1f'):>9}"
            f"{num(r['verdict s'], '.1f'):>11}{num(r['canary share'], '.1%'):>8}"
            f"{str(r['failed']) + '/' + str(r['sent']):>12}"
        )
    for name, r in results.items():
        print(f"\n{name}: {r['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
