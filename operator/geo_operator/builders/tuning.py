"""Batch tuning in the cluster, pure: the tuning Job, what to do next, and reading its result.

Called by the handlers (which apply the Job and write status through `k8s/`)
and by `builders.plan` (which serves the tuned settings once they exist).

Every candidate artifact (`selection.candidates`: those the hardware runs above
the accuracy floor) is measured by its own Job, ``<name>-tune-<key8>-<attempt>``
with its own ConfigMap ``<name>-tune-<artifact>``, so one candidate's failure
holds up none of the others. Selection then compares the measured figures
(`measured`), and the chosen artifact serves with its own tuned settings.

Each Job runs one pod:

* ``fetch-artifact`` (init): the same step as the Triton pods' — fetch the
  artifact and lay out the model repository from the candidate's ConfigMap;
* ``triton`` (a native sidecar: an init container with ``restartPolicy:
  Always``): ``tritonserver`` in explicit model-control mode, so the tuner can
  load each candidate configuration with a config override; its startup probe
  holds the tuner back until the model is loaded, and the kubelet stops it when
  the tuner exits, so the Job completes;
* ``tune``: the operator's image running ``geo tune`` against 127.0.0.1; it
  writes its result as compact JSON (well under the 4 KiB limit) to
  ``/dev/termination-log``, which the operator reads from the pod's status.

The pod lands where the serving pods do (same node selector and resources), so
what it measures is what they will serve. State lives in
``status.tuning``: a key hashing everything the result depends on (a spec
change makes a new key and voids the result), the attempts, the failures and
the next retry time (exponential back-off, never a tight loop).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from geo_operator.api import models, names
from geo_operator.artifacts import selection
from geo_operator.builders import children
from geo_operator.triton import model_config

# Finished Jobs (and their pods, which hold the result) stay a day, then go.
TTL_SECONDS = 86400
# Failed runs are retried after retryBackoffSeconds x 2^(failures-1), at most this many times it.
MAX_BACKOFF_FACTOR = 64


def key(spec: models.GeoDeploymentSpec, artifact: models.Artifact) -> str:
    """Hash of every input the tuned result depends on."""
    triton = spec.triton
    inputs = {
        # The digest only checks the file the URI names: declaring it re-measures nothing.
        # gguf's declared figures only when set, so older keys stand.
        "artifact": artifact.model_dump(
            mode="json",
            by_alias=True,
            exclude={"sha256"}
            | {f for f in ("perplexity", "kl_divergence") if getattr(artifact, f) is None},
        ),
        "model": spec.model.model_dump(
            mode="json", by_alias=True, include={"name", "inputs", "outputs"}
        ),
        "tuning": spec.batch_tuning.model_dump(mode="json", by_alias=True, exclude={"parallelism"}),
        "triton": triton.model_dump(
            mode="json",
            by_alias=True,
            include={"image", "instance_count", "resources", "node_selector"},
        ),
        "batching": triton.dynamic_batching.enabled,
        "budget": spec.tuning_budget_ms(),
    }
    # Levers that change the capacity measured; only when set, so older keys stand.
    if triton.instance_groups is not None:
        inputs["instanceGroups"] = [
            g.model_dump(mode="json", by_alias=True) for g in triton.instance_groups
        ]
    if triton.gpu != models.GpuOptimization():
        inputs["gpu"] = triton.gpu.model_dump(mode="json", by_alias=True)
    if spec.model.generative:  # the engine's levers change the token speed measured
        inputs["engine"] = dataclasses.asdict(model_config.EngineSettings.of(triton.engine))
    evaluation = spec.model.evaluation
    if evaluation is not None:
        # What the accuracy was measured on and against: a change re-measures.
        inputs["evaluation"] = {
            **evaluation.model_dump(mode="json", by_alias=True, exclude={"tolerance"}),
            "reference": _reference_artifact(spec.model, artifact),
        }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:10]


def keys(spec: models.GeoDeploymentSpec, hardware: selection.Hardware) -> dict[str, str]:
    """The tuning key of each candidate artifact, by name, in spec order.

    Each key hashes its own artifact only, never which artifact gets chosen: the
    choice follows from the measurements, so it can't be one of their inputs.
    """
    return {a.name: key(spec, a) for a in selection.candidates(spec.model, hardware)}


def run_for(
    runs: Sequence[models.TuningStatus] | None, artifact: str, key_: str
) -> models.TuningStatus | None:
    """The run recorded for ``artifact`` if it measured the current inputs (``key_``)."""
    return next((r for r in runs or () if r.artifact == artifact and r.key == key_), None)


def measured(
    runs: Sequence[models.TuningStatus] | None, keys_: Mapping[str, str]
) -> dict[str, selection.Measurement]:
    """Throughput and p99 per candidate whose current run has a result."""
    out: dict[str, selection.Measurement] = {}
    for artifact, key_ in keys_.items():
        run = run_for(runs, artifact, key_)
        if run is not None and run.result is not None:
            out[artifact] = selection.Measurement(
                latency_ms=run.result.p99_ms,
                throughput=run.result.throughput,
                max_batch_size=run.result.max_batch_size,
                accuracy=run.result.accuracy,
            )
    return out


def figures(runs: Sequence[models.TuningStatus] | None, keys_: Mapping[str, str]) -> str:
    """Each candidate's measured figures, or why it has none (selection then goes by the
    declared numbers), for the ArtifactSelected reason."""
    parts = []
    for artifact, key_ in keys_.items():
        run = run_for(runs, artifact, key_)
        if run is not None and run.result is not None:
            r = run.result
            if r.accuracy is not None and r.accuracy.perplexity is not None:  # tune-llm's
                parts.append(
                    f"{artifact}: {r.throughput:.0f} tokens/s with {r.max_batch_size} slots, "
                    f"{r.accuracy.metric} {r.accuracy.value:.4f}"
                )
                continue
            scored = f", accuracy {r.accuracy.value:.4f}" if r.accuracy is not None else ""
            parts.append(
                f"{artifact}: {r.throughput:.0f} req/s at p99 {r.p99_ms:.1f} ms "
                f"(max_batch_size {r.max_batch_size}{scored})"
            )
        elif run is not None and run.failures and run.failures >= run.attempts:
            parts.append(f"{artifact}: measurement failed ({run.failure_reason}), declared figures")
        else:
            parts.append(f"{artifact}: not measured yet")
    return "measured " + "; ".join(parts) if parts else ""


def _reference_artifact(spec: models.ModelSpec, artifact: models.Artifact) -> dict[str, Any] | None:
    """What the candidate's agreement is measured against (None: labels, or it is the
    reference itself)."""
    ref = selection.reference(spec)
    if ref is None or ref.name == artifact.name:
        return None
    return ref.model_dump(mode="json", by_alias=True, include={"name", "uri", "format"})


def config_map_name(name: str, artifact: str) -> str:
    return f"{name}-tune-{artifact}"


REFERENCE_MAX_BATCH_SIZE = 8  # the reference only answers the held-out set


def reference_for(target: children.Target) -> models.Artifact | None:
    """metric agreement: the reference artifact the candidate's answers are compared with
    (None when the candidate is the reference, or the metric is accuracy)."""
    ref = selection.reference(target.spec.model)
    return None if ref is None or ref.name == target.artifact.name else ref


def reference_model(model: str) -> str:
    return model + names.REFERENCE_SUFFIX


def as_measured(target: children.Target) -> children.Target:
    """The candidate as its tuning Job serves it: no response cache (repeated inputs
    would measure the cache) and no queue bounds or timeouts (the tuner's concurrency
    would be refused instead of measured); the other levers stay, they change capacity."""
    triton = target.spec.triton.unbounded()
    triton = triton.model_copy(update={"response_cache": models.ResponseCache()})
    if triton.engine is not None and triton.engine.slots == 0:
        # slots measured: loaded with the most, so the KV cache holds every candidate's
        engine = triton.engine.model_copy(update={"slots": max(slot_candidates(target.spec))})
        triton = triton.model_copy(update={"engine": engine})
    return dataclasses.replace(target, spec=target.spec.model_copy(update={"triton": triton}))


def slot_candidates(spec: models.GeoDeploymentSpec) -> list[int]:
    """The slot counts `geo tune-llm` tries when triton.engine.slots is 0: batchTuning's
    candidates an engine can take (at most 64)."""
    return sorted({c for c in spec.batch_tuning.candidates if c <= MAX_SLOTS}) or [1]


def tuning_config_map(target: children.Target) -> dict[str, Any]:
    """The candidate's model files (config.pbtxt, fetch.py...) for its tuning Job; with
    agreement also the reference's config (``reference.pbtxt``), served as <model>-reference."""
    target = as_measured(target)
    labels_ = {
        **children.labels(target.name),
        names.COMPONENT_LABEL: names.TUNING_COMPONENT,
        names.TUNING_FOR_LABEL: target.name,
    }
    config_map = children.config_map(
        target, config_map_name(target.name, target.artifact.name), labels_
    )
    ref = reference_for(target)
    if ref is not None:
        spec = target.spec
        if spec.model.generative:  # `geo tune-llm` reads its GGUF; Triton never loads it
            config = model_config.build_generative(
                reference_model(spec.model.name),
                model_config.EngineSettings.of(spec.triton.engine),
            )
        else:
            config = model_config.build(
                spec.model,
                ref,
                model_config.BatchSettings(max_batch_size=REFERENCE_MAX_BATCH_SIZE),
                gpu=target.gpu,
            )
        config.name = reference_model(spec.model.name)
        data = config_map["data"]
        data[names.REFERENCE_CONFIG] = model_config.render(config)
        if ref.format is models.ArtifactFormat.PYTHON and "model.py" not in data:
            data["model.py"] = children.config_map_data(dataclasses.replace(target, artifact=ref))[
                "model.py"
            ]
    return config_map


