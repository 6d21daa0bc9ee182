"""One pod's worker: its own thread owns the pod's processes from start to stop.

A `PodWorker` does for one pod what a kubelet does: it reads the model
repository from the pod's ConfigMap, lays it out (the init container's job,
through the runner's mirrors), starts a real `tritonserver` (retrying a failed
start, restarting a server that died after it was ready, a few times each),
annotates a serving pod with `geo.ai/metrics-url`, and stops the server when
the runner retires the worker (the pod went away). When it cannot start the pod's
Triton it says so in the pod's status as a kubelet would (`podstatus`): a Secret
(or key) the fetch's env names is missing (CreateContainerConfigError), the
artifact fetch failed (the init container terminated with fetch.py's words),
Triton exited before it was ready (CrashLoopBackOff); the pod is not Ready, so
GEO sees what it would see on a real node. For a batch-tuning Job's pod
it then runs the real `geo tune` with the pod's args against that Triton and
reports the pod terminated (phase, exit code, termination message), so the Job
controller completes or fails the Job; a retired worker kills its `geo tune`.

The thread that starts a server also stops it (tritonserver dies with the thread
that started it: PR_SET_PDEATHSIG in local.TritonServer), so a worker's thread
lives until its processes are gone. Starts take a slot of a semaphore shared by
the runner's workers: on two cores more parallel starts would only queue on the
CPU. Each change of the worker's `info` calls `on_change()` (no lock held).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from e2e.harness.kubelet import podspec, podstatus
from e2e.harness.kubelet.podspec import METRICS_URL_ANNOTATION, PodKey, PodSpec
from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

from geo_operator.api import names
from geo_operator.triton import fetch, local, repository

log = logging.getLogger("kubelet_runner.worker")

# The `geo` of this venv: what the tuning pod's `tune` container runs.
GEO = pathlib.Path(sys.executable).with_name("geo")
TERMINATION_MESSAGE_LIMIT = 4096  # the kubelet's limit, and FallbackToLogsOnError's tail
START_ATTEMPTS = 3  # a start can fail on a port race (free ports are picked, then bound)
MAX_RESTARTS = 3  # restarts of a server that died after it was ready, like a kubelet's
MONITOR_PERIOD_S = 2.0
# A serving pod that goes keeps serving this long (the loadgen reads pods.json every 0.5 s).
DRAIN_S = 1.5
CONFIG_RETRY_S = 2.0  # a missing Secret is looked for again this often
REPORT_ATTEMPTS = 5  # a tuning pod's termination, reported through an API server restart


@dataclasses.dataclass(frozen=True)
class ServerInfo:
    """One pod's server as the runner reports it (a snapshot: never mutated)."""

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
    tuner: bool = False  # a tuning pod's sidecar: no scrape target
    track: str = names.STABLE_TRACK  # a rollout's track, a label of its scrape target

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics}/metrics"


class PodApi:
    """All a worker asks of the API server (the runner's client, shared by its workers)."""

    def __init__(self, core: k8s_client.CoreV1Api) -> None:
        self._core = core

    def config_map_data(self, namespace: str, name: str) -> dict[str, str]:
        resp: Any = self._core.read_namespaced_config_map(name, namespace, _preload_content=False)
        return dict(json.loads(resp.data).get("data") or {})

    def annotate(self, key: PodKey, uid: str, annotations: Mapping[str, str]) -> None:
        # metadata.uid makes the patch a precondition: never annotate a namesake.
        body = {"metadata": {"uid": uid, "annotations": dict(annotations)}}
        self._core.patch_namespaced_pod(
            key[1], key[0], body, _content_type="application/merge-patch+json"
        )

    def patch_status(self, key: PodKey, status: Mapping[str, Any]) -> None:
        self._core.patch_namespaced_pod_status(
            key[1], key[0], {"status": dict(status)}, _content_type="application/merge-patch+json"
        )

    def secret_keys(self, namespace: str, name: str) -> frozenset[str] | None:
        """The keys of a Secret (what a kubelet reads for env), None if it does not exist."""
        try:
            resp: Any = self._core.read_namespaced_secret(name, namespace, _preload_content=False)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        body = json.loads(resp.data)
        return frozenset({**(body.get("data") or {}), **(body.get("stringData") or {})})

    def status(self, key: PodKey) -> dict[str, Any]:
        resp: Any = self._core.read_namespaced_pod_status(key[1], key[0], _preload_content=False)
        return dict(json.loads(resp.data).get("status") or {})


