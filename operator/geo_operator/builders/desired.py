"""What one reconcile wants, as pure functions: from what exists to the children, the
tuning Jobs to start or delete, the status to write and the Events to post.

`controller.reconcile` gathers the inputs (`Observed`), calls `decide`, applies
what it says through `k8s/`, then calls `settle` with what applying returned
(the Deployment as stored, or the API server's refusal) for the final status.
Nothing here touches the cluster; tests/builders/test_desired.py drives it with
hand-made inputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from geo_operator.api import conditions, models, names
from geo_operator.builders import children, plan, tracks, tuning
from geo_operator.rollout import analysis, policy

Event = tuple[str, str, str]  # (type, reason, message)


@dataclasses.dataclass(frozen=True)
class Observed:
    """What exists for one GeoDeployment, as gathered by the reconcile."""

    body: Mapping[str, Any]
    deployment: Mapping[str, Any] | None = None  # the stable track's
    jobs: Sequence[Mapping[str, Any]] = ()  # its tuning Jobs
    job_pods: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    canary: Mapping[str, Any] | None = None  # a rollout's canary Deployment
    # (canary, stable): each track's figures over the analysis window, when one was due.
    figures: tuple[analysis.Figures, analysis.Figures] | None = None
    manual: policy.Manual | None = None  # promote or abort, by hand (the annotation)


@dataclasses.dataclass(frozen=True)
class Desired:
    """What to apply and delete, the status before applying, and what to say."""

    status: models.GeoDeploymentStatus
    generation: int | None
    target: children.Target | None = None  # None: leave what runs alone
    objects: tuple[dict[str, Any], ...] = ()  # children, then tuning ConfigMaps and Jobs
    delete_jobs: tuple[str, ...] = ()
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None  # seconds until a tuning retry or analysis is due
    scale: tuple[tuple[str, int], ...] = ()  # Deployments to scale: a rollout's split
    delete: tuple[tracks.Ref, ...] = ()  # (apiVersion, kind, name): a canary that went


def validation_message(error: pydantic.ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = "spec." + ".".join(str(p) for p in item["loc"]) if item["loc"] else "spec"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def decide(observed: Observed, now: float, tuner_image: str) -> Desired:
    """The desired state for ``observed``, at time ``now`` (seconds since the epoch)."""
    body = observed.body
    meta = body["metadata"]
    generation = meta.get("generation")
    status = models.parse_status(body.get("status") or {})
    try:
        spec = models.parse_spec(body.get("spec") or {})
    except pydantic.ValidationError as error:
        message = f"the spec is invalid, nothing was changed: {validation_message(error)}"
        return _blocked(status, generation, "InvalidSpec", message)

    current = tracks.total_replicas(observed.deployment, observed.canary, status.rollout)

    def planned(status_: models.GeoDeploymentStatus) -> plan.Plan:
        return plan.plan(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            spec=spec,
            status=status_,
            current_replicas=current,
        )

    decided = planned(status)
    steps: dict[str, tuning.Step] = {}
    events: list[Event] = []
    delete: list[str] = []
    if decided.target is not None and decided.tuning_keys:
        status, steps, events = _tuning_steps(observed, spec, status, decided.tuning_keys, now)
        decided = planned(status)  # selection now compares what was measured
        delete = _outdated_jobs(observed.jobs, {s.tuning.key for s in steps.values()})
    elif decided.target is not None and status.tuning is not None:
        # maxBatchSize is set now: a tuning run still going stops, and its record goes.
        delete = [_name(j) for j in observed.jobs if not tuning.finished(j)]
        status = status.model_copy(update={"tuning": None})
    if decided.target is None:
        running = status.selected_artifact.name if status.selected_artifact else None
        left = (
            f"; the running deployment (artifact {running}) is left as it was"
            if running and observed.deployment is not None
            else "; nothing was deployed"
        )
        return _unservable(status, generation, decided.choice.reason, left)
    return _serving(observed, status, generation, decided, steps, events, delete, tuner_image, now)


def _name(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["name"])


def _blocked(
    status: models.GeoDeploymentStatus, generation: int | None, reason: str, message: str
) -> Desired:
    conds = conditions.set_condition(
        status.conditions, conditions.READY, "False", reason, message, generation=generation
    )
    new = status.model_copy(update={"conditions": conds, "observed_generation": generation})
    return Desired(new, generation, events=(("Warning", reason, message),))


def _unservable(
    status: models.GeoDeploymentStatus, generation: int | None, why: str, left: str
) -> Desired:
    blocked = _blocked(status, generation, "NoQualifyingArtifact", why + left)
    conds = conditions.set_condition(
        blocked.status.conditions,
        conditions.ARTIFACT_SELECTED,
        "False",
        "NoQualifyingArtifact",
        why,
        generation=generation,
    )
    return dataclasses.replace(
        blocked, status=blocked.status.model_copy(update={"conditions": conds})
    )


def _tuning_steps(
    observed: Observed,
    spec: models.GeoDeploymentSpec,
    status: models.GeoDeploymentStatus,
    keys: Mapping[str, str],
    now: float,
) -> tuple[models.GeoDeploymentStatus, dict[str, tuning.Step], list[Event]]:
    """Each candidate's finished Job read in, and its next step."""
    name = observed.body["metadata"]["name"]
    jobs = {_name(j): j for j in observed.jobs}
    steps: dict[str, tuning.Step] = {}
    events: list[Event] = []
    for candidate, key in keys.items():
        run = tuning.run_for(status.tuning, candidate, key)
        if run is not None and run.result is None and run.attempts > run.failures:
            job = jobs.get(run.job or "")
            finished = tuning.finish(spec, run, job, observed.job_pods.get(run.job or ""), now)
            if finished is not None:
                run = finished
                events.append(_finished_event(spec, run))
        steps[candidate] = tuning.step([run] if run else [], name, candidate, key, now)
    steps = tuning.queue(steps, spec.batch_tuning.parallelism)
    new = status.model_copy(update={"tuning": [s.tuning for s in steps.values()]})
    return new, steps, events