def _evaluation_pieces(
    target: children.Target, fetch: dict[str, Any], tuner: dict[str, Any]
) -> list[dict[str, Any]]:
    """With model.evaluation: the init container also fetches the held-out set (and, for
    agreement, the reference artifact into <model>-reference); the tuner reads the set and
    scores the candidate. Returns the extra volumes."""
    evaluation = target.spec.model.evaluation
    if evaluation is None:
        return []
    mount = {"name": names.EVALUATION_VOLUME, "mountPath": names.EVALUATION_MOUNT}
    fetch_py = f"python3 {names.CONFIG_MOUNT}/fetch.py"
    lines = [f'{fetch_py} "${names.EVALUATION_URI_ENV}" {names.HELDOUT_FILE}']
    env = [{"name": names.EVALUATION_URI_ENV, "value": evaluation.uri}]
    # (a generative model's held-out text lands at the same path, whatever its name says)
    args = [f"--evaluate={names.HELDOUT_FILE}", f"--metric={evaluation.metric}"]
    if evaluation.output:
        args.append(f"--scored-output={evaluation.output}")
    ref = reference_for(target)
    if ref is not None:
        model_dir = posixpath.join(names.MODEL_REPOSITORY, reference_model(target.spec.model.name))
        filename = model_config.FILENAMES[ref.format]
        lines += [
            f"mkdir -p {model_dir}/1",
            f'{fetch_py} "${names.REFERENCE_URI_ENV}" {model_dir}/1/{filename}',
            f"cp {names.CONFIG_MOUNT}/{names.REFERENCE_CONFIG} {model_dir}/config.pbtxt",
        ]
        if ref.format is models.ArtifactFormat.PYTHON:
            lines.append(f"cp {names.CONFIG_MOUNT}/model.py {model_dir}/1/model.py")
        env.append({"name": names.REFERENCE_URI_ENV, "value": ref.uri})
        args += [f"--reference-model={reference_model(target.spec.model.name)}"]
    if evaluation.metric is not models.EvaluationMetric.ACCURACY:
        reference = ref.name if ref is not None else target.artifact.name
        args.append(f"--reference={reference}")
    fetch["command"] = [*fetch["command"][:-1], fetch["command"][-1] + "\n".join(lines) + "\n"]
    fetch["env"] = [*fetch["env"], *env]
    fetch["volumeMounts"] = [*fetch["volumeMounts"], mount]
    tuner["args"] = [*tuner["args"], *args]
    tuner["volumeMounts"] = [*tuner["volumeMounts"], {**mount, "readOnly": True}]
    return [{"name": names.EVALUATION_VOLUME, "emptyDir": {}}]


