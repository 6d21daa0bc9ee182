"""Status conditions by the Kubernetes API conventions.

Pure helpers used by the reconcile's status and the autoscaler: set one
condition in a list keyed by `type`, changing `lastTransitionTime` only when the
status flips, and read one back.
"""

from __future__ import annotations

from collections.abc import Sequence

from geo_operator.api import models, names

READY = "Ready"
ARTIFACT_SELECTED = "ArtifactSelected"
BATCH_TUNED = "BatchTuned"
SCALING_ACTIVE = "ScalingActive"
METRICS_AVAILABLE = "MetricsAvailable"
# A rollout's state (reasons e.g. CanaryAnalysis, Promoted, RolledBack, Inconclusive).
PROGRESSING = "Progressing"
# The order conditions are listed in, for stable status and readable output.
ORDER = (
    READY,
    ARTIFACT_SELECTED,
    BATCH_TUNED,
    SCALING_ACTIVE,
    METRICS_AVAILABLE,
    PROGRESSING,
)


now = names.now


def get(conditions: Sequence[models.Condition], type_: str) -> models.Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def set_condition(
    conditions: Sequence[models.Condition],
    type_: str,
    status: models.ConditionStatus,
    reason: str,
    message: str,
    *,
    generation: int | None,
    time: str | None = None,
) -> list[models.Condition]:
    """A new list with `type_` set; its transition time kept unless status flips."""
    old = get(conditions, type_)
    transition = (
        old.last_transition_time if old is not None and old.status == status else (time or now())
    )
    new = models.Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message[:4096],
        last_transition_time=transition,
        observed_generation=generation,
    )
    rest = [c for c in conditions if c.type != type_]
    rank = {t: i for i, t in enumerate(ORDER)}
    return sorted([*rest, new], key=lambda c: (rank.get(c.type, len(ORDER)), c.type))
