"""config.pbtxt rendered through Triton's protobuf and parsed back."""

from __future__ import annotations

import json

import pydantic
import pytest

from geo_operator.api import models
from geo_operator.builders import children, plan
from geo_operator.triton import model_config


def _artifact(spec: models.GeoDeploymentSpec, name: str) -> models.Artifact:
    return next(a for a in spec.model.artifacts if a.name == name)


def test_python_artifact_config(spec: models.GeoDeploymentSpec) -> None:
    batch = model_config.BatchSettings(
        max_batch_size=32, max_queue_delay_microseconds=250, preferred_batch_sizes=(8, 16, 64)
    )
    text = model_config.render(model_config.build(spec.model, _artifact(spec, "int8"), batch))
    parsed = model_config.parse(text)
    assert parsed.name == "digits" and parsed.backend == "python"
    assert parsed.max_batch_size == 32
    assert parsed.dynamic_batching.max_queue_delay_microseconds == 250
    assert list(parsed.dynamic_batching.preferred_batch_size) == [8, 16]  # 64 > max
    assert [(i.name, list(i.dims)) for i in parsed.input] == [("input", [64])]
    assert [o.name for o in parsed.output] == ["label", "probabilities"]
    assert parsed.instance_group[0].kind == parsed.instance_group[0].KIND_CPU
    assert 'backend: "python"' in text


def test_batching_off_and_onnx_backend(spec: models.GeoDeploymentSpec) -> None:
    raw = _artifact(spec, "fp32").model_dump(by_alias=True, mode="json")
    onnx = models.Artifact.model_validate({**raw, "format": "onnx"})
    batch = model_config.BatchSettings(max_batch_size=8, dynamic_batching=False)
    config = model_config.build(
        spec.model, onnx, batch, triton=models.TritonSpec(instance_count=2), gpu=True
    )
    assert config.backend == "onnxruntime" and config.default_model_filename == "model.onnx"
    assert not config.HasField("dynamic_batching")
    assert config.instance_group[0].count == 2
    assert config.instance_group[0].kind == config.instance_group[0].KIND_GPU


# ---- Triton's levers (README "Triton's levers"): each field as rendered


def _triton(**over: object) -> models.TritonSpec:
    return models.TritonSpec.model_validate(over)


def _build(spec: models.GeoDeploymentSpec, triton: models.TritonSpec, **kw: object):  # type: ignore[no-untyped-def]
    batch = model_config.BatchSettings(max_batch_size=int(kw.pop("size", 16)))  # type: ignore[call-overload]
    artifact = kw.pop("artifact", None) or _artifact(spec, "int8")
    # Through the text and back: what Triton reads.
    config = model_config.build(spec.model, artifact, batch, triton=triton, **kw)  # type: ignore[arg-type]
    return model_config.parse(model_config.render(config))


def test_no_levers_render_nothing_extra(spec: models.GeoDeploymentSpec) -> None:
    parsed = _build(spec, _triton())
    for field in ("response_cache", "optimization"):
        assert not parsed.HasField(field)
    assert not parsed.model_warmup
    batching = parsed.dynamic_batching
    assert batching.priority_levels == 0 and not batching.HasField("default_queue_policy")
    assert not batching.priority_queue_policy


def test_instance_groups_kinds_gpus_and_rate_limiter(spec: models.GeoDeploymentSpec) -> None:
    triton = _triton(
        instanceGroups=[
            {"count": 2, "kind": "GPU", "gpus": [0, 1]},
            {
                "count": 1,
                "kind": "CPU",
                "rateLimiter": {
                    "resources": [{"name": "R1", "count": 4, "global": True}],
                    "priority": 2,
                },
            },
            {"count": 3},
            {"kind": "AUTO"},
        ]
    )
    groups = _build(spec, triton, gpu=True).instance_group
    kinds = [g.kind for g in groups]
    group = groups[0]
    assert kinds == [group.KIND_GPU, group.KIND_CPU, group.KIND_GPU, group.KIND_AUTO]
    assert [g.count for g in groups] == [2, 1, 3, 1]
    assert list(groups[0].gpus) == [0, 1]
    limiter = groups[1].rate_limiter
    assert limiter.priority == 2
    assert [(r.name, r.count, getattr(r, "global")) for r in limiter.resources] == [("R1", 4, True)]
    # Without a GPU an unset kind is CPU; the server side of the rate limiter is a flag.
    assert _build(spec, triton).instance_group[2].kind == group.KIND_CPU
    assert triton.rate_limited() and triton.instances() == 7
    assert children.server_flags(triton) == ["--rate-limit=execution_count"]


