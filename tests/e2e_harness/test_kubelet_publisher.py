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
