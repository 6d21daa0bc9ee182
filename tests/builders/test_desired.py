"""What one reconcile wants, computed without a cluster: `builders.desired`."""

from __future__ import annotations

import copy
from typing import Any

from geo_operator.api import conditions, models, names
from geo_operator.builders import desired, tuning

NOW = 1_800_000_000.0
IMAGE = "geo:test"


def _ready(status: models.GeoDeploymentStatus) -> models.Condition:
    found = conditions.get(status.conditions, conditions.READY)
    assert found is not None
    return found


def test_a_new_object_wants_its_children_and_says_created(body: dict[str, Any]) -> None:
    wanted = desired.decide(desired.Observed(body), NOW, IMAGE)
    assert [o["kind"] for o in wanted.objects] == ["ConfigMap", "Deployment", "Service"]
    assert [e[1] for e in wanted.events] == ["ArtifactSelected", "Created"]
    assert wanted.delete_jobs == () and wanted.requeue_after is None
    final = desired.settle(wanted, None, None)
    assert (_ready(final).reason, final.replicas) == ("Creating", 1)


def test_an_invalid_spec_wants_nothing_but_says_why(body: dict[str, Any]) -> None:
    body["spec"]["autoscaling"] = {"enabled": True, "minReplicas": 5, "maxReplicas": 2}
    wanted = desired.decide(desired.Observed(body), NOW, IMAGE)
    assert wanted.target is None and wanted.objects == ()
    ready = _ready(desired.settle(wanted, None, None))
    assert (ready.status, ready.reason) == ("False", "InvalidSpec")
    assert "spec.autoscaling" in ready.message
    assert wanted.events == (("Warning", "InvalidSpec", ready.message),)


def test_a_refusal_is_ready_false_with_the_words_and_one_event(body: dict[str, Any]) -> None:
    wanted = desired.decide(desired.Observed(body), NOW, IMAGE)
    deployment = {"spec": {"replicas": 1}, "status": {"readyReplicas": 1, "updatedReplicas": 1}}
    serving = desired.settle(wanted, deployment, None)
    assert _ready(serving).reason == "Available"
    refused = desired.settle(wanted, deployment, 'Service digits was refused: "1digits" is bad')
    ready = _ready(refused)
    assert (ready.status, ready.reason) == ("False", "ChildRefused")
    assert '"1digits" is bad' in ready.message and refused.ready_replicas == 1
    assert desired.refusal_event(serving, refused) == ("Warning", "ChildRefused", ready.message)
    assert desired.refusal_event(refused, refused) is None  # the same words again: no Event


