"""The tuning Job builder (golden YAML) and the pure tuning state: step, finish, back-off."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import pytest

from geo_operator.api import models, yamlio
from geo_operator.builders import children, plan, tuning

GOLDEN = pathlib.Path(__file__).parent / "golden" / "digits-tuning-job.yaml"
NOW = 1_800_000_000.0


def _tune(spec: models.GeoDeploymentSpec, **batch_tuning: Any) -> models.GeoDeploymentSpec:
    raw = spec.model_dump(by_alias=True, mode="json")
    raw["triton"]["maxBatchSize"] = 0
    raw["batchTuning"] = {**raw["batchTuning"], **batch_tuning}
    return models.parse_spec(raw)


def _plan(
    spec: models.GeoDeploymentSpec, status: models.GeoDeploymentStatus | None = None
) -> plan.Plan:
    return plan.plan(
        name="digits",
        namespace="ml",
        uid="uid-1234",
        spec=spec,
        status=status or models.GeoDeploymentStatus(),
        current_replicas=None,
    )


def _job_status(type_: str, reason: str = "") -> dict[str, Any]:
    return {"status": {"conditions": [{"type": type_, "status": "True", "reason": reason}]}}


def _pod(exit_code: int, message: str) -> dict[str, Any]:
    terminated = {"exitCode": exit_code, "message": message}
    return {
        "status": {"containerStatuses": [{"name": "tune", "state": {"terminated": terminated}}]}
    }


RESULT = models.TunedBatch(
    max_batch_size=16,
    max_queue_delay_microseconds=500,
    throughput=812.4,
    p99_ms=7.5,
    concurrency=16,
    measurements=8,
    grid_size=28,
)


def test_golden_job(spec: models.GeoDeploymentSpec) -> None:
    tuned = _tune(spec, candidates=[1, 4, 16], latencyBudgetMs=20, secondsPerLevel=1)
    decided = _plan(tuned)
    assert decided.target is not None and decided.tuning_key is not None
    job = tuning.tuning_job(decided.target, key_=decided.tuning_key, attempt=1, image="geo:test")
    rendered = yamlio.dump_all([job])
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(rendered)
    assert rendered == GOLDEN.read_text(), "run with UPDATE_GOLDEN=1 and review the diff"


def test_job_pod_is_neither_served_nor_counted_as_a_replica(
    spec: models.GeoDeploymentSpec,
) -> None:
    decided = _plan(_tune(spec))
    assert decided.target is not None and decided.tuning_key
    job = tuning.tuning_job(decided.target, key_=decided.tuning_key, attempt=3, image="i")
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    selector = children.selector_labels("digits")
    assert not all(pod_labels.get(k) == v for k, v in selector.items())  # Service skips it
    assert children.OWNER_LABEL not in pod_labels  # the autoscaler doesn't count it
    assert job["metadata"]["name"] == f"digits-tune-{decided.tuning_key[:8]}-3"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 1800
    sidecar = job["spec"]["template"]["spec"]["initContainers"][1]
    assert sidecar["restartPolicy"] == "Always"
    assert "--model-control-mode=explicit" in sidecar["args"]
    # Same node kind and resources as the serving pods: it measures what they will serve.
    serving = children.deployment(decided.target)["spec"]["template"]["spec"]
    assert sidecar["resources"] == serving["containers"][0]["resources"]
    assert job["spec"]["template"]["spec"].get("nodeSelector") == serving.get("nodeSelector")


def test_job_name_fits_a_label_value() -> None:
    name = tuning.job_name("a" * 63, "0123456789", 12)
    assert len(name) <= 63 and name.endswith("-tune-01234567-12")


def test_batching_disabled_tunes_only_the_batch_size(spec: models.GeoDeploymentSpec) -> None:
    raw = _tune(spec).model_dump(by_alias=True, mode="json")
    raw["triton"]["dynamicBatching"]["enabled"] = False
    args = tuning.tuner_args(models.parse_spec(raw))
    assert "--delays=off" in args


def test_key_changes_with_what_the_result_depends_on(spec: models.GeoDeploymentSpec) -> None:
    base = _plan(_tune(spec)).tuning_key
    assert base == _plan(_tune(spec)).tuning_key
    assert base != _plan(_tune(spec, latencyBudgetMs=5)).tuning_key
    assert base != _plan(_tune(spec, candidates=[1, 2])).tuning_key
    pinned = _tune(spec).model_dump(by_alias=True, mode="json")
    pinned["model"]["selection"] = {"policy": "pinned", "pinned": "fp32"}
    assert base != _plan(models.parse_spec(pinned)).tuning_key
    # Replicas and autoscaling don't change what a measurement means.
    more = _tune(spec).model_dump(by_alias=True, mode="json")
    more["replicas"] = 5
    assert base == _plan(models.parse_spec(more)).tuning_key
    assert _plan(spec).tuning_key is None  # maxBatchSize set: nothing to tune


def test_step_starts_waits_and_serves(spec: models.GeoDeploymentSpec) -> None:
    first = tuning.step(models.GeoDeploymentStatus(), "digits", "k1", NOW)
    assert first.action == "start"
    assert (first.tuning.attempts, first.tuning.job) == (1, "digits-tune-k1-1")
    running = models.GeoDeploymentStatus(tuning=first.tuning)
    assert tuning.step(running, "digits", "k1", NOW).action == "wait"
    done = models.GeoDeploymentStatus(tuning=first.tuning.model_copy(update={"result": RESULT}))
    assert tuning.step(done, "digits", "k1", NOW).action == "serve"
    # A new key voids the result: a fresh first attempt.
    fresh = tuning.step(done, "digits", "k2", NOW)
    assert fresh.action == "start" and fresh.tuning.result is None
    assert (fresh.tuning.key, fresh.tuning.attempts) == ("k2", 1)


def test_failures_back_off_exponentially_and_never_loop(spec: models.GeoDeploymentSpec) -> None:
    tuned = _tune(spec, retryBackoffSeconds=30)
    run = tuning.step(models.GeoDeploymentStatus(), "digits", "k", NOW).tuning
    now = NOW
    waits = []
    for attempt in range(1, 10):
        failed = tuning.finish(tuned, run, _job_status("Failed", "BackoffLimitExceeded"), None, now)
        assert failed is not None and failed.failures == attempt
        status = models.GeoDeploymentStatus(tuning=failed)
        later = tuning.step(status, "digits", "k", now + 1)
        assert later.action == "retry_later" and later.retry_in is not None
        waits.append(round(later.retry_in + 1))
        due = tuning.parse_time(failed.next_retry_time or "")
        assert tuning.step(status, "digits", "k", due - 0.5).action == "retry_later"
        again = tuning.step(status, "digits", "k", due)
        assert again.action == "start" and again.tuning.attempts == attempt + 1
        run, now = again.tuning, due
    assert waits == [30, 60, 120, 240, 480, 960, 1920, 1920, 1920]


def test_finish_reads_the_result_from_the_termination_message(
    spec: models.GeoDeploymentSpec,
) -> None:
    run = tuning.step(models.GeoDeploymentStatus(), "digits", "k", NOW).tuning
    assert tuning.finish(spec, run, {"status": {"active": 1}}, None, NOW) is None  # running
    done = tuning.finish(
        spec, run, _job_status("Complete"), _pod(0, tuning.result_json(RESULT)), NOW
    )
    assert done is not None and done.result == RESULT and done.failures == 0
    assert len(tuning.result_json(RESULT)) < 4096


@pytest.mark.parametrize(
    ("job", "pod", "reason", "words"),
    [
        (_job_status("Failed", "DeadlineExceeded"), None, "TuningTimedOut", "1800 s deadline"),
        (
            _job_status("Failed", "BackoffLimitExceeded"),
            _pod(1, json.dumps({"error": "no configuration kept p99 within 0.01 ms"})),
            "TuningFailed",
            "(exit code 1): no configuration kept p99 within 0.01 ms",
        ),
        (
            _job_status("Failed", "BackoffLimitExceeded"),
            _pod(137, "Traceback ... Killed"),
            "TuningFailed",
            "the tuner wrote no result: Traceback ... Killed",
        ),
        (_job_status("Complete"), _pod(0, "{}"), "TuningFailed", "malformed"),
        (None, None, "TuningFailed", "disappeared"),
    ],
)
def test_finish_names_each_failure(
    spec: models.GeoDeploymentSpec,
    job: dict[str, Any] | None,
    pod: dict[str, Any] | None,
    reason: str,
    words: str,
) -> None:
    run = tuning.step(models.GeoDeploymentStatus(), "digits", "k", NOW).tuning
    failed = tuning.finish(spec, run, job, pod, NOW)
    assert failed is not None and failed.result is None
    assert failed.failure_reason == reason
    assert words in (failed.failure_message or "")
    assert failed.next_retry_time == tuning.format_time(NOW + 60)


def test_plan_serves_the_result_only_for_its_key(spec: models.GeoDeploymentSpec) -> None:
    tuned = _tune(spec)
    key = _plan(tuned).tuning_key
    assert key is not None
    run = models.TuningStatus(key=key, job="digits-tune-x-1", attempts=1, result=RESULT)
    decided = _plan(tuned, models.GeoDeploymentStatus(tuning=run))
    assert decided.target is not None
    assert decided.batch_tuned and decided.batch_reason == "Measured"
    assert "max_batch_size 16, queue delay 500 us: 812 req/s at p99 7.50 ms" in (
        decided.batch_message
    )
    batch = decided.target.batch
    assert (batch.max_batch_size, batch.max_queue_delay_microseconds) == (16, 500)
    stale = _plan(tuned, models.GeoDeploymentStatus(tuning=run.model_copy(update={"key": "old"})))
    assert stale.target is not None and not stale.batch_tuned
    assert stale.target.batch.max_batch_size == plan.UNTUNED_MAX_BATCH_SIZE
    assert stale.batch_reason == "NotMeasured"
