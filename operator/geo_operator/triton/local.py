"""Run the real ``tritonserver`` shipped in the nvidia-pytriton wheel, locally and on CPU.

Used by the tests marked ``triton``, the e2e runner and the demo to serve a model
repository rendered by the operator without a cluster or a GPU::

    with TritonServer(repo) as server:
        httpclient.InferenceServerClient(server.http_url) ...

The operator itself never imports this module (in Kubernetes, Triton runs from
its container image).

What the wheel's binary needs, found by trial (Triton 2.51 in nvidia-pytriton 0.7):

* ``--backend-directory`` / ``--cache-directory`` pointing into the wheel
  (the defaults are ``/opt/tritonserver/...``).
* The python backend's ``triton_python_backend_stub`` for *this* Python's version
  copied next to ``libtriton_python.so`` (the wheel ships one per version aside).
* The stub embeds Python and locates its prefix by looking ``python3`` up on
  ``PATH``; with this interpreter's bin directory first it finds the venv and its
  site-packages (setting ``PYTHONPATH`` instead did not work). It links
  ``libpython3.X.so.1.0`` dynamically: without help that resolves to the distro's
  copy, so this interpreter's ``LIBDIR`` goes first on ``LD_LIBRARY_PATH``.
* ``nvidia_pytriton.libs`` on ``LD_LIBRARY_PATH`` (the binaries' RPATH covers it
  in place; kept for a copied stub).
* No GPU: ``--allow-gpu-metrics=false`` (else NVML/DCGM errors),
  ``--pinned-memory-pool-byte-size=0`` (else a CUDA-driver warning). The
  remaining "CudaDriverHelper has not been initialized" log line is harmless.
* A unique python-backend shm prefix so two servers on one host don't collide.
"""

from __future__ import annotations

import contextlib
import ctypes
import filecmp
import importlib.util
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
ModelControlMode = Literal["none", "explicit"]


PYTHON_BACKEND_ABORT = "boost::interprocess::lock_exception"


class TritonServerError(RuntimeError):
    """tritonserver is missing, failed to start, or did not become ready."""


@dataclass(frozen=True)
class TritonInstall:
    """Paths inside the installed nvidia-pytriton wheel."""

    root: Path  # site-packages/pytriton/tritonserver

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.root / "backends"

    @property
    def caches(self) -> Path:
        return self.root / "caches"

    @property
    def libs(self) -> Path:
        # auditwheel puts the bundled shared libraries beside the package.
        return self.root.parent.parent / "nvidia_pytriton.libs"

    def stub_source(self, python_version: str) -> Path:
        return self.root / "python_backend_stubs" / python_version / "triton_python_backend_stub"

    @property
    def stub_target(self) -> Path:
        return self.backends / "python" / "triton_python_backend_stub"


def find_install() -> TritonInstall:
    """Locate the tritonserver tree of the installed ``pytriton`` package."""
    # find_spec instead of import: importing pytriton pulls in a lot we don't need.
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonServerError(
            "nvidia-pytriton is not installed; it ships tritonserver: pip install nvidia-pytriton"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    install = TritonInstall(root=root)
    if not install.binary.is_file():
        raise TritonServerError(f"pytriton is installed but {install.binary} is missing")
    return install


def find_tritonserver() -> Path:
    """Path of the ``tritonserver`` binary from the installed nvidia-pytriton wheel."""
    return find_install().binary


def _python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def prepare_python_backend(install: TritonInstall | None = None) -> Path:
    """Put this Python's backend stub next to ``libtriton_python.so``; return its path.

    Idempotent and safe against a concurrent caller: the copy is written under a
    temporary name and renamed into place.
    """
    install = install or find_install()
    version = _python_version()
    source = install.stub_source(version)
    if not source.is_file():
        shipped = sorted(p.name for p in source.parent.parent.iterdir())
        raise TritonServerError(
            f"nvidia-pytriton ships no python backend stub for Python {version} (has {shipped})"
        )
    target = install.stub_target
    if target.is_file() and filecmp.cmp(source, target, shallow=False):
        return target
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        shutil.copy2(source, tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise TritonServerError(
            f"cannot install the python backend stub at {target}: {exc}"
        ) from exc
    log.info("installed python backend stub for Python %s at %s", version, target)
    return target


def _libpython_dir() -> Path | None:
    """Directory holding this interpreter's shared libpython, if it has one."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return None
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY")
    if libdir and soname and (Path(libdir) / soname).exists():
        return Path(libdir)
    return None


def _prepend(paths: Sequence[str], current: str | None) -> str:
    parts = [p for p in paths if p]
    parts += [p for p in (current or "").split(os.pathsep) if p and p not in parts]
    return os.pathsep.join(parts)


def server_env(
    install: TritonInstall | None = None, base: dict[str, str] | None = None
) -> dict[str, str]:
    """Environment under which the stub embeds *this* interpreter and sees its packages."""
    install = install or find_install()
    env = dict(os.environ if base is None else base)
    bin_dir = Path(sys.executable).parent  # not resolved: a venv's bin, not the base python's
    if not (bin_dir / "python3").exists():
        log.warning("%s has no python3; the python backend stub may embed another Python", bin_dir)
    env["PATH"] = _prepend([str(bin_dir)], env.get("PATH"))
    libpython = _libpython_dir()
    if libpython is None:
        log.warning(
            "this Python has no shared libpython; the stub will use the system's libpython%s",
            _python_version(),
        )
    env["LD_LIBRARY_PATH"] = _prepend(
        [str(libpython) if libpython else "", str(install.libs)], env.get("LD_LIBRARY_PATH")
    )
    return env


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None]:
    """A preexec_fn making the child get SIGTERM when the starting thread dies.

    The server runs in its own session (so stop() can reach its stubs), which
    also means a killed test runner would leave it serving forever; this ties
    its life to ours. prctl is resolved here, before fork, not in the child.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # parent already gone before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def free_ports(count: int, host: str = HOST) -> list[int]:
    """Ports the OS considers free right now (all held open together, so distinct)."""
    with contextlib.ExitStack() as stack:
        socks = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for _ in range(count)
        ]
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]