def test_a_finished_tuning_job_is_read_and_a_failure_backs_off(body: dict[str, Any]) -> None:
    body["spec"]["triton"]["maxBatchSize"] = 0
    body["spec"]["batchTuning"] = {
        "candidates": [1, 4],
        "latencyBudgetMs": 20,
        "retryBackoffSeconds": 30,
    }
    body["spec"]["model"]["artifacts"] = [
        a for a in body["spec"]["model"]["artifacts"] if a["name"] == "int8"
    ]
    first = desired.decide(desired.Observed(body), NOW, IMAGE)
    job = first.objects[-1]
    assert (
        job["kind"] == "Job" and job["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
    )
    assert "TuningStarted" in [e[1] for e in first.events]

    body["status"] = models.GeoDeploymentStatus.model_validate(
        first.status.model_dump(by_alias=True)
    ).model_dump(by_alias=True, exclude_none=True, mode="json")
    failed = copy.deepcopy(job)
    failed["status"] = {
        "conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]
    }
    pod = {"metadata": {"labels": {names.JOB_NAME_LABEL: job["metadata"]["name"]}}}
    observed = desired.Observed(body, None, [failed], {job["metadata"]["name"]: pod})
    second = desired.decide(observed, NOW + 5, IMAGE)
    assert ("Warning", "TuningTimedOut") in [(t, r) for t, r, _ in second.events]
    assert second.requeue_after == 30  # the back-off, for the retry to come back
    assert "Job" not in [o["kind"] for o in second.objects]  # nothing starts before then
    run = (second.status.tuning or [])[0]
    assert run.next_retry_time == names.format_time(NOW + 5 + 30)
    assert tuning.finished(failed) and not tuning.finished(job)


def _family_body() -> dict[str, Any]:
    import yaml
    from tests.support.paths import FAMILY_MANIFEST

    raw = yaml.safe_load(FAMILY_MANIFEST.read_text())
    raw["metadata"].update(
        {"namespace": "default", "uid": "uid-fam", "generation": 1, "resourceVersion": "1"}
    )
    raw["spec"]["triton"]["maxBatchSize"] = 0
    raw["spec"]["objectives"] = {"p99LatencyMs": 40}
    raw["spec"]["batchTuning"] = {"parallelism": 16}
    return dict(raw)


def _completed(job: dict[str, Any], result: models.TunedBatch) -> tuple[dict, dict]:
    done = copy.deepcopy(job)
    done["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    pod = {
        "metadata": {"labels": {names.JOB_NAME_LABEL: job["metadata"]["name"]}},
        "status": {
            "containerStatuses": [
                {
                    "name": names.TUNER_CONTAINER,
                    "state": {"terminated": {"exitCode": 0, "message": tuning.result_json(result)}},
                }
            ]
        },
    }
    return done, pod


def test_measured_accuracy_excludes_the_bad_artifact_with_an_event() -> None:
    body = _family_body()
    first = desired.decide(desired.Observed(body), NOW, IMAGE)
    jobs = [o for o in first.objects if o["kind"] == "Job"]
    assert len(jobs) == 7  # with evaluation every artifact is measured, the bad one too
    tune = jobs[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--latency-budget-ms=40" in tune  # objectives.p99LatencyMs is tuning's budget
    assert f"--evaluate={names.HELDOUT_FILE}" in tune and "--metric=accuracy" in tune
    body["status"] = first.status.model_dump(by_alias=True, exclude_none=True, mode="json")
    truth = {"int8-miscalibrated": 0.1056, "student": 0.9648}
    finished, pods = [], {}
    for job in jobs:
        artifact = job["metadata"]["name"]
        run = next(r for r in first.status.tuning or () if r.job == artifact)
        result = models.TunedBatch(
            max_batch_size=16,
            max_queue_delay_microseconds=100,
            throughput=300.0 if run.artifact != "student" else 3000.0,
            p99_ms=20.0,
            measurements=3,
            grid_size=28,
            accuracy=models.MeasuredAccuracy(
                metric="accuracy", value=truth.get(run.artifact, 0.9778), samples=540
            ),
        )
        done, pod = _completed(job, result)
        finished.append(done)
        pods[artifact] = pod
    second = desired.decide(desired.Observed(body, None, finished, pods), NOW + 60, IMAGE)
    assert second.target is not None and second.target.artifact.name != "int8-miscalibrated"
    warnings = [(r, m) for t, r, m in second.events if t == "Warning"]
    assert warnings == [
        (
            "AccuracyContradicted",
            "int8-miscalibrated declared 0.9778, measured 0.1056 on 540 samples: excluded",
        )
    ]
    selected = conditions.get(second.status.conditions, conditions.ARTIFACT_SELECTED)
    assert selected is not None and "measured 0.1056 on 540 samples: excluded" in selected.message
    bad = next(r for r in second.status.tuning or () if r.artifact == "int8-miscalibrated")
    assert bad.result is not None and bad.result.accuracy is not None
    assert bad.result.accuracy.value == 0.1056  # in status.tuning, next to its throughput
    # The next reconcile says nothing new: the words are in ArtifactSelected already.
    body["status"] = second.status.model_dump(by_alias=True, exclude_none=True, mode="json")
    third = desired.decide(desired.Observed(body, None, finished, pods), NOW + 90, IMAGE)
    assert [r for t, r, _ in third.events if t == "Warning"] == []


def test_a_deprecated_latency_field_is_named_once_per_generation(body: dict[str, Any]) -> None:
    body["spec"]["autoscaling"]["targetP99LatencyMs"] = 150
    wanted = desired.decide(desired.Observed(body), NOW, IMAGE)
    assert ("Warning", "DeprecatedField") in [(t, r) for t, r, _ in wanted.events]
    body["status"] = wanted.status.model_dump(by_alias=True, exclude_none=True, mode="json")
    again = desired.decide(desired.Observed(body), NOW + 5, IMAGE)
    assert "DeprecatedField" not in [r for _, r, _ in again.events]


def test_tuning_jobs_wait_their_turn_within_parallelism() -> None:
    body = _family_body()
    body["spec"]["batchTuning"] = {"parallelism": 2}
    first = desired.decide(desired.Observed(body), NOW, IMAGE)
    jobs = [o for o in first.objects if o["kind"] == "Job"]
    assert [j["metadata"]["labels"][names.TUNING_KEY_LABEL] for j in jobs] == [
        r.key for r in (first.status.tuning or [])[:2]
    ]  # the first two candidates, in spec order
    queued = (first.status.tuning or [])[2:]
    assert len(queued) == 5 and all(r.attempts == 0 and r.job is None for r in queued)
    assert [r for t, r, _ in first.events].count("TuningStarted") == 2
    # One finishes: the next one in line starts, and only it.
    body["status"] = first.status.model_dump(by_alias=True, exclude_none=True, mode="json")
    result = models.TunedBatch(
        max_batch_size=8, throughput=100.0, p99_ms=5.0, measurements=1, grid_size=1
    )
    done, pod = _completed(jobs[0], result)
    running = copy.deepcopy(jobs[1])
    observed = desired.Observed(body, None, [done, running], {jobs[0]["metadata"]["name"]: pod})
    second = desired.decide(observed, NOW + 30, IMAGE)
    started = [o for o in second.objects if o["kind"] == "Job"]
    third = (first.status.tuning or [])[2]
    assert len(started) == 1
    assert started[0]["metadata"]["labels"][names.TUNING_KEY_LABEL] == third.key
