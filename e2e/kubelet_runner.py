"""Play the kubelet for kwok's fake nodes: a real `tritonserver` for every running Triton pod.

The local cluster's nodes are kwok fakes: GEO's Triton pods go Running and Ready but
no container runs. This runner makes the data plane real on this machine. It watches
the pods GEO manages (label `app.kubernetes.io/managed-by=geo-operator`, all
namespaces) and, for every pod that is Running with no deletionTimestamp, does what
the pod would do: reads the model repository the operator rendered into the pod's
`model-config` ConfigMap, fetches the artifact named by the `fetch-artifact` init
container's `ARTIFACT_URI` (through local mirrors: `models.geo.local` exists only in
manifests), and starts `geo_operator.triton.local.TritonServer` on it. When the pod
goes away (deleted, no longer Running, or given a deletionTimestamp) its server is
stopped.

A batch-tuning Job's pod (label `app.kubernetes.io/component=batch-tuner`) gets the
same repository and a Triton in explicit model-control mode (its sidecar), then the
real `geo tune` of this venv with the pod's `tune` container args (the URL pointed
at that Triton, the result file in the pod's state directory); when it exits the
runner reports the pod terminated — phase Succeeded or Failed, the exit code, and
the result file as the termination message (the log's tail when there is none, as
`FallbackToLogsOnError`) — so the Job controller completes or fails the Job. A pod
deleted meanwhile (the Job's deadline) has its `geo tune` killed.

Used in-process by the e2e tests (`e2e/test_kubelet_runner.py`, a fixture around
`KubeletRunner`) and the demo; standalone as

    python e2e/kubelet_runner.py --kubeconfig e2e/.cluster/kubeconfig --state-dir out/kubelet

which runs until SIGINT/SIGTERM. Everything it serves is published, after each
change, in `<state-dir>/pods.json` (addresses and readiness per pod) and
`<state-dir>/file_sd.json` (Prometheus file-based service discovery of the ready
servers' metrics endpoints). Each served pod also gets the annotation
`geo.ai/metrics-url` pointing at its server's metrics on 127.0.0.1, since kwok's pod
IPs are fake and nothing can reach them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from geo_operator.api import models, names
from geo_operator.triton import local, model_config, repository

log = logging.getLogger("kubelet_runner")
# The `geo` of this venv: what the tuning pod's `tune` container runs.
GEO = pathlib.Path(sys.executable).with_name("geo")
TERMINATION_MESSAGE_LIMIT = 4096  # the kubelet's limit, and FallbackToLogsOnError's tail

ROOT = pathlib.Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "examples" / "digits" / "artifacts"
MAKE_ARTIFACTS = ROOT / "examples" / "digits" / "make_artifacts.py"

LABEL_SELECTOR = f"{names.MANAGED_BY_LABEL}={names.MANAGER}"
OWNER_LABEL = names.OWNER_LABEL
ARTIFACT_ANNOTATION = names.ARTIFACT_ANNOTATION
METRICS_URL_ANNOTATION = names.METRICS_URL_ANNOTATION
# Names the Deployment builder gives the ConfigMap volume and the init container.
CONFIG_VOLUME = "model-config"
INIT_CONTAINER = "fetch-artifact"
URI_ENV = "ARTIFACT_URI"

# The example's manifests name a host that exists only in them; serve its files from disk.
DIGITS_PREFIX = "http://models.geo.local/digits/"
DEFAULT_MIRRORS: dict[str, str] = {DIGITS_PREFIX: f"file://{ARTIFACTS}/"}

# Triton backend -> artifact format; "python" is recognised by the ConfigMap's model.py.
FORMAT_BY_BACKEND = {
    backend: fmt
    for fmt, backend in model_config.BACKENDS.items()
    if fmt is not models.ArtifactFormat.PYTHON
}

START_WORKERS = 2  # two cores: more parallel starts would only queue on the CPU
STOP_WORKERS = 8
START_ATTEMPTS = 3  # a start can fail on a port race (free ports are picked, then bound)
MAX_RESTARTS = 3  # restarts of a server that died after it was ready, like a kubelet's
WATCH_TIMEOUT_S = 300  # the API server ends each watch after this; we resume from its RV
MONITOR_PERIOD_S = 2.0

PodKey = tuple[str, str]  # (namespace, pod name)
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class ServerInfo:
    """One pod's server as `servers()` reports it (a snapshot: never mutated)."""

    namespace: str
    pod: str
    uid: str
    geodeployment: str
    artifact: str  # the artifact's name (pod annotation geo.ai/artifact), else its URI
    uri: str
    model: str
    max_batch_size: int
    http: str  # host:port, as tritonclient expects
    grpc: str
    metrics: str
    ready: bool  # Triton answered /v2/health/ready (and the process is still alive)
    pid: int | None
    startup_seconds: float | None  # ConfigMap read + repository + tritonserver ready
    error: str | None = None  # why it is not ready, after a failed start or a crash

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics}/metrics"


