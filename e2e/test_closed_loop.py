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
import math
import os
import pathlib
import signal
import threading
import time
from typing import Any

import numpy as np
import pytest
from e2e.harness import ROOT, Cluster, OperatorProcess, example, invariants, wait_for
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


# ---- a Triton dies in a served pod (issue 14's faults): unready, held, restarted

DEATH_QPS = 30  # two replicas' band: 15 each, between 10.5 (scale-in) and 22.5 (scale-out)


def test_a_triton_that_dies_in_a_served_pod_goes_unready_and_the_loop_holds(
    operator: OperatorProcess, runner: KubeletRunner, namespace: str
) -> None:
    """At a load two replicas carry, the runner's Triton in one pod is SIGKILLed: the
    runner, as a kubelet would, reports the pod not ready and restarts the server. The
    loop sees the pod gone from the ready ones (or its scrape fail) and holds: no
    scale-out for the load the live pod now carries alone, no scale-in; the pod comes
    back Ready with one restart, and the namespace holds the invariants."""
    cluster = operator.cluster
    cluster.apply(_body(namespace, {"source": "direct"}))
    wait_for(
        lambda: ready_servers(runner.pods_json, "digits"), "the first Triton server", timeout=90
    )
    inputs = np.load(ROOT / "examples/digits/artifacts/heldout.npz")["x"]

    def load() -> None:
        run_load([Phase(70, DEATH_QPS)], lambda: ready_servers(runner.pods_json, "digits"), inputs)

    with Recorder(cluster, namespace) as recorder:
        thread = threading.Thread(target=load, daemon=True)
        thread.start()

        def two_ready() -> bool:
            return [s.ready for s in recorder.samples[-1:]] == [2] and len(
                [i for (ns, _), i in runner.servers().items() if ns == namespace and i.ready]
            ) == 2

        wait_for(two_ready, "two ready replicas under the load", timeout=45)
        (_, pod), info = next(
            (k, i) for k, i in sorted(runner.servers().items()) if k[0] == namespace and i.ready
        )
        assert info.pid is not None
        killed = time.monotonic() - recorder.start
        os.kill(info.pid, signal.SIGKILL)
        thread.join(timeout=90)
    after = [s for s in recorder.samples if s.t >= killed]
    unready = next((s.t for s in after if s.replicas == 2 and s.ready == 1), None)
    assert unready is not None, "the pod never went unready in the API"
    back = next((s.t for s in after if s.t > unready and s.ready == 2), None)
    assert back is not None, "the pod never came back Ready"
    print(
        f"triton killed in {pod}: unready {unready - killed:.1f}s after, Ready again "
        f"{back - killed:.1f}s after"
    )
    assert {s.replicas for s in after} == {2}, [s.replicas for s in after]  # held
    seen = [d for d in recorder.decisions() if d in [s.decision for s in after]]
    for d in seen:
        print(f"  {d['action']} {d['from']}->{d['to']}: {d['reason']}")
    assert all(d["action"] == "maintain" for d in seen if d != after[0].decision), seen
    assert any(
        "starting replica" in d["reason"] or "metrics unavailable" in d["reason"] for d in seen
    ), seen
    status = (cluster.get("pod", pod, namespace) or {}).get("status") or {}
    restarts = {c["name"]: c.get("restartCount") for c in status.get("containerStatuses", [])}
    assert restarts.get("triton") == 1, restarts
    invariants.wait_held(cluster, namespace)


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
    if refused_early == 0:
        # Nothing to count: one Triton served all the load generator could offer on these
        # two cores (a full CI run: 360 req/s served, 300 offered). The accounting itself is
        # unit-tested (tests/scaling/test_policy.py); here it needs a real overflow.
        pytest.skip(
            f"no overload to shed: 0 of {offered_early} refused before the scale-out "
            f"({seconds[9].offered if len(seconds) > 9 else 0} req/s offered at the peak)"
        )
    # The clients saw refusals, fast (milliseconds, not a client timeout). How many come
    # before the scale-out is the machine's: a full CI run's load generator offered 300
    # req/s, not 450, and the loop scaled out 3 s into the peak (3 of 900 refused before it),
    # so the count is printed and only that refusals came, and fast, is asserted.
    assert fast, "no request was refused: the queue never overflowed"
    # Triton's answer, not a client giving up (the client waits minutes): 8.6 and 53.8 ms
    # medians in two runs here, as the two cores were shared.
    assert float(np.median(fast)) < 1000
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


# ---- the p99 alert (README "Alerts"): the shipped rules in a real Prometheus

