"""Pure builders: golden YAML for the example, and the properties that matter."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import pytest
import yaml

from geo_operator.api import models, names, yamlio
from geo_operator.builders import children, plan

GOLDEN = pathlib.Path(__file__).parent / "golden" / "digits.yaml"
PACKAGE = pathlib.Path(children.__file__).resolve().parent.parent / "triton"


def _target(spec: models.GeoDeploymentSpec, name: str = "digits", **over: Any) -> children.Target:
    decided = plan.plan(
        name=name,
        namespace="ml",
        uid="uid-1234",
        spec=spec,
        status=models.GeoDeploymentStatus(),
        current_replicas=None,
    )
    assert decided.target is not None
    return children.Target(**{**decided.target.__dict__, **over})


def _without_embedded_files(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The golden file names the embedded sources instead of repeating them."""
    for obj in objs:
        if obj["kind"] == "ConfigMap":
            for key in ("model.py", "fetch.py"):
                if key in obj["data"]:
                    obj["data"][key] = (
                        f"<geo_operator/triton/{key.replace('model.py', 'python_model.py')}>"
                    )
    return objs


def test_golden(spec: models.GeoDeploymentSpec) -> None:
    rendered = yamlio.dump_all(_without_embedded_files(children.all_children(_target(spec))))
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(rendered)
    assert rendered == GOLDEN.read_text(), "run with UPDATE_GOLDEN=1 and review the diff"


def test_config_map_embeds_package_sources(spec: models.GeoDeploymentSpec) -> None:
    data = children.config_map(_target(spec))["data"]
    assert data["model.py"] == (PACKAGE / "python_model.py").read_text()
    assert data["fetch.py"] == (PACKAGE / "fetch.py").read_text()
    assert "max_batch_size: 32" in data["config.pbtxt"]


def test_config_change_changes_the_pod_template_hash(spec: models.GeoDeploymentSpec) -> None:
    base = children.deployment(_target(spec))
    bigger = _target(spec)
    bigger = children.Target(
        **{**bigger.__dict__, "batch": bigger.batch.__class__(max_batch_size=64)}
    )
    rolled = children.deployment(bigger)
    key = names.CONFIG_HASH_ANNOTATION
    assert (
        base["spec"]["template"]["metadata"]["annotations"][key]
        != rolled["spec"]["template"]["metadata"]["annotations"][key]
    )
    # Replicas are not part of the hash: scaling must not roll the pods.
    scaled = children.deployment(_target(spec, replicas=4))
    assert scaled["spec"]["template"] == base["spec"]["template"]


def test_rolling_update_keeps_every_replica(spec: models.GeoDeploymentSpec) -> None:
    strategy = children.deployment(_target(spec))["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_gpu_limits_and_pvc_source(spec: models.GeoDeploymentSpec) -> None:
    raw = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    raw["triton"]["resources"] = {"limits": {"nvidia.com/gpu": 1, "memory": "4Gi"}}
    raw["model"]["selection"] = {"policy": "pinned", "pinned": "fp32"}
    raw["model"]["artifacts"][0]["uri"] = "pvc://model-store/digits/fp32/model.onnx"
    target = _target(models.parse_spec(raw))
    pod = children.deployment(target)["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": 1, "memory": "4Gi"}}
    claim = next(v for v in pod["volumes"] if v["name"] == "artifact-source")
    assert claim["persistentVolumeClaim"] == {"claimName": "model-store", "readOnly": True}
    assert "KIND_GPU" in children.config_map(target)["data"]["config.pbtxt"]