@dataclasses.dataclass
class _Slot:
    """What the runner keeps per pod it decided to run; guarded by the runner's lock."""

    uid: str
    pod: dict[str, Any]
    state: Literal["starting", "running", "failed"] = "starting"
    wanted: bool = True  # False once the pod went away: whoever holds the server stops it
    server: local.TritonServer | None = None
    info: ServerInfo | None = None
    restarts: int = 0
    tuner: subprocess.Popen[bytes] | None = None  # a tuning pod's `geo tune`, while it runs


def _to_run(pod: Mapping[str, Any] | None) -> bool:
    if pod is None:
        return False
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    return bool(pod.get("status", {}).get("phase") == "Running")


def is_tuner(pod: Mapping[str, Any]) -> bool:
    """A GEO batch-tuning Job's pod (Triton sidecar + `geo tune`), not a serving pod."""
    labels = pod.get("metadata", {}).get("labels") or {}
    return bool(labels.get(names.COMPONENT_LABEL) == names.TUNING_COMPONENT)


def _key(pod: Mapping[str, Any]) -> PodKey:
    meta = pod["metadata"]
    return (str(meta["namespace"]), str(meta["name"]))


def _name(key: PodKey) -> str:
    return f"{key[0]}/{key[1]}"


def pod_sources(pod: Mapping[str, Any]) -> tuple[str, str]:
    """(ConfigMap name, artifact URI) from a GEO Triton pod's spec."""
    spec = pod.get("spec", {})
    config_map = next(
        (
            v["configMap"]["name"]
            for v in spec.get("volumes", [])
            if v.get("name") == CONFIG_VOLUME and v.get("configMap")
        ),
        None,
    )
    init: dict[str, Any] = next(
        (c for c in spec.get("initContainers", []) if c["name"] == INIT_CONTAINER), {}
    )
    uri = next((e.get("value") for e in init.get("env", []) if e.get("name") == URI_ENV), None)
    if not config_map or not uri:
        raise ValueError(
            f"pod has no {CONFIG_VOLUME!r} ConfigMap volume or no {URI_ENV} in its "
            f"{INIT_CONTAINER!r} init container: not a GEO Triton pod"
        )
    return config_map, uri


def artifact_format(data: Mapping[str, str], backend: str) -> models.ArtifactFormat:
    """The artifact's format as the builders chose it, recovered from the ConfigMap."""
    if "model.py" in data:
        return models.ArtifactFormat.PYTHON
    try:
        return FORMAT_BY_BACKEND[backend]
    except KeyError:
        raise ValueError(f"config.pbtxt names backend {backend!r}, unknown to GEO") from None