ALERT = "GeoDeploymentP99AboveObjective"
ALERT_OBJECTIVE_MS = 12  # full CI runs peaked at 55 and 15 ms in Prometheus (idle: 1-8 ms)
ALERT_HOLD_S = 3  # `geo alerts --for-seconds 3`: the shipped hold is 5 minutes


def _runs_above(series: list[tuple[float, float]], limit: float) -> list[tuple[float, float]]:
    """The (first, last) seconds of each run of consecutive samples above ``limit``."""
    runs: list[tuple[float, float]] = []
    start: float | None = None
    last: float | None = None
    for t, value in series:
        if value > limit:
            if start is None or last is None or t - last > 1:
                if start is not None and last is not None:
                    runs.append((start, last))
                start = t
            last = t
        elif start is not None and last is not None:
            runs.append((start, last))
            start = last = None
    if start is not None and last is not None:
        runs.append((start, last))
    return runs


def test_the_p99_alert_fires_under_overload_and_clears(
    operator: OperatorProcess, runner: KubeletRunner, namespace: str, tmp_path: pathlib.Path
) -> None:
    """The shipped rules (short holds) in a real Prometheus that scrapes the Tritons and
    the operator: an overload past one server's capacity breaches the GeoDeployment's
    own p99 objective and fires the alert, with its labels; the loop scales out, and
    once the p99 is back under the objective the alert clears. Two cores: the new
    replicas may add little capacity, so whether it clears before the load falls is
    printed; that it clears is asserted."""
    from geo_operator.builders import alerts

    rules = tmp_path / "geo-alerts.rules.yaml"
    rules.write_text(alerts.rule_file(for_seconds=ALERT_HOLD_S))
    prom = Prometheus(
        tmp_path / "prometheus",
        runner.file_sd_json,
        static={"geo-operator": f"127.0.0.1:{operator.metrics_port}"},
        rule_files=[rules],
    ).start()
    cluster = operator.cluster
    body = _body(namespace, {"source": "direct"})
    body["spec"]["objectives"] = {"p99LatencyMs": ALERT_OBJECTIVE_MS}
    body["spec"]["autoscaling"].pop("targetP99LatencyMs")
    body["spec"]["autoscaling"]["maxReplicas"] = 3
    body["spec"]["autoscaling"]["targetQpsPerReplica"] = 150
    body["spec"]["triton"] = {
        "maxBatchSize": 1,
        "dynamicBatching": {"maxQueueDelayMicroseconds": 0},
    }
    cluster.apply(body)
    timeline: list[tuple[float, str | None]] = []  # (t, the alert's state or None)
    p99_seen: list[tuple[float, float]] = []  # (t, the recorded p99 Prometheus compares)
    stop = threading.Event()
    start = time.monotonic()
    fired: list[dict[str, Any]] = []

    def watch() -> None:
        while not stop.wait(1):
            try:
                mine = [
                    a
                    for a in prom.alerts()
                    if a["labels"].get("alertname") == ALERT  # type: ignore[union-attr]
                    and a["labels"].get("namespace") == namespace  # type: ignore[union-attr]
                ]
                record = prom.query(f'{alerts.P99_RECORD}{{namespace="{namespace}"}}')
            except OSError:
                continue
            now = time.monotonic() - start
            timeline.append((now, mine[0]["state"] if mine else None))
            value = float(record[0]["value"][1]) if record else math.nan  # type: ignore[index]
            if math.isfinite(value):  # NaN: no requests in Triton's summary window
                p99_seen.append((round(now), round(value, 1)))
            fired.extend(a for a in mine if a["state"] == "firing")  # type: ignore[misc]

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        wait_for(
            lambda: ready_servers(runner.pods_json, "digits"), "the first Triton server", timeout=90
        )
        # The operator exports the objective Prometheus compares with.
        wait_for(
            lambda: prom.query(f'geo_objective_p99_milliseconds{{namespace="{namespace}"}}'),
            "the objective in Prometheus",
            timeout=30,
        )
        (objective,) = prom.query(f'geo_objective_p99_milliseconds{{namespace="{namespace}"}}')
        assert float(objective["value"][1]) == ALERT_OBJECTIVE_MS  # type: ignore[index]
        inputs = np.load(ROOT / "examples/digits/artifacts/heldout.npz")["x"]
        watcher.start()
        with Recorder(cluster, namespace) as recorder:
            seconds = run_load(
                [Phase(8, 20), Phase(40, 700), Phase(20, 5)],
                lambda: ready_servers(runner.pods_json, "digits"),
                inputs,
            )
            fall = time.monotonic() - start
            # Triton's summary forgets over about a minute: by then it has cleared.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not (fired and timeline[-1][1] is None):
                time.sleep(1)
    finally:
        stop.set()
        prom.stop()
    fired_at = next((t for t, state in timeline if state == "firing"), None)
    cleared_at = next(
        (t for t, state in timeline if fired_at is not None and t > fired_at and state is None),
        None,
    )
    out_at = recorder.first(8, lambda s: s.replicas > 1)
    p99s = [round(s.p99_ms) for s in seconds if s.p99_ms is not None]
    print(
        f"p99 alert: fired at {fired_at}s, scale-out at {out_at}s, cleared at {cleared_at}s "
        f"(load fell at {fall:.0f}s; {'before' if cleared_at and cleared_at < fall else 'after'}"
        f" it);\n  client p99 by second {p99s};\n  Prometheus' p99 {p99_seen}"
    )
    # Judged against the series the rule reads, not against when the load generator managed
    # a breach: on two cores the overload's p99 may stay under the objective (one run: 13 ms
    # for one second) and a breach may come after the load falls (one CI run: 15 ms from
    # 99 s to 110 s, a late slow request in Triton's summary window).
    breaches = _runs_above(p99_seen, ALERT_OBJECTIVE_MS)
    # Held a second past the hold: one that ends as the wait does may not have fired yet.
    held = [(t0, t1) for t0, t1 in breaches if t1 - t0 >= ALERT_HOLD_S + 1]
    peak_p99 = max((v for _, v in p99_seen), default=0)
    if fired_at is None and not held:
        # No breach held for the rule's hold, so no alert to fire: one Triton kept its p99
        # under the objective at all the load generator could offer on these two cores.
        # The rules' firing and clearing are promtool-tested (tests/builders/test_alerts.py).
        pytest.skip(
            f"no breach held {ALERT_HOLD_S} s: Prometheus' p99 peaked at {peak_p99} ms, "
            f"objective {ALERT_OBJECTIVE_MS} ms, above it {breaches}"
        )
    assert fired_at is not None, f"never fired though the p99 was above for {held}: {timeline}"
    # Not before the record was above the objective for the hold (1 s: the watcher's rounding
    # and Prometheus' 1 s evaluation).
    assert breaches and fired_at >= breaches[0][0] + ALERT_HOLD_S - 1, (fired_at, breaches)
    labels = fired[0]["labels"]
    assert labels["geodeployment"] == "digits" and labels["severity"] == "warning", labels
    assert fired[0]["annotations"]["summary"] == f"{namespace}/digits: p99 above its objective"
    assert out_at is not None and out_at < fall, "the loop never scaled out"
    assert cleared_at is not None, timeline


