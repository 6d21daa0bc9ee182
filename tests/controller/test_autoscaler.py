"""The autoscaler, end to end at our own seams: fake cluster, metrics text served by a
fake fetch in Triton's exposition format (as recorded from the real server), the view
kopf's indexes would hold built by the same `pod_view` the pod index runs."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from tests.support.kube import SELECTED, FakeKube

from geo_operator.api import models, names
from geo_operator.controller import autoscaler, telemetry
from geo_operator.scaling import policy

NS, NAME = "ml", "digits"


def triton_text(
    success: float, p99_us: float | None, model: str = "digits", pending: float | None = None
) -> str:
    lines = []
    if pending is not None:
        lines += [
            "# TYPE nv_inference_pending_request_count gauge",
            f'nv_inference_pending_request_count{{model="{model}",version="1"}} {pending}',
        ]
    for metric, value in (
        ("nv_inference_request_success", success),
        ("nv_inference_count", success * 4),
        ("nv_inference_exec_count", success),
        ("nv_inference_request_duration_us", success * 1500),
        ("nv_inference_queue_duration_us", success * 100),
    ):
        lines += [f"# TYPE {metric} counter", f'{metric}{{model="{model}",version="1"}} {value}']
    lines.append("# TYPE nv_inference_request_summary_us summary")
    if p99_us is not None:
        lines.append(
            f'nv_inference_request_summary_us{{model="{model}",version="1",quantile="0.99"}} '
            f"{p99_us}"
        )
    return "\n".join(lines) + "\n"


class World:
    """A GeoDeployment, its pods' counters, and a clock under the test's control."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.now = 0.0
        self.kube = FakeKube()
        self.counters: dict[str, tuple[float, float | None]] = {}
        self.down: set[str] = set()
        self.pending: dict[str, float] = {}
        self.pods: dict[str, autoscaler.PodView] = {}
        self.scaler = autoscaler.Autoscaler(self.kube, fetch=self.fetch, clock=lambda: self.now)
        body = copy.deepcopy(body)
        body["spec"]["autoscaling"] = {
            "enabled": True,
            "minReplicas": 1,
            "maxReplicas": 4,
            "targetQpsPerReplica": 100,
            "targetP99LatencyMs": 200,
            "intervalSeconds": 10,
            "scaleInStabilizationSeconds": 60,
        }
        body["status"] = {
            "observedGeneration": 1,
            "replicas": 1,
            "readyReplicas": 1,
            "selectedArtifact": dict(SELECTED),
        }
        self.kube.objects[(models.KIND, NS, NAME)] = body
        # The Deployment: its spec.replicas is the autoscaler's "current".
        self.kube.objects[("Deployment", NS, NAME)] = {"spec": {"replicas": 1}}
        self.set_pods(1)

    def body(self) -> dict[str, Any]:
        return self.kube.objects[(models.KIND, NS, NAME)]

    def current(self, key: tuple[str, str]) -> int | None:
        deployment = self.kube.objects.get(("Deployment", *key))
        return int(deployment["spec"]["replicas"]) if deployment else None

    def tick(self) -> None:
        """What the operator's loop does each second, with the view kopf's indexes hold."""
        self.scaler.tick(
            [copy.deepcopy(self.body())], lambda key: list(self.pods.values()), self.current
        )

    def work(self) -> autoscaler.Work:
        spec = models.parse_spec(self.body()["spec"])
        pods = tuple(self.pods.values())
        return autoscaler.Work((NS, NAME), self.body(), spec, pods, self.current((NS, NAME)))

    def fetch(self, url: str) -> str:
        pod = url.split("/")[2]
        if pod in self.down:
            raise OSError("connection refused")
        success, p99 = self.counters[pod]
        return triton_text(success, p99, pending=self.pending.get(pod))

    def set_pods(self, n: int) -> None:
        for i in range(n):
            name = f"pod{i}"
            self.counters.setdefault(name, (0.0, None))
            self.pods[name] = autoscaler.pod_view(
                {
                    "metadata": {
                        "name": name,
                        "namespace": NS,
                        "labels": {names.OWNER_LABEL: NAME},
                        "annotations": {names.METRICS_URL_ANNOTATION: f"http://{name}/m"},
                    },
                    "status": {
                        "phase": "Running",
                        "podIP": "10.0.0.1",
                        "conditions": [{"type": "Ready", "status": "True"}],
                    },
                }
            )

    def run(self, seconds: float, qps_total: float, p99_ms: float) -> None:
        """Advance time second by second with the load spread over the ready pods."""
        for _ in range(int(seconds)):
            self.now += 1
            pods = [p for p in self.counters if p not in self.down]
            for pod in pods:
                success, _ = self.counters[pod]
                self.counters[pod] = (success + qps_total / len(pods), p99_ms * 1000)
            self.tick()
            # The Deployment controller's part: the pods follow the scale.
            replicas = self.current((NS, NAME)) or 0
            if len(self.pods) < replicas:
                self.set_pods(replicas)


