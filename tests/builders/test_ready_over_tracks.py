"""Ready and status.replicas/readyReplicas describe what serves: both tracks of a rollout.

At a 100 % step the stable is scaled to zero and the canary's pods serve every request;
that is Ready (Available), not ScaledToZero, and the replica counts are the canary's."""

from __future__ import annotations

import copy
from typing import Any

from geo_operator.api import conditions, models
from geo_operator.builders import children, desired, plan
from geo_operator.rollout import analysis

NOW = 1_800_000_000.0
IMAGE = "geo:test"


def _ready(status: models.GeoDeploymentStatus) -> models.Condition:
    found = conditions.get(status.conditions, conditions.READY)
    assert found is not None
    return found


def _deployment(wanted: desired.Desired, name: str) -> dict[str, Any]:
    return copy.deepcopy(
        next(
            o for o in wanted.objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name
        )
    )


def _stored(deployment: dict[str, Any], replicas: int, ready: int) -> dict[str, Any]:
    """As the API server holds it: asked ``replicas``, ``ready`` of them ready and updated."""
    out = copy.deepcopy(deployment)
    out["metadata"]["generation"] = 1
    out["spec"]["replicas"] = replicas
    out["status"] = {"observedGeneration": 1, "readyReplicas": ready, "updatedReplicas": ready}
    return out


def _dump(status: models.GeoDeploymentStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


def test_at_a_100_percent_step_the_canary_serving_is_ready(body: dict[str, Any]) -> None:
    body["spec"]["replicas"] = 2
    body["spec"]["rollout"] = {"steps": [50, 100], "analysisIntervalSeconds": 10, "minRequests": 50}
    first = desired.decide(desired.Observed(body), NOW, IMAGE)
    stable = _stored(_deployment(first, "digits"), 2, 2)
    body["status"] = _dump(desired.settle(first, stable, None))

    # A change goes out as a canary at 50 %: one pod each.
    body["spec"]["triton"]["maxBatchSize"] = 16
    body["metadata"]["generation"] = 2
    started = desired.decide(desired.Observed(body, stable), NOW + 1, IMAGE)
    canary_name = children.canary_name("digits")
    # Both counts go through the scale subresource, the canary's once it is created.
    assert started.scale == (("digits", 1), (canary_name, 1))
    stable = _stored(stable, 1, 1)
    canary = _stored(_deployment(started, canary_name), 1, 1)
    at_half = desired.settle(started, stable, None, canary=canary)
    assert (at_half.replicas, at_half.ready_replicas) == (2, 2)
    assert _ready(at_half).message == (
        "2 of 2 Triton pods ready (1 of 1 stable, 1 of 1 canary at 50 %)"
    )
    body["status"] = _dump(at_half)

    # It passes: 100 %, the stable scaled to zero, the canary at the total.
    good = (analysis.Figures(60, 0, 5.0), analysis.Figures(60, 0, 5.0))
    observed = desired.Observed(body, stable, canary=canary, figures=good)
    advanced = desired.decide(observed, NOW + 12, IMAGE)
    assert advanced.status.rollout is not None and advanced.status.rollout.weight == 100
    assert advanced.scale == (("digits", 0), (canary_name, 2))
    assert "replicas" not in _deployment(advanced, canary_name)["spec"]  # one writer: the scale

    final = desired.settle(advanced, _stored(stable, 0, 0), None, canary=_stored(canary, 2, 2))
    ready = _ready(final)
    assert (ready.status, ready.reason) == ("True", "Available"), ready.message
    assert ready.message == "2 of 2 Triton pods ready (0 of 0 stable, 2 of 2 canary at 100 %)"
    assert (final.replicas, final.ready_replicas) == (2, 2)

    # While the canary's second pod starts, it serves: Ready, Progressing, counted over both.
    starting = desired.settle(advanced, _stored(stable, 0, 0), None, canary=canary)
    ready = _ready(starting)
    assert (ready.status, ready.reason) == ("True", "Progressing")
    assert (starting.replicas, starting.ready_replicas) == (2, 1)


def test_readiness_counts_both_tracks() -> None:
    zero = {"spec": {"replicas": 0}, "status": {}}
    serving = {"status": {"readyReplicas": 2, "updatedReplicas": 2}}
    full = plan.readiness(zero, 0, plan.Canary(serving, 2, 100))
    assert (full.status, full.reason, full.replicas, full.ready_replicas) == (
        "True",
        "Available",
        2,
        2,
    )
    # Scaled to zero by hand is still ScaledToZero: no track has a pod.
    assert plan.readiness(zero, 0).reason == "ScaledToZero"
    assert plan.readiness(zero, 0, plan.Canary(None, 0, 100)).reason == "ScaledToZero"
    # Neither track has a ready pod yet: not Ready, the total in the words.
    cold = plan.readiness(zero, 0, plan.Canary(None, 2, 100))
    assert (cold.status, cold.reason, cold.replicas) == ("False", "NoReadyReplicas", 2)
    assert cold.message.startswith("0 of 2 Triton pods ready (0 of 0 stable, 0 of 2 canary")
    # After a promotion the canary serves until the stable has rolled: still Ready.
    rolling = {"spec": {"replicas": 2}, "status": {"readyReplicas": 0, "updatedReplicas": 0}}
    draining = plan.readiness(rolling, 2, plan.Canary(serving, 2))
    assert (draining.status, draining.reason) == ("True", "Progressing")
    assert draining.message.endswith("(0 of 2 stable, 2 of 2 canary draining)")
    # One track settled does not make the whole settled.
    half = plan.readiness(serving, 2, plan.Canary({"status": {}}, 1, 50))
    assert (half.reason, half.replicas, half.ready_replicas) == ("Progressing", 3, 2)