def _finished_event(spec: models.GeoDeploymentSpec, run: models.TuningStatus) -> Event:
    if run.result is not None:
        budget = spec.tuning_budget_ms()
        return (
            "Normal",
            "Tuned",
            f"Job {run.job} ({run.artifact}): "
            + tuning.describe(run.result, budget, generative=spec.model.generative),
        )
    return (
        "Warning",
        run.failure_reason or "TuningFailed",
        f"{run.artifact}: {run.failure_message}; retrying after {run.next_retry_time}",
    )


def _outdated_jobs(jobs: Sequence[Mapping[str, Any]], current: set[str]) -> list[str]:
    """Jobs measuring inputs no candidate has any more."""
    return [
        _name(j)
        for j in jobs
        if (j["metadata"].get("labels") or {}).get(names.TUNING_KEY_LABEL) not in current
    ]


def _serving(
    observed: Observed,
    status: models.GeoDeploymentStatus,
    generation: int | None,
    decided: plan.Plan,
    steps: Mapping[str, tuning.Step],
    events: list[Event],
    delete: list[str],
    tuner_image: str,
    now: float,
) -> Desired:
    target = decided.target
    assert target is not None
    measuring = tuple(a for a, s in steps.items() if s.action in ("start", "wait", "queued"))
    both = tracks.tracks(
        target,
        observed.deployment,
        observed.canary,
        policy.State.of(status.rollout),
        _verdict(target.spec, decided, observed.figures),
        now,
        observed.manual,
        measuring,
    )
    objects = list(both.objects)
    starts = [s for s in steps.values() if s.action == "start"]
    for step in starts:
        candidate = dataclasses.replace(
            target,
            spec=decided.asked or target.spec,  # measured levers as asked, not as resolved
            artifact=_artifact(target, step.tuning.artifact),
        )
        job = tuning.tuning_job(
            candidate, key_=step.tuning.key, attempt=step.tuning.attempts, image=tuner_image
        )
        objects += [tuning.tuning_config_map(candidate), job]
    new_hash = children.config_hash(target)
    events = [*events, *[_started_event(target.spec, s.tuning) for s in starts]]
    events += _serving_events(
        status, target, decided.choice.reason, new_hash, both.stable_takes_template
    )
    events += _objective_events(status, generation, decided)
    events += both.events
    # What the stable serves after this reconcile: the new template when it takes it,
    # else the one it runs (a change held back, or going out as a canary, is not served).
    running = children.template_hash(dict(observed.deployment)) if observed.deployment else None
    served = new_hash if both.stable_takes_template or running is None else running
    new = _serving_status(status, generation, decided, served)
    new = _rollout_status(new, generation, target.spec, both)
    waits = [s.retry_in for s in steps.values() if s.action == "retry_later" and s.retry_in]
    if both.requeue_after is not None:
        waits.append(both.requeue_after)
    return Desired(
        new,
        generation,
        target,
        tuple(objects),
        tuple(delete),
        tuple(events),
        min(waits) if waits else None,
        both.scale,
        both.delete,
    )


