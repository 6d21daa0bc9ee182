"""The cluster scaling itself: real Triton servers, real load, the operator's loop.

For each pod kwok marks Running, the kubelet runner starts a real tritonserver
on the model repository from the GeoDeployment's ConfigMap; an open-loop load
generator sends a rising-then-falling rate across the ready servers; the
operator reads the servers' metrics (directly, or through a real Prometheus),
decides and scales the Deployment; kwok starts the pods, the runner starts the
servers. No human action in between.

Small on purpose (2 cores): targets of 15 QPS per replica, at most 4 replicas,
3-second intervals and a 20-second scale-in window.
"""

from __future__ import annotations

import dataclasses
import itertools
import pathlib
import threading
import time
from typing import Any

import numpy as np
from e2e.harness import ROOT, Cluster, OperatorProcess, example, wait_for
from e2e.harness.kubelet import KubeletRunner
from e2e.loadgen import Phase, ready_servers
from e2e.loadgen import run as run_load
from e2e.prometheus_local import Prometheus

INTERVAL = 3
WINDOW = 20
TARGET_QPS = 15
TARGET_P99 = 250


def _body(namespace: str, metrics: dict[str, Any]) -> dict[str, Any]:
    body = example(namespace)
    body["spec"]["autoscaling"] = {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": 4,
        "targetQpsPerReplica": TARGET_QPS,
        "targetP99LatencyMs": TARGET_P99,
        "intervalSeconds": INTERVAL,
        "scaleInStabilizationSeconds": WINDOW,
        "metrics": metrics,
    }
    return body


@dataclasses.dataclass
class Sample:
    t: float
    replicas: int
    ready: int
    action: str | None
    metrics: str | None
    decision: dict[str, Any] | None = None  # status.lastDecision as sampled