class PodFailed(Exception):
    """The pod's containers cannot run, for the reason its status will give."""

    def __init__(self, failure: podstatus.Failure, detail: str = "") -> None:
        """``detail``: what the runner's log says (a crash's own words: its status may
        carry none)."""
        super().__init__(detail or failure.message or failure.kind)
        self.failure = failure


def terminated_status(
    tuner: podspec.Tuner, code: int, message: str, started: float, finished: float
) -> dict[str, Any]:
    """The pod status a kubelet reports once its only container exited with `code`."""
    return {
        "phase": "Succeeded" if code == 0 else "Failed",
        "containerStatuses": [
            {
                "name": tuner.container,
                "image": tuner.image,
                "imageID": "",
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": code,
                        "reason": "Completed" if code == 0 else "Error",
                        "message": message[:TERMINATION_MESSAGE_LIMIT],
                        "startedAt": podstatus.stamp(started),
                        "finishedAt": podstatus.stamp(finished),
                    }
                },
            }
        ],
    }


def readiness_status(
    status: Mapping[str, Any], container: str, ready: bool, restarts: int, now: float
) -> dict[str, Any]:
    """The pod status a kubelet reports when `container` dies (`ready` False) or is up
    again after `restarts` restarts: the pod's Ready and ContainersReady conditions and
    that container's ready flag and restart count, the rest as it was."""
    flag = "True" if ready else "False"
    conditions = [dict(c) for c in status.get("conditions") or []]
    for kind in ("Ready", "ContainersReady"):
        found = next((c for c in conditions if c.get("type") == kind), None)
        if found is None:
            found = {"type": kind}
            conditions.append(found)
        if found.get("status") != flag:
            found.update(status=flag, lastTransitionTime=podstatus.stamp(now))
        if ready:
            found.pop("reason", None)
        else:
            found["reason"] = "ContainersNotReady"
    containers = [dict(c) for c in status.get("containerStatuses") or []]
    for c in containers:
        if c.get("name") == container:
            c.update(ready=ready, started=ready, restartCount=restarts)
    return {"conditions": conditions, "containerStatuses": containers}