@pytest.fixture
def world(body: dict[str, Any]) -> World:
    return World(body)


def _status(world: World) -> dict[str, Any]:
    return world.body()["status"]


def test_first_scrape_holds_then_load_scales_out(world: World) -> None:
    """A rate needs two scrapes: the first holds, and says so, but it is no outage."""
    world.run(1, 0, 10)
    first = _status(world)
    metrics = {c["type"]: c for c in first["conditions"]}
    assert metrics["MetricsAvailable"]["status"] == "Unknown"
    assert metrics["MetricsAvailable"]["reason"] == "FirstScrape"
    assert "first scrape, no rate yet" in metrics["MetricsAvailable"]["message"]
    assert first["lastDecision"]["action"] == "maintain"
    assert not [e for e in world.kube.events if e[1] == "MetricsMissing"]
    world.run(30, 350, 120)
    assert world.kube.scaled[0] == (NS, NAME, 4)  # ceil(350/100 * 0.9) = 4
    decision = next(d for d in _status(world)["decisions"] if d["action"] == "scale_out")
    assert decision["from"] == 1 and decision["to"] == 4
    assert decision["qpsPerReplica"] == 350 and decision["p99LatencyMs"] == 120
    assert any(e[1] == "ScaledOut" for e in world.kube.events)


def test_new_pods_first_scrape_after_a_scale_out_is_no_outage(world: World) -> None:
    """The pods a scale-out adds have no rate at their first scrape: the step holds, but
    MetricsAvailable stays True and no MetricsMissing Event goes out (it did on every
    scale-out); a known pod whose counters went backwards is an outage, with its Event."""
    world.run(21, 350, 120)
    assert world.kube.scaled[-1][2] == 4
    world.run(20, 350, 120)
    held = [d for d in _status(world)["decisions"] if "first scrape" in d["reason"]]
    assert held and all(d["action"] == "maintain" for d in held)
    conds = {c["type"]: c for c in _status(world)["conditions"]}
    assert conds["MetricsAvailable"]["status"] == "True"
    assert not [e for e in world.kube.events if e[1] == "MetricsMissing"]
    world.counters["pod1"] = (0.0, 120_000)  # Triton restarted in pod1: counters from 0
    world.run(10, 350, 120)
    conds = {c["type"]: c for c in _status(world)["conditions"]}
    assert conds["MetricsAvailable"]["reason"] == "MetricsMissing"
    assert "pod1: counters reset" in conds["MetricsAvailable"]["message"]
    assert [e for e in world.kube.events if e[1] == "MetricsMissing"]


def test_scrape_failure_holds_and_warns(world: World) -> None:
    world.run(11, 350, 120)
    world.run(10, 350, 120)
    scaled = len(world.kube.scaled)
    world.down.add("pod0")
    world.run(30, 10, 5)
    assert len(world.kube.scaled) == scaled  # never scales in blind
    conds = {c["type"]: c for c in _status(world)["conditions"]}
    assert conds["MetricsAvailable"]["reason"] == "MetricsMissing"
    assert "connection refused" in conds["MetricsAvailable"]["message"]
    assert any(e[:2] == ("Warning", "MetricsMissing") for e in world.kube.events)