def test_s3_artifacts_take_the_endpoint_region_and_the_secrets_keys_by_reference(
    spec: models.GeoDeploymentSpec,
) -> None:
    from geo_operator.builders import tuning

    raw = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    raw["model"]["selection"] = {"policy": "pinned", "pinned": "fp32"}
    raw["model"]["artifacts"][0]["uri"] = "s3://models/digits/fp32/model.onnx"
    raw["model"]["s3"] = {"endpoint": "http://s3.storage:9000/", "secretName": "s3-keys"}
    target = _target(models.parse_spec(raw))
    want = [
        {"name": "ARTIFACT_URI", "value": "s3://models/digits/fp32/model.onnx"},
        {"name": "AWS_REGION", "value": "us-east-1"},
        {"name": "AWS_ENDPOINT_URL", "value": "http://s3.storage:9000"},
        *(
            {
                "name": key,
                "valueFrom": {"secretKeyRef": {"name": "s3-keys", "key": key, "optional": opt}},
            }
            for key, opt in (
                ("AWS_ACCESS_KEY_ID", False),
                ("AWS_SECRET_ACCESS_KEY", False),
                ("AWS_SESSION_TOKEN", True),
            )
        ),
    ]
    init = children.deployment(target)["spec"]["template"]["spec"]["initContainers"][0]
    assert init["env"] == want
    job = tuning.tuning_job(target, key_="k", attempt=1, image="geo:dev")
    fetch = job["spec"]["template"]["spec"]["initContainers"][0]
    assert fetch["env"][: len(want)] == want  # the tuning Job fetches the same way
    # Nothing of the Secret in any ConfigMap; without model.s3 no AWS variable at all.
    for config_map in (children.config_map(target), tuning.tuning_config_map(target)):
        assert "s3-keys" not in yaml.safe_dump(config_map)
    plain = children.deployment(_target(spec))["spec"]["template"]["spec"]["initContainers"][0]
    assert not [e for e in plain["env"] if e["name"].startswith("AWS_")]


def test_a_declared_sha256_is_checked_by_the_init_container(
    spec: models.GeoDeploymentSpec,
) -> None:
    raw = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    raw["model"]["selection"] = {"policy": "pinned", "pinned": "fp32"}
    raw["model"]["artifacts"][0]["sha256"] = "ab" * 32
    init = children.fetch_container(_target(models.parse_spec(raw)))
    assert {"name": "ARTIFACT_SHA256", "value": "ab" * 32} in init["env"]
    assert '/model.onnx --sha256 "$ARTIFACT_SHA256"\n' in init["command"][-1]
    plain = children.fetch_container(_target(spec))
    assert "--sha256" not in plain["command"][-1]
    assert "ARTIFACT_SHA256" not in {e["name"] for e in plain["env"]}


def test_readiness_words() -> None:
    assert plan.readiness(None, 1).reason == "Creating"
    assert plan.readiness({"status": {}}, 2).status == "False"
    settled = plan.readiness({"status": {"readyReplicas": 2, "updatedReplicas": 2}}, 2)
    assert (settled.status, settled.reason) == ("True", "Available")
    rolling = plan.readiness({"status": {"readyReplicas": 2, "updatedReplicas": 1}}, 2)
    assert (rolling.status, rolling.reason) == ("True", "Progressing")


LEVERS = pathlib.Path(__file__).parents[2] / "manifests" / "examples" / "digits-levers.yaml"
LEVERS_GOLDEN = GOLDEN.with_name("digits-levers.yaml")


def test_golden_levers() -> None:
    """Every lever of the example as rendered: config.pbtxt's fields and the pod's flags."""
    body = yaml.safe_load(LEVERS.read_text())
    target = _target(models.parse_spec(body["spec"]))
    rendered = yamlio.dump_all(_without_embedded_files(children.all_children(target)[:2]))
    if os.environ.get("UPDATE_GOLDEN"):
        LEVERS_GOLDEN.write_text(rendered)
    assert rendered == LEVERS_GOLDEN.read_text(), "run with UPDATE_GOLDEN=1 and review the diff"
    args = children.deployment(target)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--cache-config=local,size=16777216" in args


def test_the_tuning_job_measures_without_cache_or_queue_bounds() -> None:
    from geo_operator.builders import tuning

    body = yaml.safe_load(LEVERS.read_text())
    target = _target(models.parse_spec(body["spec"]))
    config = tuning.tuning_config_map(target)["data"]["config.pbtxt"]
    assert "response_cache" not in config and "queue_policy" not in config
    # What changes the capacity measured stays: instances, priorities, warmup.
    assert "count: 2" in config and "priority_levels: 2" in config and "model_warmup" in config
    job = tuning.tuning_job(target, key_="k", attempt=1, image="geo:dev")
    sidecar = job["spec"]["template"]["spec"]["initContainers"][1]
    assert not any(a.startswith("--cache-config") for a in sidecar["args"])


