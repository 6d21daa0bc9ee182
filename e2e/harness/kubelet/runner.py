"""The kubelet runner: an informer, one worker per running pod, a publisher; and its CLI.

`KubeletRunner` composes the parts: the `PodInformer` reports every change of
GEO's pods; a pod that should run (Running, no deletionTimestamp) and whose
`PodSpec` reads gets a `PodWorker`, which owns its processes; a pod that goes
away (deleted, no longer Running, replaced under its name) has its worker
retired. After every change the `Publisher` rewrites pods.json and file_sd.json,
and `wait_until()` callers wake up.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from e2e.harness.kubelet import podspec
from e2e.harness.kubelet.informer import PodInformer
from e2e.harness.kubelet.podspec import LABEL_SELECTOR, PodKey
from e2e.harness.kubelet.publisher import Publisher
from e2e.harness.kubelet.worker import PodApi, PodWorker, ServerInfo
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

log = logging.getLogger("kubelet_runner")

ROOT = pathlib.Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "examples" / "digits" / "artifacts"
MAKE_ARTIFACTS = ROOT / "examples" / "digits" / "make_artifacts.py"

# The example's manifests name a host that exists only in them; serve its files from disk.
DIGITS_PREFIX = "http://models.geo.local/digits/"
FAMILY_PREFIX = "http://models.geo.local/digits-family/"
FAMILY_ARTIFACTS = ROOT / "examples" / "digits-family" / "artifacts"
PYCODE_PREFIX = "http://models.geo.local/pycode/"
PYCODE_ARTIFACTS = ROOT / "examples" / "pycode" / "artifacts"
DEFAULT_MIRRORS: dict[str, str] = {
    DIGITS_PREFIX: f"file://{ARTIFACTS}/",
    FAMILY_PREFIX: f"file://{FAMILY_ARTIFACTS}/",
    PYCODE_PREFIX: f"file://{PYCODE_ARTIFACTS}/",
}

START_SLOTS = 2  # two cores: more parallel starts would only queue on the CPU

T = TypeVar("T")


def ensure_artifacts() -> pathlib.Path:
    """The example's artifacts (the default mirror's files), made if this checkout has none."""
    if not (ARTIFACTS / "measurements.json").exists():
        log.info("making the example's artifacts with %s", MAKE_ARTIFACTS.relative_to(ROOT))
        subprocess.run([sys.executable, str(MAKE_ARTIFACTS)], check=True, cwd=ROOT)
    return ARTIFACTS


class KubeletRunner:
    """Runs a real tritonserver for every running GEO Triton pod of the cluster.

    ``start()`` lists the pods, starts watching (a background thread, reconnecting
    on errors) and returns; every pod's worker starts its server in its own thread,
    so the watch never waits for them. ``stop()`` stops the watch and every worker.
    Also a context manager. ``servers()`` and ``wait_until()`` are for tests.
    """

    def __init__(
        self,
        kubeconfig: pathlib.Path,
        state_dir: pathlib.Path,
        *,
        mirrors: Mapping[str, str] | None = None,
        namespace: str | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        """`mirrors` come before DEFAULT_MIRRORS (so they can override its prefix);
        `namespace` limits the runner to one namespace (default: all)."""
        self.kubeconfig = pathlib.Path(kubeconfig)
        self.state_dir = pathlib.Path(state_dir).resolve()
        # First match wins (repository.rewrite_uri): explicit mirrors go first, and
        # one for the default's prefix replaces the default.
        self.mirrors = dict(mirrors or {})
        for prefix, replacement in DEFAULT_MIRRORS.items():
            self.mirrors.setdefault(prefix, replacement)
        self.namespace = namespace
        self.startup_timeout = startup_timeout
        self._api = k8s_config.new_client_from_config(config_file=str(self.kubeconfig))
        core = k8s_client.CoreV1Api(self._api)
        self._pods = PodApi(core)
        self._informer = PodInformer(core, self._on_pod, namespace=namespace)
        self._publisher = Publisher(self.state_dir)
        self._start_slots = threading.BoundedSemaphore(START_SLOTS)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._workers: dict[PodKey, PodWorker] = {}
        self._retired: list[PodWorker] = []  # stopping their processes; joined by stop()
        self._stopping = False

    # --- public -------------------------------------------------------------------------

    def start(self, sync_timeout: float = 60.0) -> KubeletRunner:
        """Start watching; return once the first pod list went through."""
        if self.mirrors.get(DIGITS_PREFIX) == DEFAULT_MIRRORS[DIGITS_PREFIX]:
            ensure_artifacts()
        (self.state_dir / "pods").mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._publish()
        self._informer.start()
        if not self._informer.synced.wait(sync_timeout):
            self.stop()
            raise TimeoutError(f"could not list pods within {sync_timeout}s; see the log")
        return self

    def stop(self) -> None:
        """Stop watching and stop every worker; no tritonserver process is left behind."""
        self._informer.stop()
        with self._lock:
            self._stopping = True
            workers = [*self._workers.values(), *self._retired]
            self._workers.clear()
            self._retired.clear()
        for worker in workers:
            worker.retire()
        deadline = time.monotonic() + self.startup_timeout + 30
        for worker in workers:  # they stop in parallel, each in its own thread
            if not worker.join(max(0.0, deadline - time.monotonic())):
                log.warning("the worker for %s did not finish", podspec.name(worker.key))
        with self._lock:
            self._publish()
        self._api.close()

    def __enter__(self) -> KubeletRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def servers(self) -> dict[PodKey, ServerInfo]:
        """Every pod the runner serves or is starting, with its server's addresses."""
        with self._lock:
            return self._snapshot()

    def wait_until(
        self, predicate: Callable[[dict[PodKey, ServerInfo]], T], timeout: float = 60.0
    ) -> T:
        """Block until `predicate(servers())` is truthy, and return it; TimeoutError else."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = predicate(self._snapshot())
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"timed out after {timeout}s; servers: "
                        + json.dumps([dataclasses.asdict(i) for i in self._snapshot().values()])
                    )
                # Re-check at least every second too: a predicate may look beyond servers().
                self._changed.wait(min(left, 1.0))

    @property
    def pods_json(self) -> pathlib.Path:
        return self._publisher.pods_json

    @property
    def file_sd_json(self) -> pathlib.Path:
        return self._publisher.file_sd_json

    def pod_dir(self, key: PodKey) -> pathlib.Path:
        return self.state_dir / "pods" / f"{key[0]}_{key[1]}"

    # --- the informer's callback ---------------------------------------------------------

    def _on_pod(self, key: PodKey, pod: dict[str, Any] | None) -> None:
        """Bring one pod's worker in line with the pod: start, keep, or retire it."""
        with self._lock:
            if self._stopping:
                return
            worker = self._workers.get(key)
            run = pod if podspec.should_run(pod) else None
            uid = str(run["metadata"]["uid"]) if run is not None else None
            if worker is not None and worker.spec.uid == uid:
                return  # the same pod, still running: its worker carries on
            if worker is not None:  # gone, not Running any more, or replaced under its name
                del self._workers[key]
                worker.retire()
                self._retired = [w for w in self._retired if not w.join(0)] + [worker]
            if run is not None:
                try:
                    spec = podspec.read(run)
                except ValueError as error:
                    log.warning("not running pod %s: %s", podspec.name(key), error)
                else:
                    self.pod_dir(key).mkdir(parents=True, exist_ok=True)
                    self._workers[key] = PodWorker(
                        spec,
                        self.pod_dir(key),
                        self._pods,
                        mirrors=self.mirrors,
                        startup_timeout=self.startup_timeout,
                        start_slots=self._start_slots,
                        on_change=self._on_change,
                        previous=worker,
                    ).start()
            self._publish()

    def _on_change(self) -> None:
        """A worker's info changed (called from its thread, holding no lock)."""
        with self._lock:
            self._publish()

    # --- state (lock held) --------------------------------------------------------------

    def _snapshot(self) -> dict[PodKey, ServerInfo]:
        return {k: w.info for k, w in sorted(self._workers.items()) if w.info is not None}

    def _publish(self) -> None:
        """Rewrite pods.json and file_sd.json if they changed; wake wait_until()."""
        self._publisher.publish(self._snapshot().values())
        self._changed.notify_all()