def ensure_artifacts() -> pathlib.Path:
    """The example's artifacts (the default mirror's files), made if this checkout has none."""
    if not (ARTIFACTS / "measurements.json").exists():
        log.info("making the example's artifacts with %s", MAKE_ARTIFACTS.relative_to(ROOT))
        subprocess.run([sys.executable, str(MAKE_ARTIFACTS)], check=True, cwd=ROOT)
    return ARTIFACTS


def _write_json(path: pathlib.Path, value: Any) -> None:
    """Write atomically: readers (Prometheus, tests) never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)


class KubeletRunner:
    """Runs a real tritonserver for every running GEO Triton pod of the cluster.

    ``start()`` lists the pods, starts watching (a background thread, reconnecting
    on errors) and returns; servers start in a pool of ``START_WORKERS`` threads so
    the watch never waits for them. ``stop()`` stops the watch and every server.
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
        self._core = k8s_client.CoreV1Api(self._api)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._slots: dict[PodKey, _Slot] = {}
        self._published: tuple[str, str] | None = None
        self._stopping = threading.Event()
        self._synced = threading.Event()
        self._watch: k8s_watch.Watch | None = None
        self._threads: list[threading.Thread] = []
        # Server processes die with the thread that started them (PR_SET_PDEATHSIG in
        # local.TritonServer): pool threads live until shutdown, after every stop.
        self._starters = concurrent.futures.ThreadPoolExecutor(
            START_WORKERS, thread_name_prefix="triton-start"
        )
        # Stops get their own threads so that they never queue behind slow starts; a
        # stop mostly waits for Triton to unload (~2.5 s), so more of them are cheap.
        self._stoppers = concurrent.futures.ThreadPoolExecutor(
            STOP_WORKERS, thread_name_prefix="triton-stop"
        )
        self._futures: list[concurrent.futures.Future[None]] = []  # starts; lock held

    # --- public -------------------------------------------------------------------------

    def start(self, sync_timeout: float = 60.0) -> KubeletRunner:
        """Start watching; return once the first pod list went through."""
        if self.mirrors.get(DIGITS_PREFIX) == DEFAULT_MIRRORS[DIGITS_PREFIX]:
            ensure_artifacts()
        (self.state_dir / "pods").mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._publish()
        for target, name in ((self._watch_loop, "pod-watch"), (self._monitor_loop, "monitor")):
            thread = threading.Thread(target=target, name=f"kubelet-runner-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if not self._synced.wait(sync_timeout):
            self.stop()
            raise TimeoutError(f"could not list pods within {sync_timeout}s; see the log")
        return self

    def stop(self) -> None:
        """Stop watching and stop every server; no tritonserver process is left behind."""
        self._stopping.set()
        deadline = time.monotonic() + 15
        for thread in self._threads:
            while thread.is_alive() and time.monotonic() < deadline:
                # Shuts the watch's socket down, unblocking its read. Repeated: a watch
                # whose request was not sent yet forgets an earlier stop().
                watch = self._watch
                if watch is not None:
                    watch.stop()
                thread.join(timeout=0.5)
        with self._lock:
            slots = list(self._slots.items())
            self._slots.clear()
            for _, slot in slots:
                slot.wanted = False  # a start in progress stops its own server
            starts = list(self._futures)
        # Starts not begun yet never will; those under way see wanted=False and clean up.
        for future in starts:
            future.cancel()
        concurrent.futures.wait(starts, timeout=self.startup_timeout + 30)
        stops = [
            self._stoppers.submit(self._stop_server, key, slot.server)
            for key, slot in slots
            if slot.state != "starting" and slot.server is not None
        ]
        concurrent.futures.wait(stops, timeout=60)
        self._starters.shutdown(wait=True, cancel_futures=True)
        self._stoppers.shutdown(wait=True, cancel_futures=True)
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
        return self.state_dir / "pods.json"

    @property
    def file_sd_json(self) -> pathlib.Path:
        return self.state_dir / "file_sd.json"

    def pod_dir(self, key: PodKey) -> pathlib.Path:
        return self.state_dir / "pods" / f"{key[0]}_{key[1]}"

    # --- the watch ----------------------------------------------------------------------

    def _list_kwargs(self) -> dict[str, Any]:
        return {"label_selector": LABEL_SELECTOR, "_preload_content": False}

    def _list(self) -> str:
        """Observe every pod as listed now, forget the ones gone; return the list's RV."""
        # Raw JSON (_preload_content=False): the runner works on plain dicts throughout.
        resp: Any
        if self.namespace:
            resp = self._core.list_namespaced_pod(self.namespace, **self._list_kwargs())
        else:
            resp = self._core.list_pod_for_all_namespaces(**self._list_kwargs())
        body = json.loads(resp.data)
        pods = {_key(p): p for p in body.get("items", [])}
        with self._lock:
            gone = [k for k in self._slots if k not in pods]
        for key in gone:
            self._observe(key, None)
        for key, pod in pods.items():
            self._observe(key, pod)
        return str(body["metadata"]["resourceVersion"])

    def _watch_loop(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            try:
                rv = self._list()
                self._synced.set()
                backoff = 1.0
                while not self._stopping.is_set():
                    rv = self._watch_once(rv)
            except ApiException as error:
                if self._stopping.is_set():
                    break
                if error.status == 410:  # our resourceVersion is too old: list again
                    log.info("pod watch expired (410); listing again")
                    continue
                log.warning(
                    "pod watch failed: %s %s; retrying in %.0fs",
                    error.status,
                    error.reason,
                    backoff,
                )
            except Exception as error:  # connection refused/reset while the apiserver restarts
                if self._stopping.is_set():
                    break
                log.warning("pod watch failed: %r; retrying in %.0fs", error, backoff)
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, 10.0)

    def _watch_once(self, rv: str) -> str:
        """One watch request from `rv` until the server ends it; returns the last RV seen."""
        watch = k8s_watch.Watch()
        self._watch = watch
        if self._stopping.is_set():  # stop() may have looked for a watch just before
            return rv
        func: Callable[..., Any] = self._core.list_pod_for_all_namespaces
        args: tuple[str, ...] = ()
        if self.namespace:
            func, args = self._core.list_namespaced_pod, (self.namespace,)
        try:
            for event in watch.stream(
                func,
                *args,
                label_selector=LABEL_SELECTOR,
                resource_version=rv,
                allow_watch_bookmarks=True,
                # With a timeout the client doesn't retry by itself: errors reach us.
                timeout_seconds=WATCH_TIMEOUT_S,
                deserialize=False,
            ):
                obj = event["object"]
                rv = str(obj["metadata"]["resourceVersion"])
                if event["type"] == "BOOKMARK":
                    continue
                self._observe(_key(obj), None if event["type"] == "DELETED" else obj)
                if self._stopping.is_set():
                    break
        finally:
            self._watch = None
        return rv

    def _observe(self, key: PodKey, pod: dict[str, Any] | None) -> None:
        """Bring one pod's server in line with the pod: start, keep, or stop it."""
        with self._lock:
            if self._stopping.is_set():
                return
            slot = self._slots.get(key)
            run = pod if pod is not None and _to_run(pod) else None
            uid = str(run["metadata"]["uid"]) if run is not None else None
            if run is not None and slot is not None and slot.uid == uid:
                slot.pod = run  # the newest copy, for a restart
                return
            if slot is not None:  # gone, not Running any more, or replaced under its name
                self._retire(key, slot)
            if run is not None and uid is not None:
                slot = _Slot(uid=uid, pod=run)
                self._slots[key] = slot
                self._submit(key, slot)
            self._publish()

    # --- starting and stopping (pool threads) ------------------------------------------

    def _submit(self, key: PodKey, slot: _Slot) -> None:
        # Lock held (callers): pruned here rather than by a done-callback, which could
        # run in this very thread and deadlock on the lock.
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(self._starters.submit(self._run_pod, key, slot))

    def _retire(self, key: PodKey, slot: _Slot) -> None:
        """Forget a pod (lock held); its server is stopped off the watch thread."""
        del self._slots[key]
        slot.wanted = False
        if slot.tuner is not None and slot.tuner.poll() is None:
            slot.tuner.kill()  # the pod was deleted (its Job's deadline passed): like a kubelet
        # A start in progress owns its server and stops it itself when it sees wanted=False.
        if slot.state != "starting" and slot.server is not None:
            self._stoppers.submit(self._stop_server, key, slot.server)

    def _stop_server(self, key: PodKey, server: local.TritonServer) -> None:
        pid = server.pid if server.is_running() else None
        try:
            code = server.stop()
        except Exception:
            log.exception("stopping triton for %s failed", _name(key))
            return
        # The repository is a copy of what the API holds; the log is kept for post-mortems.
        shutil.rmtree(self.pod_dir(key) / "models", ignore_errors=True)
        log.info("stopped triton for %s (pid %s, exit code %s)", _name(key), pid, code)

    def _run_pod(self, key: PodKey, slot: _Slot) -> None:
        """Start `slot`'s server, retrying a few times; runs in a starter thread."""
        last_error = ""
        for attempt in range(1, START_ATTEMPTS + 1):
            if not slot.wanted:
                return
            try:
                self._start_server(key, slot)
                return
            except Exception as error:
                last_error = str(error) or repr(error)
                if isinstance(error, ApiException) and error.status == 404:
                    break  # the ConfigMap is gone: so is the GeoDeployment, soon the pod
                log.warning(
                    "starting triton for %s failed (attempt %d/%d): %s",
                    _name(key),
                    attempt,
                    START_ATTEMPTS,
                    error,
                )
                if attempt < START_ATTEMPTS:
                    self._stopping.wait(attempt)
        log.error("giving up on triton for %s: %s", _name(key), last_error.splitlines()[0])
        with self._lock:
            if slot.wanted:
                slot.state = "failed"
                if slot.info is not None:
                    slot.info = dataclasses.replace(slot.info, ready=False, error=last_error)
                self._publish()

    def _start_server(self, key: PodKey, slot: _Slot) -> None:
        began = time.monotonic()
        namespace, name = key
        pod = slot.pod
        config_map, uri = pod_sources(pod)
        resp: Any = self._core.read_namespaced_config_map(
            config_map, namespace, _preload_content=False
        )
        data: dict[str, str] = json.loads(resp.data).get("data") or {}
        config = model_config.parse(data["config.pbtxt"])
        fmt = artifact_format(data, config.backend)
        pod_dir = self.pod_dir(key)
        models_dir = pod_dir / "models"
        shutil.rmtree(models_dir, ignore_errors=True)  # a fresh repository per attempt
        repository.materialize(
            data,
            model_name=config.name,
            artifact_format=fmt,
            uri=uri,
            repository=models_dir,
            mirrors=self.mirrors,
        )
        tuner = is_tuner(pod)
        server = local.TritonServer(
            models_dir,
            log_path=pod_dir / "triton.log",
            startup_timeout=self.startup_timeout,
            stop_timeout=10.0,
            # Stop like a kubelet's grace period, but short: tests scale down often.
            exit_timeout_secs=3,
            # The tuning pod's sidecar: explicit model control, as its args say.
            model_control_mode="explicit" if tuner else "none",
            load_models=[config.name] if tuner else [],
        )
        meta = pod["metadata"]
        labels = meta.get("labels", {})
        info = ServerInfo(
            namespace=namespace,
            pod=name,
            uid=slot.uid,
            geodeployment=str(labels.get(OWNER_LABEL) or labels.get(names.TUNING_FOR_LABEL, "")),
            artifact=str(meta.get("annotations", {}).get(ARTIFACT_ANNOTATION) or uri),
            uri=uri,
            model=config.name,
            max_batch_size=int(config.max_batch_size),
            http=server.http_url,
            grpc=server.grpc_url,
            metrics=f"{local.HOST}:{server.metrics_port}",
            ready=False,
            pid=None,
            startup_seconds=None,
        )
        with self._lock:
            if not slot.wanted:
                return
            slot.server, slot.info, slot.state = server, info, "starting"
            self._publish()
        try:
            server.start()
        except BaseException:
            with self._lock:
                slot.server = None
            raise
        took = time.monotonic() - began
        with self._lock:
            keep = slot.wanted
            if keep:
                slot.state = "running"
                slot.info = dataclasses.replace(
                    info, ready=True, pid=server.pid, startup_seconds=took
                )
                self._publish()
        if not keep:  # the pod went away while Triton was loading
            self._stop_server(key, server)
            return
        if tuner:
            threading.Thread(
                target=self._run_tuner,
                args=(key, slot, server),
                name=f"tuner-{name}",
                daemon=True,
            ).start()
            return
        log.info(
            "started triton for %s (artifact %s, max_batch_size %d) on :%d in %.1fs",
            _name(key),
            info.artifact,
            info.max_batch_size,
            server.http_port,
            took,
        )
        self._annotate(key, slot.uid, info.metrics_url)

    def _run_tuner(self, key: PodKey, slot: _Slot, server: local.TritonServer) -> None:
        """The tuning pod's `tune` container: the real `geo tune` with the pod's args against
        its Triton, then the pod reported terminated with the exit code and the termination
        message (the result file, else the log's tail: FallbackToLogsOnError)."""
        container = next(
            c for c in slot.pod["spec"]["containers"] if c["name"] == names.TUNER_CONTAINER
        )
        pod_dir = self.pod_dir(key)
        result_file = pod_dir / "termination-log"
        result_file.unlink(missing_ok=True)
        args = []
        for arg in container.get("args", []):
            if arg.startswith("--url="):
                arg = f"--url={server.http_url}"
            elif arg.startswith("--result-file="):
                arg = f"--result-file={result_file}"
            args.append(arg)
        log_path = pod_dir / "tune.log"
        started = time.time()
        with self._lock:
            if not slot.wanted:
                return
            with log_path.open("wb") as out:
                slot.tuner = subprocess.Popen(
                    [str(GEO), *args], stdout=out, stderr=subprocess.STDOUT
                )
            process = slot.tuner
        log.info("running geo tune for %s: %s", _name(key), " ".join(args))
        code = process.wait()
        with self._lock:
            if not slot.wanted:  # killed with its pod
                return
        message = result_file.read_text() if result_file.exists() else ""
        if not message and code != 0:
            message = log_path.read_bytes()[-TERMINATION_MESSAGE_LIMIT:].decode(errors="replace")
        now = time.time()

        def stamp(t: float) -> str:
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

        status = {
            "status": {
                "phase": "Succeeded" if code == 0 else "Failed",
                "containerStatuses": [
                    {
                        "name": container["name"],
                        "image": container["image"],
                        "imageID": "",
                        "ready": False,
                        "started": False,
                        "restartCount": 0,
                        "state": {
                            "terminated": {
                                "exitCode": code,
                                "reason": "Completed" if code == 0 else "Error",
                                "message": message[:TERMINATION_MESSAGE_LIMIT],
                                "startedAt": stamp(started),
                                "finishedAt": stamp(now),
                            }
                        },
                    }
                ],
            }
        }
        log.info("geo tune for %s exited %d after %.1fs", _name(key), code, now - started)
        try:
            self._core.patch_namespaced_pod_status(
                key[1], key[0], status, _content_type="application/merge-patch+json"
            )
        except ApiException as error:
            log.warning(
                "reporting %s terminated failed: %s %s", _name(key), error.status, error.reason
            )

    def _annotate(self, key: PodKey, uid: str, metrics_url: str) -> None:
        """Tell the pod's readers where its metrics really are (kwok's pod IP is fake)."""
        body = {
            # metadata.uid makes the patch a precondition: never annotate a namesake.
            "metadata": {"uid": uid, "annotations": {METRICS_URL_ANNOTATION: metrics_url}}
        }
        try:
            self._core.patch_namespaced_pod(
                key[1], key[0], body, _content_type="application/merge-patch+json"
            )
        except ApiException as error:
            if error.status in (404, 409):  # deleted (or replaced) meanwhile: nothing to do
                log.info("pod %s vanished before it could be annotated", _name(key))
                return
            log.warning("annotating pod %s failed: %s %s", _name(key), error.status, error.reason)

    # --- crashes ------------------------------------------------------------------------

    def _monitor_loop(self) -> None:
        """Notice servers that died after they were ready; restart them a few times."""
        while not self._stopping.wait(MONITOR_PERIOD_S):
            with self._lock:
                dead = [
                    (key, slot)
                    for key, slot in self._slots.items()
                    if slot.state == "running"
                    and slot.server is not None
                    and not slot.server.is_running()
                ]
                for key, slot in dead:
                    assert slot.server is not None and slot.info is not None
                    crashed, slot.server = slot.server, None
                    error = f"tritonserver exited; log tail:\n{crashed.log_tail(10)}"
                    slot.info = dataclasses.replace(slot.info, ready=False, error=error)
                    if slot.restarts < MAX_RESTARTS:
                        slot.restarts += 1
                        slot.state = "starting"
                        log.warning(
                            "triton for %s exited; restarting (%d/%d)",
                            _name(key),
                            slot.restarts,
                            MAX_RESTARTS,
                        )
                        self._stoppers.submit(crashed.stop)  # reaps it and its stubs
                        self._submit(key, slot)
                    else:
                        slot.state = "failed"
                        log.error("triton for %s exited again; leaving it down", _name(key))
                        self._stoppers.submit(crashed.stop)
                if dead:
                    self._publish()

    # --- state (lock held) --------------------------------------------------------------

    def _serving_pods(self) -> set[str]:
        """Names of the serving pods (a tuning pod's Triton is no scrape target)."""
        return {k[1] for k, slot in self._slots.items() if not is_tuner(slot.pod)}

    def _snapshot(self) -> dict[PodKey, ServerInfo]:
        return {k: s.info for k, s in sorted(self._slots.items()) if s.info is not None}

    def _publish(self) -> None:
        """Rewrite pods.json and file_sd.json if they changed; wake wait_until()."""
        infos = list(self._snapshot().values())
        pods = [
            {
                "namespace": i.namespace,
                "pod": i.pod,
                "geodeployment": i.geodeployment,
                "http": i.http,
                "grpc": i.grpc,
                "metrics": i.metrics,
                "ready": i.ready,
            }
            for i in infos
        ]
        # Only ready servers are scrape targets: a starting one would just be "down".
        file_sd = [
            {
                "targets": [i.metrics],
                "labels": {
                    "namespace": i.namespace,
                    "pod": i.pod,
                    "geodeployment": i.geodeployment,
                },
            }
            for i in infos
            if i.ready and i.pod in self._serving_pods()
        ]
        texts = (json.dumps(pods), json.dumps(file_sd))
        if texts != self._published and self.state_dir.is_dir():
            _write_json(self.pods_json, pods)
            _write_json(self.file_sd_json, file_sd)
            self._published = texts
        self._changed.notify_all()


def _parse_mirrors(values: Iterable[str]) -> dict[str, str]:
    mirrors = {}
    for value in values:
        prefix, sep, replacement = value.partition("=")
        if not sep or not prefix:
            raise argparse.ArgumentTypeError(f"--mirror wants PREFIX=REPLACEMENT, got {value!r}")
        mirrors[prefix] = replacement
    return mirrors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
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


if __name__ == "__main__":
    sys.exit(main())