# The restricted Pod Security Standard's rules on a pod spec (the API server's
# PodSecurity admission enforces them in the e2e namespaces; this is the same list,
# so a builder change that breaks one fails here, before any cluster).
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def _restricted_violations(pod: dict[str, Any]) -> list[str]:
    found = []
    pod_context = pod.get("securityContext", {})
    for volume in pod["volumes"]:
        if not set(volume) - {"name"} <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}")
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        context = container.get("securityContext", {})
        name = container["name"]
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation")
        if context.get("capabilities", {}).get("drop") != ["ALL"]:
            found.append(f"{name}: capabilities")
        if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
            found.append(f"{name}: runAsNonRoot")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {}))
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile")
        if context.get("privileged") or any("hostPort" in p for p in container.get("ports", [])):
            found.append(f"{name}: privileged or hostPort")
        if not context.get("readOnlyRootFilesystem"):  # beyond the standard: asked for
            found.append(f"{name}: readOnlyRootFilesystem")
    return found


def _pods(spec: models.GeoDeploymentSpec) -> dict[str, dict[str, Any]]:
    from geo_operator.builders import tuning

    target = _target(spec)
    return {
        "serving": children.deployment(target)["spec"]["template"]["spec"],
        "canary": children.deployment(target, names.CANARY_TRACK)["spec"]["template"]["spec"],
        "tuning": tuning.tuning_job(target, key_="k" * 16, attempt=1, image="geo:1")["spec"][
            "template"
        ]["spec"],
    }


def test_every_pod_passes_the_restricted_standard_with_tmp_writable(
    spec: models.GeoDeploymentSpec,
) -> None:
    for kind, pod in _pods(spec).items():
        assert _restricted_violations(pod) == [], kind
        assert pod["securityContext"]["fsGroup"] == 1000
        for container in [*pod["initContainers"], *pod["containers"]]:
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, (kind, container["name"])
            if container["name"] != names.TUNER_CONTAINER:
                assert container["securityContext"]["runAsUser"] == 1000
    # The tune container is GEO's own image: its own user (65532), not Triton's.
    tuner = _pods(spec)["tuning"]["containers"][0]
    assert "runAsUser" not in tuner["securityContext"]