def _verdict(
    spec: models.GeoDeploymentSpec,
    decided: plan.Plan,
    figures: tuple[analysis.Figures, analysis.Figures] | None,
) -> analysis.Verdict | None:
    """The canary analysis on the window's figures; with model.evaluation the canary's
    held-out score is held to the accuracy floor the choice was judged against; a
    generative model's latency is judged on its first tokens and inter-token gaps."""
    if figures is None:
        return None
    floor = decided.choice.accuracy_floor if spec.model.evaluation is not None else None
    canary, stable = figures
    objectives = spec.objectives
    tokens = (
        (objectives.time_to_first_token_p99_ms, objectives.inter_token_latency_p99_ms)
        if spec.model.generative
        else None
    )
    return analysis.analyse(spec.rollout, canary, stable, spec.target_p99_ms(), floor, tokens)


def _rollout_status(
    status: models.GeoDeploymentStatus,
    generation: int | None,
    spec: models.GeoDeploymentSpec,
    both: tracks.Tracks,
) -> models.GeoDeploymentStatus:
    """status.rollout and the Progressing condition from the rollout's new state."""
    conds = status.conditions
    if both.condition is not None:
        state, reason, message = both.condition
        conds = conditions.set_condition(
            conds, conditions.PROGRESSING, state, reason, message[:1024], generation=generation
        )
    rollout = both.state.status(spec.rollout)
    return status.model_copy(update={"rollout": rollout, "conditions": conds})


def _serving_status(
    status: models.GeoDeploymentStatus, generation: int | None, decided: plan.Plan, served: str
) -> models.GeoDeploymentStatus:
    """The status of what is served (before applying: Ready comes in `settle`)."""
    target = decided.target
    assert target is not None
    conds = conditions.set_condition(
        status.conditions,
        conditions.ARTIFACT_SELECTED,
        "True",
        "Selected",
        decided.choice.reason,
        generation=generation,
    )
    conds = conditions.set_condition(
        conds,
        conditions.BATCH_TUNED,
        "True" if decided.batch_tuned else "False",
        decided.batch_reason,
        decided.batch_message,
        generation=generation,
    )
    artifact = target.artifact
    return status.model_copy(
        update={
            "observed_generation": generation,
            "conditions": conds,
            "selected_artifact": models.SelectedArtifact(
                name=artifact.name,
                precision=artifact.precision,
                format=artifact.format,
                uri=artifact.uri,
                reason=decided.choice.reason,
            ),
            "max_batch_size": target.batch.max_batch_size,
            "config_hash": served,
            "selector": children.selector(target.name),
        }
    )


def _artifact(target: children.Target, name: str) -> models.Artifact:
    return next(a for a in target.spec.model.artifacts if a.name == name)


def _started_event(spec: models.GeoDeploymentSpec, run: models.TuningStatus) -> Event:
    return (
        "Normal",
        "TuningStarted",
        f"Job {run.job} measures {run.artifact} at max_batch_size "
        f"{list(spec.batch_tuning.candidates)} x queue delay {tuning.delays(spec)} "
        f"under p99 {spec.tuning_budget_ms():g} ms (attempt {run.attempts})",
    )


def _serving_events(
    old: models.GeoDeploymentStatus,
    target: children.Target,
    reason: str,
    new_hash: str,
    rolling: bool = True,
) -> list[Event]:
    artifact, batch = target.artifact, target.batch.max_batch_size
    events: list[Event] = []
    if (old.selected_artifact.name if old.selected_artifact else None) != artifact.name:
        events.append(
            (
                "Normal",
                "ArtifactSelected",
                f"serving {artifact.name} ({artifact.precision}, {artifact.format}): {reason}",
            )
        )
    if old.observed_generation is None:
        message = (
            f"created Triton Deployment, Service and ConfigMap "
            f"{children.config_map_name(target.name)} with {target.replicas} replica(s), "
            f"max_batch_size {batch}"
        )
        events.append(("Normal", "Created", message))
    elif old.config_hash not in (None, new_hash) and rolling:
        message = (
            f"model configuration changed (artifact {artifact.name}, max_batch_size {batch}): "
            "rolling the Triton pods with no unavailable replica"
        )
        events.append(("Normal", "Rolling", message))
    return events


