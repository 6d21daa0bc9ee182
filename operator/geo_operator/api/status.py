"""Who writes which status field, and writing only what changed.

Each status field has exactly one writer, named here and nowhere else:

- the reconcile (`controller.reconcile`) owns `RECONCILE`: observedGeneration,
  selectedArtifact, maxBatchSize, tuning, configHash, replicas, readyReplicas,
  selector, rollout and the conditions Ready, ArtifactSelected, BatchTuned,
  Progressing;
- the autoscaler (`controller.autoscaler`) owns `AUTOSCALER`: lastDecision,
  decisions, autoscaling (the effective target) and the conditions ScalingActive,
  MetricsAvailable.

Each writes with server-side apply under its own field manager, so the API
server itself keeps them apart (conditions are a map keyed by `type`), and no
write needs the other's fields, a resourceVersion or a conflict retry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol

from geo_operator.api import models, names


class StatusApplier(Protocol):
    def apply_status(
        self, namespace: str, name: str, manager: str, status: dict[str, Any]
    ) -> None: ...


@dataclasses.dataclass(frozen=True)
class Writer:
    """One writer of status: its field manager, the fields and the condition types it owns."""

    manager: str
    fields: tuple[str, ...]
    conditions: tuple[str, ...]

    def owned(self, status: Mapping[str, Any]) -> dict[str, Any]:
        """The part of a (dumped) status this writer owns."""
        out = {k: status[k] for k in self.fields if status.get(k) not in (None, [])}
        conds = [c for c in status.get("conditions") or () if c.get("type") in self.conditions]
        if conds:
            out["conditions"] = conds
        return out


RECONCILE = Writer(
    names.RECONCILE_MANAGER,
    (
        "observedGeneration",
        "selectedArtifact",
        "maxBatchSize",
        "tuning",
        "configHash",
        "replicas",
        "readyReplicas",
        "selector",
        "rollout",
    ),
    ("Ready", "ArtifactSelected", "BatchTuned", "Progressing"),
)
AUTOSCALER = Writer(
    names.AUTOSCALER_MANAGER,
    ("lastDecision", "decisions", "autoscaling"),
    ("ScalingActive", "MetricsAvailable"),
)
WRITERS = (RECONCILE, AUTOSCALER)


def dump(status: models.GeoDeploymentStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


def write(
    applier: StatusApplier,
    body: Mapping[str, Any],
    new: models.GeoDeploymentStatus,
    writer: Writer,
) -> bool:
    """Apply ``writer``'s part of ``new`` only when it differs from the body's; True if
    written."""
    meta = body["metadata"]
    mine = writer.owned(dump(new))
    if mine == writer.owned(dict(body.get("status") or {})):
        return False
    applier.apply_status(meta["namespace"], meta["name"], writer.manager, mine)
    return True
