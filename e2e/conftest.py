"""Fixtures for the end-to-end tests against the local cluster (e2e/cluster/).

The tests drive the cluster the way a user does — `kubectl apply`, `helm
install` — with the cached v1.34 kubectl and helm. They refuse to run against
any kubeconfig but the one `e2e/cluster/up.sh` wrote (context `geo-e2e`, server
on 127.0.0.1), whatever KUBECONFIG says.

The operator runs as a process on this machine (there is no container engine
here), authenticated as the chart's ServiceAccount with a token from the
TokenRequest API, so the chart's RBAC is what it gets.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLUSTER_SCRIPTS = ROOT / "e2e" / "cluster"
CONTEXT = "geo-e2e"
RELEASE = "geo-operator"
OPERATOR_NAMESPACE = "geo-system"
SERVICE_ACCOUNT = "geo-operator"
EXAMPLE = ROOT / "manifests" / "examples" / "digits.yaml"

T = TypeVar("T")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.e2e)


def _lib(expr: str) -> str:
    out = subprocess.run(
        ["bash", "-c", f"source {CLUSTER_SCRIPTS / 'lib.sh'}; {expr}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def wait_for(
    check: Callable[[], T | None], what: str, timeout: float = 60, every: float = 0.5
) -> T:
    """Poll `check` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except subprocess.CalledProcessError as error:
            last = error.stderr  # remembered for the failure message, never a success
        else:
            if result:
                return result
            last = result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@dataclasses.dataclass
class Cluster:
    """The local test cluster, reached with the cached kubectl and helm."""

    kubeconfig: pathlib.Path
    kubectl_bin: str
    helm_bin: str
    directory: pathlib.Path

    def env(self, kubeconfig: pathlib.Path | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(kubeconfig or self.kubeconfig)
        return env

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        kubeconfig: pathlib.Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.kubectl_bin, *args],
            capture_output=True,
            text=True,
            input=input,
            check=check,
            env=self.env(kubeconfig),
            timeout=60,
        )

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        out = self.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.helm_bin, *args],
            capture_output=True,
            text=True,
            check=check,
            env=self.env(),
            timeout=300,
            cwd=ROOT,
        )

    def apply(
        self, obj: dict[str, Any] | str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        text = obj if isinstance(obj, str) else yaml.safe_dump(obj)
        return self.kubectl("apply", "-f", "-", input=text, check=check)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """Bring the cluster up (builds binaries on a cold cache); take it down
    afterwards only if this session started it (a demo cluster stays)."""
    was_up = (
        subprocess.run(
            ["bash", "-c", f"source {CLUSTER_SCRIPTS / 'lib.sh'}; geo_pid_alive kube-apiserver"],
            check=False,
        ).returncode
        == 0
    )
    subprocess.run(["bash", str(CLUSTER_SCRIPTS / "up.sh")], check=True)
    directory = pathlib.Path(_lib('echo "$GEO_CLUSTER_DIR"'))
    kubeconfig = directory / "kubeconfig"
    config = yaml.safe_load(kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    if config.get("current-context") != CONTEXT or not server.startswith("https://127.0.0.1:"):
        pytest.exit(
            f"refusing to run e2e tests: {kubeconfig} is not the local test cluster "
            f"(context {config.get('current-context')!r}, server {server})",
            returncode=3,
        )
    yield Cluster(kubeconfig, _lib("geo_bin kubectl"), _lib("geo_bin helm"), directory)
    if not was_up:
        subprocess.run(["bash", str(CLUSTER_SCRIPTS / "down.sh")], check=False)


def install_chart(cluster: Cluster) -> subprocess.CompletedProcess[str]:
    """A fresh `helm install` of the chart (uninstalling an earlier release first)."""
    cluster.helm("uninstall", RELEASE, "-n", OPERATOR_NAMESPACE, "--wait", check=False)
    return cluster.helm(
        "install",
        RELEASE,
        "charts/geo-operator",
        "-n",
        OPERATOR_NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout",
        "120s",
    )


@pytest.fixture(scope="session")
def chart(cluster: Cluster) -> Iterator[Cluster]:
    """GEO installed with `helm install`, exactly as the README says."""
    install_chart(cluster)
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/geodeployments.geo.ai", "--timeout=60s"
    )
    yield cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OperatorProcess:
    """`geo run` as the chart's ServiceAccount, restartable and killable."""

    def __init__(self, cluster: Cluster, workdir: pathlib.Path) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.kubeconfig = workdir / "operator.kubeconfig"
        self.log = workdir / "operator.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = _free_port()
        self.metrics_port = _free_port()

    def write_kubeconfig(self) -> None:
        token = self.cluster.kubectl(
            "create", "token", SERVICE_ACCOUNT, "-n", OPERATOR_NAMESPACE, "--duration=2h"
        ).stdout.strip()
        admin = yaml.safe_load(self.cluster.kubeconfig.read_text())
        cluster_entry = admin["clusters"][0]
        self.kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [cluster_entry],
                    "users": [{"name": "geo-operator", "user": {"token": token}}],
                    "contexts": [
                        {
                            "name": "geo-operator",
                            "context": {"cluster": cluster_entry["name"], "user": "geo-operator"},
                        }
                    ],
                    "current-context": "geo-operator",
                }
            )
        )

    def start(self) -> None:
        if not self.kubeconfig.exists():
            self.write_kubeconfig()
        env = self.cluster.env(self.kubeconfig)
        env["PYTHONUNBUFFERED"] = "1"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "geo_operator.cli",
                    "run",
                    "--log-level=debug",
                    f"--liveness=http://127.0.0.1:{self.port}/healthz",
                    f"--metrics-port={self.metrics_port}",
                    "--metrics-address=127.0.0.1",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        wait_for(self.healthy, "the operator's liveness endpoint", timeout=60)

    def healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"operator exited {self.process.returncode}:\n{self.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as when a node dies."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="session")
def operator(chart: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(chart, tmp_path_factory.mktemp("operator"))
    proc.start()
    yield proc
    proc.stop()
    print(f"\n--- operator log tail ---\n{proc.tail(20)}")


@pytest.fixture
def running_operator(operator: OperatorProcess) -> OperatorProcess:
    """The session's operator, started again if an earlier test stopped it."""
    if operator.process is None or operator.process.poll() is not None:
        # A chart reinstall recreates the ServiceAccount, voiding the old token.
        operator.write_kubeconfig()
        operator.start()
    return operator


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards."""
    name = "e2e-" + request.node.name.replace("_", "-").lower()[:40].strip("-")
    cluster.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=true")
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def example(namespace: str, **spec_over: Any) -> dict[str, Any]:
    """The example GeoDeployment, in `namespace`, with top-level spec overrides."""
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"]["namespace"] = namespace
    body["spec"].update(spec_over)
    return dict(body)
