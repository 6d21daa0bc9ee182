"""The reconcile, driven through a fake of our own `k8s` seam, and the kopf wiring."""

from __future__ import annotations

import copy
import importlib
import threading
from typing import Any

import kopf
import prometheus_client
import pytest
from tests.support.kube import FakeKube

from geo_operator import handlers
from geo_operator.api import conditions, models, names
from geo_operator.api import status as status_io
from geo_operator.controller import context, reconcile, telemetry
from geo_operator.k8s import client as k8s


def _status(kube: FakeKube) -> dict[str, Any]:
    """The status as stored (every writer's fields)."""
    return dict(kube.objects[(models.KIND, "ml", "digits")].get("status") or {})


def _run(kube: FakeKube, body: dict[str, Any]) -> None:
    """Store ``body`` as the API server has it and reconcile it, as any cause does."""
    stored = kube.objects.get((models.KIND, "ml", "digits"))
    if stored is not None:  # the spec as given; status and version as the API server has them
        version = stored["metadata"]["resourceVersion"]
        meta = {**body["metadata"], "resourceVersion": version}
        body = {**body, "metadata": meta, "status": stored.get("status", {})}
    kube.objects[(models.KIND, "ml", "digits")] = copy.deepcopy(body)
    reconcile.reconcile(context.Context(kube), "ml", "digits")


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_create_applies_children_and_writes_status(kube: FakeKube, body: dict[str, Any]) -> None:
    _run(kube, body)
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
    _run(kube, body)
    body["status"] = _status(kube)
    versions = {k: o["metadata"]["resourceVersion"] for k, o in kube.objects.items()}
    patches, events = len(kube.status_patches), len(kube.events)
    _run(kube, body)
    assert {k: o["metadata"]["resourceVersion"] for k, o in kube.objects.items()} == versions
    assert len(kube.status_patches) == patches  # status unchanged: not written
    assert len(kube.events) == events


def test_spec_change_rolls_and_keeps_transition_time(kube: FakeKube, body: dict[str, Any]) -> None:
    _run(kube, body)
    body["status"] = _status(kube)
    selected_at = _condition(body["status"], "ArtifactSelected")["lastTransitionTime"]
    old_hash = kube.objects[("Deployment", "ml", "digits")]["spec"]["template"]["metadata"][
        "annotations"
    ][names.CONFIG_HASH_ANNOTATION]
    body["spec"]["model"]["selection"] = {"policy": "pinned", "pinned": "fp32"}
    body["metadata"]["generation"] = 2
    _run(kube, body)
    deployment = kube.objects[("Deployment", "ml", "digits")]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations[names.ARTIFACT_ANNOTATION] == "fp32"
    assert annotations[names.CONFIG_HASH_ANNOTATION] != old_hash
    status = _status(kube)
    assert status["observedGeneration"] == 2
    assert status["selectedArtifact"]["name"] == "fp32"
    assert _condition(status, "ArtifactSelected")["lastTransitionTime"] == selected_at
    assert [e[1] for e in kube.events][-2:] == ["ArtifactSelected", "Rolling"]


def test_unservable_spec_leaves_running_deployment(kube: FakeKube, body: dict[str, Any]) -> None:
    _run(kube, body)
    body["status"] = _status(kube)
    applied = len(kube.applied)
    before = copy.deepcopy(kube.objects)
    body["spec"]["model"]["selection"]["minAccuracyRatio"] = 1.0
    body["spec"]["model"]["artifacts"] = [
        a for a in body["spec"]["model"]["artifacts"] if a["name"] in ("fp32", "fp8")
    ]
    body["spec"]["model"]["artifacts"][1]["accuracy"] = 0.99  # fp8 best, but needs a GPU
    _run(kube, body)
    children_ = {k: v for k, v in kube.objects.items() if k[0] != models.KIND}
    assert len(kube.applied) == applied
    assert children_ == {k: v for k, v in before.items() if k[0] != models.KIND}
    status = _status(kube)
    ready = _condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NoQualifyingArtifact")
    assert "left as it was" in ready["message"] and "fp8: needs GPU" in ready["message"]
    assert status["selectedArtifact"]["name"] == "int8"  # still what runs
    assert kube.events[-1][:2] == ("Warning", "NoQualifyingArtifact")