class Recorder:
    """Samples the GeoDeployment's status twice a second in the background."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.samples: list[Sample] = []
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            body = self.cluster.get("geod", "digits", self.namespace) or {}
            status = body.get("status") or {}
            conds = {c["type"]: c for c in status.get("conditions", [])}
            self.samples.append(
                Sample(
                    t=time.monotonic() - self.start,
                    replicas=int(status.get("replicas") or 0),
                    ready=int(status.get("readyReplicas") or 0),
                    action=(status.get("lastDecision") or {}).get("action"),
                    metrics=(conds.get("MetricsAvailable") or {}).get("status"),
                    decision=status.get("lastDecision"),
                )
            )

    def __enter__(self) -> Recorder:
        self.start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def first(self, after: float, predicate: Any) -> float | None:
        return next((s.t for s in self.samples if s.t >= after and predicate(s)), None)

    def decisions(self) -> list[dict[str, Any]]:
        """Every lastDecision seen, once each, in order."""
        seen: list[dict[str, Any]] = []
        for sample in self.samples:
            if sample.decision and sample.decision not in seen:
                seen.append(sample.decision)
        return seen

    def direction_changes(self) -> int:
        steps = [b.replicas - a.replicas for a, b in itertools.pairwise(self.samples)]
        signs = [1 if d > 0 else -1 for d in steps if d]
        return sum(1 for a, b in itertools.pairwise(signs) if a != b)


def _story(
    operator: OperatorProcess,
    runner: KubeletRunner,
    namespace: str,
    metrics: dict[str, Any],
    during_peak: Any = None,
) -> Recorder:
    cluster = operator.cluster
    cluster.apply(_body(namespace, metrics))
    wait_for(
        lambda: ready_servers(runner.pods_json, "digits"), "the first Triton server", timeout=90
    )
    inputs = np.load(ROOT / "examples/digits/artifacts/heldout.npz")["x"]
    phases = [Phase(10, 8), Phase(40, 55), Phase(50, 3)]
    with Recorder(cluster, namespace) as recorder:
        peak = threading.Timer(25, during_peak) if during_peak else None
        if peak:
            peak.start()
        seconds = run_load(phases, lambda: ready_servers(runner.pods_json, "digits"), inputs)
        if peak:
            peak.join()
    recorder.seconds = seconds  # type: ignore[attr-defined]
    return recorder


def _check_story(recorder: Recorder, rise: float = 10, fall: float = 50) -> None:
    out_at = recorder.first(rise, lambda s: s.replicas > 1)
    assert out_at is not None, "never scaled out"
    # Two intervals, plus one for the first rates of a new reading.
    assert out_at - rise <= 3 * INTERVAL + 2, f"scale_out {out_at - rise:.1f}s after the rise"
    peak = max(s.replicas for s in recorder.samples)
    assert 3 <= peak <= 4
    seconds = recorder.seconds  # type: ignore[attr-defined]
    settled = [s.p99_ms for s in seconds[int(rise) + 25 : int(fall)] if s.p99_ms is not None]
    assert settled and max(settled) < TARGET_P99, f"p99 after scale-out: {settled}"
    in_at = recorder.first(fall, lambda s: s.replicas < peak)
    assert in_at is not None, "never scaled in"
    assert in_at - fall >= WINDOW - 1, f"scale_in {in_at - fall:.1f}s after the fall"
    assert recorder.direction_changes() <= 1, [s.replicas for s in recorder.samples]
    errors = sum(s.errors for s in seconds)
    assert errors <= 0.02 * sum(s.offered for s in seconds)


def _check_outage(recorder: Recorder, outage: dict[str, float]) -> None:
    """Blind from outage["from"] to outage["to"]: held, named, then resumed."""
    start = recorder.start
    down = [
        s
        for s in recorder.samples
        if outage["from"] - start + INTERVAL + 1 <= s.t <= outage["to"] - start
    ]
    assert down and all(s.metrics == "False" for s in down), [s.metrics for s in down]
    assert len({s.replicas for s in down}) == 1  # held while blind
    back = recorder.first(outage["to"] - start, lambda s: s.metrics == "True")
    assert back is not None and back - (outage["to"] - start) < 6 * INTERVAL


def test_direct_scrape_scales_out_and_back_in(
    operator: OperatorProcess, runner: KubeletRunner, namespace: str
) -> None:
    cluster = operator.cluster
    outage: dict[str, float] = {}
    selector = "app.kubernetes.io/instance=digits"

    def break_scrapes() -> None:  # at the peak, for 12 s: every pod's metrics unreachable
        outage["from"] = time.monotonic()
        cluster.kubectl(
            "annotate",
            "pods",
            "-n",
            namespace,
            "-l",
            selector,
            "--overwrite",
            "geo.ai/metrics-url=http://127.0.0.1:9/metrics",
        )
        time.sleep(12)
        outage["to"] = time.monotonic()
        for (ns, pod), info in runner.servers().items():
            if ns == namespace:
                cluster.kubectl(
                    "annotate",
                    "pod",
                    pod,
                    "-n",
                    ns,
                    "--overwrite",
                    f"geo.ai/metrics-url={info.metrics_url}",
                )

    recorder = _story(operator, runner, namespace, {"source": "direct"}, during_peak=break_scrapes)
    _check_story(recorder)
    _check_outage(recorder, outage)
    # The pods' start-up as Kubernetes saw it (creation to Ready), measured by the loop.
    auto = (cluster.get("geod", "digits", namespace) or {})["status"]["autoscaling"]
    assert auto["podStartupSamples"] >= 3, auto
    assert 0 <= auto["podStartupSeconds"] < 60, auto


def test_prometheus_source_and_an_outage(
    operator: OperatorProcess, runner: KubeletRunner, namespace: str, tmp_path: pathlib.Path
) -> None:
    prom = Prometheus(tmp_path / "prometheus", runner.file_sd_json).start()
    outage: dict[str, float] = {}

    def stop_prometheus() -> None:  # at the peak, for 12 s
        outage["from"] = time.monotonic()
        prom.stop()
        time.sleep(12)
        outage["to"] = time.monotonic()
        prom.start()

    try:
        recorder = _story(
            operator,
            runner,
            namespace,
            {"source": "prometheus", "prometheusUrl": prom.url, "rateWindowSeconds": 6},
            during_peak=stop_prometheus,
        )
    finally:
        prom.stop()
    _check_story(recorder)
    _check_outage(recorder, outage)


# ---- shed load is demand (README "Triton's levers"): a bounded queue under the loop

SHED_TARGET_QPS = 120
SHED_TIMEOUT_US = 3000


def test_a_bounded_queue_sheds_while_replicas_start_and_the_loop_counts_it(
    operator: OperatorProcess, runner: KubeletRunner, namespace: str
) -> None:
    """One Triton at max_batch_size 1 serves about 300-400 req/s on this machine; 450
    req/s on it overflows its queue's 3 ms timeout, and Triton refuses the excess at once
    (counted as REJECTED). The loop reads served plus refused as the demand, scales out,
    and once the load is spread the refusals usually fall. Two cores: four servers are
    not four times the capacity, so that last part is printed, not asserted."""
    cluster = operator.cluster
    body = _body(namespace, {"source": "direct"})
    body["spec"]["triton"] = {
        "maxBatchSize": 1,
        "dynamicBatching": {
            "maxQueueDelayMicroseconds": 0,
            "defaultQueuePolicy": {"defaultTimeoutMicroseconds": SHED_TIMEOUT_US},
        },
    }
    body["spec"]["autoscaling"]["targetQpsPerReplica"] = SHED_TARGET_QPS
    cluster.apply(body)
    wait_for(
        lambda: ready_servers(runner.pods_json, "digits"), "the first Triton server", timeout=90
    )
    inputs = np.load(ROOT / "examples/digits/artifacts/heldout.npz")["x"]
    with Recorder(cluster, namespace) as recorder:
        seconds = run_load(
            [Phase(8, 40), Phase(50, 450)],
            lambda: ready_servers(runner.pods_json, "digits"),
            inputs,
        )
    decisions = recorder.decisions()
    peak = max(s.replicas for s in recorder.samples)
    out_at = recorder.first(8, lambda s: s.replicas > 1)
    assert out_at is not None, "never scaled out"
    refused_early = sum(s.errors for s in seconds[8 : int(out_at)])
    offered_early = sum(s.offered for s in seconds[8 : int(out_at)])
    late = seconds[-15:]
    refused_late = sum(s.errors for s in late)
    offered_late = sum(s.offered for s in late)
    fast = [ms for s in seconds for ms in s.error_ms]
    print(
        f"shed: scale-out at {out_at:.0f}s, peak {peak} replicas; refused "
        f"{refused_early}/{offered_early} before it, {refused_late}/{offered_late} in the "
        f"last 15 s; refusals answered in a median {float(np.median(fast or [0])):.1f} ms"
    )
    for d in decisions:
        print(
            f"  {d['action']} {d['from']}->{d['to']} rejected {d.get('rejectedQps')}: {d['reason']}"
        )
    # The clients saw the refusals, fast (milliseconds, not a client timeout).
    assert refused_early > 0.02 * offered_early
    assert float(np.median(fast)) < 100
    # The loop counted them as demand: a scale-out whose figures name the refusals.
    shedding = [d for d in decisions if (d.get("rejectedQps") or 0) > 0]
    assert shedding, decisions
    assert any(
        d["action"] == "scale_out" and "refused after the queue timeout" in d["reason"]
        for d in shedding
    ), decisions
    assert peak >= 3
    # Whether the new replicas then serve it depends on what else the two cores run:
    # the late refusals were 0.2-12 % in three runs alone and 31 % in a full CI run
    # (three Tritons, the load generator and the cluster on two cores: more replicas
    # add no capacity here). Printed above, not asserted: a check that fails on the
    # machine's load, not on the operator, would be noise.
