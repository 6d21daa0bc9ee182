"""The local test cluster (e2e/cluster/) and GEO on it, for the e2e tests and the demo.

The tests drive the cluster the way a user does — `kubectl apply`, `helm
install` — with the cached v1.34 kubectl and helm. `up()` refuses any
kubeconfig but the one `e2e/cluster/up.sh` wrote (context `geo-e2e`, server on
127.0.0.1), whatever KUBECONFIG says. The cluster's ports and directory come
from the GEO_* variables of e2e/cluster/lib.sh, so two checkouts can each run one.

The operator runs as a process on this machine (there is no container engine
here), authenticated as the chart's ServiceAccount with a token from the
TokenRequest API, so the chart's RBAC is what it gets; its ports are free ones.

Nothing here depends on pytest: e2e/harness/fixtures.py wraps it in fixtures.
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
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLUSTER_SCRIPTS = ROOT / "e2e" / "cluster"
CONTEXT = "geo-e2e"
RELEASE = "geo-operator"
OPERATOR_NAMESPACE = "geo-system"
SERVICE_ACCOUNT = "geo-operator"
CHART = "charts/geo-operator"
CRD = "geodeployments.geo.ai"
EXAMPLE = ROOT / "manifests" / "examples" / "digits.yaml"
# Every namespace the e2e suite makes enforces the `restricted` Pod Security Standard
# (the API server's PodSecurity admission refuses a pod that breaks it): GEO's Triton,
# tuning and operator pods must all be admitted there.
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
}

T = TypeVar("T")


class NotTheTestCluster(RuntimeError):
    """The kubeconfig up.sh left is not the local test cluster's."""


def lib(expr: str) -> str:
    """The output of `expr` run after sourcing e2e/cluster/lib.sh (same environment)."""
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

    def ready(self) -> bool:
        """kube-apiserver answers /readyz."""
        out = self.kubectl("get", "--raw", "/readyz", check=False)
        return out.returncode == 0 and out.stdout.strip() == "ok"


def is_up() -> bool:
    """The cluster of this environment (GEO_CLUSTER_DIR) runs its kube-apiserver."""
    return (
        subprocess.run(
            ["bash", "-c", f"source {CLUSTER_SCRIPTS / 'lib.sh'}; geo_pid_alive kube-apiserver"],
            check=False,
        ).returncode
        == 0
    )


def up() -> Cluster:
    """Bring the cluster up (builds binaries on a cold cache; <1 s when it is up)."""
    subprocess.run(["bash", str(CLUSTER_SCRIPTS / "up.sh")], check=True)
    directory = pathlib.Path(lib('echo "$GEO_CLUSTER_DIR"'))
    kubeconfig = directory / "kubeconfig"
    config = yaml.safe_load(kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    if config.get("current-context") != CONTEXT or not server.startswith("https://127.0.0.1:"):
        raise NotTheTestCluster(
            f"{kubeconfig} is not the local test cluster "
            f"(context {config.get('current-context')!r}, server {server})"
        )
    return Cluster(kubeconfig, lib("geo_bin kubectl"), lib("geo_bin helm"), directory)


def down() -> None:
    subprocess.run(["bash", str(CLUSTER_SCRIPTS / "down.sh")], check=False)


def restart_control_plane(
    component: str = "kube-apiserver", timeout: float = 120, downtime: float = 0
) -> None:
    """SIGKILL one control-plane process (kube-apiserver or etcd) and start it again
    ``downtime`` seconds later; returns once the API server is ready (e2e/cluster/restart.sh)."""
    env = {**os.environ, "GEO_RESTART_DOWNTIME": f"{downtime:g}"}
    subprocess.run(
        ["bash", str(CLUSTER_SCRIPTS / "restart.sh"), component],
        check=True,
        timeout=timeout + downtime,
        env=env,
    )


def restricted(cluster: Cluster, name: str) -> str:
    """Namespace `name` (created if missing), enforcing the restricted standard."""
    cluster.kubectl("create", "namespace", name, check=False)  # AlreadyExists is fine
    cluster.kubectl(
        "label", "namespace", name, "--overwrite", *(f"{k}={v}" for k, v in RESTRICTED.items())
    )
    return name


def install_chart(cluster: Cluster) -> subprocess.CompletedProcess[str]:
    """A fresh `helm install` of the chart (uninstalling an earlier release first), into a
    restricted namespace: the operator's own pod passes the standard too."""
    cluster.helm("uninstall", RELEASE, "-n", OPERATOR_NAMESPACE, "--wait", check=False)
    restricted(cluster, OPERATOR_NAMESPACE)
    out = cluster.helm(
        "install",
        RELEASE,
        CHART,
        "-n",
        OPERATOR_NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout",
        "120s",
    )
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD}", "--timeout=60s")
    return out


