"""The operator's image (issue 15), built by `make image` and run the way the chart's pod runs it.

There is no container engine here. `make image` (image/build-image.sh) builds the OCI archive
from Debian's packages (mmdebstrap; a venv at /opt/geo with the wheel and the runtime
dependencies pinned to the versions this venv tests; umoci; skopeo). image/run-image.sh runs it
from that archive: unpacked by umoci, in a chroot inside private mount and PID namespaces, as
the image's user (65532), with the image's Entrypoint and Env, a read-only root, /tmp as
tmpfs and the ServiceAccount's token, CA and namespace mounted read-only where the kubelet
mounts them, with the chart's own container args (`helm template`). What differs from a pod: the
host's network (a pod has its own; here the API server's 127.0.0.1 is the Service address,
KUBERNETES_SERVICE_HOST) and no cgroup limits.

Both tests need root (mmdebstrap, chroot): CI runs as root; elsewhere they skip and say so.
The archive is built once (about 2-3 minutes) when it is missing or older than the sources.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import signal
import subprocess
import tomllib
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from e2e.harness import (
    CHART,
    OPERATOR_NAMESPACE,
    RELEASE,
    ROOT,
    SERVICE_ACCOUNT,
    OperatorProcess,
    example,
    free_port,
    wait_for,
)

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
ARCHIVE = ROOT / "out" / "image" / f"geo-operator-{VERSION}.tar"
RUN_DIR = ROOT / "out" / "image" / "run"
SOURCES = ("operator", "pyproject.toml", "image/build-image.sh")
GEO = "/opt/geo/bin/geo"  # the image's Entrypoint

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="building and running the image needs root (mmdebstrap, chroot)"
)


def _newest_source() -> float:
    newest = 0.0
    for name in SOURCES:
        path = ROOT / name
        files = [path] if path.is_file() else path.rglob("*")
        for f in files:
            if f.is_file() and "__pycache__" not in f.parts and ".egg-info" not in str(f):
                newest = max(newest, f.stat().st_mtime)
    return newest


@pytest.fixture(scope="module")
def archive() -> pathlib.Path:
    """The image archive `make image` writes, built now unless it is newer than the sources."""
    if not ARCHIVE.exists() or ARCHIVE.stat().st_mtime < _newest_source():
        print(f"\n[image] make image -> {ARCHIVE.relative_to(ROOT)}")
        subprocess.run(["make", "-s", "image"], cwd=ROOT, check=True, timeout=900)
    return ARCHIVE


def _skopeo(*args: str) -> Any:
    out = subprocess.run(
        ["skopeo", "inspect", *args, f"oci-archive:{ARCHIVE}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout)


def dockerfile() -> dict[str, Any]:
    """The Dockerfile's USER, ENTRYPOINT, CMD, ENV, LABEL and EXPOSE (continuations joined)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found: dict[str, Any] = {"ENV": {}, "LABEL": {}, "EXPOSE": []}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        word, _, rest = line.strip().partition(" ")
        if word in ("ENV", "LABEL"):
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                found[word][key] = value
        elif word == "EXPOSE":
            found["EXPOSE"] += rest.split()
        elif word in ("ENTRYPOINT", "CMD"):
            found[word] = json.loads(rest)
        elif word == "USER":
            found[word] = rest.strip()
    return found


