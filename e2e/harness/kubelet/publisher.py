"""What the runner serves, as files: `pods.json` and Prometheus' `file_sd.json`.

`render` is pure (ServerInfo snapshots in, the two documents out); `Publisher`
writes them atomically, and only when they changed, so readers (the load
generator, Prometheus' file-based discovery, tests) never see half a file.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterable
from typing import Any

from e2e.harness.kubelet.worker import ServerInfo


def render(infos: Iterable[ServerInfo]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pods.json, file_sd.json): every server with its addresses; ready serving ones as
    scrape targets (a starting server would just be "down", a tuning pod's is no target)."""
    infos = list(infos)
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
    file_sd = [
        {
            "targets": [i.metrics],
            "labels": {
                "namespace": i.namespace,
                "pod": i.pod,
                "geodeployment": i.geodeployment,
                "track": i.track,
            },
        }
        for i in infos
        if i.ready and not i.tuner
    ]
    return pods, file_sd


def write_json(path: pathlib.Path, value: Any) -> None:
    """Write atomically: readers (Prometheus, tests) never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)


class Publisher:
    """Keeps `<state_dir>/pods.json` and `<state_dir>/file_sd.json` up to date."""

    def __init__(self, state_dir: pathlib.Path) -> None:
        self.state_dir = state_dir
        self._published: tuple[str, str] | None = None

    @property
    def pods_json(self) -> pathlib.Path:
        return self.state_dir / "pods.json"

    @property
    def file_sd_json(self) -> pathlib.Path:
        return self.state_dir / "file_sd.json"

    def publish(self, infos: Iterable[ServerInfo]) -> bool:
        """Rewrite both files if their content changed; True if it did. Not thread-safe:
        the caller serialises (the runner holds its lock)."""
        pods, file_sd = render(infos)
        texts = (json.dumps(pods), json.dumps(file_sd))
        if texts == self._published or not self.state_dir.is_dir():
            return False
        write_json(self.pods_json, pods)
        write_json(self.file_sd_json, file_sd)
        self._published = texts
        return True