def chart_as_installed(cluster: Cluster) -> bool:
    """The release is deployed with the chart's default values (as install_chart leaves it)."""
    status = cluster.helm("status", RELEASE, "-n", OPERATOR_NAMESPACE, "-o", "json", check=False)
    if status.returncode != 0 or json.loads(status.stdout)["info"]["status"] != "deployed":
        return False
    values = cluster.helm("get", "values", RELEASE, "-n", OPERATOR_NAMESPACE, "-o", "json")
    return not json.loads(values.stdout)


def fresh_namespace(cluster: Cluster, name: str) -> str:
    """Namespace `name`, emptied: deleted (waiting for it to go) and created again,
    enforcing the restricted Pod Security Standard."""
    cluster.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=true")
    return restricted(cluster, name)


def delete_namespaces(cluster: Cluster, names: list[str], timeout: float) -> float | None:
    """Delete the namespaces and wait until they are gone: the seconds it took, or None
    past ``timeout``. Call it while the operator runs: each GeoDeployment carries its
    finalizer, so a namespace deleted after the operator stops waits for the next operator,
    and a bench after it would count that work as its own."""
    started = time.monotonic()
    for name in names:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
    try:
        wait_for(
            lambda: not any(cluster.get("namespace", n, "default") for n in names),
            f"namespaces {', '.join(names)} deleted",
            timeout=timeout,
            every=5,
        )
    except AssertionError:
        return None
    return time.monotonic() - started


def example(namespace: str, **spec_over: Any) -> dict[str, Any]:
    """The example GeoDeployment, in `namespace`, with top-level spec overrides."""
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"]["namespace"] = namespace
    body["spec"].update(spec_over)
    return dict(body)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OperatorProcess:
    """`geo run` as the chart's ServiceAccount, restartable and killable; free ports."""

    def __init__(
        self,
        cluster: Cluster,
        workdir: pathlib.Path,
        log_level: str = "debug",
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.args, self.extra_env = args, dict(env or {})
        self.cluster = cluster
        self.workdir = workdir
        self.log_level = log_level
        self.kubeconfig = workdir / "operator.kubeconfig"
        self.log = workdir / "operator.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.metrics_port = free_port()

    def write_kubeconfig(self) -> None:
        """A kubeconfig with a fresh token (a chart reinstall voids the old one)."""
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
        env.update(self.extra_env)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "geo_operator.cli",
                    "run",
                    f"--log-level={self.log_level}",
                    f"--liveness=http://127.0.0.1:{self.port}/healthz",
                    f"--metrics-port={self.metrics_port}",
                    "--metrics-address=127.0.0.1",
                    *self.args,
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        wait_for(self.healthy, "the operator's liveness endpoint", timeout=60)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

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

    def restart(self, fresh_token: bool = False) -> None:
        """Stop (if running) and start again; `fresh_token` after a chart reinstall."""
        self.stop()
        if fresh_token:
            self.write_kubeconfig()
        self.start()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def logs(self) -> str:
        return self.log.read_text(errors="replace")
