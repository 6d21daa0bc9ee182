"""The e2e kubelet runner's published files and reported pod status: no cluster."""

from __future__ import annotations

import dataclasses
import json
import pathlib

from e2e.harness.kubelet import podspec, publisher, worker
from e2e.harness.kubelet.worker import ServerInfo

INFO = ServerInfo(
    namespace="ml",
    pod="digits-a",
    uid="u-1",
    geodeployment="digits",
    artifact="int8",
    uri="http://models.geo.local/digits/int8/model.onnx",
    model="digits",
    max_batch_size=8,
    http="127.0.0.1:40001",
    grpc="127.0.0.1:40002",
    metrics="127.0.0.1:40003",
    ready=True,
    pid=1234,
    startup_seconds=2.5,
)


def test_render_lists_every_server_and_scrapes_the_ready_serving_ones() -> None:
    starting = dataclasses.replace(INFO, pod="digits-b", metrics="127.0.0.1:40013", ready=False)
    tuner = dataclasses.replace(INFO, pod="digits-tune-x", metrics="127.0.0.1:40023", tuner=True)
    pods, file_sd = publisher.render([INFO, starting, tuner])
    assert [(p["pod"], p["ready"]) for p in pods] == [
        ("digits-a", True),
        ("digits-b", False),
        ("digits-tune-x", True),
    ]
    assert pods[0] == {
        "namespace": "ml",
        "pod": "digits-a",
        "geodeployment": "digits",
        "http": "127.0.0.1:40001",
        "grpc": "127.0.0.1:40002",
        "metrics": "127.0.0.1:40003",
        "ready": True,
    }
    assert file_sd == [
        {
            "targets": ["127.0.0.1:40003"],
            "labels": {
                "namespace": "ml",
                "pod": "digits-a",
                "geodeployment": "digits",
                "track": "stable",
            },
        }
    ]
    assert INFO.metrics_url == "http://127.0.0.1:40003/metrics"


def test_publisher_writes_on_change_only(tmp_path: pathlib.Path) -> None:
    files = publisher.Publisher(tmp_path)
    assert files.publish([INFO])
    assert json.loads(files.pods_json.read_text())[0]["pod"] == "digits-a"
    assert len(json.loads(files.file_sd_json.read_text())) == 1
    assert not files.publish([INFO])  # same content: nothing written
    assert files.publish([])
    assert json.loads(files.pods_json.read_text()) == []
    assert json.loads(files.file_sd_json.read_text()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file_sd.json", "pods.json"]


def test_publisher_waits_for_its_directory(tmp_path: pathlib.Path) -> None:
    files = publisher.Publisher(tmp_path / "later")
    assert not files.publish([INFO])
    (tmp_path / "later").mkdir()
    assert files.publish([INFO])


def test_a_tuner_exit_reports_the_pod_terminated() -> None:
    tuner = podspec.Tuner(container="tune", image="geo:test", args=())
    ok = worker.terminated_status(tuner, 0, '{"maxBatchSize": 4}', 1_800_000_000, 1_800_000_042)
    assert ok["phase"] == "Succeeded"
    (status,) = ok["containerStatuses"]
    assert (status["name"], status["image"]) == ("tune", "geo:test")
    assert status["state"]["terminated"] == {
        "exitCode": 0,
        "reason": "Completed",
        "message": '{"maxBatchSize": 4}',
        "startedAt": "2027-01-15T08:00:00Z",
        "finishedAt": "2027-01-15T08:00:42Z",
    }
    failed = worker.terminated_status(tuner, 1, "x" * 5000, 0, 0)
    terminated = failed["containerStatuses"][0]["state"]["terminated"]
    assert failed["phase"] == "Failed" and terminated["reason"] == "Error"
    assert len(terminated["message"]) == worker.TERMINATION_MESSAGE_LIMIT


KWOK_RUNNING = {  # a Running pod's status as kwok's pod-ready stage writes it
    "phase": "Running",
    "podIP": "10.0.0.7",
    "conditions": [
        {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-12-02T10:00:00Z"},
        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-02T10:00:00Z"},
        {"type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-12-02T10:00:00Z"},
    ],
    "containerStatuses": [
        {"name": "triton", "ready": True, "started": True, "restartCount": 0},
        {"name": "sidecar", "ready": True, "started": True, "restartCount": 0},
    ],
}


def test_a_dead_triton_makes_its_pod_unready_and_a_restart_makes_it_ready_again() -> None:
    down = worker.readiness_status(KWOK_RUNNING, "triton", False, 0, 1_796_212_800)
    conds = {c["type"]: c for c in down["conditions"]}
    assert conds["Ready"]["status"] == conds["ContainersReady"]["status"] == "False"
    assert conds["Ready"]["reason"] == "ContainersNotReady"
    assert conds["Ready"]["lastTransitionTime"] == "2026-12-02T12:00:00Z"
    assert conds["Initialized"] == KWOK_RUNNING["conditions"][0]  # the rest as it was
    by_name = {c["name"]: c for c in down["containerStatuses"]}
    assert by_name["triton"]["ready"] is False and by_name["sidecar"]["ready"] is True
    assert KWOK_RUNNING["conditions"][1]["status"] == "True"  # the input is not mutated

    up = worker.readiness_status({**KWOK_RUNNING, **down}, "triton", True, 1, 1_796_212_830)
    conds = {c["type"]: c for c in up["conditions"]}
    assert conds["Ready"]["status"] == "True" and "reason" not in conds["Ready"]
    assert conds["Ready"]["lastTransitionTime"] == "2026-12-02T12:00:30Z"
    assert {c["name"]: c["restartCount"] for c in up["containerStatuses"]} == {
        "triton": 1,
        "sidecar": 0,
    }
    # A second report of the same state keeps its transition time.
    again = worker.readiness_status({**KWOK_RUNNING, **up}, "triton", True, 1, 1_796_212_900)
    assert {c["type"]: c for c in again["conditions"]}["Ready"]["lastTransitionTime"] == (
        "2026-12-02T12:00:30Z"
    )
