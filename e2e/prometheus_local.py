"""Run Debian's `prometheus` on 127.0.0.1 for tests: file-based discovery, 1 s scrapes
(``scrape_seconds``).

Used by tests/triton/test_prometheus.py and the closed-loop e2e. Targets and
their labels come from a file_sd JSON file (the e2e kubelet runner writes one);
``static`` adds jobs of fixed targets (the operator's own metrics), ``rule_files``
the rules it evaluates every second (GEO's alerts).
"""

from __future__ import annotations

import json
import pathlib
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import yaml


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    """One prometheus process; `start()` waits for /-/ready, `stop()` leaves nothing."""

    def __init__(
        self,
        workdir: pathlib.Path,
        file_sd: pathlib.Path,
        *,
        static: dict[str, str] | None = None,
        rule_files: list[pathlib.Path] | None = None,
        scrape_seconds: float = 1,
    ) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed: apt-get install prometheus")
        self.binary = binary
        self.workdir = workdir
        self.file_sd = file_sd
        self.static = dict(static or {})
        self.rule_files = list(rule_files or ())
        self.scrape_seconds = scrape_seconds
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> Prometheus:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        jobs = [
            {
                "job_name": "triton",
                "file_sd_configs": [{"files": [str(self.file_sd)], "refresh_interval": "1s"}],
            },
            *(
                {"job_name": job, "static_configs": [{"targets": [target]}]}
                for job, target in self.static.items()
            ),
        ]
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {
                        "scrape_interval": f"{self.scrape_seconds:g}s",
                        "evaluation_interval": "1s",
                        "scrape_timeout": f"{self.scrape_seconds * 900:g}ms",
                    },
                    "rule_files": [str(f) for f in self.rule_files],
                    "scrape_configs": jobs,
                }
            )
        )
        log = (self.workdir / "prometheus.log").open("ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=2h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited {self.process.returncode}; see "
                    f"{self.workdir / 'prometheus.log'}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready after {timeout}s")

    def query(self, expr: str) -> list[dict[str, object]]:
        """The instant vector ``expr`` answers now (its series' metric and value)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as r:
            answer = json.load(r)
        return list(answer["data"]["result"])

    def alerts(self) -> list[dict[str, object]]:
        """The alerts pending or firing now (/api/v1/alerts)."""
        with urllib.request.urlopen(f"{self.url}/api/v1/alerts", timeout=5) as r:
            return list(json.load(r)["data"]["alerts"])

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