def job_name(name: str, key_: str, attempt: int) -> str:
    """<name>-tune-<key8>-<attempt>, within the 63 characters of a label value."""
    suffix = f"-tune-{key_[:8]}-{attempt}"
    return f"{name[: 63 - len(suffix)].rstrip('-')}{suffix}"


def labels(name: str, key_: str) -> dict[str, str]:
    """The Job's and its pod's labels. Not the Triton pods' selector labels nor the owner
    label: the tuning pod must never receive traffic nor count as a serving replica."""
    return {
        names.NAME_LABEL: "geo-tuner",
        names.INSTANCE_LABEL: name,
        names.COMPONENT_LABEL: names.TUNING_COMPONENT,
        names.PART_OF_LABEL: "geo",
        names.MANAGED_BY_LABEL: names.MANAGER,
        names.TUNING_FOR_LABEL: name,
        names.TUNING_KEY_LABEL: key_,
    }


def delays(spec: models.GeoDeploymentSpec) -> list[int | None]:
    """The queue-delay axis: the spec's delays, or only "off" when batching is disabled."""
    if not spec.triton.dynamic_batching.enabled:
        return [None]
    return list(spec.batch_tuning.queue_delays_microseconds)


def tuner_args(spec: models.GeoDeploymentSpec) -> list[str]:
    if spec.model.generative:
        return generative_tuner_args(spec)
    tuning = spec.batch_tuning

    def joined(values: Sequence[int | None]) -> str:
        return ",".join("off" if v is None else str(v) for v in values)

    return [
        "tune",
        f"--url=127.0.0.1:{names.HTTP_PORT}",
        f"--model={spec.model.name}",
        f"--latency-budget-ms={spec.tuning_budget_ms():g}",
        f"--candidates={joined(tuning.candidates)}",
        f"--delays={joined(delays(spec))}",
        f"--concurrency={joined(tuning.concurrency)}",
        f"--seconds={tuning.seconds_per_level:g}",
        f"--wait-seconds={tuning.timeout_seconds}",
        f"--result-file={names.TERMINATION_LOG}",
    ]