class PodWorker:
    """Runs one pod's processes in its own thread; `retire()` when the pod goes away."""

    def __init__(
        self,
        spec: PodSpec,
        pod_dir: pathlib.Path,
        api: PodApi,
        *,
        mirrors: Mapping[str, str],
        startup_timeout: float,
        start_slots: threading.Semaphore,
        on_change: Callable[[], None],
        previous: PodWorker | None = None,
    ) -> None:
        """`previous`: a retired worker of a pod of the same name, waited for first (it
        still owns the pod's directory)."""
        self.spec = spec
        self.key = spec.key
        self.pod_dir = pod_dir
        self.info: ServerInfo | None = None
        self._api = api
        self._mirrors = dict(mirrors)
        self._startup_timeout = startup_timeout
        self._start_slots = start_slots
        self._on_change = on_change
        self._previous = previous
        self._gone = threading.Event()
        self._lock = threading.Lock()  # guards _tuner against retire()
        self._tuner: subprocess.Popen[bytes] | None = None
        self._server: local.TritonServer | None = None  # the one running, for _run's cleanup
        self._thread = threading.Thread(
            target=self._run, name=f"pod-{spec.namespace}-{spec.name}", daemon=True
        )

    # --- the runner's side ----------------------------------------------------------------

    def start(self) -> PodWorker:
        self._thread.start()
        return self

    def retire(self) -> None:
        """The pod went away: stop its processes (in the worker's thread; this returns)."""
        self._gone.set()
        with self._lock:
            if self._tuner is not None and self._tuner.poll() is None:
                self._tuner.kill()  # the pod was deleted (its Job's deadline passed)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker's thread; True once it (and every process of it) is gone."""
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- the worker's thread --------------------------------------------------------------

    def _set(self, info: ServerInfo | None) -> None:
        self.info = info
        self._on_change()

    def _run(self) -> None:
        name = podspec.name(self.key)
        try:
            if self._previous is not None:
                self._previous.join(self._startup_timeout + 30)
                self._previous = None
            self._serve()
        except Exception as error:
            log.exception("the worker for %s failed", name)
            if self.info is not None:
                self._set(dataclasses.replace(self.info, ready=False, error=repr(error)))
        finally:
            # Whatever happened, nothing of this pod outlives its worker.
            if self._server is not None:
                self._stop_server(self._server)

    def _serve(self) -> None:
        name = podspec.name(self.key)
        restarts = 0
        while True:
            server = self._start()
            if server is None:  # gone, or given up on (self.info says why)
                return
            if self.spec.tuner is not None:
                self._run_tuner(self.spec.tuner, server)
                self._gone.wait()  # the Job's pod ends: it is no longer Running
                self._stop_server(server)
                return
            self._annotate(server)
            if restarts:
                self._report_ready(True, restarts)
            while not self._gone.wait(MONITOR_PERIOD_S) and server.is_running():
                pass
            if self._gone.is_set():
                # The pod left pods.json when it went (the runner republished); clients
                # that read it a moment earlier still send here: drain, like a preStop
                # sleep behind a Service's endpoints, then stop.
                time.sleep(DRAIN_S)
                self._stop_server(server)
                return
            # Died after it was ready: restart it a few times, like a kubelet.
            error = f"tritonserver exited; log tail:\n{server.log_tail(10)}"
            if self.info is not None:
                self._set(dataclasses.replace(self.info, ready=False, error=error))
            self._report_ready(False, restarts)
            self._server = None
            server.stop()  # reaps it and its stubs
            if restarts >= MAX_RESTARTS:
                log.error("triton for %s exited again; leaving it down", name)
                return
            restarts += 1
            log.warning("triton for %s exited; restarting (%d/%d)", name, restarts, MAX_RESTARTS)

    def _start(self) -> local.TritonServer | None:
        """A ready server, after up to START_ATTEMPTS tries; None if gone or given up."""
        name = podspec.name(self.key)
        last_error = ""
        # Whether a failure is in the pod's status: a start must clear it.
        reported = self._await_config()
        if reported is None:
            return None
        for attempt in range(1, START_ATTEMPTS + 1):
            if not self._take_slot():
                return None
            try:
                server = self._start_server(restarts=attempt - 1)
            except Exception as error:
                last_error = str(error) or repr(error)
                if isinstance(error, ApiException) and error.status == 404:
                    break  # the ConfigMap is gone: so is the GeoDeployment, soon the pod
                if isinstance(error, PodFailed):
                    reported = self._report_failure(error.failure) or reported
                    if self._never_restarted(error.failure):
                        break  # restartPolicy Never: the pod failed, it is not tried again
                log.warning(
                    "starting triton for %s failed (attempt %d/%d): %s",
                    name,
                    attempt,
                    START_ATTEMPTS,
                    error,
                )
            else:
                if server is not None and reported and not self._gone.is_set():
                    self._report_running(attempt - 1)
                if server is None or not self._gone.is_set():
                    return server
                self._stop_server(server)  # the pod went away while Triton was loading
                return None
            finally:
                self._start_slots.release()
            if attempt < START_ATTEMPTS and self._gone.wait(attempt):
                return None
        if self._gone.is_set():
            return None
        log.error("giving up on triton for %s: %s", name, last_error.splitlines()[0])
        if self.info is not None:
            self._set(dataclasses.replace(self.info, ready=False, error=last_error))
        return None

    def _take_slot(self) -> bool:
        while not self._gone.is_set():
            if self._start_slots.acquire(timeout=0.5):
                return True
        return False

    def _start_server(self, restarts: int = 0) -> local.TritonServer | None:
        """The pod's init container's work, then its Triton, started; PodFailed when either
        fails as a container would (``restarts``: the failing container's restarts so far)."""
        began = time.monotonic()
        spec = self.spec
        data = self._api.config_map_data(spec.namespace, spec.config_map)
        model = podspec.model_source(data)
        models_dir = self.pod_dir / "models"
        shutil.rmtree(models_dir, ignore_errors=True)  # a fresh repository per attempt
        fetching = time.time()
        try:
            repository.materialize(
                data,
                model_name=model.name,
                artifact_format=model.format,
                uri=spec.uri,
                repository=models_dir,
                mirrors=self._mirrors,
            )
            self._evaluation_sources(data, model)
        except (OSError, ValueError) as error:  # what makes fetch.py exit 1
            words = podstatus.fetch_words(error, self._fetches(data))
            raise PodFailed(
                podstatus.Failure(
                    podstatus.INIT_FAILED,
                    podspec.INIT_CONTAINER,
                    words,
                    restarts=restarts,
                    started=fetching,
                    finished=time.time(),
                )
            ) from error
        tuner = spec.is_tuner
        server = local.TritonServer(
            models_dir,
            log_path=self.pod_dir / "triton.log",
            startup_timeout=self._startup_timeout,
            stop_timeout=10.0,
            # Stop like a kubelet's grace period, but short: tests scale down often.
            exit_timeout_secs=3,
            # The tuning pod's sidecar: explicit model control, as its args say.
            model_control_mode="explicit" if tuner else "none",
            load_models=[model.name] if tuner else [],
            extra_args=spec.server_flags,
        )
        info = ServerInfo(
            namespace=spec.namespace,
            pod=spec.name,
            uid=spec.uid,
            geodeployment=spec.geodeployment,
            artifact=spec.artifact,
            uri=spec.uri,
            model=model.name,
            max_batch_size=model.max_batch_size,
            http=server.http_url,
            grpc=server.grpc_url,
            metrics=f"{local.HOST}:{server.metrics_port}",
            ready=False,
            pid=None,
            startup_seconds=None,
            tuner=tuner,
            track=spec.track,
        )
        if self._gone.is_set():
            return None
        self._set(info)
        starting = time.time()
        try:
            server.start()
        except local.TritonServerError as error:
            failure = self._crash(error, server, restarts, starting)
            raise PodFailed(failure, f"{failure.kind}: {error}") from error
        self._server = server
        took = time.monotonic() - began
        self._set(dataclasses.replace(info, ready=True, pid=server.pid, startup_seconds=took))
        log.info(
            "started triton for %s (artifact %s, max_batch_size %d) on :%d in %.1fs",
            podspec.name(self.key),
            info.artifact,
            info.max_batch_size,
            server.http_port,
            took,
        )
        return server

    def _evaluation_sources(self, data: Mapping[str, str], model: podspec.ModelSource) -> None:
        """What the tuning pod's init container fetches besides the artifact: the held-out
        set, and for agreement the reference artifact as <model>-reference."""
        spec = self.spec
        if spec.evaluation_uri:
            fetch.fetch(
                repository.rewrite_uri(spec.evaluation_uri, self._mirrors), str(self._heldout)
            )
        if spec.reference_uri:
            repository.materialize_reference(
                data,
                uri=spec.reference_uri,
                repository=self.pod_dir / "models",
                mirrors=self._mirrors,
            )

    def _fetches(self, data: Mapping[str, str]) -> list[tuple[str, str]]:
        """Each fetch of the init container, in its order: (as the pod names the URI, as
        the runner fetched it through its mirrors)."""
        spec = self.spec
        uris = [spec.uri]
        if names.WARMUP_FILES in data:
            uris += list(json.loads(data[names.WARMUP_FILES]).values())
        uris += [u for u in (spec.evaluation_uri, spec.reference_uri) if u]
        return [(u, repository.rewrite_uri(u, self._mirrors)) for u in uris]

    def _config_error(self) -> str | None:
        """What the kubelet checks before it starts the init container: every Secret key its
        env takes exists; else the CreateContainerConfigError's words."""
        spec = self.spec
        wanted = sorted({ref.secret for ref in spec.secret_refs})
        keys = {secret: self._api.secret_keys(spec.namespace, secret) for secret in wanted}
        return podspec.config_error(spec.namespace, spec.secret_refs, keys)

    def _await_config(self) -> bool | None:
        """Wait until the init container's env can be made, reporting CreateContainerConfigError
        (again when its words change) meanwhile, as a kubelet retries it: until the Secret is
        there, for as long as the pod lives. Whether it reported one; None once gone."""
        reported, said = False, None
        while not self._gone.is_set():
            try:
                words = self._config_error()
            except Exception as error:  # the API server restarting: look again
                log.warning("reading the Secrets of %s failed: %r", podspec.name(self.key), error)
                words = said
            else:
                if words is None:
                    return reported
                if words != said:
                    failure = podstatus.Failure(
                        podstatus.CONFIG_ERROR, podspec.INIT_CONTAINER, words
                    )
                    if self._report_failure(failure):
                        reported, said = True, words
            self._gone.wait(CONFIG_RETRY_S)
        return None

    def _crash(
        self,
        error: local.TritonServerError,
        server: local.TritonServer,
        restarts: int,
        started: float,
    ) -> podstatus.Failure:
        """Triton exited (or never got ready) at its start: the container's crash."""
        found = re.search(r"exited with code (-?\d+)", str(error))
        code = int(found.group(1)) if found else 137  # not ready in time: killed
        if code < 0:
            code = 128 - code  # killed by a signal: the shell's convention, as a kubelet's
        container = next(
            (c for c in self.spec.containers if c.name == names.TRITON_CONTAINER),
            next((c for c in self.spec.init_containers if c.name == names.TRITON_CONTAINER), None),
        )
        # The kubelet's message: the termination-log file (Triton writes none), or under
        # FallbackToLogsOnError the log's tail.
        message = ""
        if container is not None and container.fallback_to_logs:
            message = podstatus.log_message(server.log_tail(podstatus.LOG_MESSAGE_LINES))
        return podstatus.Failure(
            podstatus.CRASHED,
            names.TRITON_CONTAINER,
            message,
            exit_code=code,
            restarts=restarts,
            started=started,
            finished=time.time(),
        )

    def _never_restarted(self, failure: podstatus.Failure) -> bool:
        """A pod with restartPolicy Never whose init container failed is over."""
        return self.spec.restart_policy == "Never" and failure.kind == podstatus.INIT_FAILED

    def _report_failure(self, failure: podstatus.Failure) -> bool:
        """Write ``failure`` into the pod's status, as a kubelet would; True once written."""
        name = podspec.name(self.key)
        try:
            now = self._api.status(self.key)
            self._api.patch_status(self.key, podstatus.failed(self.spec, now, failure, time.time()))
        except Exception as error:  # gone, or the API server restarting: not fatal
            log.warning("reporting pod %s %s failed: %r", name, failure.kind, error)
            return False
        log.info("pod %s reported %s: %s", name, failure.kind, failure.message.splitlines()[:1])
        return True

    def _report_running(self, restarts: int) -> None:
        """The pod's containers run again after a reported failure: Ready as kwok had it."""
        name = podspec.name(self.key)
        try:
            now = self._api.status(self.key)
            self._api.patch_status(
                self.key, podstatus.running(self.spec, now, restarts, time.time())
            )
        except Exception as error:
            log.warning("reporting pod %s running failed: %r", name, error)

    @property
    def _heldout(self) -> pathlib.Path:
        return self.pod_dir / "evaluation" / "heldout.npz"

    def _stop_server(self, server: local.TritonServer) -> None:
        name = podspec.name(self.key)
        self._server = None
        pid = server.pid if server.is_running() else None
        try:
            code = server.stop()
        except Exception:
            log.exception("stopping triton for %s failed", name)
            return
        # The repository is a copy of what the API holds; the log is kept for post-mortems.
        shutil.rmtree(self.pod_dir / "models", ignore_errors=True)
        log.info("stopped triton for %s (pid %s, exit code %s)", name, pid, code)

    def _report_ready(self, ready: bool, restarts: int) -> None:
        """What a kubelet reports of a serving pod whose Triton died (not ready) or came
        back: the API's Ready condition follows the process (kwok's stages leave a
        Running pod's status alone)."""
        name = podspec.name(self.key)
        try:
            now = self._api.status(self.key)
            self._api.patch_status(
                self.key,
                readiness_status(now, names.TRITON_CONTAINER, ready, restarts, time.time()),
            )
            log.info("pod %s reported %s", name, "ready" if ready else "not ready")
        except Exception as error:  # gone, or the API server restarting: not fatal
            log.warning(
                "reporting pod %s %s failed: %r", name, "ready" if ready else "unready", error
            )

    def _annotate(self, server: local.TritonServer) -> None:
        """Tell the pod's readers where its metrics and its HTTP endpoint really are (kwok's
        pod IP is fake)."""
        name = podspec.name(self.key)
        url = f"http://{local.HOST}:{server.metrics_port}/metrics"
        where = {METRICS_URL_ANNOTATION: url, names.INFERENCE_URL_ANNOTATION: server.http_url}
        try:
            self._api.annotate(self.key, self.spec.uid, where)
        except ApiException as error:
            if error.status in (404, 409):  # deleted (or replaced) meanwhile: nothing to do
                log.info("pod %s vanished before it could be annotated", name)
                return
            log.warning("annotating pod %s failed: %s %s", name, error.status, error.reason)
        except Exception as error:  # the API server unreachable (restarting): not fatal
            log.warning("annotating pod %s failed: %r", name, error)

    def _run_tuner(self, tuner: podspec.Tuner, server: local.TritonServer) -> None:
        """The tuning pod's `tune` container: the real `geo tune` with the pod's args against
        its Triton, then the pod reported terminated with the exit code and the termination
        message (the result file, else the log's tail: FallbackToLogsOnError)."""
        name = podspec.name(self.key)
        result_file = self.pod_dir / "termination-log"
        result_file.unlink(missing_ok=True)
        heldout = self._heldout if self.spec.evaluation_uri else None
        command = podspec.tuner_command(
            tuner, GEO, server.http_url, result_file, heldout, self.pod_dir / "models"
        )
        log_path = self.pod_dir / "tune.log"
        started = time.time()
        with self._lock:
            if self._gone.is_set():
                return
            with log_path.open("wb") as out:
                self._tuner = subprocess.Popen(
                    command,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **dict(tuner.env)},
                )
            process = self._tuner
        log.info("running geo tune for %s: %s", name, " ".join(command[1:]))
        code = process.wait()
        if self._gone.is_set():  # killed with its pod
            return
        message = result_file.read_text() if result_file.exists() else ""
        if not message and code != 0:
            message = log_path.read_bytes()[-TERMINATION_MESSAGE_LIMIT:].decode(errors="replace")
        finished = time.time()
        log.info("geo tune for %s exited %d after %.1fs", name, code, finished - started)
        status = terminated_status(tuner, code, message, started, finished)
        for attempt in range(1, REPORT_ATTEMPTS + 1):
            try:
                self._api.patch_status(self.key, status)
                return
            except ApiException as error:
                if error.status == 404:  # deleted meanwhile: nobody to tell
                    return
                log.warning(
                    "reporting %s terminated failed: %s %s", name, error.status, error.reason
                )
            except Exception as error:  # the API server unreachable (restarting)
                log.warning("reporting %s terminated failed: %r", name, error)
            if self._gone.wait(2**attempt):
                return
