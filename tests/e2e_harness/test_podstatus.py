"""What the e2e kubelet runner writes for a pod it cannot run, on pods made by GEO's own
builders, read back by GEO's own reader (`plan.fetch_failure`): no cluster."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from e2e.harness.kubelet import podspec, podstatus

from geo_operator.api import models, names
from geo_operator.builders import children, plan, tuning
from geo_operator.triton import fetch

NOW = 1_796_212_800  # 2026-12-02T12:00:00Z
KWOK_READY = "2026-12-02T10:00:00Z"


def _target(spec: models.GeoDeploymentSpec) -> children.Target:
    decided = plan.plan(
        name="digits",
        namespace="ml",
        uid="uid-1234",
        spec=spec,
        status=models.GeoDeploymentStatus(),
        current_replicas=None,
    )
    assert decided.target is not None
    return decided.target


def _kwok_running(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """A pod's status as kwok's pod-ready stage writes it: Running, everything ready."""
    conditions = [
        {"type": t, "status": "True", "lastTransitionTime": KWOK_READY}
        for t in ("Initialized", "Ready", "ContainersReady")
    ]
    done = {"terminated": {"exitCode": 0, "reason": "Completed"}}
    return {
        "phase": "Running",
        "podIP": "10.0.0.7",
        "conditions": conditions,
        "initContainerStatuses": [
            {"name": c["name"], "image": c["image"], "ready": True, "state": done}
            for c in pod_spec.get("initContainers", [])
        ],
        "containerStatuses": [
            {"name": c["name"], "image": c["image"], "ready": True, "state": {"running": {}}}
            for c in pod_spec["containers"]
        ],
    }


def _pod(template: dict[str, Any], name: str) -> dict[str, Any]:
    template = copy.deepcopy(template)
    metadata = {**template.get("metadata", {}), "name": name, "namespace": "ml", "uid": "u-1"}
    return {
        "metadata": metadata,
        "spec": template["spec"],
        "status": _kwok_running(template["spec"]),
    }


def _serving_pod(spec: models.GeoDeploymentSpec) -> dict[str, Any]:
    return _pod(children.deployment(_target(spec))["spec"]["template"], "digits-7d9f-abcde")


def _s3_spec(spec: models.GeoDeploymentSpec) -> models.GeoDeploymentSpec:
    raw = spec.model_dump(by_alias=True, mode="json", exclude_none=True)
    for artifact in raw["model"]["artifacts"]:
        artifact["uri"] = f"s3://models/digits/{artifact['name']}/model.onnx"
    raw["model"]["s3"] = {"endpoint": "http://s3.storage:9000/", "secretName": "s3-keys"}
    return models.parse_spec(raw)


def _applied(pod: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """The pod after a status merge patch (whole lists, as a merge patch replaces them)."""
    return {**pod, "status": {**pod["status"], **patch}}


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_a_failed_fetch_reads_back_as_geo_reads_it(spec: models.GeoDeploymentSpec) -> None:
    pod = _serving_pod(spec)
    read = podspec.read(pod)
    error = fetch.Refused(f"{read.uri}: HTTP 404 Not Found: check the URI")
    words = podstatus.fetch_words(error, [(read.uri, read.uri)])
    assert words == f"fetch {read.uri} failed: {read.uri}: HTTP 404 Not Found: check the URI"
    failure = podstatus.Failure(
        podstatus.INIT_FAILED, names.FETCH_CONTAINER, words, restarts=1, started=NOW, finished=NOW
    )
    patch = podstatus.failed(read, pod["status"], failure, NOW + 5)

    (init,) = patch["initContainerStatuses"]
    assert init["name"] == names.FETCH_CONTAINER and init["restartCount"] == 1
    assert init["state"]["terminated"] == {
        "exitCode": 1,
        "reason": "Error",
        "message": words,
        "startedAt": "2026-12-02T12:00:00Z",
        "finishedAt": "2026-12-02T12:00:00Z",
    }
    (main,) = patch["containerStatuses"]
    assert main["name"] == names.TRITON_CONTAINER and main["ready"] is False
    assert main["state"] == {"waiting": {"reason": "PodInitializing"}}
    conds = _conditions(patch)
    assert {t: conds[t]["status"] for t in ("Initialized", "Ready", "ContainersReady")} == {
        "Initialized": "False",
        "Ready": "False",
        "ContainersReady": "False",
    }
    assert conds["Initialized"]["reason"] == "ContainersNotInitialized"
    assert conds["Initialized"]["message"] == "containers with incomplete status: [fetch-artifact]"
    assert conds["Ready"]["message"] == "containers with unready status: [triton]"
    assert conds["Ready"]["lastTransitionTime"] == "2026-12-02T12:00:05Z"
    assert "phase" not in patch  # stays Running: kwok would make a Pending pod Ready again

    seen = plan.fetch_failure([_applied(pod, patch)])
    assert seen == f"pod digits-7d9f-abcde: fetch-artifact failed, restarted 1x: {words}"


def test_the_fetch_words_name_the_uri_as_the_pod_does() -> None:
    fetches = [
        ("http://models.geo.local/digits/fp32/model.onnx", "file:///a/fp32/model.onnx"),
        ("http://models.geo.local/warmup/x.bin", "file:///a/warmup/x.bin"),
    ]
    error = FileNotFoundError(2, "No such file or directory", "/a/warmup/x.bin")
    words = podstatus.fetch_words(OSError(f"file:///a/warmup/x.bin: {error}"), fetches)
    assert words.startswith("fetch http://models.geo.local/warmup/x.bin failed: ")
    assert "http://models.geo.local/warmup/x.bin: " in words and "file://" not in words
    # Nothing names a fetch: the artifact's.
    words = podstatus.fetch_words(ValueError("boom"), fetches)
    assert words == "fetch http://models.geo.local/digits/fp32/model.onnx failed: boom"


@pytest.mark.parametrize(
    ("secrets", "words"),
    [
        ({}, 'secret "s3-keys" not found'),
        (
            {"s3-keys": frozenset({"AWS_ACCESS_KEY_ID"})},
            "couldn't find key AWS_SECRET_ACCESS_KEY in Secret ml/s3-keys",
        ),
        # AWS_SESSION_TOKEN is optional: its absence is no error.
        ({"s3-keys": frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"})}, None),
    ],
)
def test_a_missing_secret_or_key_is_the_kubelets_config_error(
    spec: models.GeoDeploymentSpec, secrets: dict[str, frozenset[str]], words: str | None
) -> None:
    pod = _serving_pod(_s3_spec(spec))
    read = podspec.read(pod)
    assert [(r.secret, r.key, r.optional) for r in read.secret_refs] == [
        ("s3-keys", "AWS_ACCESS_KEY_ID", False),
        ("s3-keys", "AWS_SECRET_ACCESS_KEY", False),
        ("s3-keys", "AWS_SESSION_TOKEN", True),
    ]
    found = {name: secrets.get(name) for name in {r.secret for r in read.secret_refs}}
    assert podspec.config_error("ml", read.secret_refs, found) == words
    if words is None:
        return
    failure = podstatus.Failure(podstatus.CONFIG_ERROR, names.FETCH_CONTAINER, words)
    patch = podstatus.failed(read, pod["status"], failure, NOW)
    (init,) = patch["initContainerStatuses"]
    assert init["state"] == {"waiting": {"reason": "CreateContainerConfigError", "message": words}}
    assert _conditions(patch)["Ready"]["status"] == "False"
    seen = plan.fetch_failure([_applied(pod, patch)])
    assert seen == f"pod digits-7d9f-abcde: fetch-artifact: {words}"


def test_a_triton_that_exits_at_start_crash_loops(spec: models.GeoDeploymentSpec) -> None:
    pod = _serving_pod(spec)
    read = podspec.read(pod)
    failure = podstatus.Failure(
        podstatus.CRASHED, names.TRITON_CONTAINER, "", exit_code=1, restarts=2, started=NOW
    )
    patch = podstatus.failed(read, pod["status"], failure, NOW)
    (main,) = patch["containerStatuses"]
    assert main["state"] == {
        "waiting": {
            "reason": "CrashLoopBackOff",
            "message": "back-off 40s restarting failed container=triton",
        }
    }
    terminated = main["lastState"]["terminated"]
    # The serving container has the default terminationMessagePolicy (File): no message.
    assert (terminated["exitCode"], terminated["reason"]) == (1, "Error")
    assert "message" not in terminated and main["restartCount"] == 2 and not main["ready"]
    conds = _conditions(patch)
    assert conds["Initialized"] == {  # the init container completed: as kwok wrote it
        "type": "Initialized",
        "status": "True",
        "lastTransitionTime": KWOK_READY,
    }
    assert conds["Ready"]["status"] == conds["ContainersReady"]["status"] == "False"
    assert patch["initContainerStatuses"] == pod["status"]["initContainerStatuses"]
    assert plan.fetch_failure([_applied(pod, patch)]) is None  # not a fetch's failure

    up = podstatus.running(read, _applied(pod, patch)["status"], 3, NOW + 60)
    conds = _conditions(up)
    assert all(conds[t]["status"] == "True" for t in ("Initialized", "Ready", "ContainersReady"))
    assert "reason" not in conds["Ready"]
    (main,) = up["containerStatuses"]
    assert main["ready"] and main["restartCount"] == 3 and "running" in main["state"]
    assert main["lastState"] == {"terminated": terminated}  # the crash is still on record


def test_a_tuning_pod_whose_fetch_fails_fails(spec: models.GeoDeploymentSpec) -> None:
    raw = spec.model_dump(by_alias=True, mode="json", exclude_none=True)
    raw["triton"]["maxBatchSize"] = 0
    decided = plan.plan(
        name="digits",
        namespace="ml",
        uid="uid-1234",
        spec=models.parse_spec(raw),
        status=models.GeoDeploymentStatus(),
        current_replicas=None,
    )
    assert decided.target is not None and decided.tuning_key is not None
    job = tuning.tuning_job(decided.target, key_=decided.tuning_key, attempt=1, image="geo:test")
    pod = _pod(job["spec"]["template"], "digits-tune-0123abcd-1-xyz12")
    read = podspec.read(pod)
    assert read.restart_policy == "Never"
    assert [(c.name, c.sidecar) for c in read.init_containers] == [
        (names.FETCH_CONTAINER, False),
        (names.TRITON_CONTAINER, True),
    ]
    failure = podstatus.Failure(podstatus.INIT_FAILED, names.FETCH_CONTAINER, "fetch x failed: y")
    patch = podstatus.failed(read, pod["status"], failure, NOW)
    assert patch["phase"] == "Failed"  # never restarted
    fetch_, sidecar = patch["initContainerStatuses"]
    assert fetch_["state"]["terminated"]["exitCode"] == 1
    assert sidecar["state"] == {"waiting": {"reason": "PodInitializing"}}
    assert _conditions(patch)["Initialized"]["message"] == (
        "containers with incomplete status: [fetch-artifact triton]"
    )
    (tuner,) = patch["containerStatuses"]
    assert tuner["state"] == {"waiting": {"reason": "PodInitializing"}}
    # Its tune container says FallbackToLogsOnError; a crash of it would carry the log.
    assert [c.fallback_to_logs for c in read.containers] == [True]


def test_the_crash_loop_back_off_doubles_to_five_minutes() -> None:
    assert [podstatus.backoff(n) for n in range(7)] == [
        "10s",
        "20s",
        "40s",
        "1m20s",
        "2m40s",
        "5m0s",
        "5m0s",
    ]
    tail = "\n".join(f"line {i}" for i in range(200))
    message = podstatus.log_message(tail)
    assert message.endswith("line 199") and len(message.encode()) <= podstatus.LOG_MESSAGE_LIMIT
    assert message.count("\n") < podstatus.LOG_MESSAGE_LINES