# Tokens each of `geo tune-llm`'s measuring streams asks for, at most (the cap bounds it).
GENERATIVE_MEASURE_TOKENS = 64
MAX_SLOTS = 64  # EngineSpec.slots' bound


def generative_tuner_args(spec: models.GeoDeploymentSpec) -> list[str]:
    """`geo tune-llm`: token speed at 1 and the spec's slots, quality in windows of the
    context the pods serve (the GGUFs read from the repository the tuner mounts)."""
    engine = model_config.EngineSettings.of(spec.triton.engine)
    context = engine.context_length or 256
    cap = engine.max_tokens_cap or context
    search = []
    if engine.slots == 0:  # measure them, within the token objectives
        objectives = spec.objectives
        search = [f"--slot-candidates={','.join(map(str, slot_candidates(spec)))}"]
        if objectives.time_to_first_token_p99_ms is not None:
            search.append(f"--ttft-budget-ms={objectives.time_to_first_token_p99_ms:g}")
        if objectives.inter_token_latency_p99_ms is not None:
            search.append(f"--itl-budget-ms={objectives.inter_token_latency_p99_ms:g}")
    return [
        "tune-llm",
        f"--url=127.0.0.1:{names.HTTP_PORT}",
        f"--model={spec.model.name}",
        f"--slots={engine.slots or max(slot_candidates(spec))}",
        *search,
        f"--max-tokens={min(GENERATIVE_MEASURE_TOKENS, cap, context // 2)}",
        f"--context={context}",
        f"--threads={engine.n_threads}",
        f"--repository={names.MODEL_REPOSITORY}",
        f"--wait-seconds={spec.batch_tuning.timeout_seconds}",
        f"--result-file={names.TERMINATION_LOG}",
    ]


def tuning_job(target: children.Target, *, key_: str, attempt: int, image: str) -> dict[str, Any]:
    """The Job that measures the batching grid for ``target``'s artifact."""
    asked = target.spec  # the tuner's args follow the spec as asked (slots 0: search them)
    target = as_measured(target)
    spec = target.spec
    name = job_name(target.name, key_, attempt)
    metadata = {**children.owned_metadata(target, name), "labels": labels(target.name, key_)}
    # A native sidecar (an init container that keeps running), in explicit mode so the
    # tuner can load each configuration; the kubelet stops it when the tuner exits.
    triton = children.triton_container(
        target, ["--model-control-mode=explicit", f"--load-model={spec.model.name}"]
    )
    triton = {
        **{k: triton[k] for k in ("name", "image")},
        "restartPolicy": "Always",
        "args": triton["args"],
        "ports": [{"name": "http", "containerPort": names.HTTP_PORT, "protocol": "TCP"}],
        "startupProbe": children.probe(
            f"/v2/models/{spec.model.name}/ready",
            2,
            max(1, spec.batch_tuning.timeout_seconds // 2),
        ),
        **{k: triton[k] for k in ("resources", "volumeMounts", "securityContext")},
    }
    fetch = children.fetch_container(target)
    tuner: dict[str, Any] = {
        "name": names.TUNER_CONTAINER,
        "image": image,
        "args": tuner_args(asked),
        # A crash with no result written still says why (the log's tail).
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "volumeMounts": [children.tmp_mount()],
        # GEO's own image: its own non-root user (65532), whatever the Triton pods run as.
        "securityContext": children.container_security(spec, image_user=True),
    }
    volumes = children.repository_volumes(
        target, config_map_name(target.name, target.artifact.name)
    )
    volumes += _evaluation_pieces(target, fetch, tuner)
    if spec.model.generative:  # `geo tune-llm` reads the GGUFs themselves (llama.cpp)
        repository = next(
            m for m in triton["volumeMounts"] if m["mountPath"] == names.MODEL_REPOSITORY
        )
        tuner["volumeMounts"] = [*tuner["volumeMounts"], {**repository, "readOnly": True}]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": children.pod_security(spec),
        "initContainers": [fetch, triton],
        "containers": [tuner],
        "volumes": volumes,
        **children.placement(spec),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": 0,  # GEO retries, with back-off and a record in status
            "activeDeadlineSeconds": spec.batch_tuning.timeout_seconds,
            "ttlSecondsAfterFinished": TTL_SECONDS,
            "template": {"metadata": {"labels": labels(target.name, key_)}, "spec": pod_spec},
        },
    }