def test_invalid_spec_changes_nothing_and_says_why(kube: FakeKube, body: dict[str, Any]) -> None:
    body["spec"]["autoscaling"] = {"enabled": True, "minReplicas": 5, "maxReplicas": 2}
    _run(kube, body)
    assert kube.applied == []
    ready = _condition(_status(kube), "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert "minReplicas must be <= autoscaling.maxReplicas" in ready["message"]
    assert kube.events == [("Warning", "InvalidSpec", ready["message"])]
    body["status"] = _status(kube)
    _run(kube, body)  # same bad spec again: no new Event, no new write
    assert len(kube.events) == 1 and len(kube.status_patches) == 1


def test_autoscaled_replicas_survive_reconcile(kube: FakeKube, body: dict[str, Any]) -> None:
    body["spec"]["autoscaling"] = {"enabled": True, "minReplicas": 2, "maxReplicas": 4}
    _run(kube, body)
    assert kube.objects[("Deployment", "ml", "digits")]["spec"]["replicas"] == 2
    kube.objects[("Deployment", "ml", "digits")]["spec"]["replicas"] = 3  # the autoscaler's
    body["status"] = _status(kube)
    _run(kube, body)
    assert kube.objects[("Deployment", "ml", "digits")]["spec"]["replicas"] == 3


def _replica_owners(kube: FakeKube) -> list[str]:
    deployment = kube.objects[("Deployment", "ml", "digits")]
    return [
        e["manager"]
        for e in deployment["metadata"]["managedFields"]
        if "f:replicas" in e["fieldsV1"]["f:spec"]
    ]


def test_replicas_have_one_writer_the_scale(kube: FakeKube, body: dict[str, Any]) -> None:
    """The Deployment is applied without replicas and scaled: the field's one owner is
    the replicas manager, so a template change made from a gather the autoscaler has
    since overtaken keeps the autoscaler's count (it used to apply the stale one)."""
    body["spec"]["autoscaling"] = {"enabled": True, "minReplicas": 2, "maxReplicas": 4}
    _run(kube, body)
    applied = next(o for o in kube.applied if o["kind"] == "Deployment")
    assert "replicas" not in applied["spec"]
    assert kube.scaled == [("ml", "digits", 2)]  # after the create, which started at 1
    assert kube.objects[("Deployment", "ml", "digits")]["spec"]["replicas"] == 2
    assert _replica_owners(kube) == [names.REPLICAS_MANAGER]
    body["status"] = _status(kube)
    body["spec"]["model"]["selection"] = {"policy": "pinned", "pinned": "fp32"}
    body["metadata"]["generation"] = 2
    get = kube.get

    def overtaken(api_version: str, kind: str, namespace: str, name: str) -> Any:
        """The gather reads 2; the autoscaler scales to 3 right after."""
        found = get(api_version, kind, namespace, name)
        if (kind, name) == ("Deployment", "digits") and found["spec"]["replicas"] == 2:
            kube.scale_deployment(namespace, name, 3)
        return found

    kube.get = overtaken  # type: ignore[method-assign]
    _run(kube, body)
    deployment = kube.objects[("Deployment", "ml", "digits")]
    assert (
        deployment["spec"]["template"]["metadata"]["annotations"][names.ARTIFACT_ANNOTATION]
        == "fp32"
    )  # the template change went out
    assert deployment["spec"]["replicas"] == 3  # and the autoscaler's scale stayed
    assert kube.scaled[1:] == [("ml", "digits", 3)]  # the autoscaler's alone


def test_replicas_an_older_apply_owned_are_scaled_before_it_lets_go(
    kube: FakeKube, body: dict[str, Any]
) -> None:
    """A Deployment whose replicas an older operator's apply owns alone: the reconcile
    scales it first (sharing the field), then applies without replicas; applying first
    would drop the field to 1 and restart pods."""
    body["spec"]["autoscaling"] = {"enabled": True, "minReplicas": 2, "maxReplicas": 4}
    _run(kube, body)
    deployment = kube.objects[("Deployment", "ml", "digits")]
    deployment["spec"]["replicas"] = 3
    deployment["metadata"]["managedFields"] = [
        {"manager": names.CHILDREN_MANAGER, "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    ]
    order: list[tuple[str, int]] = []
    scale, apply = kube.scale_deployment, kube.apply

    def scaled(namespace: str, name: str, replicas: int) -> None:
        scale(namespace, name, replicas)
        order.append(("scale", kube.objects[("Deployment", namespace, name)]["spec"]["replicas"]))

    def applied(obj: dict[str, Any]) -> dict[str, Any]:
        stored = apply(obj)
        if obj["kind"] == "Deployment":
            order.append(("apply", stored["spec"]["replicas"]))
        return stored

    kube.scale_deployment, kube.apply = scaled, applied  # type: ignore[method-assign]
    body["status"] = _status(kube)
    body["spec"]["model"]["selection"] = {"policy": "pinned", "pinned": "fp32"}
    body["metadata"]["generation"] = 2
    _run(kube, body)
    assert order == [("scale", 3), ("apply", 3)]
    assert _replica_owners(kube) == [names.REPLICAS_MANAGER]
    body["status"] = _status(kube)
    _run(kube, body)  # owned and at its count: nothing more to scale
    assert order == [("scale", 3), ("apply", 3)]


def test_deployment_readiness_reaches_status(kube: FakeKube, body: dict[str, Any]) -> None:
    _run(kube, body)
    deployment = kube.objects[("Deployment", "ml", "digits")]
    deployment["status"] = {"readyReplicas": 1, "updatedReplicas": 1, "replicas": 1}
    _run(kube, body)  # the Deployment's event re-runs its owner's reconcile
    status = _status(kube)
    assert status["readyReplicas"] == 1
    ready = _condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Available")
    count = len(kube.status_patches)
    _run(kube, body)
    assert len(kube.status_patches) == count


def _pod(name: str, fetch: dict[str, Any]) -> dict[str, Any]:
    """A Triton pod of digits with the fetch init container's status as the kubelet reports."""
    return {
        "metadata": {"name": name, "namespace": "ml", "labels": {names.OWNER_LABEL: "digits"}},
        "status": {
            "phase": "Pending",
            "initContainerStatuses": [{"name": names.FETCH_CONTAINER, **fetch}],
        },
    }


REFUSED = (
    "fetch s3://models/digits/int8/model.onnx failed: s3://models/digits/int8/model.onnx: "
    "HTTP 403 SignatureDoesNotMatch: Forbidden (check AWS_SECRET_ACCESS_KEY in the Secret "
    "spec.model.s3.secretName names)"
)


def test_an_artifact_that_cannot_be_fetched_says_why_in_ready_once(
    kube: FakeKube, body: dict[str, Any]
) -> None:
    _run(kube, body)
    crashing = {
        "restartCount": 3,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "message": REFUSED + "\n"}},
    }
    kube.objects[("Pod", "ml", "digits-abc")] = _pod("digits-abc", crashing)
    _run(kube, body)  # the pod's event re-runs its owner's reconcile
    ready = _condition(_status(kube), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ArtifactFetchFailed")
    assert ready["message"] == (
        f"0 of 1 Triton pods ready: pod digits-abc: fetch-artifact failed, restarted 3x: {REFUSED}"
    )
    warnings = [e for e in kube.events if e[1] == "ArtifactFetchFailed"]
    assert warnings == [("Warning", "ArtifactFetchFailed", ready["message"])]
    _run(kube, body)
    assert len([e for e in kube.events if e[1] == "ArtifactFetchFailed"]) == 1  # once

    # A missing Secret key: the kubelet's words. Then fixed: ready, the words go.
    missing = "couldn't find key AWS_ACCESS_KEY_ID in Secret ml/s3-keys"
    waiting = {"state": {"waiting": {"reason": "CreateContainerConfigError", "message": missing}}}
    kube.objects[("Pod", "ml", "digits-abc")] = _pod("digits-abc", waiting)
    _run(kube, body)
    assert _condition(_status(kube), "Ready")["message"].endswith(
        f"pod digits-abc: fetch-artifact: {missing}"
    )
    kube.objects[("Deployment", "ml", "digits")]["status"] = {
        "readyReplicas": 1,
        "updatedReplicas": 1,
    }
    _run(kube, body)
    ready = _condition(_status(kube), "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Available")


def test_only_a_failing_fetch_wakes_the_owner_from_a_pod_event() -> None:
    from geo_operator.builders import plan

    running = {"state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    assert plan.fetch_failure([_pod("p", running)]) is None
    assert plan.fetch_failure([_pod("p", {"state": {"running": {}}})]) is None
    silent = {"state": {"terminated": {"exitCode": 2}}}
    assert plan.fetch_failure([_pod("p", silent)]) == (
        "pod p: fetch-artifact failed: exit code 2 (see the container's log)"
    )


def test_handlers_register_with_kopf(kopf_registry: kopf.OperatorRegistry) -> None:
    importlib.reload(handlers)
    names_ = {h.id for h in kopf_registry._changing.get_all_handlers()}
    assert "on_change" in names_
    watching = {h.id for h in kopf_registry._watching.get_all_handlers()}
    assert {
        "on_geodeployment_event",
        "on_deployment_event",
        "on_child_deleted",
        "on_tuning_job_event",
        "on_triton_pod_event",
    } <= watching
    counted = {f"count_{plural}_events" for _, _, plural in handlers.WATCH_SELECTORS}
    assert counted <= watching
    indexing = {h.id for h in kopf_registry._indexing.get_all_handlers()}
    assert indexing == {"geodeployments", "triton_pods", "triton_replicas"}
    # No handler needs a finalizer: deleting a GeoDeployment never waits for the operator.
    assert not any(h.requires_finalizer for h in kopf_registry._changing.get_all_handlers())
    assert conditions.READY == "Ready"


def test_each_writer_keeps_to_its_own_fields(kube: FakeKube, body: dict[str, Any]) -> None:
    """The autoscaler's status fields and the reconcile's never overwrite each other."""
    _run(kube, body)
    stored = kube.objects[(models.KIND, "ml", "digits")]
    scaling = models.parse_status(stored["status"]).model_copy(
        update={
            "conditions": conditions.set_condition(
                [],
                conditions.METRICS_AVAILABLE,
                "True",
                "Scraped",
                "1 ready pod(s) scraped",
                generation=1,
            )
        }
    )
    assert status_io.write(kube, stored, scaling, status_io.AUTOSCALER)
    deployment = kube.objects[("Deployment", "ml", "digits")]
    deployment["status"] = {"readyReplicas": 1, "updatedReplicas": 1}
    _run(kube, body)  # the reconcile writes Ready; MetricsAvailable stays
    status = _status(kube)
    assert _condition(status, "Ready")["reason"] == "Available"
    assert _condition(status, "MetricsAvailable")["reason"] == "Scraped"
    mine = status_io.RECONCILE.owned(kube.status_patches[-1][2])
    assert {c["type"] for c in mine["conditions"]} == {
        "Ready",
        "ArtifactSelected",
        "BatchTuned",
        "Progressing",  # the first deployment rolled to every pod: Promoted
    }


def test_writers_partition_the_status() -> None:
    """Every status field has exactly one writer."""
    fields = {f.alias or n for n, f in models.GeoDeploymentStatus.model_fields.items()}
    owned = [f for w in status_io.WRITERS for f in w.fields]
    assert sorted(owned) == sorted(fields - {"conditions"})
    types = [t for w in status_io.WRITERS for t in w.conditions]
    assert sorted(types) == sorted(conditions.ORDER)


def test_a_refused_child_says_so_once(kube: FakeKube, body: dict[str, Any]) -> None:
    """The API server refuses the changed Deployment (requests above limits): Ready is
    False with its words and the generation, one Warning, and no retry storm."""
    _run(kube, body)
    kube.objects[("Deployment", "ml", "digits")]["status"] = {
        "readyReplicas": 1,
        "updatedReplicas": 1,
    }
    _run(kube, body)
    assert _condition(_status(kube), "Ready")["status"] == "True"
    words = 'Deployment.apps "digits" is invalid: spec.template.spec.containers[0].resources'
    kube.refuse["Deployment"] = words
    body["metadata"]["generation"] = 2
    body["spec"]["triton"]["instanceCount"] = 2
    _run(kube, body)
    status = _status(kube)
    ready = _condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ChildRefused")
    assert words in ready["message"] and ready["observedGeneration"] == 2
    assert status["observedGeneration"] == 2
    assert status["readyReplicas"] == 1  # the old pods still serve
    warnings = [e for e in kube.events if e[0] == "Warning"]
    assert [e[1] for e in warnings] == ["ChildRefused"] and words in warnings[0][2]
    _run(kube, body)  # the same refusal again: no new Event, no new write
    assert [e for e in kube.events if e[0] == "Warning"] == warnings
    del kube.refuse["Deployment"]
    _run(kube, body)
    ready = _condition(_status(kube), "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Progressing")  # the canary starts
    kube.objects[("Deployment", "ml", "digits-canary")]["status"] = {
        "readyReplicas": 1,
        "updatedReplicas": 1,
    }
    _run(kube, body)
    assert _condition(_status(kube), "Ready")["reason"] == "Available"


def test_a_deleted_child_comes_back(kube: FakeKube, body: dict[str, Any]) -> None:
    """`kubectl delete deploy/svc`: the child's event re-runs the owner's reconcile."""
    _run(kube, body)
    kube.objects[("Deployment", "ml", "digits")]["status"] = {
        "readyReplicas": 1,
        "updatedReplicas": 1,
    }
    _run(kube, body)
    for kind in ("Deployment", "Service"):
        kube.objects.pop((kind, "ml", "digits"))
    _run(kube, body)
    assert ("Deployment", "ml", "digits") in kube.objects
    assert ("Service", "ml", "digits") in kube.objects
    ready = _condition(_status(kube), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NoReadyReplicas")


def test_a_geodeployment_being_deleted_is_left_alone(kube: FakeKube, body: dict[str, Any]) -> None:
    body["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    _run(kube, body)
    assert kube.applied == [] and kube.status_patches == []
    kube.objects.pop((models.KIND, "ml", "digits"))
    reconcile.reconcile(context.Context(kube), "ml", "digits")  # already gone: nothing
    assert kube.applied == []


def test_a_failing_api_server_is_retried_with_backoff_in_one_line(
    kube: FakeKube, body: dict[str, Any], caplog: Any
) -> None:
    kube.objects[(models.KIND, "ml", "digits")] = copy.deepcopy(body)
    telemetry.forget("ml", "digits")  # an earlier test's counts
    now = [1000.0]
    ctx = context.Context(kube, clock=lambda: now[0])
    real_apply = kube.apply

    def unavailable(obj: dict[str, Any]) -> dict[str, Any]:
        raise ConnectionError("the API server went away")

    kube.apply = unavailable  # type: ignore[method-assign]
    reconcile.run(ctx, "ml", "digits")
    reconcile.run(ctx, "ml", "digits")  # another cause failing before the retry: no doubling
    assert ctx.requeues.pending(("ml", "digits")) == 1005.0
    now[0] = 1005.0
    reconcile.run(ctx, "ml", "digits")  # the retry fails too: 10 s more
    assert ctx.requeues.pending(("ml", "digits")) == 1015.0
    lines = [r for r in caplog.records if "reconcile failed" in r.getMessage()]
    assert len(lines) == 3 and all(r.levelname == "WARNING" and not r.exc_info for r in lines)
    assert "ConnectionError: the API server went away" in lines[0].getMessage()
    kube.apply = real_apply  # type: ignore[method-assign]
    now[0] = 1015.0
    assert ctx.requeues.keys_due(now[0]) == [("ml", "digits")]
    reconcile.run(ctx, "ml", "digits")
    assert ctx.requeues.pending(("ml", "digits")) is None  # healthy again: nothing pending
    assert _condition(_status(kube), "ArtifactSelected")["status"] == "True"
    # Each object's reconciles by outcome, on the operator's /metrics.
    assert _reconciles("failed") == 3 and _reconciles("ok") == 1
    telemetry.forget("ml", "digits")
    assert _reconciles("ok") is None


def _reconciles(outcome: str) -> float | None:
    labels = {"namespace": "ml", "geodeployment": "digits", "outcome": outcome}
    return prometheus_client.REGISTRY.get_sample_value("geo_reconciles_total", labels)


def test_a_namespace_going_away_is_no_failure(
    kube: FakeKube, body: dict[str, Any], caplog: Any
) -> None:
    """The namespace is deleted: its children's deletion events re-run the owner's
    reconcile, whose writes the API server now refuses. Nothing is reported or retried."""
    kube.objects[(models.KIND, "ml", "digits")] = copy.deepcopy(body)
    ctx = context.Context(kube)

    def terminating(obj: dict[str, Any]) -> dict[str, Any]:
        raise k8s.Gone(
            "unable to create new content in namespace ml because it is being terminated"
        )

    kube.apply = terminating  # type: ignore[method-assign]
    reconcile.run(ctx, "ml", "digits")
    assert kube.status_patches == [] and kube.events == []
    assert ctx.requeues.pending(("ml", "digits")) is None
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_kopf_retries_api_requests_for_ever_each_request_afresh() -> None:
    import collections.abc
    import itertools

    from geo_operator import handlers

    backoffs = handlers.RETRY_FOREVER
    first = list(itertools.islice(backoffs, 40))
    again = list(itertools.islice(backoffs, 40))
    assert first == again  # a fresh iterator per request, not one shared and used up
    assert first[:6] == [1.0, 1.0, 2.0, 3.0, 5.0, 8.0] and set(first[5:]) == {8.0}
    # Unsized: kopf then never computes a last attempt (its default gives up after 54 s).
    assert isinstance(backoffs, collections.abc.Iterable)
    assert not isinstance(backoffs, collections.abc.Sized)


def test_a_users_object_under_a_childs_name_is_left_alone(
    kube: FakeKube, body: dict[str, Any]
) -> None:
    """A Service `digits` the user made before the GeoDeployment: GEO neither applies over
    it (server-side apply would take it over, and the garbage collector would later
    delete it with the GeoDeployment) nor applies any other child; Ready says whose it is."""
    users = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "digits", "namespace": "ml", "resourceVersion": "7"},
        "spec": {"selector": {"app": "theirs"}},
    }
    kube.objects[("Service", "ml", "digits")] = copy.deepcopy(users)
    _run(kube, body)
    assert kube.objects[("Service", "ml", "digits")] == users
    assert kube.applied == []  # checked before any child is applied: nothing half-made
    ready = _condition(_status(kube), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ChildRefused")
    assert "Service digits already exists and is not this GeoDeployment's" in ready["message"]
    assert "its controller: nothing" in ready["message"]
    assert [e[1] for e in kube.events if e[0] == "Warning"] == ["ChildRefused"]
    kube.objects.pop(("Service", "ml", "digits"))  # the user deletes theirs
    _run(kube, body)
    assert kube.objects[("Service", "ml", "digits")]["spec"]["selector"]["app.kubernetes.io/name"]
    assert _condition(_status(kube), "Ready")["reason"] == "NoReadyReplicas"


def test_only_the_geodeployments_own_children_are_its() -> None:
    from geo_operator.builders import children

    ours = {
        "kind": "Job",
        "metadata": {
            "name": "j",
            "ownerReferences": [
                {"kind": "GeoDeployment", "name": "digits", "uid": "u1", "controller": True}
            ],
        },
    }
    assert children.foreign(ours, "u1") is None
    assert children.foreign(None, "u1") is None and children.foreign({}, "u1") is None
    # The same name's GeoDeployment before it was deleted and made again: not this one.
    assert "its controller: GeoDeployment digits" in (children.foreign(ours, "u2") or "")
    ours["metadata"]["ownerReferences"][0]["controller"] = False  # an owner, not controller
    assert "its controller: nothing" in (children.foreign(ours, "u1") or "")


def test_an_edited_child_is_applied_again_and_an_untouched_one_is_not(
    kube: FakeKube, body: dict[str, Any]
) -> None:
    _run(kube, body)
    stored = kube.objects[("Deployment", "ml", "digits")]
    stored["status"] = {"readyReplicas": 1, "updatedReplicas": 1}
    _run(kube, body)
    applied = len(kube.applied)
    _run(kube, body)  # nothing changed: no child is sent again
    assert kube.applied[applied:] == []
    stored = kube.objects[("Deployment", "ml", "digits")]
    stored["spec"]["template"]["spec"]["containers"][0]["image"] = "theirs:1"  # kubectl edit
    _run(kube, body)
    assert [o["kind"] for o in kube.applied[applied:]] == ["Deployment"]
    repaired = kube.objects[("Deployment", "ml", "digits")]["spec"]["template"]["spec"]
    assert repaired["containers"][0]["image"] == body["spec"].get("triton", {}).get(
        "image", "nvcr.io/nvidia/tritonserver:24.08-py3"
    )


def test_a_deployment_event_re_runs_the_owner_only_when_what_it_reads_changed(
    kube: FakeKube, monkeypatch: Any
) -> None:
    """A Deployment's status moves many times on the way up (condition times,
    availableReplicas); only the replica counts, observedGeneration, the spec and its
    identity matter to the owner's reconcile."""
    runs: list[tuple[str, str]] = []
    monkeypatch.setattr(reconcile, "run", lambda ctx, ns, name, cause: runs.append((ns, name)))
    memo = type("Memo", (), {"geo": context.Context(kube)})()
    labels = {names.MANAGED_BY_LABEL: names.MANAGER, names.OWNER_LABEL: "digits"}
    deployment: dict[str, Any] = {
        "metadata": {"name": "digits", "namespace": "ml", "labels": labels, "generation": 1},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 1, "replicas": 1},
    }

    def event(type_: str | None = "MODIFIED") -> None:
        handlers.on_deployment_event(
            body=kopf.Body(copy.deepcopy(deployment)), memo=memo, type=type_
        )

    event(None)  # first sight (the operator's start): the owner runs
    deployment["status"]["conditions"] = [{"type": "Progressing", "lastUpdateTime": "t1"}]
    deployment["status"]["availableReplicas"] = 0
    event()  # nothing the reconcile reads: skipped
    deployment["status"]["readyReplicas"] = 1
    event()  # readiness: the owner runs
    deployment["spec"]["template"] = {"metadata": {"annotations": {"x": "edited"}}}
    event()  # drift in the spec: the owner runs, and repairs it
    event("DELETED")  # gone: the owner runs (and recreates it)
    event()  # the new one: first sight again
    assert runs == [("ml", "digits")] * 5


def test_causes_that_come_while_a_reconcile_runs_are_served_by_one_more_run(
    kube: FakeKube, body: dict[str, Any]
) -> None:
    """Five events for one object while its reconcile runs: each caller returns at once
    (kopf's threads are not held in line), and one more reconcile runs after the first,
    not five; it reads what the events said (a spec edited meanwhile is applied)."""
    kube.objects[(models.KIND, "ml", "digits")] = copy.deepcopy(body)
    ctx = context.Context(kube)
    inside, release = threading.Event(), threading.Event()
    gets: list[int] = []
    real_get = kube.get

    def slow_get(api_version: str, kind: str, namespace: str, name: str) -> Any:
        if kind == models.KIND:
            gets.append(1)
            if len(gets) == 1:
                inside.set()
                assert release.wait(timeout=10)
        return real_get(api_version, kind, namespace, name)

    kube.get = slow_get  # type: ignore[method-assign]
    before = _causes("coalesced")
    first = threading.Thread(target=reconcile.run, args=(ctx, "ml", "digits", "change"))
    first.start()
    assert inside.wait(timeout=10)
    edited = kube.objects[(models.KIND, "ml", "digits")]
    edited["spec"]["triton"] = {**(edited["spec"].get("triton") or {}), "image": "triton:edited"}
    for _ in range(5):
        reconcile.run(ctx, "ml", "digits", "deployment")  # returns at once: one runs
    assert ctx.pending.running() == 1
    release.set()
    first.join(timeout=10)
    assert not first.is_alive()
    assert len(gets) == 2  # the first run and one more, for all five
    assert _causes("coalesced") - before == 5
    assert ctx.pending.running() == 0
    stored = kube.objects[("Deployment", "ml", "digits")]["spec"]["template"]["spec"]
    assert stored["containers"][0]["image"] == "triton:edited"
    reconcile.run(ctx, "ml", "digits", "requeue")  # nothing running: it runs, here and now
    assert len(gets) == 3


def test_a_reconcile_that_raises_past_its_handling_lets_the_object_go(
    kube: FakeKube, body: dict[str, Any], monkeypatch: Any
) -> None:
    """Not even an interrupt leaves the object marked as running (it would never be
    reconciled again)."""
    ctx = context.Context(kube)

    def interrupted(*_: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(reconcile, "reconcile", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reconcile.run(ctx, "ml", "digits", "change")
    assert ctx.pending.running() == 0


def test_the_reconciles_own_deployment_write_re_runs_nothing(
    kube: FakeKube, body: dict[str, Any], monkeypatch: Any
) -> None:
    """The reconcile that creates (or re-applies) the Deployment has read it back: the
    watch event of that very version re-runs nothing; the next one that changes what the
    reconcile reads (its readiness) does."""
    kube.objects[(models.KIND, "ml", "digits")] = copy.deepcopy(body)
    ctx = context.Context(kube)
    reconcile.run(ctx, "ml", "digits", "change")
    runs: list[str] = []
    monkeypatch.setattr(reconcile, "run", lambda ctx, ns, name, cause: runs.append(cause))
    memo = type("Memo", (), {"geo": ctx})()
    stored = copy.deepcopy(kube.objects[("Deployment", "ml", "digits")])
    handlers.on_deployment_event(body=kopf.Body(copy.deepcopy(stored)), memo=memo, type="ADDED")
    assert runs == []
    stored["status"] = {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1}
    handlers.on_deployment_event(body=kopf.Body(stored), memo=memo, type="MODIFIED")
    assert runs == ["deployment"]


def _causes(cause: str) -> float:
    value = prometheus_client.REGISTRY.get_sample_value(
        "geo_reconcile_causes_total", {"cause": cause}
    )
    return value or 0.0


def test_watch_events_are_counted_by_whose_object_they_are() -> None:
    """geo_watch_events_total: with the selectors, only "geo"; a neighbour's object (which
    only a watch without them brings) counts as "other"."""
    import asyncio

    count = handlers._event_counter("pods", dict(handlers.MANAGED))

    def sample(owner: str) -> float:
        labels = {"resource": "pods", "owner": owner}
        return prometheus_client.REGISTRY.get_sample_value("geo_watch_events_total", labels) or 0

    before = sample("geo"), sample("other")
    asyncio.run(count(body=kopf.Body({"metadata": {"labels": dict(handlers.MANAGED)}})))
    asyncio.run(count(body=kopf.Body({"metadata": {"labels": {"app": "neighbour"}}})))
    asyncio.run(count(body=kopf.Body({"metadata": {}})))
    assert (sample("geo") - before[0], sample("other") - before[1]) == (1, 2)