class TritonServer:
    """One tritonserver process serving ``model_repository`` on 127.0.0.1.

    ``start()`` returns once ``/v2/health/ready`` answers 200 (all models in the
    repository loaded, or the ``load_models`` in explicit mode); ``stop()``
    sends SIGTERM to the server, then SIGKILL to its whole process group after
    ``stop_timeout`` so no python stub outlives it. Free ports are picked at
    construction; another process could still grab one before Triton binds it,
    which shows up as a start failure.

    Clients should close their HTTP connections before ``stop()``: Triton waits
    up to ``exit_timeout_secs`` for open connections before unloading models.
    Linux only. The server gets SIGTERM if the thread that started it exits, so
    start it from a thread that outlives it (normally the main thread).
    """

    def __init__(
        self,
        model_repository: Path,
        *,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        model_control_mode: ModelControlMode = "none",
        load_models: Sequence[str] = (),
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 120.0,
        stop_timeout: float = 20.0,
        exit_timeout_secs: int = 5,
        log_verbose: int = 0,
    ) -> None:
        if load_models and model_control_mode != "explicit":
            raise ValueError("load_models needs model_control_mode='explicit'")
        self.model_repository = Path(model_repository).resolve()
        picked = iter(free_ports(3))
        self.http_port = http_port or next(picked)
        self.grpc_port = grpc_port or next(picked)
        self.metrics_port = metrics_port or next(picked)
        self.model_control_mode: ModelControlMode = model_control_mode
        self.load_models = tuple(load_models)
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.exit_timeout_secs = exit_timeout_secs
        self.log_verbose = log_verbose
        self._log_path = log_path
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._install: TritonInstall | None = None
        self.startup_seconds: float | None = None

    # --- addresses -----------------------------------------------------------------

    @property
    def http_url(self) -> str:
        """``host:port`` as tritonclient.http expects it."""
        return f"{HOST}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """Full URL of the Prometheus endpoint."""
        return f"http://{HOST}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise TritonServerError("tritonserver is not running")
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        if self._log_path is None:
            raise TritonServerError("tritonserver has not been started")
        return self._log_path

    # --- lifecycle -----------------------------------------------------------------

    def command(self) -> list[str]:
        install = self._install or find_install()
        shm_prefix = f"geo_{os.getpid()}_{secrets.token_hex(4)}_"
        cmd = [
            str(install.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={install.backends}",
            f"--cache-directory={install.caches}",
            f"--model-control-mode={self.model_control_mode}",
            f"--http-address={HOST}",
            f"--http-port={self.http_port}",
            f"--grpc-address={HOST}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={HOST}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--allow-cpu-metrics=true",
            # Per-model p50/p90/p95/p99 as nv_inference_request_summary_us{quantile=..}.
            "--metrics-config=summary_latencies=true",
            "--pinned-memory-pool-byte-size=0",
            f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
            f"--exit-timeout-secs={self.exit_timeout_secs}",
            f"--log-verbose={self.log_verbose}",
        ]
        cmd += [f"--load-model={name}" for name in self.load_models]
        cmd += self.extra_args
        return cmd

    def start(self) -> TritonServer:
        if self._proc is not None:
            raise TritonServerError("tritonserver already started")
        if not self.model_repository.is_dir():
            raise TritonServerError(f"model repository {self.model_repository} does not exist")
        self._install = find_install()
        prepare_python_backend(self._install)
        if self._log_path is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="geo-triton-")
            self._log_path = Path(self._tmpdir.name) / "tritonserver.log"
        self._log_path.parent.mkdir(parents=True, exist_ok=True)

        for attempt in (1, 2):
            started = self._launch()
            try:
                self._wait_ready(started)
                break
            except TritonServerError as error:
                self.stop()
                # Triton 2.51's python backend now and then aborts while it sets up its
                # shared memory (boost::interprocess::lock_exception) on this machine,
                # right after another server stopped: start once more, with a new region.
                if attempt == 1 and PYTHON_BACKEND_ABORT in str(error):
                    log.warning("tritonserver aborted in python-backend setup; starting again")
                    if self._log_path is None:  # stop() removed its own temporary folder
                        self._tmpdir = tempfile.TemporaryDirectory(prefix="geo-triton-")
                        self._log_path = Path(self._tmpdir.name) / "tritonserver.log"
                    continue
                raise
            except BaseException:
                self.stop()
                raise
        self.startup_seconds = time.monotonic() - started
        log.info(
            "tritonserver pid %d ready in %.1fs on http %s grpc %s metrics %s",
            self.pid,
            self.startup_seconds,
            self.http_url,
            self.grpc_url,
            self.metrics_url,
        )
        return self

    def _launch(self) -> float:
        """Start the process (a fresh command: its own shared-memory prefix); when it began."""
        assert self._install is not None and self._log_path is not None
        cmd = self.command()
        log.info("starting %s", " ".join(cmd))
        started = time.monotonic()
        with open(self._log_path, "wb") as logf:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=server_env(self._install),
                # Own process group: stop() can reach the python stubs too.
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        return started

    def _wait_ready(self, started: float) -> None:
        assert self._proc is not None
        url = f"http://{self.http_url}/v2/health/ready"
        while True:
            code = self._proc.poll()
            if code is not None:
                raise TritonServerError(
                    f"tritonserver exited with code {code} before becoming ready"
                    + self._failure_details()
                )
            # Ready once the metrics port listens too: Triton starts its metrics server a
            # moment after /v2/health/ready answers, and a scrape in that moment was refused
            # (seen once in CI).
            if self.is_ready(url) and self._metrics_listening():
                return
            if time.monotonic() - started > self.startup_timeout:
                raise TritonServerError(
                    f"tritonserver not ready after {self.startup_timeout:.0f}s"
                    + self._failure_details()
                )
            time.sleep(0.2)

    def _metrics_listening(self) -> bool:
        try:
            with socket.create_connection((HOST, self.metrics_port), timeout=0.5):
                return True
        except OSError:
            return False

    def _failure_details(self) -> str:
        """Error lines and log tail for an exception message; the status tables are dropped."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return " (no log)"
        # Triton prints model/backend status as +---+ / | ... | tables: wide and mostly noise.
        lines = [ln for ln in lines if ln.strip() and not ln.startswith(("+", "|"))]
        errors = [ln[:2000] for ln in lines if ln.startswith("E")]
        where = "" if self._tmpdir is not None else f" (full log: {self.log_path})"
        return (
            f"{where}\nerror lines:\n"
            + "\n".join(errors[-10:] or ["<none>"])
            + "\nlog tail:\n"
            + "\n".join(lines[-15:])
        )

    def is_ready(self, url: str | None = None) -> bool:
        try:
            with urllib.request.urlopen(
                url or f"http://{self.http_url}/v2/health/ready", timeout=2
            ) as r:
                return int(r.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> int | None:
        """Stop the server and its stubs; return its exit code (None if it never started)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        pgid = proc.pid  # start_new_session: the server leads its own group
        if proc.poll() is None:
            # Only the server: it unloads models and shuts its stubs down itself.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning(
                    "tritonserver pid %d ignored SIGTERM for %.0fs; killing",
                    pgid,
                    self.stop_timeout,
                )
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                proc.wait()
        self._reap_group(pgid)
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None
            self._log_path = None
        return proc.returncode

    def _reap_group(self, pgid: int) -> None:
        """Stubs normally exit with the server; kill any that didn't within a few seconds."""
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if not _group_members(pgid):
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, TritonServerError):
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    def rss_bytes(self) -> dict[int, int]:
        """Resident memory of every process in the server's group (server and stubs), by pid."""
        if self._proc is None:
            return {}
        return {pid: _rss(pid) for pid in _group_members(self._proc.pid)}

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp ...
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
