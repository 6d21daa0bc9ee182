"""The e2e kubelet runner's pod-spec reader, on pods made by GEO's own builders: no cluster."""

from __future__ import annotations

import copy
import dataclasses
import pathlib
from typing import Any

import pytest
from e2e.harness.kubelet import podspec

from geo_operator.api import models, names
from geo_operator.builders import children, plan, tuning
from geo_operator.triton import model_config


def _plan(spec: models.GeoDeploymentSpec) -> plan.Plan:
    return plan.plan(
        name="digits",
        namespace="ml",
        uid="uid-1234",
        spec=spec,
        status=models.GeoDeploymentStatus(),
        current_replicas=None,
    )


def _target(spec: models.GeoDeploymentSpec) -> children.Target:
    target = _plan(spec).target
    assert target is not None
    return target


def _pod(template: dict[str, Any], name: str, phase: str = "Running") -> dict[str, Any]:
    """What the API server holds for a pod made from `template`, as kwok runs it."""
    template = copy.deepcopy(template)
    metadata = {**template.get("metadata", {}), "name": name, "namespace": "ml", "uid": "u-1"}
    return {"metadata": metadata, "spec": template["spec"], "status": {"phase": phase}}


def _serving_pod(spec: models.GeoDeploymentSpec) -> dict[str, Any]:
    return _pod(children.deployment(_target(spec))["spec"]["template"], "digits-7d9f-abcde")


def _tuning_spec(spec: models.GeoDeploymentSpec) -> models.GeoDeploymentSpec:
    raw = spec.model_dump(by_alias=True, mode="json")
    raw["triton"]["maxBatchSize"] = 0
    return models.parse_spec(raw)


def _tuning_pod(spec: models.GeoDeploymentSpec) -> tuple[dict[str, Any], children.Target]:
    decided = _plan(_tuning_spec(spec))
    assert decided.target is not None and decided.tuning_key is not None
    job = tuning.tuning_job(decided.target, key_=decided.tuning_key, attempt=1, image="geo:test")
    return _pod(job["spec"]["template"], "digits-tune-0123abcd-1-xyz12"), decided.target


def test_a_serving_pod_reads_as_its_sources(spec: models.GeoDeploymentSpec) -> None:
    target = _target(spec)
    read = podspec.read(_serving_pod(spec))
    assert read == podspec.PodSpec(
        namespace="ml",
        name="digits-7d9f-abcde",
        uid="u-1",
        config_map=children.config_map_name("digits"),
        uri=target.artifact.uri,
        geodeployment="digits",
        artifact=target.artifact.name,
        tuner=None,
        init_containers=(podspec.Container(names.FETCH_CONTAINER, spec.triton.image),),
        containers=(podspec.Container(names.TRITON_CONTAINER, spec.triton.image),),
        restart_policy="Always",
    )
    assert read.key == ("ml", "digits-7d9f-abcde") and not read.is_tuner


def test_a_tuning_pod_reads_as_its_sidecar_and_tuner(spec: models.GeoDeploymentSpec) -> None:
    pod, target = _tuning_pod(spec)
    read = podspec.read(pod)
    assert read.is_tuner and podspec.is_tuner(pod)
    assert read.config_map == tuning.config_map_name("digits", target.artifact.name)
    assert read.uri == target.artifact.uri
    assert read.geodeployment == "digits"  # from the tuning-for label: no owner label
    assert read.tuner == podspec.Tuner(
        container=names.TUNER_CONTAINER,
        image="geo:test",
        args=tuple(tuning.tuner_args(target.spec)),
        env=(),
    )


def test_the_tuners_env_is_read_and_refs_are_skipped(spec: models.GeoDeploymentSpec) -> None:
    pod, _ = _tuning_pod(spec)
    pod["spec"]["containers"][0]["env"] = [
        {"name": "A", "value": "1"},
        {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "C"},
    ]
    tuner = podspec.read(pod).tuner
    assert tuner is not None and tuner.env == (("A", "1"), ("C", ""))


def test_the_pod_spec_is_frozen(spec: models.GeoDeploymentSpec) -> None:
    read = podspec.read(_serving_pod(spec))
    with pytest.raises(dataclasses.FrozenInstanceError):
        read.uri = "elsewhere"  # type: ignore[misc]