def test_every_dashboard_query_has_data_from_the_real_prometheus(
    operator: OperatorProcess, runner: KubeletRunner, namespace: str, tmp_path: pathlib.Path
) -> None:
    """`geo dashboard`'s every panel query, variables filled in for this GeoDeployment, asked
    of a real Prometheus that scrapes the real Tritons and the operator and evaluates the
    alerts' recording rules. The response cache is on so that its panel has data too (and
    the p99 panel reads the stages' sum); GPU utilization falls back to the CPU's."""
    from geo_operator.builders import alerts, dashboard

    rules = tmp_path / "geo-alerts.rules.yaml"
    rules.write_text(alerts.rule_file(for_seconds=ALERT_HOLD_S))
    cluster = operator.cluster
    body = _body(namespace, {"source": "direct"})
    body["spec"]["triton"] = {"responseCache": {"enabled": True}}
    cluster.apply(body)
    with Prometheus(
        tmp_path / "prometheus",
        runner.file_sd_json,
        static={"geo-operator": f"127.0.0.1:{operator.metrics_port}"},
        rule_files=[rules],
    ) as prom:
        wait_for(
            lambda: ready_servers(runner.pods_json, "digits"), "the first Triton server", timeout=90
        )
        inputs = np.load(ROOT / "examples/digits/artifacts/heldout.npz")["x"]
        run_load([Phase(25, 30)], lambda: ready_servers(runner.pods_json, "digits"), inputs)
        empty = []
        for title, expr in dashboard.queries(namespace, "digits", rate="30s"):
            try:
                wait_for(lambda expr=expr: prom.query(expr), f"{title}: {expr}", timeout=20)
            except AssertionError:
                empty.append((title, expr))
        answered = len(dashboard.queries(namespace, "digits")) - len(empty)
    print(f"dashboard: {answered} of {answered + len(empty)} queries answered")
    assert not empty, empty