def test_priority_levels_and_queue_policies(spec: models.GeoDeploymentSpec) -> None:
    triton = _triton(
        dynamicBatching={
            "priorityLevels": 3,
            "defaultQueuePolicy": {
                "maxQueueSize": 8,
                "defaultTimeoutMicroseconds": 5000,
                "timeoutAction": "DELAY",
                "allowTimeoutOverride": True,
            },
            "priorityQueuePolicies": [{"level": 1, "maxQueueSize": 32}],
        }
    )
    batching = _build(spec, triton).dynamic_batching
    assert batching.priority_levels == 3
    assert batching.default_priority_level == 3  # 0: the lowest level
    policy = batching.default_queue_policy
    assert (policy.max_queue_size, policy.default_timeout_microseconds) == (8, 5000)
    assert policy.timeout_action == policy.DELAY and policy.allow_timeout_override
    first = batching.priority_queue_policy[1]
    assert first.max_queue_size == 32 and first.timeout_action == first.REJECT
    assert set(batching.priority_queue_policy) == {1}
    # Levels 1 (32), 2 and 3 (8 each): the server's queues hold 48 at most.
    assert triton.queue_bound() == 48
    level = _triton(dynamicBatching={"priorityLevels": 2, "defaultPriorityLevel": 1})
    assert _build(spec, level).dynamic_batching.default_priority_level == 1


def test_queue_bound_needs_every_level_bounded() -> None:
    assert _triton().queue_bound() is None
    assert _triton(dynamicBatching={"defaultQueuePolicy": {"maxQueueSize": 4}}).queue_bound() == 4
    partly = {"priorityLevels": 2, "priorityQueuePolicies": [{"level": 1, "maxQueueSize": 4}]}
    assert _triton(dynamicBatching=partly).queue_bound() is None
    off = {"enabled": False, "defaultQueuePolicy": {"maxQueueSize": 4}}
    assert _triton(dynamicBatching=off).queue_bound() is None


def test_queues_need_the_dynamic_batcher(spec: models.GeoDeploymentSpec) -> None:
    triton = _triton(dynamicBatching={"priorityLevels": 2})
    assert not _build(spec, triton, size=0).HasField("dynamic_batching")


def test_response_cache_both_sides(spec: models.GeoDeploymentSpec) -> None:
    triton = _triton(responseCache={"enabled": True, "sizeBytes": 2**24})
    assert _build(spec, triton).response_cache.enable
    assert children.server_flags(triton) == ["--cache-config=local,size=16777216"]
    assert children.server_flags(_triton()) == []


def test_warmup_samples_of_the_inputs(spec: models.GeoDeploymentSpec) -> None:
    raw = spec.model_dump(by_alias=True, mode="json", exclude_none=True)
    raw["model"]["inputs"] = [
        {"name": "input", "dataType": "TYPE_FP32", "dims": [64]},
        {"name": "mask", "dataType": "TYPE_INT64", "dims": [-1, 4]},
    ]
    ragged = models.parse_spec(raw)
    triton = _triton(warmup=[{"batchSize": 64, "count": 3, "data": "random"}, {}])
    warmups = _build(ragged, triton, size=16).model_warmup
    assert [w.name for w in warmups] == ["geo-warmup-0", "geo-warmup-1"]
    assert warmups[0].batch_size == 16  # capped at the max_batch_size in use
    assert warmups[0].count == 3 and warmups[1].batch_size == 1
    mask = warmups[0].inputs["mask"]
    assert (
        list(mask.dims) == [1, 4]
        and mask.random_data
        and mask.data_type == model_config.pb.TYPE_INT64
    )
    assert warmups[1].inputs["input"].zero_data


