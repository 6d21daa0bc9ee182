"""Pods that cannot run, and what GEO says of them: the kubelet runner reports each failure
in the pod's status as a kubelet does (e2e/harness/kubelet/podstatus.py), and GEO's
GeoDeployment must tell the user why it does not serve.

* An artifact URI that answers 404 (a local HTTP server on 127.0.0.1): the fetch-artifact
  init container terminates with fetch.py's words; GEO says Ready=False
  ArtifactFetchFailed with them, and a Warning Event.
* spec.model.s3.secretName naming a Secret that does not exist, then one that lacks a key:
  the init container waits in CreateContainerConfigError with the kubelet's words; GEO
  says ArtifactFetchFailed with them, anew when they change.
* A response cache Triton cannot allocate: Triton exits at start (CrashLoopBackOff); GEO
  says Ready=False NoReadyReplicas.

In each the pod must not be Ready: kwok marks it Ready before the runner gets to it, and
the runner must take that back.
"""

from __future__ import annotations

import http.server
import json
import pathlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from e2e.harness import Cluster, OperatorProcess, example, wait_for
from e2e.harness.kubelet import KubeletRunner

from geo_operator.api import names

pytestmark = pytest.mark.triton

SECRET = "s3-keys"
CACHE_BYTES = 64 * 2**30  # spec.triton.responseCache.sizeBytes' maximum


