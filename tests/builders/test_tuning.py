"""The tuning Job builder (golden YAML) and the pure tuning state: step, finish, back-off."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

import numpy as np
import pytest
import yaml

from geo_operator.api import models, names, yamlio
from geo_operator.artifacts import selection
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
    assert names.OWNER_LABEL not in pod_labels  # the autoscaler doesn't count it
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
    first = tuning.step([], "digits", "int8", "k1", NOW)
    assert first.action == "start"
    assert (first.tuning.attempts, first.tuning.job) == (1, "digits-tune-k1-1")
    assert first.tuning.artifact == "int8"
    running = [first.tuning]
    assert tuning.step(running, "digits", "int8", "k1", NOW).action == "wait"
    done = [first.tuning.model_copy(update={"result": RESULT})]
    assert tuning.step(done, "digits", "int8", "k1", NOW).action == "serve"
    # Another candidate's run is not this one's.
    assert tuning.step(done, "digits", "fp32", "k1", NOW).action == "start"
    # A new key voids the result: a fresh first attempt.
    fresh = tuning.step(done, "digits", "int8", "k2", NOW)
    assert fresh.action == "start" and fresh.tuning.result is None
    assert (fresh.tuning.key, fresh.tuning.attempts) == ("k2", 1)


def test_failures_back_off_exponentially_and_never_loop(spec: models.GeoDeploymentSpec) -> None:
    tuned = _tune(spec, retryBackoffSeconds=30)
    run = tuning.step([], "digits", "int8", "k", NOW).tuning
    now = NOW
    waits = []
    for attempt in range(1, 10):
        failed = tuning.finish(tuned, run, _job_status("Failed", "BackoffLimitExceeded"), None, now)
        assert failed is not None and failed.failures == attempt
        status = [failed]
        later = tuning.step(status, "digits", "int8", "k", now + 1)
        assert later.action == "retry_later" and later.retry_in is not None
        waits.append(round(later.retry_in + 1))
        due = names.parse_time(failed.next_retry_time or "")
        assert tuning.step(status, "digits", "int8", "k", due - 0.5).action == "retry_later"
        again = tuning.step(status, "digits", "int8", "k", due)
        assert again.action == "start" and again.tuning.attempts == attempt + 1
        run, now = again.tuning, due
    assert waits == [30, 60, 120, 240, 480, 960, 1920, 1920, 1920]


def test_finish_reads_the_result_from_the_termination_message(
    spec: models.GeoDeploymentSpec,
) -> None:
    run = tuning.step([], "digits", "int8", "k", NOW).tuning
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
    run = tuning.step([], "digits", "int8", "k", NOW).tuning
    failed = tuning.finish(spec, run, job, pod, NOW)
    assert failed is not None and failed.result is None
    assert failed.failure_reason == reason
    assert words in (failed.failure_message or "")
    assert failed.next_retry_time == names.format_time(NOW + 60)


def test_plan_serves_the_result_only_for_its_key(spec: models.GeoDeploymentSpec) -> None:
    tuned = _tune(spec)
    key = _plan(tuned).tuning_key
    assert key is not None
    chosen = _plan(tuned).choice.artifact
    assert chosen is not None
    run = models.TuningStatus(
        artifact=chosen.name, key=key, job="digits-tune-x-1", attempts=1, result=RESULT
    )
    decided = _plan(tuned, models.GeoDeploymentStatus(tuning=[run]))
    assert decided.target is not None
    assert decided.batch_tuned and decided.batch_reason == "Measured"
    assert "max_batch_size 16, queue delay 500 us: 812 req/s at p99 7.50 ms" in (
        decided.batch_message
    )
    batch = decided.target.batch
    assert (batch.max_batch_size, batch.max_queue_delay_microseconds) == (16, 500)
    stale = _plan(tuned, models.GeoDeploymentStatus(tuning=[run.model_copy(update={"key": "old"})]))
    assert stale.target is not None and not stale.batch_tuned
    assert stale.target.batch.max_batch_size == plan.UNTUNED_MAX_BATCH_SIZE
    assert stale.batch_reason == "NotMeasured"


# ------------------------------------------------------------------ every candidate measured

CPU = selection.Hardware(gpu=False)


def _run(artifact: str, key: str, result: models.TunedBatch | None = None) -> models.TuningStatus:
    return models.TuningStatus(
        artifact=artifact, key=key, job=f"digits-tune-{artifact}-1", attempts=1, result=result
    )


def _result(max_batch_size: int, throughput: float, p99_ms: float) -> models.TunedBatch:
    return RESULT.model_copy(
        update={"max_batch_size": max_batch_size, "throughput": throughput, "p99_ms": p99_ms}
    )


def test_candidates_are_what_the_hardware_runs_above_the_floor(
    spec: models.GeoDeploymentSpec,
) -> None:
    assert [a.name for a in selection.candidates(spec.model, CPU)] == ["fp32", "fp16", "int8"]
    hopper = selection.Hardware(gpu=True, gpu_arch="hopper")
    assert [a.name for a in selection.candidates(spec.model, hopper)] == [
        "fp32",
        "fp16",
        "int8",
        "fp8",
    ]
    raw = spec.model_dump(by_alias=True, mode="json")
    raw["model"]["selection"] = {"policy": "pinned", "pinned": "fp16"}
    pinned = models.parse_spec(raw)
    assert [a.name for a in selection.candidates(pinned.model, CPU)] == ["fp16"]
    raw["model"]["selection"] = {"policy": "best-score", "minAccuracyRatio": 1.0}
    strict = models.parse_spec(raw)
    assert [a.name for a in selection.candidates(strict.model, CPU)] == ["int8"]


def test_keys_do_not_depend_on_which_artifact_is_chosen(spec: models.GeoDeploymentSpec) -> None:
    tuned = _tune(spec)
    keys = tuning.keys(tuned, CPU)
    assert list(keys) == ["fp32", "fp16", "int8"] and len(set(keys.values())) == 3
    # Results that turn the choice from int8 (declared) to fp32 (measured) keep every key.
    before = _plan(tuned)
    runs = [
        _run("fp32", keys["fp32"], _result(16, 3000, 6.0)),
        _run("fp16", keys["fp16"], _result(4, 900, 8.0)),
        _run("int8", keys["int8"], _result(4, 1000, 7.0)),
    ]
    after = _plan(tuned, models.GeoDeploymentStatus(tuning=runs))
    assert before.choice.artifact is not None and after.choice.artifact is not None
    assert (before.choice.artifact.name, after.choice.artifact.name) == ("int8", "fp32")
    assert before.tuning_keys == after.tuning_keys == keys
    assert after.tuning_key == keys["fp32"]
    # A spec change that touches one artifact re-measures that one only.
    raw = tuned.model_dump(by_alias=True, mode="json")
    raw["model"]["artifacts"][0]["uri"] = "http://models.geo.local/digits/fp32/v2.onnx"
    changed = tuning.keys(models.parse_spec(raw), CPU)
    assert changed["fp32"] != keys["fp32"]
    assert (changed["fp16"], changed["int8"]) == (keys["fp16"], keys["int8"])


def test_measured_figures_choose_and_the_chosen_serves_its_own_tuning(
    spec: models.GeoDeploymentSpec,
) -> None:
    tuned = _tune(spec)
    keys = tuning.keys(tuned, CPU)
    runs = [
        _run("fp32", keys["fp32"], _result(16, 3268, 6.3)),
        _run("fp16", keys["fp16"], _result(4, 900, 8.0)),
        _run("int8", keys["int8"], _result(8, 1500, 5.1)),
    ]
    decided = _plan(tuned, models.GeoDeploymentStatus(tuning=runs))
    assert decided.target is not None and decided.target.artifact.name == "fp32"
    reason = decided.choice.reason
    assert "latency measured throughput" in reason
    assert (
        "measured fp32: 3268 req/s at p99 6.3 ms (max_batch_size 16); "
        "fp16: 900 req/s at p99 8.0 ms (max_batch_size 4); "
        "int8: 1500 req/s at p99 5.1 ms (max_batch_size 8)"
    ) in reason
    assert decided.target.batch.max_batch_size == 16 and decided.batch_reason == "Measured"
    fastest = tuned.model_dump(by_alias=True, mode="json")
    fastest["model"]["selection"] = {"policy": "fastest"}
    quick = _plan(models.parse_spec(fastest), models.GeoDeploymentStatus(tuning=runs))
    assert quick.choice.artifact is not None and quick.choice.artifact.name == "fp32"
    assert "measured throughput 3268 req/s" in quick.choice.reason


def test_a_candidate_without_a_measurement_falls_back_to_declared_figures(
    spec: models.GeoDeploymentSpec,
) -> None:
    tuned = _tune(spec)
    keys = tuning.keys(tuned, CPU)
    failed = _run("fp16", keys["fp16"]).model_copy(
        update={"failures": 1, "failure_reason": "TuningTimedOut", "failure_message": "deadline"}
    )
    runs = [_run("fp32", keys["fp32"], _result(16, 3268, 6.3)), failed, _run("int8", keys["int8"])]
    decided = _plan(tuned, models.GeoDeploymentStatus(tuning=runs))
    # Not every candidate is measured: one basis for all, the declared latencies.
    assert decided.target is not None and decided.target.artifact.name == "int8"
    reason = decided.choice.reason
    assert "latency declared" in reason
    assert "fp32: 3268 req/s at p99 6.3 ms" in reason
    assert "fp16: measurement failed (TuningTimedOut), declared figures" in reason
    assert "int8: not measured yet" in reason
    assert not decided.batch_tuned  # int8's own run has no result yet
    # A result of other inputs (an old key) is no measurement.
    stale = [r.model_copy(update={"key": "old"}) for r in runs]
    assert tuning.measured(stale, keys) == {}


def test_tuning_config_map_holds_the_candidates_files(spec: models.GeoDeploymentSpec) -> None:
    decided = _plan(_tune(spec))
    assert decided.target is not None
    fp32 = dataclasses.replace(decided.target, artifact=spec.model.artifacts[0])
    config = tuning.tuning_config_map(fp32)
    assert config["metadata"]["name"] == "digits-tune-fp32"
    assert config["data"] == children.config_map_data(fp32)
    job = tuning.tuning_job(fp32, key_="k", attempt=1, image="i")
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert {"name": "model-config", "configMap": {"name": "digits-tune-fp32"}} in volumes
    fetch = job["spec"]["template"]["spec"]["initContainers"][0]
    assert fetch["env"] == [{"name": "ARTIFACT_URI", "value": fp32.artifact.uri}]


def _family_target(metric: str, artifact: str, **evaluation: Any) -> children.Target:
    import yaml
    from tests.support.paths import FAMILY_MANIFEST

    body = yaml.safe_load(FAMILY_MANIFEST.read_text())
    body["spec"]["model"]["evaluation"] = {
        "uri": "http://h/heldout.npz",
        "metric": metric,
        **evaluation,
    }
    spec = models.parse_spec(body["spec"])
    return children.Target(
        name="fam",
        namespace="ns",
        uid="u",
        spec=spec,
        artifact=next(a for a in spec.model.artifacts if a.name == artifact),
        batch=plan.model_config.BatchSettings(max_batch_size=8),
        replicas=1,
    )


def _job_pod(target: children.Target) -> dict[str, Any]:
    job = tuning.tuning_job(target, key_="k" * 10, attempt=1, image="geo")
    return dict(job["spec"]["template"]["spec"])


def test_accuracy_evaluation_fetches_the_set_and_scores_against_labels() -> None:
    target = _family_target("accuracy", "int8-static")
    pod = _job_pod(target)
    fetch, tuner = pod["initContainers"][0], pod["containers"][0]
    script = fetch["command"][-1]
    assert f'fetch.py "${names.EVALUATION_URI_ENV}" {names.HELDOUT_FILE}' in script
    assert {"name": names.EVALUATION_URI_ENV, "value": "http://h/heldout.npz"} in fetch["env"]
    assert names.REFERENCE_URI_ENV not in {e["name"] for e in fetch["env"]}  # labels: no ref
    assert tuner["args"][-2:] == [f"--evaluate={names.HELDOUT_FILE}", "--metric=accuracy"]
    assert tuner["volumeMounts"] == [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "evaluation", "mountPath": names.EVALUATION_MOUNT, "readOnly": True},
    ]
    assert {"name": "evaluation", "emptyDir": {}} in pod["volumes"]
    assert names.REFERENCE_CONFIG not in tuning.tuning_config_map(target)["data"]


def test_agreement_serves_the_reference_beside_the_candidate() -> None:
    target = _family_target("agreement", "student")
    pod = _job_pod(target)
    script = pod["initContainers"][0]["command"][-1]
    ref_dir = f"{names.MODEL_REPOSITORY}/digits-family-reference"
    assert f'fetch.py "${names.REFERENCE_URI_ENV}" {ref_dir}/1/model.onnx' in script
    assert f"cp /config/{names.REFERENCE_CONFIG} {ref_dir}/config.pbtxt" in script
    teacher = "http://models.geo.local/digits-family/teacher/model.onnx"
    assert {"name": names.REFERENCE_URI_ENV, "value": teacher} in pod["initContainers"][0]["env"]
    assert "--reference-model=digits-family-reference" in pod["containers"][0]["args"]
    assert "--reference=teacher" in pod["containers"][0]["args"]
    config = plan.model_config.parse(tuning.tuning_config_map(target)["data"]["reference.pbtxt"])
    assert config.name == "digits-family-reference" and config.backend == "python"
    # The reference itself needs no second model: it agrees with itself.
    own = _job_pod(_family_target("agreement", "teacher"))
    assert not any(a.startswith("--reference-model") for a in own["containers"][0]["args"])
    assert "--reference=teacher" in own["containers"][0]["args"]


def test_the_key_covers_what_the_accuracy_was_measured_on() -> None:
    base = _family_target("accuracy", "student")
    other_set = _family_target("accuracy", "student", uri="http://h/other.npz")
    agreement = _family_target("agreement", "student")
    other_ref = _family_target("agreement", "student", reference="fp16")
    tolerance = _family_target("accuracy", "student", tolerance=0.1)
    keys = [tuning.key(t.spec, t.artifact) for t in (base, other_set, agreement, other_ref)]
    assert len(set(keys)) == 4
    # The tolerance judges the figure; it doesn't change what is measured.
    assert tuning.key(tolerance.spec, tolerance.artifact) == keys[0]


PYCODE = pathlib.Path(__file__).parents[2] / "manifests" / "examples" / "pycode.yaml"
PYCODE_GOLDEN = pathlib.Path(__file__).parent / "golden" / "pycode-tuning-job.yaml"


def _pycode(metric: str = "agreement") -> models.GeoDeploymentSpec:
    raw = yaml.safe_load(PYCODE.read_text())["spec"]
    raw["model"]["evaluation"] = {"uri": "http://h/heldout.txt", "metric": metric}
    return models.parse_spec(raw)


def test_a_generative_model_with_evaluation_measures_every_candidate_with_geo_tune_llm() -> None:
    spec = _pycode()
    decided = plan.plan(
        name="pycode",
        namespace="ml",
        uid="uid-1",
        spec=spec,
        status=models.GeoDeploymentStatus(),
        current_replicas=None,
    )
    # every artifact is a candidate (measurement decides); slots stay the spec's
    assert list(decided.tuning_keys) == [a.name for a in spec.model.artifacts]
    assert decided.batch_reason == "EngineBatches"
    assert decided.target is not None
    candidate = dataclasses.replace(decided.target, artifact=spec.model.artifacts[3])  # q4-k-m
    key = decided.tuning_keys["q4-k-m"]
    job = tuning.tuning_job(candidate, key_=key, attempt=1, image="geo:test")
    rendered = yamlio.dump_all([job, tuning.tuning_config_map(candidate)])
    if os.environ.get("UPDATE_GOLDEN"):
        PYCODE_GOLDEN.write_text(rendered)
    assert rendered == PYCODE_GOLDEN.read_text(), "run with UPDATE_GOLDEN=1 and review the diff"
    pod = job["spec"]["template"]["spec"]
    tuner = pod["containers"][0]
    assert tuner["args"][:3] == ["tune-llm", "--url=127.0.0.1:8000", "--model=pycode"]
    assert {"--slots=4", "--context=256", "--max-tokens=64", "--metric=agreement"} <= set(
        tuner["args"]
    )
    assert "--reference-model=pycode-reference" in tuner["args"]  # the f16, fetched beside it
    assert "--reference=f16" in tuner["args"]
    repository = {"name": "model-repository", "mountPath": "/models", "readOnly": True}
    assert repository in tuner["volumeMounts"]  # it reads the GGUFs itself
    reference = plan.model_config.parse(
        tuning.tuning_config_map(candidate)["data"][names.REFERENCE_CONFIG]
    )
    assert reference.name == "pycode-reference"
    assert plan.model_config.artifact_format_of(reference) is models.ArtifactFormat.GGUF
    # the engine's levers and the metric are inputs of the key; a predictive-only lever is not
    slots = models.parse_spec(
        {**spec.model_dump(by_alias=True, mode="json"), "triton": {"engine": {"slots": 2}}}
    )
    other = _pycode("perplexity")
    keys = {tuning.key(s, s.model.artifacts[3]) for s in (spec, slots, other)}
    assert len(keys) == 3
    # without model.evaluation, a generative model has no tuning Job (nothing to measure)
    bare = models.parse_spec(yaml.safe_load(PYCODE.read_text())["spec"])
    assert not plan.measures(bare) and plan.measures(spec)


def test_a_generative_result_is_described_in_tokens() -> None:
    result = models.TunedBatch(
        max_batch_size=4,
        throughput=1711.4,
        p99_ms=3.25,
        concurrency=4,
        measurements=2,
        grid_size=1,
        accuracy=models.MeasuredAccuracy(
            metric=models.EvaluationMetric.AGREEMENT,
            value=0.6289,
            samples=1024,
            reference="f16",
            perplexity=65.8261,
            kl_divergence=1.2,
            agreement=0.6289,
        ),
    )
    words = tuning.describe(result, 200, generative=True)
    assert words == (
        "4 slots: 1711 tokens/s with 4 streams at once, p99 3.25 ms between tokens; held-out "
        "agreement with f16 0.6289 on 1024 tokens (perplexity 65.8261, KL divergence 1.2, "
        "agreement 0.6289)"
    )


def _measured_family(metric: str) -> tuple[models.GeoDeploymentSpec, models.GeoDeploymentStatus]:
    """The pycode family with its miscalibrated member (declaring f16's figures), each
    artifact's tuning result as `geo tune-llm` measured the family (measurements.json)."""
    raw = yaml.safe_load(PYCODE.read_text())["spec"]
    raw["model"]["evaluation"] = {"uri": "http://h/heldout.txt", "metric": metric}
    f16 = raw["model"]["artifacts"][0]
    bad = {**f16, "name": "q2-k-miscalibrated", "precision": "int2", "latencyMs": 0.12}
    bad["uri"] = "http://models.geo.local/pycode/q2_k-miscalibrated/model.gguf"
    del bad["sha256"]
    raw["model"]["artifacts"].append(bad)
    spec = models.parse_spec(raw)
    # (name, perplexity, KL divergence, agreement, decode tokens/s at 4 slots)
    figures = [
        ("f16", 20.9006, 0.0, 1.0, 900.0),
        ("q8-0", 20.9045, 0.00014, 0.9863, 1100.0),
        ("q5-k-m", 20.9223, 0.00213, 0.9434, 1050.0),
        ("q4-k-m", 20.9301, 0.00808, 0.9102, 1200.0),
        ("q3-k-m", 21.5578, 0.02895, 0.8418, 1100.0),
        ("q2-k", 22.0518, 0.10489, 0.7178, 1150.0),
        ("student", 24.8351, 0.3794, 0.5303, 1100.0),
        ("q2-k-miscalibrated", 65.8261, 1.2, 0.6289, 1300.0),
    ]
    keys = tuning.keys(spec, selection.hardware_of(spec.triton))
    runs = []
    for name, ppl, kld, agree, speed in figures:
        value = {"agreement": agree, "perplexity": min(1.0, 20.9006 / ppl)}.get(metric)
        accuracy = models.MeasuredAccuracy(
            metric=models.EvaluationMetric(metric),
            value=round(value if value is not None else float(np.exp(-kld)), 4),
            samples=1024,
            reference="f16",
            perplexity=ppl,
            kl_divergence=kld,
            agreement=agree,
        )
        result = models.TunedBatch(
            max_batch_size=4,
            throughput=speed,
            p99_ms=1.5,
            concurrency=4,
            measurements=2,
            grid_size=1,
            accuracy=accuracy,
        )
        runs.append(models.TuningStatus(artifact=name, key=keys[name], attempts=1, result=result))
    return spec, models.GeoDeploymentStatus(tuning=runs)


@pytest.mark.parametrize("metric", ["agreement", "perplexity", "kl-divergence"])
def test_the_miscalibrated_member_is_caught_by_its_measured_quality(metric: str) -> None:
    spec, status = _measured_family(metric)
    decided = plan.plan(
        name="pycode", namespace="ml", uid="u", spec=spec, status=status, current_replicas=None
    )
    choice = decided.choice
    assert choice.artifact is not None
    rejected = dict(choice.rejected)
    # it declared f16's quality and is the fastest: only the measurement keeps it out
    assert "q2-k-miscalibrated" in rejected, choice.reason
    assert "declared figure contradicted: excluded" in rejected["q2-k-miscalibrated"]
    assert f"{metric} 0." in rejected["q2-k-miscalibrated"]
    assert "measured on 1024 tokens" in rejected["q2-k-miscalibrated"]
    assert choice.artifact.name != "q2-k-miscalibrated"
    assert "tokens/s" in choice.reason or "best" in choice.reason
    print(f"\n{metric}: {choice.artifact.name}: {choice.reason}")


def test_slots_0_measures_the_slots_and_serves_the_measured_count() -> None:
    raw = yaml.safe_load(PYCODE.read_text())["spec"]
    raw["triton"]["engine"]["slots"] = 0
    raw["batchTuning"] = {"candidates": [1, 2, 4, 8, 128]}
    spec = models.parse_spec(raw)
    assert plan.measures(spec)  # no model.evaluation: the slots alone are measured

    def planned(status: models.GeoDeploymentStatus) -> plan.Plan:
        return plan.plan(
            name="pycode", namespace="ml", uid="u", spec=spec, status=status, current_replicas=None
        )

    first = planned(models.GeoDeploymentStatus())
    assert first.target is not None and first.asked is spec
    assert (first.batch_reason, first.batch_tuned) == ("NotMeasured", False)
    assert "triton.engine.slots is 0 (measure)" in first.batch_message
    assert "serving 4 slots meanwhile" in first.batch_message
    served = first.target.spec.triton.engine
    assert served is not None and served.slots == plan.UNTUNED_SLOTS
    # the Job measures the spec as asked: the candidates an engine takes, the objectives
    candidate = dataclasses.replace(first.target, spec=spec)
    key = first.tuning_keys[first.target.artifact.name]
    job = tuning.tuning_job(candidate, key_=key, attempt=1, image="geo:test")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--slot-candidates=1,2,4,8" in args and "--slots=8" in args
    assert "--ttft-budget-ms=200" in args and "--itl-budget-ms=50" in args
    data = tuning.tuning_config_map(candidate)["data"]
    assert plan.model_config.parse(data["config.pbtxt"]).parameters["slots"].string_value == "8"
    result = models.TunedBatch(
        max_batch_size=2, throughput=900, p99_ms=4, concurrency=2, measurements=5, grid_size=4
    )
    run = models.TuningStatus(
        artifact=first.target.artifact.name, key=key, job="j", attempts=1, result=result
    )
    measured = planned(models.GeoDeploymentStatus(tuning=[run]))
    assert measured.target is not None
    assert (measured.batch_reason, measured.batch_tuned) == ("Measured", True)
    assert "measured by Job j: 2 slots: 900 tokens/s" in measured.batch_message
    engine = measured.target.spec.triton.engine
    assert engine is not None and engine.slots == 2
    served_config = children.config_map_data(measured.target)["config.pbtxt"]
    assert plan.model_config.parse(served_config).parameters["slots"].string_value == "2"