# ------------------------------------------------------------------ what next


def backoff_seconds(spec: models.GeoDeploymentSpec, failures: int) -> int:
    """Wait after the ``failures``-th failure: base x 2^(failures-1), capped."""
    base = spec.batch_tuning.retry_backoff_seconds
    factor: int = min(2 ** max(0, failures - 1), MAX_BACKOFF_FACTOR)
    return base * factor


Action = Literal["serve", "start", "wait", "retry_later", "queued"]


@dataclasses.dataclass(frozen=True)
class Step:
    """What the reconcile does about tuning, and the status.tuning to record."""

    action: Action
    tuning: models.TuningStatus
    retry_in: float | None = None  # retry_later: seconds until the next attempt
    previous: models.TuningStatus | None = None  # start: the record before this attempt


def queue(steps: Mapping[str, Step], parallelism: int) -> dict[str, Step]:
    """At most ``parallelism`` Jobs running: starts beyond it wait their turn (in spec
    order), their record as it was; a finished Job's event brings the next."""
    running = sum(1 for s in steps.values() if s.action == "wait")
    out: dict[str, Step] = {}
    for artifact, s in steps.items():
        if s.action == "start":
            if running >= parallelism and s.previous is not None:
                out[artifact] = Step("queued", s.previous)
                continue
            running += 1
        out[artifact] = s
    return out


def step(
    runs: Sequence[models.TuningStatus] | None, name: str, artifact: str, key_: str, now: float
) -> Step:
    """For one candidate: serve a result, start an attempt, wait for the running one, or wait
    for the retry time."""
    tuning = run_for(runs, artifact, key_) or models.TuningStatus(artifact=artifact, key=key_)
    if tuning.result is not None:
        return Step("serve", tuning)
    if tuning.attempts > tuning.failures:
        return Step("wait", tuning)
    if tuning.next_retry_time is not None:
        due = names.parse_time(tuning.next_retry_time)
        if now < due:
            return Step("retry_later", tuning, due - now)
    attempt = tuning.attempts + 1
    started = tuning.model_copy(
        update={"attempts": attempt, "job": job_name(name, key_, attempt), "next_retry_time": None}
    )
    return Step("start", started, previous=tuning)


# ------------------------------------------------------------------ reading a finished Job