def _objective_events(
    old: models.GeoDeploymentStatus, generation: int | None, decided: plan.Plan
) -> list[Event]:
    """A Warning for each declared accuracy a measurement newly contradicts, and, once per
    generation, for each deprecated latency field in use."""
    events: list[Event] = []
    before = conditions.get(old.conditions, conditions.ARTIFACT_SELECTED)
    said = before.message if before is not None else ""
    for _, words in decided.choice.contradicted:
        if words not in said:
            events.append(("Warning", "AccuracyContradicted", words))
    if decided.target is not None and old.observed_generation != generation:
        for note in decided.target.spec.deprecations():
            events.append(("Warning", "DeprecatedField", note))
    return events


def settle(
    desired: Desired,
    deployment: Mapping[str, Any] | None,
    refused: str | None,
    pods: Sequence[Mapping[str, Any]] = (),
    canary: Mapping[str, Any] | None = None,
) -> models.GeoDeploymentStatus:
    """The status to write once the children were applied: Ready from the Deployments as
    stored (the stable's, and ``canary``, a rollout's canary as gathered: its pods serve
    too), or False with the API server's words when it refused a child, or with the
    fetch's own words when no pod is ready because the artifact can't be fetched (``pods``:
    the Triton pods, gathered only while none is ready). status.replicas and readyReplicas
    count both tracks, as the scale subresource's selector does."""
    status = desired.status
    if desired.target is None:
        return status
    replicas = int(((deployment or {}).get("spec") or {}).get("replicas") or 0)
    if deployment is None:
        replicas = desired.target.replicas
    ready = plan.readiness(
        dict(deployment) if deployment else None, replicas, _canary(desired, canary)
    )
    reason, message, state = ready.reason, ready.message, ready.status
    failure = plan.fetch_failure(pods) if ready.reason == "NoReadyReplicas" else None
    if failure is not None:
        state, reason = "False", "ArtifactFetchFailed"
        message = f"0 of {ready.replicas} Triton pods ready: {failure}"
    if refused is not None:
        state, reason = "False", "ChildRefused"
        message = f"{refused}; fix the spec (nothing else is retried until it changes)"
    conds = conditions.set_condition(
        status.conditions, conditions.READY, state, reason, message, generation=desired.generation
    )
    return status.model_copy(
        update={
            "conditions": conds,
            "replicas": ready.replicas,
            "ready_replicas": ready.ready_replicas,
        }
    )


def _canary(desired: Desired, stored: Mapping[str, Any] | None) -> plan.Canary | None:
    """The canary as Ready counts it: applied now (at the replicas applied) or left to drain
    (as stored); None when there is none or this reconcile deletes it."""
    assert desired.target is not None
    name = children.canary_name(desired.target.name)
    if ("apps/v1", "Deployment", name) in desired.delete:
        return None
    applied = next(
        (o for o in desired.objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name),
        None,
    )
    found = applied if applied is not None else stored
    if found is None:
        return None
    # The count this reconcile scales it to (the scale subresource: the apply leaves
    # replicas out), else the count stored.
    scaled = dict(desired.scale).get(name)
    replicas = scaled if scaled is not None else int((found.get("spec") or {}).get("replicas") or 0)
    state = policy.State.of(desired.status.rollout)
    weight = state.weight(desired.target.spec.rollout) if state.active else None
    return plan.Canary(stored, replicas, weight)


def refusal_event(old: models.GeoDeploymentStatus, new: models.GeoDeploymentStatus) -> Event | None:
    """A Warning for a child newly refused, or an artifact newly failing to fetch (once: not
    again while the words stay)."""
    before = conditions.get(old.conditions, conditions.READY)
    after = conditions.get(new.conditions, conditions.READY)
    if after is None or after.reason not in ("ChildRefused", "ArtifactFetchFailed"):
        return None
    if before is not None and (before.reason, before.message) == (after.reason, after.message):
        return None
    return ("Warning", after.reason, after.message)