def test_a_flapping_source_is_one_outage_and_never_lets_the_loop_scale_in(world: World) -> None:
    """Metrics down 15 s, up 15 s, for three minutes at a load that would scale in: one
    MetricsMissing Event (back for less than METRICS_FLAP_SECONDS is the same outage),
    no scale-in, no scale at all; once the source stays up, the window runs and the loop
    scales in; an outage after a minute of good metrics is a new Event."""
    world.run(21, 350, 120)
    assert world.kube.scaled[-1][2] == 4

    def warnings() -> int:
        return len([e for e in world.kube.events if e[1] == "MetricsMissing"])

    world.run(20, 350, 120)  # the new pods' first scrapes are done
    scaled, before = len(world.kube.scaled), warnings()
    for _ in range(6):  # 3 minutes: three times the 60 s window
        world.down.add("pod0")
        world.run(15, 20, 10)
        world.down.discard("pod0")
        world.run(15, 20, 10)
    assert warnings() == before + 1
    assert len(world.kube.scaled) == scaled, world.kube.scaled  # held, both ways
    world.run(90, 20, 10)  # steady: the window passes
    assert world.kube.scaled[-1][2] < 4
    world.down.add("pod0")
    world.run(15, 20, 10)
    assert warnings() == before + 2


def test_a_lagging_watch_does_not_repeat_the_missing_metrics_event(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under load kopf's index can hold a body older than the status the last step
    wrote: the outage is still one Warning, not one per step."""
    from geo_operator.api import conditions

    # Condition and decision times from the world's clock (each step seconds after the last).
    def clock() -> str:
        return f"2026-12-02T00:{int(world.now) // 60:02d}:{int(world.now) % 60:02d}Z"

    monkeypatch.setattr(conditions, "now", clock)
    monkeypatch.setattr(names, "now", clock)
    world.run(41, 350, 120)

    def warnings() -> int:
        return len([e for e in world.kube.events if e[1] == "MetricsMissing"])

    before = warnings()
    stale = copy.deepcopy(world.body())  # MetricsAvailable=True, as the index last saw it
    # The index may lag further: no autoscaler condition at all (set anew each step).
    stale["status"]["conditions"] = [
        c for c in stale["status"]["conditions"] if c["type"] != "ScalingActive"
    ]
    for field in ("lastDecision", "decisions"):  # nor the decisions since
        stale["status"].pop(field, None)
    assert {c["type"]: c for c in stale["status"]["conditions"]}["MetricsAvailable"][
        "status"
    ] == "True"
    world.down.add("pod0")
    patches = len(world.kube.status_patches)
    for _ in range(30):
        world.now += 1
        world.scaler.tick(
            [copy.deepcopy(stale)], lambda key: list(world.pods.values()), world.current
        )
    assert warnings() == before + 1
    # Nor is the same status written again on every step (3 steps in these 30 s).
    assert len(world.kube.status_patches) - patches == 1


def test_a_failed_step_on_a_lagging_body_keeps_the_decisions_written(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure's status is the history this process last wrote, not the lagging
    body's: server-side apply would drop the decisions the body does not have yet."""
    world.run(31, 350, 120)
    written = copy.deepcopy(_status(world)["decisions"])
    assert any(d["action"] == "scale_out" for d in written)
    stale = copy.deepcopy(world.body())
    for field in ("lastDecision", "decisions"):  # the index has not seen them yet
        stale["status"].pop(field, None)

    def broken(work: autoscaler.Work, now: float) -> None:
        raise RuntimeError("the metrics source went away")

    monkeypatch.setattr(world.scaler, "observe", broken)
    world.now += 10
    world.scaler.tick([stale], lambda key: list(world.pods.values()), world.current)
    status = _status(world)
    metrics = {c["type"]: c for c in status["conditions"]}["MetricsAvailable"]
    assert metrics["reason"] == "StepFailed"
    assert status["decisions"] == written and status["lastDecision"] == written[-1]


def test_low_load_scales_in_only_after_the_window(world: World) -> None:
    world.run(21, 350, 120)
    assert world.kube.scaled[-1][2] == 4
    world.run(55, 20, 10)  # low, but the 60 s window hasn't passed
    assert world.kube.scaled[-1][2] == 4
    world.run(40, 20, 10)
    # At most halving per step; the window's evidence stays, so the next tick halves again.
    assert [s[2] for s in world.kube.scaled][-2:] == [2, 1]
    history = [d["action"] for d in _status(world)["decisions"]]
    assert history.count("scale_in") == 2
    assert "maintain" in history


def _pod(name: str, created: str | None, ready_at: str | None) -> autoscaler.PodView:
    condition = {"type": "Ready", "status": "True"}
    if ready_at is not None:
        condition["lastTransitionTime"] = ready_at
    meta: dict[str, Any] = {
        "name": name,
        "annotations": {names.METRICS_URL_ANNOTATION: f"http://{name}/m"},
    }
    if created is not None:
        meta["creationTimestamp"] = created
    return autoscaler.pod_view(
        {"metadata": meta, "status": {"phase": "Running", "conditions": [condition]}}
    )


def test_pod_startup_is_creation_to_ready() -> None:
    assert _pod("a", "2026-12-01T10:00:00Z", "2026-12-01T10:00:42Z").startup_seconds == 42
    assert _pod("b", None, "2026-12-01T10:00:42Z").startup_seconds is None
    assert _pod("c", "2026-12-01T10:00:00Z", None).startup_seconds is None
    assert _pod("d", "garbage", "2026-12-01T10:00:42Z").startup_seconds is None
    assert _pod("e", "2026-12-01T10:01:00Z", "2026-12-01T10:00:00Z").startup_seconds is None


def test_measured_startup_is_the_trends_lead_and_in_status(world: World) -> None:
    world.pods = {
        "pod0": _pod("pod0", "2026-12-01T10:00:00Z", "2026-12-01T10:00:30Z"),
        "pod1": _pod("pod1", "2026-12-01T10:00:00Z", "2026-12-01T10:02:30Z"),
    }  # 30 s and 150 s: the median is 90 s
    world.counters = {name: (0.0, None) for name in world.pods}
    world.kube.objects[("Deployment", NS, NAME)]["spec"]["replicas"] = 2
    # Rising 1.5 QPS/s to 240 on 2 replicas (threshold 2 x 150): 30 s ahead is 285, under
    # it; the measured 90 s ahead is 360 (the +50 % cap), over it: scale out now.
    world.run(11, 165, 10)
    for qps in (180, 195, 210, 225, 240):
        world.run(10, qps, 10)
    auto = _status(world)["autoscaling"]
    assert auto["podStartupSeconds"] == 90 and auto["podStartupSamples"] == 2
    out = next(d for d in _status(world)["decisions"] if d["action"] == "scale_out")
    assert "in 90s, the pods' measured start-up" in out["reason"]


def test_disabled_autoscaling_only_reports(world: World) -> None:
    world.body()["spec"]["autoscaling"]["enabled"] = False
    world.run(30, 1000, 900)
    assert world.kube.scaled == []
    conds = {c["type"]: c for c in _status(world)["conditions"]}
    assert conds["ScalingActive"]["reason"] == "AutoscalingDisabled"


def _prometheus_world(body: dict[str, Any], answer: Any) -> World:
    w = World(body)

    def query(url: str, window: int) -> Any:
        w.queries.append(url)
        if isinstance(answer, Exception):
            raise answer
        return answer(w) if callable(answer) else answer

    w.queries = []  # type: ignore[attr-defined]
    w.scaler.answers.query = query
    w.body()["spec"]["autoscaling"]["metrics"] = {
        "source": "prometheus",
        "prometheusUrl": "http://prom:9090",
    }
    return w


def test_prometheus_source_one_query_round_per_tick(body: dict[str, Any]) -> None:
    from geo_operator.triton import prometheus

    load = {(NS, NAME): prometheus.Load(qps=420.0, p99_ms=150.0, pods_up=1)}
    w = _prometheus_world(body, load)
    w.run(1, 0, 0)
    assert w.kube.scaled == [(NS, NAME, 4)]
    assert w.queries == ["http://prom:9090"]  # type: ignore[attr-defined]
    conds = {c["type"]: c for c in _status(w)["conditions"]}
    assert conds["MetricsAvailable"]["reason"] == "Queried"


def test_prometheus_down_or_partial_holds(body: dict[str, Any]) -> None:
    from geo_operator.triton import prometheus

    w = _prometheus_world(
        body, prometheus.PrometheusError("Prometheus at http://prom:9090: ConnectionError: refused")
    )
    w.run(1, 0, 0)
    assert w.kube.scaled == []
    conds = {c["type"]: c for c in _status(w)["conditions"]}
    assert "refused" in conds["MetricsAvailable"]["message"]
    partial = {(NS, NAME): prometheus.Load(qps=10.0, p99_ms=5.0, pods_up=1)}
    w2 = _prometheus_world(body, partial)
    w2.set_pods(2)
    w2.run(1, 0, 0)
    conds = {c["type"]: c for c in _status(w2)["conditions"]}
    assert "scrapes 1 of 2 ready pods" in conds["MetricsAvailable"]["message"]
    assert w2.kube.scaled == []


def test_loop_exports_its_own_metrics(world: World) -> None:
    from prometheus_client import REGISTRY

    world.run(21, 350, 120)
    labels = {"namespace": NS, "geodeployment": NAME}
    assert REGISTRY.get_sample_value("geo_autoscaler_desired_replicas", labels) == 4
    assert (
        REGISTRY.get_sample_value(
            "geo_autoscaler_decisions_total", {**labels, "action": "scale_out"}
        )
        >= 1
    )
    assert REGISTRY.get_sample_value("geo_autoscaler_metric_errors_total", labels) >= 1
    assert REGISTRY.get_sample_value("geo_autoscaler_tick_seconds_count") >= 21
    # What the alerting rules compare with (builders.alerts): the objective, the bound
    # and the conditions as the status had them at the step.
    spec = models.parse_spec(world.body()["spec"])
    objective = REGISTRY.get_sample_value("geo_objective_p99_milliseconds", labels)
    assert objective == spec.target_p99_ms()
    bound = REGISTRY.get_sample_value("geo_autoscaler_max_replicas", labels)
    assert bound == spec.autoscaling.max_replicas
    active = {**labels, "type": "ScalingActive", "status": "True", "reason": "Active"}
    assert REGISTRY.get_sample_value("geo_geodeployment_condition", active) == 1
    # A deleted GeoDeployment: the autoscaler drops its series, its conditions' too.
    world.scaler.forget((NS, NAME))
    assert REGISTRY.get_sample_value("geo_geodeployment_condition", active) is None
    assert REGISTRY.get_sample_value("geo_autoscaler_desired_replicas", labels) is None


def test_a_condition_flip_replaces_its_series_and_forget_drops_them() -> None:
    from prometheus_client import REGISTRY

    who = {"namespace": "alerts", "geodeployment": "flip"}

    def value(status: str, reason: str) -> float | None:
        labels = {**who, "type": "MetricsAvailable", "status": status, "reason": reason}
        return REGISTRY.get_sample_value("geo_geodeployment_condition", labels)

    described = telemetry.Descriptions()
    described.describe("alerts", "flip", 150, 6, [("MetricsAvailable", "True", "Scraped")])
    assert value("True", "Scraped") == 1
    described.describe("alerts", "flip", 150, 6, [("MetricsAvailable", "False", "MetricsMissing")])
    assert value("True", "Scraped") is None  # one series per condition: no stale "True"
    assert value("False", "MetricsMissing") == 1
    described.describe(
        "alerts", "flip", 150, None, [("MetricsAvailable", "False", "MetricsMissing")]
    )
    assert REGISTRY.get_sample_value("geo_autoscaler_max_replicas", who) is None  # autoscaling off
    described.forget("alerts", "flip")
    assert value("False", "MetricsMissing") is None
    assert REGISTRY.get_sample_value("geo_objective_p99_milliseconds", who) is None


def test_direct_scrape_reads_tritons_queue(world: World) -> None:
    world.set_pods(2)
    world.run(3, 40, 10)
    # Triton's pending-request gauge, summed over the ready pods, reaches the policy.
    world.pending = {"pod0": 7.0, "pod1": 5.0}
    world.now += 1
    obs = world.scaler.observe(world.work(), world.now)
    assert obs.missing is None and obs.queued == 12.0
    # A pod without the gauge (an older Triton): the queue is unknown, not zero.
    world.pending = {"pod0": 7.0}
    world.now += 1
    assert world.scaler.observe(world.work(), world.now).queued is None


def _measured_world(body: dict[str, Any], throughput: float) -> World:
    """No targetQpsPerReplica: the served artifact (int8) has a tuning result in status."""
    w = World(body)
    del w.body()["spec"]["autoscaling"]["targetQpsPerReplica"]
    del w.body()["spec"]["autoscaling"]["targetP99LatencyMs"]
    w.body()["spec"]["objectives"] = {"p99LatencyMs": 200}
    w.body()["status"]["tuning"] = [
        {
            "artifact": "int8",
            "key": "k",
            "attempts": 1,
            "result": {
                "maxBatchSize": 16,
                "throughput": throughput,
                "p99Ms": 80.0,
                "measurements": 3,
                "gridSize": 28,
            },
        }
    ]
    return w


def test_without_a_declared_target_the_measured_capacity_times_utilization_rules(
    body: dict[str, Any],
) -> None:
    w = _measured_world(body, throughput=200.0)  # target 200 x 0.7 = 140
    w.run(31, 350, 120)  # 350 on one replica: above 140 x 1.5 (p99 says nothing new)
    assert w.kube.scaled[0] == (NS, NAME, 3)  # ceil(350 / 140 x 0.9) = 3
    target = _status(w)["autoscaling"]
    assert target["source"] == "measured" and target["effectiveTargetQpsPerReplica"] == 140
    assert target["measuredCapacity"] == 200 and "× utilization 0.7 = 140" in target["reason"]
    active = {c["type"]: c for c in _status(w)["conditions"]}["ScalingActive"]
    assert "target 140 QPS/replica (measured)" in active["message"]


def test_production_slower_than_the_lab_lowers_the_target_within_bounds(
    body: dict[str, Any],
) -> None:
    w = _measured_world(body, throughput=200.0)
    w.body()["spec"]["autoscaling"]["maxReplicas"] = 1  # hold at one replica: it saturates
    w.run(200, 100, 190)  # p99 at 95 % of the objective while serving only half the lab's
    target = _status(w)["autoscaling"]
    assert target["source"] == "learned"
    assert 0.5 <= target["correction"] < 0.6  # converging on 100 / 200, never past it
    assert target["effectiveTargetQpsPerReplica"] < 140


def test_nothing_measured_nothing_declared_scales_on_p99_only(body: dict[str, Any]) -> None:
    w = _measured_world(body, throughput=200.0)
    del w.body()["status"]["tuning"]
    w.run(31, 5000, 20)  # a huge load, but p99 fine: no number says it is too much
    assert w.kube.scaled == []
    assert _status(w)["autoscaling"]["source"] == "unknown"
    w.run(20, 5000, 400)  # p99 breaches: out
    assert w.kube.scaled and w.kube.scaled[0][2] >= 2


def test_during_a_rollout_the_canary_p99_is_not_the_loops_and_the_split_is_kept(
    body: dict[str, Any],
) -> None:
    """A slow canary does not scale the stable out; the total spans both tracks and a
    scale-out keeps the rollout's split (stable 2 + canary 2 at 50 %)."""
    world = World(body)
    world.body()["status"]["rollout"] = {
        "phase": "Progressing",
        "step": 0,
        "weight": 50,
        "canaryHash": "c" * 16,
        "stableHash": "s" * 16,
    }
    world.kube.objects[("Deployment", NS, f"{NAME}-canary")] = {"spec": {"replicas": 1}}
    world.set_pods(2)
    canary_view = world.pods["pod1"]
    world.pods["pod1"] = autoscaler.PodView(
        canary_view.name, canary_view.ready, canary_view.metrics_url, names.CANARY_TRACK
    )

    def canary_replicas(key: tuple[str, str]) -> int | None:
        found = world.kube.objects.get(("Deployment", key[0], f"{key[1]}-canary"))
        return int(found["spec"]["replicas"]) if found else None

    def tick() -> None:
        work = world.scaler.due(
            [copy.deepcopy(world.body())],
            lambda key: list(world.pods.values()),
            world.current,
            world.now,
            canary_replicas,
        )
        for item in work:
            world.scaler.guarded_step(item)

    # The canary's pod is slow (900 ms p99), the stable's fast: nothing scales out.
    for second in range(1, 32):
        world.now = float(second)
        world.counters["pod0"] = (world.counters["pod0"][0] + 40, 5_000.0)
        world.counters["pod1"] = (world.counters["pod1"][0] + 40, 900_000.0)
        tick()
    assert world.kube.scaled == []
    assert world.body()["status"]["lastDecision"]["action"] == "maintain"
    assert telemetry.OBSERVED_P99.labels(NS, NAME)._value.get() == 5.0  # the stable's
    # 400 QPS against 100 per replica on 2: out to 4 in all, split 2 + 2.
    for second in range(32, 64):
        world.now = float(second)
        world.counters["pod0"] = (world.counters["pod0"][0] + 200, 5_000.0)
        world.counters["pod1"] = (world.counters["pod1"][0] + 200, 5_000.0)
        tick()
    assert (NS, NAME, 2) in world.kube.scaled and (NS, f"{NAME}-canary", 2) in world.kube.scaled


# ---- a generative model: the loop reads the engines' vLLM-named metrics


def _engine_text(prompt: float, generated: float, waiting: float, kv: float, slow: float) -> str:
    """Triton's counters and llama_model.py's vllm:* families for model pycode; ``slow``
    first tokens of 0.4 s, the rest 0.02 s (cumulative histogram)."""
    lines = [triton_text(prompt / 100, None, model="pycode").rstrip("\n")]
    for name, value in (
        ("vllm:prompt_tokens_total", prompt),
        ("vllm:generation_tokens_total", generated),
    ):
        lines += [f"# TYPE {name} counter", f'{name}{{model="pycode",version="1"}} {value}']
    for name, value in (("vllm:num_requests_waiting", waiting), ("vllm:kv_cache_usage_perc", kv)):
        lines += [f"# TYPE {name} gauge", f'{name}{{model="pycode",version="1"}} {value}']
    fast = prompt / 100
    for name in ("vllm:time_to_first_token_seconds", "vllm:time_per_output_token_seconds"):
        base = name.removesuffix("_seconds") + "_seconds"
        lines.append(f"# TYPE {base} histogram")
        for le, count in (("0.05", fast), ("0.5", fast + slow), ("+Inf", fast + slow)):
            lines.append(f'{base}_bucket{{model="pycode",version="1",le="{le}"}} {count}')
        lines.append(f'{base}_sum{{model="pycode",version="1"}} {fast * 0.02 + slow * 0.4}')
        lines.append(f'{base}_count{{model="pycode",version="1"}} {fast + slow}')
    return "\n".join(lines) + "\n"


def test_a_generative_model_is_observed_in_tokens_queue_and_cache() -> None:
    import yaml
    from tests.support.paths import ROOT

    from geo_operator.scaling import capacity

    body = yaml.safe_load((ROOT / "manifests" / "examples" / "pycode.yaml").read_text())
    body["metadata"]["namespace"] = NS
    body["spec"]["autoscaling"] = {"enabled": True, "minReplicas": 1, "maxReplicas": 4}
    result = {
        "maxBatchSize": 4,
        "throughput": 1600.0,
        "p99Ms": 5.0,
        "measurements": 2,
        "gridSize": 1,
        "prefillTokensPerSecond": 8000.0,
    }
    body["status"] = {
        "observedGeneration": 1,
        "selectedArtifact": {
            "name": "q4-k-m",
            "precision": "int4",
            "format": "gguf",
            "uri": "http://h/q4",
            "reason": "x",
        },
        "tuning": [{"artifact": "q4-k-m", "key": "k", "attempts": 1, "result": result}],
    }
    spec = models.parse_spec(body["spec"])
    tokens = capacity.token_targets(spec, models.parse_status(body["status"]))
    assert tokens is not None
    assert (tokens.prompt_token_seconds, tokens.generated_token_seconds) == (1 / 8000, 1 / 1600)
    assert (tokens.ttft_p99_ms, tokens.itl_p99_ms, tokens.slots) == (200, 50, 4)
    texts = {"pod0": _engine_text(0, 0, 0, 0.0, 0)}
    kube = FakeKube()
    scaler = autoscaler.Autoscaler(kube, fetch=lambda url: texts[url.split("/")[2]])
    pod = autoscaler.pod_view(
        {
            "metadata": {
                "name": "pod0",
                "namespace": NS,
                "labels": {names.OWNER_LABEL: "pycode"},
                "annotations": {names.METRICS_URL_ANNOTATION: "http://pod0/m"},
            },
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        }
    )
    work = autoscaler.Work((NS, "pycode"), body, spec, (pod,), 1)
    first = scaler.observe(work, 100.0)
    assert first.tokens is None and first.missing is not None  # a rate needs two scrapes
    # 10 s later: 20,000 prompt and 16,000 generated tokens, 3 waiting, the cache 95 % full
    texts["pod0"] = _engine_text(20_000, 16_000, 3, 0.95, 5)
    seen = scaler.observe(work, 110.0)
    assert seen.tokens == tokens and seen.missing is None
    assert (seen.prompt_tps, seen.generated_tps) == (2000.0, 1600.0)
    assert (seen.waiting, seen.kv_usage) == (3, 0.95)
    assert seen.ttft_p99_ms is not None and 50 < seen.ttft_p99_ms <= 500  # in the slow bucket
    decision, _ = policy.decide(spec.autoscaling, seen)
    print(f"\n{decision.action} to {decision.replicas}: {decision.reason}")
    assert decision.action == "scale_out"  # a queue behind a full cache
    assert "token" in decision.reason or "queue" in decision.reason
    # without the measured prefill, no token targets: requests, as before
    del body["status"]["tuning"][0]["result"]["prefillTokensPerSecond"]
    assert capacity.token_targets(spec, models.parse_status(body["status"])) is None


def test_a_spec_is_parsed_once_per_change_and_not_held(
    body: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every GeoDeployment event brings the same spec anew (a status write is one): the
    loop's per-tick check parses it once per change and keeps only its interval (and the
    newest event's spec, not a copy beside it); a step parses the spec when it is due."""
    parsed: list[int] = []
    real = models.parse_spec
    monkeypatch.setattr(models, "parse_spec", lambda raw: parsed.append(1) or real(raw))
    scaler = autoscaler.Autoscaler(FakeKube())
    key = ("ml", "digits")
    interval = scaler.interval_of(key, copy.deepcopy(body))
    assert interval == models.parse_spec(body["spec"]).autoscaling.interval_seconds
    parsed.clear()
    newer = copy.deepcopy(body)
    for _ in range(5):
        assert scaler.interval_of(key, newer) == interval
    assert parsed == [] and scaler._specs[key] == (newer["spec"], interval)
    edited = copy.deepcopy(body)
    edited["spec"]["autoscaling"] = {**edited["spec"].get("autoscaling", {}), "intervalSeconds": 7}
    assert scaler.interval_of(key, edited) == 7 and parsed == [1]
    broken = copy.deepcopy(body)
    broken["spec"]["autoscaling"] = {"intervalSeconds": "soon"}
    assert scaler.interval_of(key, broken) is None