class _NotFound(http.server.BaseHTTPRequestHandler):
    """Answers every GET 404, with a one-line plain-text body (what fetch.py quotes)."""

    def do_GET(self) -> None:
        body = b"no such artifact\n"
        self.send_response(404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def not_found() -> Iterator[str]:
    """A local HTTP server where nothing exists: its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _condition(body: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((body or {}).get("status") or {}).get("conditions", []):
        if c["type"] == type_:
            return dict(c)
    return None


def _ready_says(cluster: Cluster, namespace: str, reason: str, words: str) -> dict[str, Any] | None:
    """The GeoDeployment once its Ready is False with ``reason`` and ``words`` in its message."""
    body = cluster.get("geod", "digits", namespace)
    ready = _condition(body, "Ready")
    if (
        ready
        and (ready["status"], ready["reason"]) == ("False", reason)
        and words in ready["message"]
    ):
        return ready
    return None


def _warnings(cluster: Cluster, namespace: str, reason: str) -> list[str]:
    items = cluster.json("get", "events", "-n", namespace)["items"]
    return [e["message"] for e in items if e["type"] == "Warning" and e["reason"] == reason]


def _pods(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    selector = f"{names.OWNER_LABEL}=digits"
    return list(cluster.json("get", "pods", "-n", namespace, "-l", selector)["items"])


def _assert_never_ready_again(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    """Every Triton pod of the namespace not Ready (nor its Deployment's replicas), and still
    not a few seconds later, once the runner has given up its tries."""
    for _ in range(2):
        pods = _pods(cluster, namespace)
        assert pods, "no Triton pod"
        for pod in pods:
            conds = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
            assert conds.get("Ready") == "False", (pod["metadata"]["name"], pod["status"])
            assert conds.get("ContainersReady") == "False", pod["status"]
        deployment = cluster.get("deployment", "digits", namespace) or {}
        assert not (deployment.get("status") or {}).get("readyReplicas"), deployment.get("status")
        time.sleep(8)
    return pods


def _init_status(pod: dict[str, Any]) -> dict[str, Any]:
    (status,) = [
        s
        for s in pod["status"].get("initContainerStatuses", [])
        if s["name"] == names.FETCH_CONTAINER
    ]
    return dict(status)


def _no_server(runner: KubeletRunner) -> None:
    assert not any(i.ready for i in runner.servers().values()), runner.servers()


def test_an_artifact_that_404s_says_artifact_fetch_failed(
    operator: OperatorProcess, namespace: str, runner: KubeletRunner, not_found: str
) -> None:
    cluster = operator.cluster
    started = time.monotonic()
    body = example(namespace)
    for artifact in body["spec"]["model"]["artifacts"]:
        artifact["uri"] = f"{not_found}/digits/{artifact['name']}/model.onnx"
    cluster.apply(body)
    pod = wait_for(lambda: _pods(cluster, namespace), "the Triton pod", timeout=60)[0]
    (uri,) = [
        e["value"]
        for c in pod["spec"]["initContainers"]
        for e in c.get("env", [])
        if e["name"] == "ARTIFACT_URI"
    ]
    words = f"fetch {uri} failed: {uri}: HTTP 404 Not Found: no such artifact"

    ready = wait_for(
        lambda: _ready_says(cluster, namespace, "ArtifactFetchFailed", words),
        "Ready=False ArtifactFetchFailed with the fetcher's words",
        timeout=90,
    )
    took = time.monotonic() - started
    assert ready["message"].startswith("0 of 1 Triton pods ready: pod "), ready
    wait_for(
        lambda: any(words in w for w in _warnings(cluster, namespace, "ArtifactFetchFailed")),
        "a Warning Event with the fetcher's words",
    )

    (pod,) = _assert_never_ready_again(cluster, namespace)
    terminated = _init_status(pod)["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"], terminated["message"]) == (
        1,
        "Error",
        words,
    )
    (triton,) = pod["status"]["containerStatuses"]
    assert triton["state"] == {"waiting": {"reason": "PodInitializing"}} and not triton["ready"]
    _no_server(runner)
    print(f"\n[failures] 404: Ready=False ArtifactFetchFailed {took:.1f} s after the apply")


def test_a_missing_secret_says_create_container_config_error(
    operator: OperatorProcess, namespace: str, runner: KubeletRunner, not_found: str
) -> None:
    cluster = operator.cluster
    started = time.monotonic()
    body = example(namespace)
    for artifact in body["spec"]["model"]["artifacts"]:
        artifact["uri"] = f"s3://models/digits/{artifact['name']}/model.onnx"
    body["spec"]["model"]["s3"] = {"endpoint": f"{not_found}/", "secretName": SECRET}
    cluster.apply(body)

    missing = f'secret "{SECRET}" not found'
    wait_for(
        lambda: _ready_says(cluster, namespace, "ArtifactFetchFailed", missing),
        "Ready=False ArtifactFetchFailed: the Secret is missing",
        timeout=90,
    )
    took = time.monotonic() - started
    wait_for(
        lambda: any(missing in w for w in _warnings(cluster, namespace, "ArtifactFetchFailed")),
        "a Warning Event with the kubelet's words",
    )
    (pod,) = _assert_never_ready_again(cluster, namespace)
    assert _init_status(pod)["state"] == {
        "waiting": {"reason": "CreateContainerConfigError", "message": missing}
    }

    # The Secret comes, without its second key: the kubelet (and the runner) look again.
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": namespace},
        "stringData": {"AWS_ACCESS_KEY_ID": "geo-test-access-key"},
    }
    cluster.apply(json.dumps(secret))
    lacking = f"couldn't find key AWS_SECRET_ACCESS_KEY in Secret {namespace}/{SECRET}"
    wait_for(
        lambda: _ready_says(cluster, namespace, "ArtifactFetchFailed", lacking),
        "Ready=False ArtifactFetchFailed: the Secret lacks a key",
        timeout=60,
    )
    wait_for(
        lambda: any(lacking in w for w in _warnings(cluster, namespace, "ArtifactFetchFailed")),
        "a Warning Event with the new words",
    )
    (pod,) = _assert_never_ready_again(cluster, namespace)
    assert _init_status(pod)["state"]["waiting"]["message"] == lacking
    _no_server(runner)
    print(f"\n[failures] missing Secret: Ready=False ArtifactFetchFailed {took:.1f} s after apply")


def _memory_bytes() -> int:
    """This machine's RAM and swap: a larger cache would be allocated, not refused."""
    fields = dict(
        line.split(":", 1) for line in pathlib.Path("/proc/meminfo").read_text().splitlines()
    )
    return sum(int(fields[k].split()[0]) * 1024 for k in ("MemTotal", "SwapTotal"))


@pytest.mark.skipif(
    _memory_bytes() >= CACHE_BYTES, reason="this machine could allocate a 64 GiB response cache"
)
def test_a_triton_that_cannot_start_says_no_ready_replicas(
    operator: OperatorProcess, namespace: str, runner: KubeletRunner
) -> None:
    cluster = operator.cluster
    started = time.monotonic()
    body = example(namespace)
    body["spec"]["triton"]["responseCache"] = {"enabled": True, "sizeBytes": CACHE_BYTES}
    cluster.apply(body)

    def crashed() -> dict[str, Any] | None:
        for pod in _pods(cluster, namespace):
            for c in pod["status"].get("containerStatuses", []):
                if c["name"] == names.TRITON_CONTAINER and c.get("lastState", {}).get("terminated"):
                    return pod
        return None

    pod = wait_for(crashed, "the triton container crash-looping", timeout=120)
    (triton,) = pod["status"]["containerStatuses"]
    assert triton["state"]["waiting"]["reason"] == "CrashLoopBackOff", triton
    assert triton["lastState"]["terminated"]["exitCode"] != 0, triton
    assert triton["lastState"]["terminated"]["reason"] == "Error", triton
    assert not triton["ready"]
    ready = wait_for(
        lambda: _ready_says(cluster, namespace, "NoReadyReplicas", "0 of 1 Triton pods ready"),
        "Ready=False NoReadyReplicas",
        timeout=60,
    )
    took = time.monotonic() - started
    assert "the model failed to load" in ready["message"], ready
    _assert_never_ready_again(cluster, namespace)
    # Not the moment before kwok made the pod Ready: still so, once it was taken back.
    assert _ready_says(cluster, namespace, "NoReadyReplicas", "0 of 1 Triton pods ready")
    _no_server(runner)
    name = pod["metadata"]["name"]
    log = (runner.pod_dir((namespace, name)) / "triton.log").read_text(errors="replace")
    assert "Failed to initialize LocalCache: failed to allocate buffer" in log
    print(f"\n[failures] cache: Ready=False NoReadyReplicas {took:.1f} s after the apply")