# --- the command line ----------------------------------------------------------------------


def _parse_mirrors(values: Iterable[str]) -> dict[str, str]:
    mirrors = {}
    for value in values:
        prefix, sep, replacement = value.partition("=")
        if not sep or not prefix:
            raise argparse.ArgumentTypeError(f"--mirror wants PREFIX=REPLACEMENT, got {value!r}")
        mirrors[prefix] = replacement
    return mirrors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Play the kubelet for kwok's fake nodes: a real tritonserver for every "
        "running GEO Triton pod (and the real `geo tune` for a tuning Job's pod)."
    )
    parser.add_argument("--kubeconfig", type=pathlib.Path, required=True)
    parser.add_argument("--state-dir", type=pathlib.Path, required=True)
    parser.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="PREFIX=REPLACEMENT",
        help=f"rewrite artifact URIs starting with PREFIX (default: {DIGITS_PREFIX}=file://...)",
    )
    parser.add_argument("--namespace", help="only this namespace (default: all)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        mirrors = _parse_mirrors(args.mirror)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    runner = KubeletRunner(
        args.kubeconfig, args.state_dir, mirrors=mirrors, namespace=args.namespace
    )
    runner.start()
    log.info("watching pods (%s); state in %s", LABEL_SELECTOR, runner.state_dir)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        log.info("shutting down")
        runner.stop()
    return 0
