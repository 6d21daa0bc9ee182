"""The reconcile glue, driven through a fake of our own `k8s` seam."""

from __future__ import annotations

import copy
import importlib
from typing import Any

import kopf

from conftest import FakeKube
from geo_operator import handlers
from geo_operator.api import conditions, models
from geo_operator.builders import children
from geo_operator.k8s import client as k8s


def _status(kube: FakeKube) -> dict[str, Any]:
    return kube.status_patches[-1][2]


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def _stored(kube: FakeKube, body: dict[str, Any]) -> dict[str, Any]:
    """The body as the next handler call would see it (status included)."""
    kube.objects[(models.KIND, "ml", "digits")] = copy.deepcopy(body)
    return body


def test_create_applies_children_and_writes_status(kube: FakeKube, body: dict[str, Any]) -> None:
    handlers.reconcile(kube, body)
    assert [o["kind"] for o in kube.applied] == ["ConfigMap", "Deployment", "Service"]
    for obj in kube.applied:
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-1234"
    status = _status(kube)
    assert status["observedGeneration"] == 1
    assert status["selectedArtifact"]["name"] == "int8"
    assert status["maxBatchSize"] == 32 and status["replicas"] == 1
    assert status["selector"] == "app.kubernetes.io/name=triton,app.kubernetes.io/instance=digits"
    assert _condition(status, "ArtifactSelected")["status"] == "True"
    assert _condition(status, "BatchTuned")["reason"] == "SetBySpec"
    ready = _condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NoReadyReplicas")
    assert [e[1] for e in kube.events] == ["ArtifactSelected", "Created"]


def test_reconcile_twice_changes_nothing(kube: FakeKube, body: dict[str, Any]) -> None:
    handlers.reconcile(kube, body)
    body["status"] = _status(kube)
    versions = {k: o["metadata"]["resourceVersion"] for k, o in kube.objects.items()}
    patches, events = len(kube.status_patches), len(kube.events)
    handlers.reconcile(kube, body)
    assert {k: o["metadata"]["resourceVersion"] for k, o in kube.objects.items()} == versions
    assert len(kube.status_patches) == patches  # status unchanged: not written
    assert len(kube.events) == events


def test_spec_change_rolls_and_keeps_transition_time(kube: FakeKube, body: dict[str, Any]) -> None:
    handlers.reconcile(kube, body)
    body["status"] = _status(kube)
    selected_at = _condition(body["status"], "ArtifactSelected")["lastTransitionTime"]
    old_hash = kube.objects[("Deployment", "ml", "digits")]["spec"]["template"]["metadata"][
        "annotations"
    ][children.CONFIG_HASH_ANNOTATION]
    body["spec"]["model"]["selection"] = {"policy": "pinned", "pinned": "fp32"}
    body["metadata"]["generation"] = 2
    handlers.reconcile(kube, body)
    deployment = kube.objects[("Deployment", "ml", "digits")]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations[children.ARTIFACT_ANNOTATION] == "fp32"
    assert annotations[children.CONFIG_HASH_ANNOTATION] != old_hash
    status = _status(kube)
    assert status["observedGeneration"] == 2
    assert status["selectedArtifact"]["name"] == "fp32"
    assert _condition(status, "ArtifactSelected")["lastTransitionTime"] == selected_at
    assert [e[1] for e in kube.events][-2:] == ["ArtifactSelected", "Rolling"]


def test_unservable_spec_leaves_running_deployment(kube: FakeKube, body: dict[str, Any]) -> None:
    handlers.reconcile(kube, body)
    body["status"] = _status(kube)
    applied = len(kube.applied)
    before = copy.deepcopy(kube.objects)
    body["spec"]["model"]["selection"]["minAccuracyRatio"] = 1.0
    body["spec"]["model"]["artifacts"] = [
        a for a in body["spec"]["model"]["artifacts"] if a["name"] in ("fp32", "fp8")
    ]
    body["spec"]["model"]["artifacts"][1]["accuracy"] = 0.99  # fp8 best, but needs a GPU
    handlers.reconcile(kube, body)
    assert len(kube.applied) == applied and kube.objects == before
    status = _status(kube)
    ready = _condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NoQualifyingArtifact")
    assert "left as it was" in ready["message"] and "fp8: needs GPU" in ready["message"]
    assert status["selectedArtifact"]["name"] == "int8"  # still what runs
    assert kube.events[-1][:2] == ("Warning", "NoQualifyingArtifact")


