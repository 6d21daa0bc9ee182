"""Tenants apart (issue 31): one GeoDeployment's slow work never delays another's.

Two GeoDeployments in two namespaces each roll out a canary, judged every 5 s. Tenant
A's held-out set (`model.evaluation`) is on a server that accepts the connection and
never answers; tenant B's is a real file, scored through its canary's real Triton (540
rows in batches of 8: 68 requests the operator sends itself). Before, the held-out file was fetched
inside A's reconcile (30 s a read, five attempts) and due reconciles ran one after
another, so B's analyses stopped for minutes. Now the fetch runs off the reconcile
path (controller/background.py) and due reconciles run side by side: B's analyses
keep their interval, and A's status says its accuracy gate waits on the fetch. With no
user traffic, B's scorer's 68 requests (minRequests 40) must not pass B's step either
(issue 31.1): the window counts from the scorer's end.

Two cores: four real tritonservers (a stable and a canary pod each), no load; the
analyses are inconclusive (too few requests) and the deadline is long, so both stay
Progressing while B's `lastAnalysisTime` is watched.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from e2e.harness import ROOT, Cluster, OperatorProcess, example, fresh_namespace, wait_for
from e2e.harness.kubelet import KubeletRunner
from e2e.loadgen import ready_servers

from geo_operator.api import names

NAME = "digits"
HELD_OUT = ROOT / "examples" / "digits-family" / "artifacts" / "heldout.npz"
INTERVAL = 5
WATCH_SECONDS = 50


class Hang:
    """A TCP server on 127.0.0.1 that accepts every connection and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.held: list[socket.socket] = []
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def stop(self) -> None:
        self.running = False
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def hang() -> Iterator[Hang]:
    server = Hang()
    yield server
    server.stop()


def _body(namespace: str) -> dict[str, Any]:
    body = example(namespace, replicas=1)
    body["spec"]["rollout"] = {
        "steps": [50, 100],
        "analysisIntervalSeconds": INTERVAL,
        "minRequests": 40,
        "progressDeadlineSeconds": 600,
    }
    body["spec"]["autoscaling"] = {"enabled": False}
    return body


def _rollout(cluster: Cluster, namespace: str) -> dict[str, Any]:
    status = (cluster.get("geod", NAME, namespace) or {}).get("status") or {}
    return dict(status.get("rollout") or {})


def _change(cluster: Cluster, namespace: str) -> None:
    patch = {"spec": {"triton": {"dynamicBatching": {"maxQueueDelayMicroseconds": 2000}}}}
    cluster.kubectl("patch", "geod", NAME, "-n", namespace, "--type=merge", "-p", json.dumps(patch))


@pytest.mark.all_namespaces
def test_a_held_out_url_that_hangs_delays_no_other_tenants_analyses(
    operator: OperatorProcess, runner: KubeletRunner, namespace: str, hang: Hang
) -> None:
    cluster = operator.cluster
    other = fresh_namespace(cluster, f"{namespace[:50]}-b")
    try:
        a, b = _body(namespace), _body(other)
        a["spec"]["model"]["evaluation"] = {"uri": f"http://127.0.0.1:{hang.port}/heldout.npz"}
        b["spec"]["model"]["evaluation"] = {"uri": HELD_OUT.as_uri()}
        for body in (a, b):
            cluster.apply(body)
        wait_for(
            lambda: (
                all(_rollout(cluster, ns).get("phase") == "Promoted" for ns in (namespace, other))
                and len(ready_servers(runner.pods_json, NAME)) >= 2
            ),
            "both tenants serving their first deployment",
            timeout=180,
        )
        for ns in (namespace, other):
            _change(cluster, ns)
        wait_for(
            lambda: all(
                _rollout(cluster, ns).get("phase") == "Progressing"
                and _rollout(cluster, ns).get("lastAnalysisTime")
                for ns in (namespace, other)
            ),
            "both canaries analysed once",
            timeout=180,
        )
        seen: list[float] = []
        watch_until = time.monotonic() + WATCH_SECONDS
        while time.monotonic() < watch_until:
            stamp = _rollout(cluster, other).get("lastAnalysisTime")
            if stamp:
                at = names.parse_time(stamp)
                if not seen or at != seen[-1]:
                    seen.append(at)
            time.sleep(0.5)
        gaps = [later - earlier for earlier, later in itertools.pairwise(seen)]
        a_rollout = _rollout(cluster, namespace)
        print(
            f"\ntenant B: {len(seen)} analyses in {WATCH_SECONDS} s, gaps {gaps}; tenant A: "
            f"{a_rollout.get('phase')}, {len(hang.held)} connections held, "
            f"reason {a_rollout.get('reason')!r}"
        )
        assert hang.held, "tenant A's held-out fetch never reached the hanging server"
        assert len(seen) >= WATCH_SECONDS // INTERVAL - 2, f"B analysed only at {seen}"
        # One interval late at most (timestamps are whole seconds; a tick every 2 s).
        assert max(gaps) <= 2 * INTERVAL + 1, f"B's analyses waited: gaps {gaps}"
        assert a_rollout.get("phase") == "Progressing"
        b_rollout = _rollout(cluster, other)
        print(f"tenant B: step {b_rollout.get('step')}, canary {b_rollout.get('canary')}")
        assert (b_rollout.get("phase"), b_rollout.get("step")) == ("Progressing", 0)
        assert (b_rollout.get("canary") or {}).get("samples") == 540  # scored, and ...
        assert (b_rollout.get("canary") or {}).get("requests", 0) < 40  # ... not counted
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)
