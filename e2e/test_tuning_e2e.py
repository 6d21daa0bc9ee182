"""Batch tuning in the cluster, for real: the operator's Job, a real Triton, the real `geo tune`.

`spec.triton.maxBatchSize: 0` makes the operator run a tuning Job. kwok schedules
its pod and marks it Running (kwok's pod-complete stage leaves GEO's tuning pods
alone, see e2e/cluster/build.sh); the kubelet runner then plays the kubelet: a
real tritonserver in explicit model-control mode for the Triton sidecar, the real
`geo tune` (this venv's) with the pod's own args for the `tune` container, and
the pod reported terminated with its exit code and termination message. The Job
controller completes or fails the Job; the operator reads the result.

Each candidate artifact is measured by its own Job: the tuned story runs the
example's fp32 and int8 (two Jobs, two real Tritons), and selection then compares
the measured figures. Kept short for CI: 3 batch sizes x 2 delays, 2 load levels
of 1 s each.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import tritonclient.http as httpclient
from e2e.harness import Cluster, OperatorProcess, example, wait_for
from e2e.harness.kubelet import KubeletRunner, ServerInfo

from geo_operator.api import names
from geo_operator.builders import plan


def _tuned(
    namespace: str, artifacts: tuple[str, ...] = ("fp32", "int8"), **batch_tuning: Any
) -> dict[str, Any]:
    body = example(namespace)
    model = body["spec"]["model"]
    model["artifacts"] = [a for a in model["artifacts"] if a["name"] in artifacts]
    body["spec"]["triton"]["maxBatchSize"] = 0
    # The tuned configuration rolls to every pod at once: these stories are about tuning
    # (with no traffic a canary would wait; e2e/test_rollout_e2e.py has the canaries).
    body["spec"]["rollout"] = {"strategy": "rolling"}
    body["spec"]["batchTuning"] = {
        "candidates": [1, 4, 16],
        "queueDelaysMicroseconds": [0, 500],
        "concurrency": [1, 8],
        "secondsPerLevel": 1,
        "latencyBudgetMs": 200,
        "timeoutSeconds": 120,
        "retryBackoffSeconds": 4,
        **batch_tuning,
    }
    return body


def _status(cluster: Cluster, namespace: str) -> dict[str, Any]:
    return dict((cluster.get("geod", "digits", namespace) or {}).get("status") or {})


def _batch_tuned(status: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == "BatchTuned"), {})


def _serving(servers: dict[Any, ServerInfo], max_batch_size: int) -> list[ServerInfo]:
    return [
        i
        for i in servers.values()
        if i.ready and "-tune-" not in i.pod and i.max_batch_size == max_batch_size
    ]


def _jobs(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    items = cluster.json("get", "jobs", "-n", namespace, "-l", f"{names.TUNING_FOR_LABEL}=digits")[
        "items"
    ]
    return sorted(items, key=lambda j: j["metadata"]["creationTimestamp"])


def _finished_at(job: dict[str, Any]) -> float | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c["type"] in ("Complete", "Failed") and c["status"] == "True":
            return names.parse_time(c["lastTransitionTime"])
    return None


def test_tuning_job_measures_and_the_deployment_rolls_to_its_choice(
    operator: OperatorProcess, runner: KubeletRunner, namespace: str
) -> None:
    cluster = operator.cluster
    cluster.apply(_tuned(namespace))

    # Meanwhile the safe default serves, on a real Triton.
    wait_for(
        lambda: _batch_tuned(_status(cluster, namespace)).get("reason") == "Tuning",
        "BatchTuned=False (Tuning)",
        timeout=60,
    )
    runner.wait_until(lambda s: _serving(s, plan.UNTUNED_MAX_BATCH_SIZE), timeout=90)

    def measured(s: dict[str, Any]) -> bool:
        runs = s.get("tuning") or []
        return len(runs) == 2 and all("result" in r for r in runs)

    status = wait_for(
        lambda: (
            (s := _status(cluster, namespace))
            and _batch_tuned(s).get("status") == "True"
            and measured(s)
            and s
        ),
        "BatchTuned=True with both candidates measured",
        timeout=300,
    )
    runs = {r["artifact"]: r for r in status["tuning"]}
    assert sorted(runs) == ["fp32", "int8"]
    chosen = status["selectedArtifact"]["name"]
    selected = next(c for c in status["conditions"] if c["type"] == "ArtifactSelected")
    assert "latency measured throughput" in selected["message"]
    for artifact, run in runs.items():
        figures = run["result"]
        assert figures["throughput"] > 0 and figures["p99Ms"] <= 200
        assert (
            f"{artifact}: {figures['throughput']:.0f} req/s at p99 {figures['p99Ms']:.1f} ms"
            in selected["message"]
        )
    print(f"\nArtifactSelected: {selected['message']}")
    run = runs[chosen]
    result = run["result"]
    size = result["maxBatchSize"]
    assert size in (1, 4, 16) and result["throughput"] > 0
    assert result["p99Ms"] <= 200 and result["gridSize"] == 6
    assert 1 <= result["measurements"] <= 6
    condition = _batch_tuned(status)
    assert condition["reason"] == "Measured"
    assert f"max_batch_size {size}, " in condition["message"]
    assert "req/s at p99" in condition["message"] and "of a 6-config grid" in condition["message"]
    assert status["maxBatchSize"] == size

    # Each Job completed, and its pod's termination message is what status holds.
    jobs = _jobs(cluster, namespace)
    assert sorted(j["metadata"]["name"] for j in jobs) == sorted(r["job"] for r in runs.values())
    for run_ in runs.values():
        job = next(j for j in jobs if j["metadata"]["name"] == run_["job"])
        assert any(c["type"] == "Complete" for c in job["status"]["conditions"])
        pods = cluster.json(
            "get", "pods", "-n", namespace, "-l", f"batch.kubernetes.io/job-name={run_['job']}"
        )["items"]
        terminated = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
        assert terminated["exitCode"] == 0
        assert json.loads(terminated["message"]) == run_["result"]

    # The ConfigMap carries it, and the pods rolled onto it: Triton serves it.
    config = cluster.get("configmap", "digits-model", namespace)
    assert config is not None and f"max_batch_size: {size}\n" in config["data"]["config.pbtxt"]
    (info, *_) = runner.wait_until(lambda s: _serving(s, size), timeout=120)
    assert f"/{chosen}/" in info.uri  # the chosen artifact serves, with its own tuning
    client = httpclient.InferenceServerClient(info.http)
    try:
        served = client.get_model_config("digits")
    finally:
        client.close()
    assert int(served["max_batch_size"]) == size
    delay = result.get("maxQueueDelayMicroseconds")
    if delay is None:
        assert not served.get("dynamic_batching")
    else:
        assert int(served["dynamic_batching"]["max_queue_delay_microseconds"]) == delay
    print(f"\nBatchTuned: {condition['message']}")
    events = cluster.json("get", "events", "-n", namespace)["items"]
    assert {"TuningStarted", "Tuned", "Rolling"} <= {e["reason"] for e in events}


def test_failed_tuning_keeps_the_safe_default_and_retries_with_backoff(
    operator: OperatorProcess, runner: KubeletRunner, namespace: str
) -> None:
    cluster = operator.cluster
    # No configuration can keep p99 within 1 microsecond: `geo tune` exits 1 and says so.
    cluster.apply(
        _tuned(
            namespace,
            ("int8",),  # one candidate: one Job at a time, so the gaps are its back-off
            latencyBudgetMs=0.001,
            candidates=[1, 4],
            queueDelaysMicroseconds=[0],
            concurrency=[1],
            secondsPerLevel=0.5,
            retryBackoffSeconds=4,
        )
    )
    status = wait_for(
        lambda: (
            (s := _status(cluster, namespace))
            and ((s.get("tuning") or [{}])[0]).get("failures", 0) >= 3
            and s
        ),
        "three failed tuning attempts",
        timeout=240,
    )
    condition = _batch_tuned(status)
    assert condition["status"] == "False"
    if condition["reason"] == "TuningFailed":
        assert "no configuration kept p99 within 0.001 ms" in condition["message"]
        assert "serving max_batch_size 8 meanwhile" in condition["message"]
    else:  # read between a failure and the next attempt's start: the retry is running
        assert condition["reason"] == "Tuning" and "previous attempt failed" in condition["message"]
    assert status["maxBatchSize"] == plan.UNTUNED_MAX_BATCH_SIZE
    config = cluster.get("configmap", "digits-model", namespace)
    assert config is not None and "max_batch_size: 8\n" in config["data"]["config.pbtxt"]
    runner.wait_until(lambda s: _serving(s, plan.UNTUNED_MAX_BATCH_SIZE), timeout=60)

    # Never a tight loop: each attempt starts only after the back-off, which doubles.
    jobs = _jobs(cluster, namespace)
    assert len(jobs) >= 3
    gaps = []
    for before, after in itertools.pairwise(jobs):
        failed = _finished_at(before)
        assert failed is not None, before["metadata"]["name"]
        gaps.append(names.parse_time(after["metadata"]["creationTimestamp"]) - failed)
    print(f"\nseconds from a failed Job to the next one: {gaps}")
    # Back-off 4 s then 8 s; timestamps have 1 s resolution.
    assert gaps[0] >= 4 - 1 and gaps[1] >= 8 - 1, gaps
    assert gaps[0] <= 4 + 15 and gaps[1] <= 8 + 15, gaps
    events = cluster.json("get", "events", "-n", namespace)["items"]
    warnings = [e for e in events if e["reason"] == "TuningFailed"]
    assert warnings and all(e["type"] == "Warning" for e in warnings)
