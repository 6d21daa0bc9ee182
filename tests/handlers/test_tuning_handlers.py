"""Batch tuning through the reconcile: Job, result, roll; failures, back-off, spec changes.

Driven through the fake of our own `k8s` seam; the Job's outcome is written into
the fake the way the Job controller and the kubelet would (Job conditions, the
tuner container's termination message).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from tests.support.kube import FakeKube

from geo_operator.api import models, names
from geo_operator.builders import children, tuning
from geo_operator.controller import context, reconcile

NOW = 1_800_000_000.0
RESULT = models.TunedBatch(
    max_batch_size=16,
    max_queue_delay_microseconds=500,
    throughput=812.4,
    p99_ms=7.5,
    concurrency=16,
    measurements=8,
    grid_size=28,
)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def scheduled() -> list[tuple[str, str, float]]:
    """Each retry the reconcile asked for: (namespace, name, seconds from now)."""
    return []


@pytest.fixture
def drive(kube: FakeKube, clock: Clock, scheduled: list[Any]) -> Any:
    """Run the reconcile as any cause does (create, resume, a Job's event, a retry)."""
    ctx = context.Context(kube, clock=clock)

    def run() -> None:
        after = reconcile.reconcile(ctx, "ml", "digits")
        if after is not None:
            scheduled.append(("ml", "digits", after))
            assert ctx.requeues.pending(("ml", "digits")) == pytest.approx(clock.now + after)

    return run


@pytest.fixture
def tuned_body(body: dict[str, Any]) -> dict[str, Any]:
    """One candidate (int8; fp8 needs a GPU): one tuning Job, the run's own story."""
    body["spec"]["triton"]["maxBatchSize"] = 0
    body["spec"]["batchTuning"] = {"candidates": [1, 4, 16], "latencyBudgetMs": 20}
    body["spec"]["model"]["artifacts"] = [
        a for a in body["spec"]["model"]["artifacts"] if a["name"] in ("int8", "fp8")
    ]
    return body


@pytest.fixture
def two_body(body: dict[str, Any]) -> dict[str, Any]:
    """The example's two candidates, fp32 and int8: each is measured by its own Job."""
    body["spec"]["triton"]["maxBatchSize"] = 0
    body["spec"]["batchTuning"] = {
        "candidates": [1, 4, 16],
        "latencyBudgetMs": 20,
        "parallelism": 2,
    }
    body["spec"]["model"]["artifacts"] = [
        a for a in body["spec"]["model"]["artifacts"] if a["name"] in ("fp32", "int8")
    ]
    return body


def _store(kube: FakeKube, body: dict[str, Any]) -> None:
    kube.objects[(models.KIND, "ml", "digits")] = copy.deepcopy(body)


def _gd(kube: FakeKube) -> dict[str, Any]:
    return kube.objects[(models.KIND, "ml", "digits")]


def _condition(kube: FakeKube, type_: str) -> dict[str, Any]:
    return next(c for c in _gd(kube)["status"]["conditions"] if c["type"] == type_)


def _jobs(kube: FakeKube) -> list[str]:
    return sorted(name for kind, _, name in kube.objects if kind == "Job")


def _finish(
    kube: FakeKube, drive: Any, job: str, condition: str, reason: str, exit_code: int, msg: str
) -> None:
    """What the Job controller and the kubelet leave behind when the tuner exits."""
    stored = kube.objects[("Job", "ml", job)]
    stored["status"] = {"conditions": [{"type": condition, "status": "True", "reason": reason}]}
    kube.objects[("Pod", "ml", f"{job}-abcde")] = {
        "metadata": {
            "name": f"{job}-abcde",
            "namespace": "ml",
            "labels": {"batch.kubernetes.io/job-name": job},
        },
        "status": {
            "containerStatuses": [
                {"name": "tune", "state": {"terminated": {"exitCode": exit_code, "message": msg}}}
            ]
        },
    }
    drive()  # the Job's event re-runs its owner's reconcile


def _config_pbtxt(kube: FakeKube) -> str:
    return str(kube.objects[("ConfigMap", "ml", "digits-model")]["data"]["config.pbtxt"])


def _hash(kube: FakeKube) -> str:
    template = kube.objects[("Deployment", "ml", "digits")]["spec"]["template"]
    return str(template["metadata"]["annotations"][names.CONFIG_HASH_ANNOTATION])


def test_tuning_job_result_rolls_the_deployment(
    kube: FakeKube, tuned_body: dict[str, Any], clock: Clock, scheduled: list[Any], drive: Any
) -> None:
    _store(kube, tuned_body)
    drive()
    kinds = ["ConfigMap", "Deployment", "Service", "ConfigMap", "Job"]
    assert [o["kind"] for o in kube.applied] == kinds
    assert kube.applied[3]["metadata"]["name"] == "digits-tune-int8"
    run = _gd(kube)["status"]["tuning"][0]
    assert (run["attempts"], run["failures"]) == (1, 0)
    job = run["job"]
    assert _jobs(kube) == [job]
    assert _gd(kube)["status"]["maxBatchSize"] == 8  # the safe default serves meanwhile
    assert "max_batch_size: 8" in _config_pbtxt(kube)
    batch = _condition(kube, "BatchTuned")
    assert (batch["status"], batch["reason"]) == ("False", "Tuning")
    assert ("Normal", "TuningStarted") in [(t, r) for t, r, _ in kube.events]
    untuned_hash = _hash(kube)

    # The Job is still running: a reconcile changes nothing, starts nothing, and sends no
    # child again (each is stored as it was applied).
    applied = len(kube.applied)
    drive()
    assert kube.applied[applied:] == []
    assert _jobs(kube) == [job]

    _finish(kube, drive, job, "Complete", "CompletionsReached", 0, tuning.result_json(RESULT))
    status = _gd(kube)["status"]
    assert status["maxBatchSize"] == 16
    assert status["tuning"][0]["result"]["maxBatchSize"] == 16
    batch = _condition(kube, "BatchTuned")
    assert (batch["status"], batch["reason"]) == ("True", "Measured")
    assert (
        "max_batch_size 16, queue delay 500 us: 812 req/s at p99 7.50 ms (budget 20 ms)"
        in (batch["message"])
    )
    assert "8 measurements of a 28-config grid" in batch["message"]
    assert "max_batch_size: 16" in _config_pbtxt(kube)
    assert "max_queue_delay_microseconds: 500" in _config_pbtxt(kube)
    assert _hash(kube) != untuned_hash  # the pods roll
    assert [r for _, r, _ in kube.events][-2:] == ["Tuned", "Rolling"]
    assert _jobs(kube) == [job] and not scheduled

    # Settled: reconciling again writes nothing and starts no Job.
    patches, applied = len(kube.status_patches), len(kube.applied)
    drive()
    assert len(kube.status_patches) == patches
    assert "Job" not in [o["kind"] for o in kube.applied[applied:]]


def test_a_spec_change_voids_the_result_and_replaces_the_job(
    kube: FakeKube, tuned_body: dict[str, Any], clock: Clock, scheduled: list[Any], drive: Any
) -> None:
    _store(kube, tuned_body)
    drive()
    first = _gd(kube)["status"]["tuning"][0]["job"]
    _finish(kube, drive, first, "Complete", "CompletionsReached", 0, tuning.result_json(RESULT))
    assert _gd(kube)["status"]["maxBatchSize"] == 16

    changed = _gd(kube)
    changed["spec"]["batchTuning"]["latencyBudgetMs"] = 5
    changed["metadata"]["generation"] = 2
    drive()
    run = _gd(kube)["status"]["tuning"][0]
    assert "result" not in run  # removed by the merge patch, not left behind
    assert run["attempts"] == 1 and run["job"] != first
    assert _jobs(kube) == [run["job"]] and ("Job", "ml", first) in kube.deleted
    assert _gd(kube)["status"]["maxBatchSize"] == 8
    assert _condition(kube, "BatchTuned")["reason"] == "Tuning"
    assert "max_batch_size: 8" in _config_pbtxt(kube)


def test_failures_keep_the_safe_default_and_retry_with_backoff(
    kube: FakeKube, tuned_body: dict[str, Any], clock: Clock, scheduled: list[Any], drive: Any
) -> None:
    tuned_body["spec"]["batchTuning"]["retryBackoffSeconds"] = 60
    _store(kube, tuned_body)
    drive()
    job1 = _gd(kube)["status"]["tuning"][0]["job"]

    _finish(kube, drive, job1, "Failed", "DeadlineExceeded", 137, "")
    batch = _condition(kube, "BatchTuned")
    assert (batch["status"], batch["reason"]) == ("False", "TuningTimedOut")
    assert "1800 s deadline" in batch["message"] and "serving max_batch_size 8" in batch["message"]
    status = _gd(kube)["status"]
    assert status["maxBatchSize"] == 8
    assert status["tuning"][0]["nextRetryTime"] == names.format_time(NOW + 60)
    assert scheduled[-1][:2] == ("ml", "digits") and scheduled[-1][2] == pytest.approx(60)
    assert ("Warning", "TuningTimedOut") in [(t, r) for t, r, _ in kube.events]
    assert _jobs(kube) == [job1]

    # Reconciles before the retry time (a spec-less resume, a watch event) start nothing.
    for later in (1, 30, 59):
        clock.now = NOW + later
        drive()
        assert _jobs(kube) == [job1]
        assert scheduled[-1][2] == pytest.approx(60 - later)

    clock.now = NOW + 60
    drive()
    run = _gd(kube)["status"]["tuning"][0]
    assert run["attempts"] == 2 and "nextRetryTime" not in run
    job2 = run["job"]
    assert _jobs(kube) == sorted([job1, job2])
    batch = _condition(kube, "BatchTuned")
    assert batch["reason"] == "Tuning" and "the previous attempt failed" in batch["message"]

    _finish(
        kube, drive, job2, "Failed", "BackoffLimitExceeded", 1, '{"error": "no configuration fits"}'
    )
    batch = _condition(kube, "BatchTuned")
    assert (batch["status"], batch["reason"]) == ("False", "TuningFailed")
    assert "(exit code 1): no configuration fits" in batch["message"]
    # The second failure waits twice as long.
    assert _gd(kube)["status"]["tuning"][0]["nextRetryTime"] == names.format_time(NOW + 60 + 120)
    assert scheduled[-1][2] == pytest.approx(120)


def test_a_job_finished_while_the_operator_was_down_is_read_on_resume(
    kube: FakeKube, tuned_body: dict[str, Any], clock: Clock, scheduled: list[Any], drive: Any
) -> None:
    _store(kube, tuned_body)
    drive()
    job = _gd(kube)["status"]["tuning"][0]["job"]
    stored = kube.objects[("Job", "ml", job)]
    stored["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    kube.objects[("Pod", "ml", "p")] = {
        "metadata": {
            "name": "p",
            "namespace": "ml",
            "labels": {"batch.kubernetes.io/job-name": job},
        },
        "status": {
            "containerStatuses": [
                {
                    "name": "tune",
                    "state": {"terminated": {"exitCode": 0, "message": tuning.result_json(RESULT)}},
                }
            ]
        },
    }
    drive()  # what kopf's resume handler does
    assert _gd(kube)["status"]["maxBatchSize"] == 16
    assert _condition(kube, "BatchTuned")["status"] == "True"


def test_a_running_job_of_other_inputs_is_ignored_until_it_finishes(
    kube: FakeKube, tuned_body: dict[str, Any], clock: Clock, scheduled: list[Any], drive: Any
) -> None:
    # A Job event for a GeoDeployment that is not tuning (maxBatchSize set) changes nothing.
    tuned_body["spec"]["triton"]["maxBatchSize"] = 32
    _store(kube, tuned_body)
    drive()
    assert _jobs(kube) == []
    assert _condition(kube, "BatchTuned")["reason"] == "SetBySpec"
    stray = {
        "metadata": {
            "name": "digits-tune-old-1",
            "namespace": "ml",
            "labels": {names.TUNING_FOR_LABEL: "digits", names.TUNING_KEY_LABEL: "old"},
        },
        "status": {"conditions": [{"type": "Complete", "status": "True"}]},
    }
    kube.objects[("Job", "ml", "digits-tune-old-1")] = stray
    patches = len(kube.status_patches)
    drive()
    assert len(kube.status_patches) == patches
    assert _gd(kube)["status"]["maxBatchSize"] == 32


def test_setting_max_batch_size_stops_a_running_job_and_drops_the_record(
    kube: FakeKube, tuned_body: dict[str, Any], clock: Clock, scheduled: list[Any], drive: Any
) -> None:
    _store(kube, tuned_body)
    drive()
    job = _gd(kube)["status"]["tuning"][0]["job"]
    assert _jobs(kube) == [job]

    changed = _gd(kube)
    changed["spec"]["triton"]["maxBatchSize"] = 32
    changed["metadata"]["generation"] = 2
    drive()
    assert ("Job", "ml", job) in kube.deleted and _jobs(kube) == []
    status = _gd(kube)["status"]
    assert "tuning" not in status and status["maxBatchSize"] == 32
    assert _condition(kube, "BatchTuned")["reason"] == "SetBySpec"

    # Back to 0: a fresh first attempt, not a wait for the deleted Job.
    again = _gd(kube)
    again["spec"]["triton"]["maxBatchSize"] = 0
    again["metadata"]["generation"] = 3
    drive()
    run = _gd(kube)["status"]["tuning"][0]
    assert (run["attempts"], run["failures"]) == (1, 0) and _jobs(kube) == [run["job"]]


def _runs(kube: FakeKube) -> dict[str, dict[str, Any]]:
    return {r["artifact"]: r for r in _gd(kube)["status"]["tuning"]}


def test_each_candidate_is_measured_and_the_figures_choose(
    kube: FakeKube, two_body: dict[str, Any], clock: Clock, scheduled: list[Any], drive: Any
) -> None:
    _store(kube, two_body)
    drive()
    runs = _runs(kube)
    assert sorted(runs) == ["fp32", "int8"]
    assert _jobs(kube) == sorted(r["job"] for r in runs.values())
    for artifact in ("fp32", "int8"):
        config = kube.objects[("ConfigMap", "ml", f"digits-tune-{artifact}")]
        job = kube.objects[("Job", "ml", runs[artifact]["job"])]
        volumes = job["spec"]["template"]["spec"]["volumes"]
        assert {"name": "model-config", "configMap": {"name": config["metadata"]["name"]}} in (
            volumes
        )
    # Declared figures choose meanwhile (int8 declares the lowest latency).
    assert _gd(kube)["status"]["selectedArtifact"]["name"] == "int8"
    assert (
        "fp32: not measured yet; int8: not measured yet"
        in (_condition(kube, "ArtifactSelected")["message"])
    )

    fp32 = RESULT.model_copy(update={"max_batch_size": 4, "throughput": 3268.0, "p99_ms": 6.3})
    int8 = RESULT.model_copy(update={"max_batch_size": 16, "throughput": 1500.0, "p99_ms": 5.1})
    _finish(
        kube,
        drive,
        runs["int8"]["job"],
        "Complete",
        "CompletionsReached",
        0,
        tuning.result_json(int8),
    )
    # One measured: int8 serves its own tuned settings, still chosen by declared figures.
    assert _gd(kube)["status"]["maxBatchSize"] == 16
    assert "latency declared" in _condition(kube, "ArtifactSelected")["message"]
    _finish(
        kube,
        drive,
        runs["fp32"]["job"],
        "Complete",
        "CompletionsReached",
        0,
        tuning.result_json(fp32),
    )

    status = _gd(kube)["status"]
    selected = _condition(kube, "ArtifactSelected")
    assert status["selectedArtifact"]["name"] == "fp32"
    assert status["selectedArtifact"]["reason"] == selected["message"]
    assert "latency measured throughput" in selected["message"]
    assert (
        "measured fp32: 3268 req/s at p99 6.3 ms (max_batch_size 4); "
        "int8: 1500 req/s at p99 5.1 ms (max_batch_size 16)"
    ) in selected["message"]
    # The chosen artifact serves with its own tuned settings.
    assert status["maxBatchSize"] == 4 and "max_batch_size: 4" in _config_pbtxt(kube)
    assert _condition(kube, "BatchTuned")["reason"] == "Measured"
    assert {r["artifact"]: r["result"]["throughput"] for r in status["tuning"]} == {
        "fp32": 3268.0,
        "int8": 1500.0,
    }
    assert ("Normal", "ArtifactSelected") in [(t, r) for t, r, _ in kube.events]
    # Settled: nothing more to start or write.
    patches, jobs = len(kube.status_patches), _jobs(kube)
    drive()
    assert len(kube.status_patches) == patches and _jobs(kube) == jobs


def test_one_candidates_failure_blocks_none_of_the_others(
    kube: FakeKube, two_body: dict[str, Any], clock: Clock, scheduled: list[Any], drive: Any
) -> None:
    _store(kube, two_body)
    drive()
    runs = _runs(kube)
    _finish(kube, drive, runs["fp32"]["job"], "Failed", "DeadlineExceeded", 137, "")
    _finish(
        kube,
        drive,
        runs["int8"]["job"],
        "Complete",
        "CompletionsReached",
        0,
        tuning.result_json(RESULT),
    )
    status = _gd(kube)["status"]
    runs = _runs(kube)
    assert runs["fp32"]["failureReason"] == "TuningTimedOut" and "result" in runs["int8"]
    message = _condition(kube, "ArtifactSelected")["message"]
    assert "fp32: measurement failed (TuningTimedOut), declared figures" in message
    assert "int8: 812 req/s at p99 7.5 ms" in message and "latency declared" in message
    assert status["selectedArtifact"]["name"] == "int8" and status["maxBatchSize"] == 16
    assert _condition(kube, "BatchTuned")["reason"] == "Measured"
    # fp32 is retried after its back-off, alone.
    assert scheduled[-1][2] == pytest.approx(60)
    clock.now = NOW + 60
    drive()
    runs = _runs(kube)
    assert runs["fp32"]["attempts"] == 2 and runs["int8"]["attempts"] == 1
    assert runs["fp32"]["job"] in _jobs(kube)


def test_no_canary_starts_while_a_candidate_is_still_measured(
    kube: FakeKube, two_body: dict[str, Any], clock: Clock, drive: Any
) -> None:
    """One Job at a time (parallelism 1): int8's result (its tuned max_batch_size) changes
    what should serve, but fp32's Job may change it again and a canary pod beside it would
    skew its figures, so the change waits for fp32's result; then one canary starts, for the
    final choice."""
    two_body["spec"]["batchTuning"]["parallelism"] = 1
    two_body["spec"]["model"]["artifacts"].reverse()  # int8 measured first
    _store(kube, two_body)
    drive()
    deployment = kube.objects[("Deployment", "ml", "digits")]
    deployment["status"] = {"readyReplicas": 1, "updatedReplicas": 1}  # the stable serves
    runs = _runs(kube)
    assert _jobs(kube) == [runs["int8"]["job"]]  # fp32 waits its turn
    _finish(
        kube,
        drive,
        runs["int8"]["job"],
        "Complete",
        "CompletionsReached",
        0,
        tuning.result_json(RESULT),
    )
    runs = _runs(kube)
    assert "result" in runs["int8"] and runs["fp32"]["job"] in _jobs(kube)
    assert _gd(kube)["status"]["maxBatchSize"] == 16  # the desired template changed
    assert ("Deployment", "ml", "digits-canary") not in kube.objects
    assert "CanaryStarted" not in [r for _, r, _ in kube.events]
    rollout = _gd(kube)["status"]["rollout"]
    assert "waits until fp32 is measured" in rollout["reason"], rollout
    assert "waits until fp32 is measured" in _condition(kube, "Progressing")["message"]
    # status.configHash is what the stable pods run, not the change that waits.
    serving = children.template_hash(kube.objects[("Deployment", "ml", "digits")])
    assert _gd(kube)["status"]["configHash"] == serving

    fp32 = RESULT.model_copy(update={"max_batch_size": 4, "throughput": 3268.0, "p99_ms": 6.3})
    _finish(
        kube,
        drive,
        runs["fp32"]["job"],
        "Complete",
        "CompletionsReached",
        0,
        tuning.result_json(fp32),
    )
    assert ("Deployment", "ml", "digits-canary") in kube.objects
    assert _gd(kube)["status"]["configHash"] == serving  # the canary is not what serves
    started = [m for _, r, m in kube.events if r == "CanaryStarted"]
    assert len(started) == 1 and started[0].startswith("canary fp32 ("), started
