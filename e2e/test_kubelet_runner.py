"""The kubelet runner (e2e/harness/kubelet/) on the local cluster: real Triton per kwok pod.

One GeoDeployment is applied, scaled 1 -> 2 -> 1 and deleted; after each step the
runner must serve exactly the Running pods with a real tritonserver, publish them
in file_sd.json, and leave no process of a removed pod behind. The first server
must classify the held-out digits exactly as onnxruntime does on the same ONNX
file, and the pod must point at its metrics with the `geo.ai/metrics-url`
annotation.

The runner here serves every namespace (`@pytest.mark.all_namespaces`), as the
standalone `python e2e/kubelet_runner.py` does; the assertions look at the test's
namespace only.
"""

from __future__ import annotations

import json
import pathlib
import time
import urllib.request
from typing import Any

import numpy as np
import onnxruntime
import pytest
import tritonclient.http as httpclient
from e2e.harness import Cluster, OperatorProcess, example, wait_for
from e2e.harness.kubelet import (
    ARTIFACTS,
    METRICS_URL_ANNOTATION,
    KubeletRunner,
    PodKey,
    ServerInfo,
)

pytestmark = pytest.mark.triton


def _ours(servers: dict[PodKey, ServerInfo], namespace: str) -> dict[PodKey, ServerInfo]:
    return {k: v for k, v in servers.items() if k[0] == namespace}


def _ready_count(runner: KubeletRunner, namespace: str, count: int) -> dict[PodKey, ServerInfo]:
    """Wait until exactly `count` servers in `namespace`, all ready; return them."""

    def settled(servers: dict[PodKey, ServerInfo]) -> dict[PodKey, ServerInfo] | None:
        ours = _ours(servers, namespace)
        if len(ours) == count and all(i.ready for i in ours.values()):
            return ours
        return None

    if count == 0:
        runner.wait_until(lambda s: not _ours(s, namespace), timeout=90)
        return {}
    return runner.wait_until(settled, timeout=90)


def _running_pods(cluster: Cluster, namespace: str) -> set[PodKey]:
    pods = cluster.json("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/instance=digits")
    return {
        (namespace, p["metadata"]["name"])
        for p in pods["items"]
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    }


def _file_sd(runner: KubeletRunner, namespace: str) -> list[dict[str, Any]]:
    groups = json.loads(runner.file_sd_json.read_text())
    return [g for g in groups if g["labels"]["namespace"] == namespace]


def _expect_file_sd(
    runner: KubeletRunner, namespace: str, servers: dict[PodKey, ServerInfo]
) -> None:
    expected = sorted(
        (
            i.metrics,
            {"namespace": i.namespace, "pod": i.pod, "geodeployment": "digits", "track": "stable"},
        )
        for i in servers.values()
    )
    groups = _file_sd(runner, namespace)
    assert all(len(g["targets"]) == 1 for g in groups), groups
    assert sorted((g["targets"][0], g["labels"]) for g in groups) == expected


def _process_gone(pid: int) -> bool:
    """No live process is `pid` or in its process group (the server's python stubs)."""
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        # Fields after the command: state ppid pgrp ...; zombies hold nothing.
        if fields[0] != "Z" and (int(entry.name) == pid or int(fields[2]) == pid):
            return False
    return True


def _rss_mib(pid: int) -> float:
    """Resident memory of the server and its stubs (its process group), in MiB."""
    total = 0
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pid:
                continue
            status = (entry / "status").read_text()
        except OSError:
            continue
        total += next(
            (int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmRSS:")), 0
        )
    return total / 1024


def _classify(url: str, x: np.ndarray) -> np.ndarray:
    client = httpclient.InferenceServerClient(url)
    try:
        labels = []
        for i in range(0, len(x), 32):
            batch = x[i : i + 32]
            tensor = httpclient.InferInput("input", list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch)
            result = client.infer(
                "digits", [tensor], outputs=[httpclient.InferRequestedOutput("label")]
            )
            labels.append(np.asarray(result.as_numpy("label")).reshape(-1))
        return np.concatenate(labels)
    finally:
        # Triton waits for open connections before it exits: don't slow the scale-down.
        client.close()


@pytest.mark.all_namespaces
def test_runner_serves_every_running_pod_with_real_triton(
    operator: OperatorProcess, namespace: str, runner: KubeletRunner
) -> None:
    cluster = operator.cluster
    began = time.monotonic()
    cluster.apply(example(namespace, replicas=1, autoscaling={"enabled": False}))

    # One pod, one real Triton serving the artifact the operator chose.
    servers = _ready_count(runner, namespace, 1)
    ((key, info),) = servers.items()
    assert set(servers) == _running_pods(cluster, namespace)
    assert (info.geodeployment, info.model, info.max_batch_size) == ("digits", "digits", 32)
    print(
        f"\nfirst server ready {time.monotonic() - began:.1f}s after apply "
        f"(runner: {info.startup_seconds:.1f}s), RSS {_rss_mib(info.pid or 0):.0f} MiB"
    )
    held_out = np.load(ARTIFACTS / "heldout.npz")
    x = held_out["x"].astype(np.float32)
    session = onnxruntime.InferenceSession(
        str(ARTIFACTS / info.artifact / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    expected = session.run(["label"], {"input": x})[0].reshape(-1)
    labels = _classify(info.http, x)
    assert (labels == expected).all()
    assert float((labels == held_out["y"]).mean()) > 0.95

    # The pod says where its metrics are; they carry the summary latencies.
    def annotated() -> str | None:
        pod = cluster.get("pod", key[1], namespace) or {}
        return (pod.get("metadata", {}).get("annotations") or {}).get(METRICS_URL_ANNOTATION)

    url = wait_for(annotated, "the geo.ai/metrics-url annotation", timeout=30)
    assert url == info.metrics_url
    with urllib.request.urlopen(url, timeout=5) as response:
        assert "nv_inference_request_summary_us" in response.read().decode()
    _expect_file_sd(runner, namespace, servers)

    # Scale out: a second real server.
    cluster.kubectl("scale", "geod/digits", "-n", namespace, "--replicas=2")
    servers = _ready_count(runner, namespace, 2)
    assert set(servers) == _running_pods(cluster, namespace)
    assert len({i.pid for i in servers.values()}) == 2
    _expect_file_sd(runner, namespace, servers)
    rss = ", ".join(f"{_rss_mib(i.pid or 0):.0f}" for i in servers.values())
    print(f"two servers: startup {[i.startup_seconds for i in servers.values()]}, RSS {rss} MiB")

    # Scale in: the removed pod's server stops, process group and all.
    cluster.kubectl("scale", "geod/digits", "-n", namespace, "--replicas=1")
    left = _ready_count(runner, namespace, 1)
    (removed,) = (i for k, i in servers.items() if k not in left)
    assert removed.pid is not None
    wait_for(lambda: _process_gone(removed.pid or 0), f"tritonserver pid {removed.pid} to exit")
    wait_for(lambda: set(left) == _running_pods(cluster, namespace), "one Running pod")
    _expect_file_sd(runner, namespace, left)

    # Delete: no server left.
    (last,) = left.values()
    cluster.kubectl("delete", "geod", "digits", "-n", namespace, "--wait=true", "--timeout=60s")
    _ready_count(runner, namespace, 0)
    wait_for(lambda: _process_gone(last.pid or 0), f"tritonserver pid {last.pid} to exit")
    assert _file_sd(runner, namespace) == []
    print(f"whole test {time.monotonic() - began:.1f}s")