def test_the_image_is_the_dockerfiles_image_and_holds_what_it_should(
    archive: pathlib.Path,
) -> None:
    config = _skopeo("--config")["config"]
    manifest = _skopeo()
    print(f"\nimage {manifest['Digest']}, {archive.stat().st_size / 1e6:.0f} MB: {config}")
    docker = dockerfile()
    assert config["User"] == docker["USER"] == "65532:65532"
    assert config["Entrypoint"] == docker["ENTRYPOINT"] == ["/opt/geo/bin/geo"]
    assert config["Cmd"] == docker["CMD"] == ["run"]
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env == docker["ENV"], (env, docker["ENV"])
    assert sorted(config["ExposedPorts"]) == sorted(docker["EXPOSE"]) == ["8080/tcp", "9090/tcp"]
    labels = {k: v for k, v in config["Labels"].items() if k != "org.opencontainers.image.created"}
    assert labels == docker["LABEL"], (labels, docker["LABEL"])
    assert labels["org.opencontainers.image.version"] == VERSION
    assert len(manifest["Layers"]) == 1

    # The files: unpacked by run-image.sh (`geo --help` as the image's user, and the in-cluster
    # configuration check: uid, the mounted token, a read-only root).
    out = subprocess.run(
        ["bash", str(ROOT / "image" / "run-image.sh")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MODE": "chroot", "ARCHIVE": str(archive), "RUN": str(RUN_DIR)},
    )
    print(out.stdout[-2000:], out.stderr[-2000:])
    assert out.returncode == 0, out.stderr
    assert "usage: geo" in out.stdout
    assert "in-cluster config ok" in out.stdout and "uid/gid 65532 65532" in out.stdout
    assert "CapEff 0000000000000000" in out.stdout and "rootfs read-only" in out.stdout
    rootfs = RUN_DIR / "bundle" / "rootfs"
    assert (rootfs / "opt/geo/bin/geo").is_file()
    assert not (rootfs / "opt/geo/bin/pip").exists()  # no installer in the shipped image
    assert not (rootfs / "tmp/build-ca.crt").exists()  # the build's CA is not shipped
    assert "geo:x:65532:65532:" in (rootfs / "etc/passwd").read_text()
    assert not list((rootfs / "dev").iterdir())  # the runtime provides /dev


@pytest.fixture
def service_account(tmp_path: pathlib.Path, operator: OperatorProcess) -> pathlib.Path:
    """What the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount: a
    TokenRequest token of the chart's ServiceAccount, the cluster's CA, the namespace."""
    cluster = operator.cluster
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    token = cluster.kubectl(
        "create", "token", SERVICE_ACCOUNT, "-n", OPERATOR_NAMESPACE, "--duration=1h"
    ).stdout.strip()
    (sa / "token").write_text(token)
    (sa / "ca.crt").write_bytes((cluster.directory / "pki" / "ca.crt").read_bytes())
    (sa / "namespace").write_text(OPERATOR_NAMESPACE)
    for path in (tmp_path, sa, *sa.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by uid 65532
    return sa


def _chart_args(helm: str, liveness: int, metrics: int) -> list[str]:
    """The operator container's args as the chart renders them."""
    rendered = subprocess.run(
        [
            helm,
            "template",
            RELEASE,
            str(CHART),
            "-n",
            OPERATOR_NAMESPACE,
            "--set",
            f"livenessPort={liveness}",
            "--set",
            f"metrics.port={metrics}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    for doc in yaml.safe_load_all(rendered):
        if doc and doc["kind"] == "Deployment":
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            return list(container["args"])
    raise AssertionError("no Deployment in the chart")


@pytest.fixture
def image_operator(
    archive: pathlib.Path,
    killable_operator: OperatorProcess,
    service_account: pathlib.Path,
    tmp_path: pathlib.Path,
) -> Iterator[tuple[subprocess.Popen[bytes], pathlib.Path, int, int]]:
    """`geo run` from the image instead of the session's process (stopped meanwhile, so two
    operators never act on one object; started again afterwards by killable_operator)."""
    killable_operator.stop()
    server = yaml.safe_load(killable_operator.cluster.kubeconfig.read_text())["clusters"][0]
    host, port = server["cluster"]["server"].removeprefix("https://").rsplit(":", 1)
    liveness, metrics = free_port(), free_port()
    log = tmp_path / "image-operator.log"
    env = {
        **os.environ,
        "MODE": "chroot",
        "CHECK": "0",
        "TIMEOUT": "900",
        "ARCHIVE": str(archive),
        "RUN": str(RUN_DIR),
        "SA_DIR": str(service_account),
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
    }
    args = _chart_args(killable_operator.cluster.helm_bin, liveness, metrics)
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bash", str(ROOT / "image" / "run-image.sh"), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process, log, liveness, metrics
    finally:
        # timeout(1) and unshare(1) keep their own process groups and forward nothing: stop
        # geo itself with SIGINT (kopf's graceful stop), as the kubelet's TERM would.
        for pid in _processes(GEO):
            os.kill(pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for pid in _processes(GEO):
                os.kill(pid, signal.SIGKILL)
            process.wait(timeout=10)
        print(f"\n--- the image's operator, log tail ---\n{log.read_text()[-3000:]}")
        mounts = [
            ln for ln in pathlib.Path("/proc/mounts").read_text().splitlines() if str(RUN_DIR) in ln
        ]
        assert not mounts, f"mounts left behind: {mounts}"


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return None


def _processes(program: str) -> dict[int, int]:
    """The processes running ``program`` (a script: its interpreter's first argument): their
    pid and real uid."""
    found = {}
    for proc in pathlib.Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            status = (proc / "status").read_text()
        except (OSError, ValueError):
            continue
        if program.encode() in cmdline[:2]:
            uid = next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()[1]
            found[int(proc.name)] = int(uid)
    return found


def test_the_operator_runs_from_the_image_as_the_charts_pod_and_reconciles(
    image_operator: tuple[subprocess.Popen[bytes], pathlib.Path, int, int],
    killable_operator: OperatorProcess,
    namespace: str,
) -> None:
    process, log, liveness, metrics = image_operator
    cluster = killable_operator.cluster
    wait_for(
        lambda: process.poll() is None and _get(f"http://127.0.0.1:{liveness}/healthz"),
        "the image's operator: liveness endpoint",
        timeout=120,
    )
    assert process.poll() is None, log.read_text()[-3000:]
    uids = set(_processes(GEO).values())
    assert uids == {65532}, f"geo runs as the image's user, and only so: {uids}"

    cluster.apply(example(namespace))

    def ready() -> dict[str, Any] | None:
        body = cluster.get("geod", "digits", namespace)
        conditions = {
            c["type"]: c for c in ((body or {}).get("status") or {}).get("conditions", [])
        }
        ok = conditions.get("Ready", {}).get("status") == "True"
        return body if ok else None

    body = wait_for(ready, "digits Ready=True, reconciled by the image's operator", timeout=120)
    deployment = cluster.get("deployment", "digits", namespace)
    assert deployment is not None
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]

    # Its own metrics endpoint, on the chart's metrics port, knows the object.
    def scraped() -> str | None:
        """The condition series the alerts join on, for this object (the autoscaler's
        first step for it exports them)."""
        text = _get(f"http://127.0.0.1:{metrics}/metrics") or ""
        lines = [
            ln
            for ln in text.splitlines()
            if ln.startswith("geo_geodeployment_condition{") and f'"{namespace}"' in ln
        ]
        return "\n".join(lines) or None

    lines = wait_for(scraped, "the image's operator's condition metrics for digits", timeout=60)
    assert 'type="Ready"' in lines, lines
    assert "Traceback" not in log.read_text()