def test_invalid_spec_changes_nothing_and_says_why(kube: FakeKube, body: dict[str, Any]) -> None:
    body["spec"]["autoscaling"] = {"enabled": True, "minReplicas": 5, "maxReplicas": 2}
    handlers.reconcile(kube, body)
    assert kube.applied == []
    ready = _condition(_status(kube), "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert "minReplicas must be <= autoscaling.maxReplicas" in ready["message"]
    assert kube.events == [("Warning", "InvalidSpec", ready["message"])]
    body["status"] = _status(kube)
    handlers.reconcile(kube, body)  # same bad spec again: no new Event, no new write
    assert len(kube.events) == 1 and len(kube.status_patches) == 1


def test_autoscaled_replicas_survive_reconcile(kube: FakeKube, body: dict[str, Any]) -> None:
    body["spec"]["autoscaling"] = {"enabled": True, "minReplicas": 2, "maxReplicas": 4}
    handlers.reconcile(kube, body)
    assert kube.objects[("Deployment", "ml", "digits")]["spec"]["replicas"] == 2
    kube.objects[("Deployment", "ml", "digits")]["spec"]["replicas"] = 3  # the autoscaler's
    body["status"] = _status(kube)
    handlers.reconcile(kube, body)
    assert kube.objects[("Deployment", "ml", "digits")]["spec"]["replicas"] == 3


def test_deployment_readiness_reaches_status(kube: FakeKube, body: dict[str, Any]) -> None:
    handlers.reconcile(kube, body)
    body["status"] = _status(kube)
    _stored(kube, body)
    deployment = kube.objects[("Deployment", "ml", "digits")]
    deployment["status"] = {"readyReplicas": 1, "updatedReplicas": 1, "replicas": 1}
    handlers.refresh_readiness(kube, deployment)
    status = _status(kube)
    assert status["readyReplicas"] == 1
    ready = _condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Available")
    count = len(kube.status_patches)
    handlers.refresh_readiness(kube, deployment)
    assert len(kube.status_patches) == count


def test_handlers_register_with_kopf(kopf_registry: kopf.OperatorRegistry) -> None:
    importlib.reload(handlers)
    names = {h.id for h in kopf_registry._changing.get_all_handlers()}
    assert "on_change" in names
    watching = {h.id for h in kopf_registry._watching.get_all_handlers()}
    assert {"on_geodeployment_event", "on_deployment_event", "on_pod_event"} <= watching
    assert conditions.READY == "Ready"


def test_stale_body_conflicts_and_posts_no_event(kube: FakeKube, body: dict[str, Any]) -> None:
    stored = _stored(kube, copy.deepcopy(body))
    kube.patch_status("ml", "digits", {"readyReplicas": 1}, None)  # another writer moved it on
    assert stored["metadata"]["resourceVersion"] == "1"
    try:
        handlers.reconcile(kube, body)  # still holds resourceVersion 1
    except k8s.Conflict:
        pass
    else:
        raise AssertionError("a stale status write must conflict")
    assert kube.events == []


def test_readiness_retries_over_a_conflict(kube: FakeKube, body: dict[str, Any]) -> None:
    handlers.reconcile(kube, body)
    body["status"] = _status(kube)
    _stored(kube, body)
    deployment = kube.objects[("Deployment", "ml", "digits")]
    deployment["status"] = {"readyReplicas": 1, "updatedReplicas": 1}
    real_get = kube.get
    calls = {"n": 0}

    def racing_get(*args: Any) -> dict[str, Any] | None:
        found = real_get(*args)
        calls["n"] += 1
        if calls["n"] == 1:  # someone writes right after our first read
            kube.patch_status("ml", "digits", {"replicas": 1}, None)
        return found

    kube.get = racing_get  # type: ignore[method-assign]
    handlers.refresh_readiness(kube, deployment)
    assert calls["n"] == 2
    assert _condition(_status(kube), "Ready")["reason"] == "Available"
