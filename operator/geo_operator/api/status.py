"""Writing a GeoDeployment's status: only when it changed, only over the version read.

Used by the reconcile handler, the Deployment watcher and the autoscaling loop:
three writers, so every write is a merge patch that carries the
`resourceVersion` its view was computed from, and the API server refuses a
stale one (the writer re-reads and tries again instead of overwriting).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from geo_operator.api import models


class Conflict(Exception):
    """The object changed since it was read (HTTP 409): re-read and try again."""


class StatusWriter(Protocol):
    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None
    ) -> None: ...


def dump(status: models.GeoDeploymentStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


def _patch(new: models.GeoDeploymentStatus, old: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch: the dump, plus an explicit null for `tuning` once tuning is off, so
    that the record is removed rather than kept by the merge. (`tuning` is a list, which a
    merge patch replaces whole: a field cleared inside a run goes with the old list.)"""
    patch = dump(new)
    if new.tuning is None and "tuning" in old:
        patch["tuning"] = None  # tuning no longer asked for: the record goes
    return patch


def write(writer: StatusWriter, body: Mapping[str, Any], new: models.GeoDeploymentStatus) -> bool:
    """Patch status only when it changed; True if written. Conflicts propagate."""
    meta = body["metadata"]
    old = dict(body.get("status") or {})
    if old == dump(new):
        return False
    writer.patch_status(
        meta["namespace"], meta["name"], _patch(new, old), meta.get("resourceVersion")
    )
    return True