def test_the_uri_falls_back_for_the_artifact_name(spec: models.GeoDeploymentSpec) -> None:
    pod = _serving_pod(spec)
    pod["metadata"]["annotations"].pop(names.ARTIFACT_ANNOTATION)
    read = podspec.read(pod)
    assert read.artifact == read.uri


@pytest.mark.parametrize("broken", ["no-volume", "no-init", "no-uri"])
def test_a_pod_without_geos_sources_is_refused(spec: models.GeoDeploymentSpec, broken: str) -> None:
    pod = _serving_pod(spec)
    pod_spec = pod["spec"]
    if broken == "no-volume":
        pod_spec["volumes"] = [v for v in pod_spec["volumes"] if v["name"] != "model-config"]
    elif broken == "no-init":
        pod_spec["initContainers"] = []
    else:
        pod_spec["initContainers"][0]["env"] = []
    with pytest.raises(ValueError, match="not a GEO Triton pod"):
        podspec.read(pod)


def test_a_tuning_pod_without_its_tune_container_is_refused(
    spec: models.GeoDeploymentSpec,
) -> None:
    pod, _ = _tuning_pod(spec)
    pod["spec"]["containers"][0]["name"] = "other"
    with pytest.raises(ValueError, match="'tune'"):
        podspec.read(pod)


def test_only_running_pods_not_being_deleted_run(spec: models.GeoDeploymentSpec) -> None:
    pod = _serving_pod(spec)
    assert podspec.should_run(pod)
    assert not podspec.should_run(None)
    for phase in ("Pending", "Succeeded", "Failed", "Unknown"):
        assert not podspec.should_run({**pod, "status": {"phase": phase}})
    deleting = copy.deepcopy(pod)
    deleting["metadata"]["deletionTimestamp"] = "2026-12-01T07:00:00Z"
    assert not podspec.should_run(deleting)


def test_model_source_from_the_config_map(spec: models.GeoDeploymentSpec) -> None:
    target = _target(spec)
    source = podspec.model_source(children.config_map_data(target))
    assert source == podspec.ModelSource(
        name=spec.model.name,
        max_batch_size=target.batch.max_batch_size,
        format=target.artifact.format,
    )


def test_artifact_format_from_the_backend() -> None:
    assert podspec.artifact_format({}, "onnxruntime") is models.ArtifactFormat.ONNX
    assert podspec.artifact_format({"model.py": ""}, "python") is models.ArtifactFormat.PYTHON
    generative = model_config.render(
        model_config.build_generative("m", model_config.EngineSettings())
    )
    data = {"model.py": "", "config.pbtxt": generative}
    assert podspec.artifact_format(data, "python") is models.ArtifactFormat.GGUF
    with pytest.raises(ValueError, match="unknown to GEO"):
        podspec.artifact_format({}, "tensorflow")


def test_tuner_command_points_at_this_triton_and_result_file() -> None:
    tuner = podspec.Tuner(
        container="tune",
        image="geo:test",
        args=("tune", "--url=127.0.0.1:8000", "--result-file=/dev/termination-log", "--x=1"),
    )
    command = podspec.tuner_command(
        tuner, pathlib.Path("/venv/bin/geo"), "127.0.0.1:41234", pathlib.Path("/s/result")
    )
    assert command == [
        "/venv/bin/geo",
        "tune",
        "--url=127.0.0.1:41234",
        "--result-file=/s/result",
        "--x=1",
    ]


def test_the_levers_server_flags_reach_the_local_server(spec: models.GeoDeploymentSpec) -> None:
    assert podspec.read(_serving_pod(spec)).server_flags == ()
    raw = spec.model_dump(by_alias=True, mode="json", exclude_none=True)
    raw["triton"]["responseCache"] = {"enabled": True, "sizeBytes": 2**20}
    raw["triton"]["instanceGroups"] = [{"count": 1, "rateLimiter": {"resources": []}}]
    levers = models.parse_spec(raw)
    read = podspec.read(_serving_pod(levers))
    assert read.server_flags == (
        "--cache-config=local,size=1048576",
        "--rate-limit=execution_count",
    )