def test_gpu_levers_only_on_a_gpu_and_for_their_backend(spec: models.GeoDeploymentSpec) -> None:
    """Rendered and parsed back by Triton's protobuf only: NOT run on a GPU (no GPU
    machine was lent to the sessions that built it; README "Triton's levers")."""
    raw = _artifact(spec, "fp32").model_dump(by_alias=True, mode="json")
    onnx = models.Artifact.model_validate({**raw, "format": "onnx"})
    plan_ = models.Artifact.model_validate({**raw, "format": "tensorrt_plan"})
    trt = _triton(
        gpu={
            "accelerator": "tensorrt",
            "precisionMode": "INT8",
            "maxWorkspaceSizeBytes": 2**30,
            "cudaGraphs": True,
        }
    )
    on_gpu = _build(spec, trt, artifact=onnx, gpu=True)
    (accel,) = on_gpu.optimization.execution_accelerators.gpu_execution_accelerator
    assert accel.name == "tensorrt"
    assert dict(accel.parameters) == {
        "precision_mode": "INT8",
        "max_workspace_size_bytes": str(2**30),
    }
    assert not on_gpu.optimization.cuda.graphs  # ONNX Runtime has no such switch here
    assert not _build(spec, trt, artifact=onnx).HasField("optimization")  # no GPU: nothing
    cuda = _build(spec, _triton(gpu={"accelerator": "cuda"}), artifact=onnx, gpu=True)
    (accel,) = cuda.optimization.execution_accelerators.gpu_execution_accelerator
    assert accel.name == "cuda" and not accel.parameters
    engine = _build(spec, trt, artifact=plan_, gpu=True)
    assert engine.platform == "tensorrt_plan" and engine.backend == "tensorrt"
    assert engine.optimization.cuda.graphs
    assert not engine.optimization.execution_accelerators.gpu_execution_accelerator


def test_warmup_from_files_is_fetched_beside_the_model(spec: models.GeoDeploymentSpec) -> None:
    raw = spec.model_dump(by_alias=True, mode="json", exclude_none=True)
    raw["triton"]["warmup"] = [{"data": "file", "files": {"input": "http://h/w/input.bin"}}]
    filed = models.parse_spec(raw)
    (warmup,) = _build(filed, filed.triton).model_warmup
    assert warmup.inputs["input"].input_data_file == "geo-warmup-0-input0.bin"
    target = plan.plan(
        name="d", namespace="n", uid="u", spec=filed, status=models.GeoDeploymentStatus(),
        current_replicas=None,
    ).target  # fmt: skip
    assert target is not None
    data = children.config_map_data(target)
    assert json.loads(data["warmup.json"]) == {
        "warmup/geo-warmup-0-input0.bin": "http://h/w/input.bin"
    }
    init = children.fetch_container(target)
    assert {"name": "WARMUP_URI_0", "value": "http://h/w/input.bin"} in init["env"]
    script = init["command"][-1]
    assert 'fetch.py "$WARMUP_URI_0" /models/digits/warmup/geo-warmup-0-input0.bin' in script
    # Without files: no warmup.json, no fetch.
    assert "warmup.json" not in children.config_map_data(plan.plan(
        name="d", namespace="n", uid="u", spec=spec, status=models.GeoDeploymentStatus(),
        current_replicas=None,
    ).target)  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.parametrize(
    ("warmup", "message"),
    [
        ({"data": "file"}, "files is needed with data file"),
        ({"data": "zero", "files": {"input": "http://h/a"}}, "files is needed with data file"),
        ({"data": "file", "files": {"other": "http://h/a"}}, "must name each of model.inputs"),
    ],
)
def test_warmup_files_are_checked(
    spec: models.GeoDeploymentSpec, warmup: dict[str, object], message: str
) -> None:
    raw = spec.model_dump(by_alias=True, mode="json", exclude_none=True)
    raw["triton"]["warmup"] = [warmup]
    with pytest.raises(pydantic.ValidationError, match=message):
        models.parse_spec(raw)


def test_the_format_a_rendered_config_serves() -> None:
    """The python backend serves two formats (ONNX through python_model.py, GGUF through
    llama_model.py): told apart by the GGUF parameter, not by the backend alone."""
    from tritonclient.grpc import model_config_pb2 as pb

    m = models
    generative = model_config.build_generative("g", model_config.EngineSettings())
    assert model_config.artifact_format_of(generative) is m.ArtifactFormat.GGUF
    assert model_config.artifact_format_of(pb.ModelConfig(backend="python")) is (
        m.ArtifactFormat.PYTHON
    )
    assert model_config.artifact_format_of(pb.ModelConfig(backend="onnxruntime")) is (
        m.ArtifactFormat.ONNX
    )
    with pytest.raises(KeyError):
        model_config.artifact_format_of(pb.ModelConfig(backend="vllm"))