def test_the_user_group_and_root_filesystem_are_the_specs(spec: models.GeoDeploymentSpec) -> None:
    raw = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    raw["triton"]["securityContext"] = {
        "runAsUser": 2000,
        "runAsGroup": 3000,
        "fsGroup": None,
        "readOnlyRootFilesystem": False,
    }
    pods = _pods(models.parse_spec(raw))
    serving = pods["serving"]
    assert "fsGroup" not in serving["securityContext"]
    triton = serving["containers"][0]["securityContext"]
    assert (triton["runAsUser"], triton["runAsGroup"]) == (2000, 3000)
    assert triton["readOnlyRootFilesystem"] is False
    assert _restricted_violations(serving) == [
        f"{c}: readOnlyRootFilesystem" for c in (names.FETCH_CONTAINER, names.TRITON_CONTAINER)
    ]
    # GEO's own tune container keeps its read-only root whatever the Triton image needs.
    assert pods["tuning"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_root_is_refused_with_the_field_named(spec: models.GeoDeploymentSpec) -> None:
    raw = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    raw["triton"]["securityContext"] = {"runAsUser": 0}
    with pytest.raises(ValueError, match="runAsUser"):
        models.parse_spec(raw)


def test_an_unchanged_child_is_not_applied_again(spec: models.GeoDeploymentSpec) -> None:
    import copy

    desired = children.stamp(children.deployment(_target(spec)))
    stored = copy.deepcopy(desired)  # as the API server keeps it: defaults and status added
    stored["spec"]["progressDeadlineSeconds"] = 600
    stored["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    stored["status"] = {"readyReplicas": 1}
    assert children.unchanged(stored, desired)
    assert not children.unchanged(None, desired) and not children.unchanged({}, desired)
    # A user's edit of a value GEO sets: applied again, which repairs it.
    edited = copy.deepcopy(stored)
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "theirs:1"
    assert not children.unchanged(edited, desired)
    shorter = copy.deepcopy(stored)
    shorter["spec"]["template"]["spec"]["volumes"].pop()
    assert not children.unchanged(shorter, desired)
    retyped = copy.deepcopy(stored)
    retyped["spec"]["revisionHistoryLimit"] = str(retyped["spec"]["revisionHistoryLimit"])
    assert not children.unchanged(retyped, desired)
    # A field GEO stops setting (no nodeSelector any more): another hash, so applied,
    # and server-side apply removes it.
    raw = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    raw["triton"]["nodeSelector"] = {"pool": "gpu"}
    with_selector = children.stamp(children.deployment(_target(models.parse_spec(raw))))
    assert not children.unchanged(with_selector, desired)
    annotations = desired["metadata"]["annotations"]
    assert (
        annotations[names.APPLIED_ANNOTATION]
        != with_selector["metadata"]["annotations"][names.APPLIED_ANNOTATION]
    )


PYCODE = pathlib.Path(__file__).resolve().parents[2] / "manifests" / "examples" / "pycode.yaml"
PYCODE_GOLDEN = pathlib.Path(__file__).parent / "golden" / "pycode.yaml"
PYCODE_GPU_GOLDEN = pathlib.Path(__file__).parent / "golden" / "pycode-gpu-vllm.yaml"


def _pycode(gpu: bool) -> children.Target:
    body = yaml.safe_load(PYCODE.read_text())
    if gpu:
        body["spec"]["triton"]["resources"]["limits"]["nvidia.com/gpu"] = 1
    target = _target(models.parse_spec(body["spec"]), name="pycode")
    assert target.gpu == gpu
    return target


def _no_llama_source(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for obj in objs:
        if obj["kind"] == "ConfigMap":
            for key in ("model.py", "fetch.py"):
                if key in obj["data"]:
                    name = key.replace("model.py", "llama_model.py")
                    obj["data"][key] = f"<geo_operator/triton/{name}>"
    return objs


@pytest.mark.parametrize(
    ("gpu", "golden"), [(False, PYCODE_GOLDEN), (True, PYCODE_GPU_GOLDEN)], ids=["cpu", "gpu"]
)
def test_golden_generative(gpu: bool, golden: pathlib.Path) -> None:
    """The pycode example as rendered: llama.cpp in the python backend on CPU; on a GPU
    the same spec through Triton's vLLM backend (model.json, its image)."""
    target = _pycode(gpu)
    rendered = yamlio.dump_all(_no_llama_source(children.all_children(target)[:2]))
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text(), "run with UPDATE_GOLDEN=1 and review the diff"
    data = children.config_map_data(target)
    pod = children.deployment(target)["spec"]["template"]["spec"]
    script = pod["initContainers"][0]["command"][-1]
    if gpu:
        engine_args = json.loads(data["model.json"])
        assert engine_args["model"] == "/models/pycode/1/model.gguf"
        assert engine_args["max_num_seqs"] == 4 and engine_args["max_model_len"] == 256
        assert engine_args["disable_log_stats"] is False  # vllm:* metrics
        assert 'backend: "vllm"' in data["config.pbtxt"] and "model.py" not in data
        assert pod["containers"][0]["image"] == models.VLLM_TRITON_IMAGE
        assert "model.json" in script
    else:
        assert data["model.py"] == (PACKAGE / "llama_model.py").read_text()
        assert (
            'backend: "python"' in data["config.pbtxt"]
            and "decoupled: true" in data["config.pbtxt"]
        )
        assert pod["containers"][0]["image"] == models.DEFAULT_TRITON_IMAGE
        assert "model.py" in script


PYCODE_TRTLLM_GOLDEN = pathlib.Path(__file__).parent / "golden" / "pycode-gpu-trtllm.yaml"


def test_golden_generative_tensorrtllm() -> None:
    """The pycode example on a GPU with triton.engine.backend tensorrtllm: the ensemble
    under the model's name, its three steps beside it, Triton's TensorRT-LLM image."""
    body = yaml.safe_load(PYCODE.read_text())
    body["spec"]["triton"]["resources"]["limits"]["nvidia.com/gpu"] = 1
    engine = body["spec"]["triton"].setdefault("engine", {})
    engine.update(backend="tensorrtllm", tensorrtllmEngine="https://example.com/pycode-engine.tar")
    target = _target(models.parse_spec(body["spec"]), name="pycode")
    rendered = yamlio.dump_all(_no_llama_source(children.all_children(target)[:2]))
    if os.environ.get("UPDATE_GOLDEN"):
        PYCODE_TRTLLM_GOLDEN.write_text(rendered)
    assert rendered == PYCODE_TRTLLM_GOLDEN.read_text(), "run with UPDATE_GOLDEN=1"
    data = children.config_map_data(target)
    assert (
        'platform: "ensemble"' in data["config.pbtxt"] and 'name: "pycode"' in data["config.pbtxt"]
    )
    assert 'backend: "tensorrtllm"' in data["trtllm-tensorrt_llm.pbtxt"]
    assert "model.json" not in data and "model.py" not in data
    pod = children.deployment(target)["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == models.TRTLLM_TRITON_IMAGE