def _condition(job: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_ and c.get("status") == "True":
            return c  # type: ignore[no-any-return]
    return None


def finished(job: Mapping[str, Any]) -> bool:
    """Whether a Job has finished (Complete or Failed): the one rule for "done"."""
    return _condition(job, "Complete") is not None or _condition(job, "Failed") is not None


def termination(pod: Mapping[str, Any] | None) -> tuple[int | None, str]:
    """(exit code, termination message) of the tuner container, if it terminated."""
    if pod is None:
        return None, ""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for s in statuses:
        if s.get("name") != names.TUNER_CONTAINER:
            continue
        terminated = (s.get("state") or {}).get("terminated") or (
            (s.get("lastState") or {}).get("terminated")
        )
        if terminated:
            return terminated.get("exitCode"), str(terminated.get("message") or "")
    return None, ""


def parse_result(message: str) -> models.TunedBatch | str:
    """The tuner's JSON result, or the error it reported (a string)."""
    try:
        data = json.loads(message)
    except ValueError:
        tail = message.strip()[-300:] or "(no termination message)"
        return f"the tuner wrote no result: {tail}"
    if not isinstance(data, dict):
        return f"the tuner's result is not an object: {message[:200]}"
    if "error" in data:
        return str(data["error"])
    try:
        return models.TunedBatch.model_validate(data)
    except ValueError as error:
        return f"the tuner's result is malformed: {error}"


def finish(
    spec: models.GeoDeploymentSpec,
    tuning: models.TuningStatus,
    job: Mapping[str, Any] | None,
    pod: Mapping[str, Any] | None,
    now: float,
) -> models.TuningStatus | None:
    """The status after ``tuning.job`` finished, or None while it still runs.

    A Job that vanished counts as failed (else GEO would wait for it forever).
    """
    if job is None:
        return _failed(spec, tuning, "TuningFailed", f"Job {tuning.job} disappeared", now)
    complete = _condition(job, "Complete")
    failed = _condition(job, "Failed")
    if complete is None and failed is None:
        return None
    code, message = termination(pod)
    if complete is not None:
        parsed = parse_result(message)
        if isinstance(parsed, models.TunedBatch):
            return tuning.model_copy(
                update={
                    "result": parsed,
                    "failure_reason": None,
                    "failure_message": None,
                    "next_retry_time": None,
                }
            )
        return _failed(spec, tuning, "TuningFailed", parsed, now)
    assert failed is not None
    if failed.get("reason") == "DeadlineExceeded":
        return _failed(
            spec,
            tuning,
            "TuningTimedOut",
            f"Job {tuning.job} ran past its {spec.batch_tuning.timeout_seconds} s deadline",
            now,
        )
    error = parse_result(message) if message else None
    why = error if isinstance(error, str) else str(failed.get("message") or "the Job failed")
    exit_code = f" (exit code {code})" if code is not None else ""
    return _failed(spec, tuning, "TuningFailed", f"Job {tuning.job}{exit_code}: {why}", now)


def _failed(
    spec: models.GeoDeploymentSpec,
    tuning: models.TuningStatus,
    reason: str,
    message: str,
    now: float,
) -> models.TuningStatus:
    failures = tuning.failures + 1
    return tuning.model_copy(
        update={
            "failures": failures,
            "failure_reason": reason,
            "failure_message": message[:1024],
            "next_retry_time": names.format_time(now + backoff_seconds(spec, failures)),
        }
    )


# ------------------------------------------------------------------ words for BatchTuned


def describe(result: models.TunedBatch, budget_ms: float, *, generative: bool = False) -> str:
    if generative:
        return _describe_generative(result)
    delay = (
        "dynamic batching off"
        if result.max_queue_delay_microseconds is None
        else f"queue delay {result.max_queue_delay_microseconds} us"
    )
    scored = ""
    if result.accuracy is not None:
        a = result.accuracy
        against = f" with {a.reference}" if a.reference else ""
        scored = f"; held-out {a.metric}{against} {a.value:.4f} on {a.samples} samples"
    return (
        f"max_batch_size {result.max_batch_size}, {delay}: {result.throughput:.0f} req/s at "
        f"p99 {result.p99_ms:.2f} ms (budget {budget_ms:g} ms), {result.measurements} "
        f"measurements of a {result.grid_size}-config grid{scored}"
    )


def _describe_generative(result: models.TunedBatch) -> str:
    """`geo tune-llm`'s figures in words (throughput tokens/s, p99 between tokens)."""
    words = (
        f"{result.max_batch_size} slots: {result.throughput:.0f} tokens/s with "
        f"{result.concurrency or result.max_batch_size} streams at once, p99 "
        f"{result.p99_ms:.2f} ms between tokens"
    )
    if result.prefill_tokens_per_second is not None:
        words += f", prefill {result.prefill_tokens_per_second:.0f} prompt tokens/s"
    a = result.accuracy
    if a is not None:
        against = f" with {a.reference}" if a.reference else ""
        words += f"; held-out {a.metric}{against} {a.value:.4f} on {a.samples} tokens"
        if a.perplexity is not None:
            words += f" (perplexity {a.perplexity:g}, KL divergence {a.kl_divergence:g}"
            words += f", agreement {a.agreement:g})"
    return words


def result_json(result: models.TunedBatch) -> str:
    """What ``geo tune --result-file`` writes (and `parse_result` reads)."""
    return json.dumps(
        result.model_dump(mode="json", by_alias=True, exclude_none=True), separators=(",", ":")
    )
