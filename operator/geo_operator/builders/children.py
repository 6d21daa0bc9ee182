"""Pure builders: one GeoDeployment -> the ConfigMap, Deployment and Service it owns.

Called by the reconcile handler (which applies the dicts through `k8s/`) and by
`geo render`. Nothing here touches the cluster; tests compare the output with
checked-in YAML under tests/builders/golden/.

The Triton pod: an init container (the Triton image's python3 running the
operator's `fetch.py` from the ConfigMap) lays out the model repository in an
emptyDir — config.pbtxt, the artifact, and for the python format our model.py —
then `tritonserver` serves it. A hash of everything in the ConfigMap, the
artifact URI and the Triton image is a pod-template annotation, so any change rolls
the pods — or, once something stable serves, goes out as a canary: the same
Deployment under another name (`canary_children`), its own ConfigMap, its pods
labelled with the canary track, behind the same Service.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.resources
import json
import posixpath
import urllib.parse
from collections.abc import Mapping
from typing import Any

from geo_operator.api import models, names
from geo_operator.triton import model_config, trtllm_config


@dataclasses.dataclass(frozen=True)
class Target:
    """Everything the builders need, decided by the handler from spec and status."""

    name: str
    namespace: str
    uid: str
    spec: models.GeoDeploymentSpec
    artifact: models.Artifact
    batch: model_config.BatchSettings
    replicas: int
    gpu: bool = False


def selector_labels(name: str) -> dict[str, str]:
    """Labels that select a GeoDeployment's Triton pods (stable across versions)."""
    return {names.NAME_LABEL: "triton", names.INSTANCE_LABEL: name}


def selector(name: str) -> str:
    """The selector as a string, for `.status.selector` (the scale subresource)."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(name).items())


def labels(name: str) -> dict[str, str]:
    """Recommended labels for every child object."""
    return {
        **selector_labels(name),
        names.COMPONENT_LABEL: names.SERVING_COMPONENT,
        names.PART_OF_LABEL: "geo",
        names.MANAGED_BY_LABEL: names.MANAGER,
        names.OWNER_LABEL: name,
    }


def config_map_name(name: str) -> str:
    return f"{name}-model"


def canary_name(name: str) -> str:
    """The canary Deployment of a rollout."""
    return f"{name}-canary"


def canary_config_map_name(name: str) -> str:
    """The canary's own ConfigMap: the stable's keeps what the stable loads."""
    return f"{name}-canary-model"


def owned_metadata(target: Target, name: str) -> dict[str, Any]:
    """Metadata of an object the GeoDeployment owns (the owner reference makes it go with it)."""
    return {
        "name": name,
        "namespace": target.namespace,
        "labels": labels(target.name),
        "ownerReferences": [
            {
                "apiVersion": models.API_VERSION,
                "kind": models.KIND,
                "name": target.name,
                "uid": target.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


@functools.cache
def _package_text(module: str) -> str:
    """A file GEO ships into the ConfigMap, read once per process."""
    return (importlib.resources.files("geo_operator.triton") / f"{module}.py").read_text()


def config_map_data(target: Target) -> dict[str, str]:
    """The files of the model repository that live in the ConfigMap."""
    if target.artifact.format is models.ArtifactFormat.GGUF:
        return _generative_data(target)
    config = model_config.build(
        target.spec.model,
        target.artifact,
        target.batch,
        triton=target.spec.triton,
        gpu=target.gpu,
    )
    data = {"config.pbtxt": model_config.render(config), "fetch.py": _package_text("fetch")}
    warmup = model_config.warmup_files(target.spec.model, target.spec.triton.warmup or ())
    if warmup:  # for `triton.repository` on this machine; the init container has its own
        data[names.WARMUP_FILES] = json.dumps(warmup, indent=1, sort_keys=True) + "\n"
    if target.artifact.format is models.ArtifactFormat.PYTHON:
        data["model.py"] = _package_text("python_model")
    return data


def triton_image(target: Target) -> str:
    """The spec's Triton image; a generative model on a GPU, with the default image, gets
    the one that has Triton's vLLM backend."""
    image = target.spec.triton.image
    generative_gpu = target.artifact.format is models.ArtifactFormat.GGUF and target.gpu
    if generative_gpu and image == models.DEFAULT_TRITON_IMAGE:
        if _trtllm(target):
            return models.TRTLLM_TRITON_IMAGE
        return models.VLLM_TRITON_IMAGE
    return image


def _trtllm(target: Target) -> bool:
    engine = target.spec.triton.engine
    return engine is not None and engine.backend == "tensorrtllm"


TRTLLM_CONFIG = "trtllm-{}.pbtxt"  # ConfigMap key of each model beside the ensemble


def _generative_data(target: Target) -> dict[str, str]:
    """A GGUF's repository files: llama_model.py on CPU, Triton's vLLM backend on a GPU, or
    there Triton's TensorRT-LLM backend's ensemble (triton.engine.backend tensorrtllm)."""
    model = target.spec.model.name
    engine = model_config.EngineSettings.of(target.spec.triton.engine)
    data = {"fetch.py": _package_text("fetch")}
    if target.gpu and _trtllm(target):
        # The ensemble is the model the user calls; its three steps are models of their own.
        repo = trtllm_config.repository(
            model, engine, names.MODEL_REPOSITORY, instances=target.spec.triton.instance_count
        )
        config = repo.pop(model)
        for step, step_config in repo.items():
            data[TRTLLM_CONFIG.format(step)] = model_config.render(step_config)
    elif target.gpu:
        filename = model_config.FILENAMES[target.artifact.format]
        path = posixpath.join(names.MODEL_REPOSITORY, model, "1", filename)
        config, data[model_config.VLLM_ENGINE_ARGS] = model_config.build_vllm(model, engine, path)
    else:
        config = model_config.build_generative(
            model, engine, instances=target.spec.triton.instance_count
        )
        data["model.py"] = _package_text("llama_model")
    return {"config.pbtxt": model_config.render(config), **data}


def config_hash(target: Target) -> str:
    """Hash of what the pods load and run (the model repository, the artifact, the Triton
    image): any change to it rolls them, as a canary once something stable serves."""
    digest = hashlib.sha256()
    digest.update(json.dumps(config_map_data(target), sort_keys=True).encode())
    digest.update(target.artifact.uri.encode())
    digest.update(triton_image(target).encode())
    return digest.hexdigest()[:16]


def config_map(
    target: Target, name: str | None = None, labels_: dict[str, str] | None = None
) -> dict[str, Any]:
    """The ConfigMap holding config.pbtxt (and model.py, fetch.py); the tuning Job's
    candidates get their own, under another name and labels."""
    metadata = owned_metadata(target, name or config_map_name(target.name))
    if labels_ is not None:
        metadata["labels"] = labels_
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": config_map_data(target),
    }


def _init_script(target: Target) -> str:
    """Shell for the init container: fetch the artifact, lay out the repository."""
    model = target.spec.model.name
    version_dir = posixpath.join(names.MODEL_REPOSITORY, model, "1")
    filename = model_config.FILENAMES[target.artifact.format]
    lines = [
        "set -eu",
        f"mkdir -p {version_dir}",
        f'python3 {names.CONFIG_MOUNT}/fetch.py "$ARTIFACT_URI" {version_dir}/{filename}'
        + (' --sha256 "$ARTIFACT_SHA256"' if target.artifact.sha256 else ""),
        f"cp {names.CONFIG_MOUNT}/config.pbtxt {names.MODEL_REPOSITORY}/{model}/config.pbtxt",
    ]
    if target.artifact.format is models.ArtifactFormat.GGUF and target.gpu:
        engine_args = model_config.VLLM_ENGINE_ARGS
        lines.append(f"cp {names.CONFIG_MOUNT}/{engine_args} {version_dir}/{engine_args}")
    elif target.artifact.format in (models.ArtifactFormat.PYTHON, models.ArtifactFormat.GGUF):
        lines.append(f"cp {names.CONFIG_MOUNT}/model.py {version_dir}/model.py")
    model_dir = posixpath.join(names.MODEL_REPOSITORY, model)
    warmup = _warmup_env(target)
    if warmup:
        lines.append(f"mkdir -p {model_dir}/{model_config.WARMUP_DIR}")
    for path, env in warmup:
        lines.append(f'python3 {names.CONFIG_MOUNT}/fetch.py "${env["name"]}" {model_dir}/{path}')
    return "\n".join(lines) + "\n"


def _warmup_env(target: Target) -> list[tuple[str, dict[str, str]]]:
    """Each warmup file's path under the model's folder, and the env var with its URI."""
    files = model_config.warmup_files(target.spec.model, target.spec.triton.warmup or ())
    return [
        (path, {"name": f"{names.WARMUP_URI_ENV}_{index}", "value": uri})
        for index, (path, uri) in enumerate(sorted(files.items()))
    ]


def _pvc_claim(uri: str) -> str | None:
    parsed = urllib.parse.urlparse(uri)
    return parsed.netloc if parsed.scheme == "pvc" else None


# ---- pod pieces shared by the serving Deployment and the tuning Job


def repository_volumes(target: Target, config: str) -> list[dict[str, Any]]:
    """The pod's volumes: the repository, the ConfigMap ``config``, a PVC source if any."""
    volumes: list[dict[str, Any]] = [
        {"name": names.REPOSITORY_VOLUME, "emptyDir": {}},
        {"name": names.CONFIG_VOLUME, "configMap": {"name": config}},
        {"name": names.TMP_VOLUME, "emptyDir": {}},
    ]
    claim = _pvc_claim(target.artifact.uri)
    if claim:
        source = {"claimName": claim, "readOnly": True}
        volumes.append({"name": names.ARTIFACT_VOLUME, "persistentVolumeClaim": source})
    return volumes


def tmp_mount() -> dict[str, Any]:
    """Every container's writable /tmp (a fresh dict each: YAML dumps shared ones as anchors)."""
    return {"name": names.TMP_VOLUME, "mountPath": names.TMP_MOUNT}


def pod_security(spec: models.GeoDeploymentSpec) -> dict[str, Any]:
    """The pod's securityContext: the `restricted` Pod Security Standard's pod half."""
    context: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if spec.triton.security_context.fs_group is not None:
        context["fsGroup"] = spec.triton.security_context.fs_group
    return context


def container_security(
    spec: models.GeoDeploymentSpec, *, image_user: bool = False
) -> dict[str, Any]:
    """A container's securityContext: no escalation, no capabilities, a read-only root;
    the spec's user and group, or (``image_user``, GEO's own image) the image's."""
    security = spec.triton.security_context
    context: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True if image_user else security.read_only_root_filesystem,
    }
    if not image_user:
        context.update(runAsUser=security.run_as_user, runAsGroup=security.run_as_group)
    return context


def fetch_container(target: Target) -> dict[str, Any]:
    """The init container that fetches the artifact and lays out the model repository."""
    mounts: list[dict[str, Any]] = [
        {"name": names.REPOSITORY_VOLUME, "mountPath": names.MODEL_REPOSITORY},
        {"name": names.CONFIG_VOLUME, "mountPath": names.CONFIG_MOUNT, "readOnly": True},
        tmp_mount(),
    ]
    if _pvc_claim(target.artifact.uri):
        mounts.append(
            {"name": names.ARTIFACT_VOLUME, "mountPath": names.PVC_MOUNT, "readOnly": True}
        )
    return {
        "name": names.FETCH_CONTAINER,
        "image": triton_image(target),
        "command": ["sh", "-c", _init_script(target)],
        "env": [
            {"name": "ARTIFACT_URI", "value": target.artifact.uri},
            *(
                [{"name": "ARTIFACT_SHA256", "value": target.artifact.sha256}]
                if target.artifact.sha256
                else []
            ),
            *(env for _, env in _warmup_env(target)),
            *s3_env(target.spec.model.s3),
        ],
        "volumeMounts": mounts,
        "securityContext": container_security(target.spec),
    }


def s3_env(s3: models.S3Storage | None) -> list[dict[str, Any]]:
    """What fetch.py reads for s3:// URIs: the endpoint and region as values, the keys by
    reference to the user's Secret (the kubelet resolves them; no ConfigMap holds them)."""
    if s3 is None:
        return []
    env: list[dict[str, Any]] = [{"name": "AWS_REGION", "value": s3.region}]
    if s3.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": s3.endpoint.rstrip("/")})
    if s3.secret_name:
        for key, optional in (
            ("AWS_ACCESS_KEY_ID", False),
            ("AWS_SECRET_ACCESS_KEY", False),
            ("AWS_SESSION_TOKEN", True),
        ):
            ref = {"name": s3.secret_name, "key": key, "optional": optional}
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    return env


def probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 3,
    }


def server_flags(triton: models.TritonSpec) -> list[str]:
    """The server-side halves of model-config levers: the cache's memory, the rate limiter."""
    flags = []
    if triton.response_cache.enabled:
        flags.append(f"--cache-config=local,size={triton.response_cache.size_bytes}")
    if triton.rate_limited():
        flags.append("--rate-limit=execution_count")
    return flags


def triton_container(target: Target, control: list[str]) -> dict[str, Any]:
    """tritonserver on the model repository; ``control`` are the model-control flags."""
    spec = target.spec
    return {
        "name": names.TRITON_CONTAINER,
        "image": triton_image(target),
        "args": [
            "tritonserver",
            f"--model-repository={names.MODEL_REPOSITORY}",
            *control,
            f"--http-port={names.HTTP_PORT}",
            f"--grpc-port={names.GRPC_PORT}",
            f"--metrics-port={names.METRICS_PORT}",
            *server_flags(spec.triton),
        ],
        "resources": {k: dict(v) for k, v in spec.triton.resources.items()},
        "volumeMounts": [
            {"name": names.REPOSITORY_VOLUME, "mountPath": names.MODEL_REPOSITORY},
            tmp_mount(),
        ],
        "securityContext": container_security(spec),
    }


def placement(spec: models.GeoDeploymentSpec) -> dict[str, Any]:
    """Where the pods land (the tuning pod lands where the serving pods do)."""
    return {"nodeSelector": dict(spec.triton.node_selector)} if spec.triton.node_selector else {}


def deployment(target: Target, track: str = names.STABLE_TRACK) -> dict[str, Any]:
    """The Deployment running tritonserver on the model repository: the stable track's
    (named as the GeoDeployment), or a rollout's canary (`canary_name`, its own ConfigMap,
    a selector narrowed to its track; the stable's selector, fixed since it was created,
    still matches the canary's pods, but a Deployment only counts the ReplicaSets it owns)."""
    canary = track == names.CANARY_TRACK
    name = canary_name(target.name) if canary else target.name
    config = canary_config_map_name(target.name) if canary else config_map_name(target.name)
    match = selector_labels(target.name)
    if canary:
        match[names.TRACK_LABEL] = names.CANARY_TRACK
    triton = triton_container(target, ["--model-control-mode=none"])
    triton["args"].append("--metrics-config=summary_latencies=true")
    serving = {
        "ports": [
            {"name": "http", "containerPort": names.HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": names.GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": names.METRICS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": probe("/v2/health/ready", 5, 3),
        "livenessProbe": probe("/v2/health/live", 10, 6),
        # Loading a large model can take minutes; don't let liveness kill it.
        "startupProbe": probe("/v2/health/ready", 5, 120),
    }
    triton = {**{k: triton[k] for k in ("name", "image", "args")}, **serving, **triton}
    pod_spec: dict[str, Any] = {
        "securityContext": pod_security(target.spec),
        "initContainers": [fetch_container(target)],
        "containers": [triton],
        "volumes": repository_volumes(target, config),
        **placement(target.spec),
    }
    metadata = owned_metadata(target, name)
    metadata["labels"][names.TRACK_LABEL] = track
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        # No replicas: the field's one owner is `names.REPLICAS_MANAGER`, through the
        # scale subresource (`replicas_owned`; the reconcile scales what it creates).
        "spec": {
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": match},
            # Never fewer ready servers than asked for while rolling.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": {**labels(target.name), names.TRACK_LABEL: track},
                    "annotations": {
                        names.CONFIG_HASH_ANNOTATION: config_hash(target),
                        names.ARTIFACT_ANNOTATION: target.artifact.name,
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(names.METRICS_PORT),
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def service(target: Target) -> dict[str, Any]:
    """The Service in front of the Triton pods."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owned_metadata(target, target.name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(target.name),
            "ports": [
                {"name": "http", "port": names.HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": names.GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
                {
                    "name": "metrics",
                    "port": names.METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }


def all_children(target: Target, replicas: bool = False) -> list[dict[str, Any]]:
    """The children in apply order: config first, so new pods find it. ``replicas``: the
    Deployment with ``target.replicas`` in it, as `geo render` shows it (the reconcile
    applies it without, and scales)."""
    made = deployment(target)
    if replicas:
        made["spec"] = {"replicas": target.replicas, **made["spec"]}
    return [config_map(target), made, service(target)]


def replicas_owned(deployment: Mapping[str, Any]) -> bool:
    """Whether the stored ``deployment``'s spec.replicas is (also) `names.REPLICAS_MANAGER`'s,
    by its managedFields: only then may the children's apply leave the field out (when
    the apply alone owned it, leaving it out resets it to 1)."""
    for entry in (deployment.get("metadata") or {}).get("managedFields") or ():
        fields = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        if entry.get("manager") == names.REPLICAS_MANAGER and "f:replicas" in fields:
            return True
    return False


def canary_children(target: Target) -> list[dict[str, Any]]:
    """A rollout's canary: its ConfigMap, then its Deployment (the Service is shared)."""
    config = config_map(target, canary_config_map_name(target.name))
    config["metadata"]["labels"][names.TRACK_LABEL] = names.CANARY_TRACK
    return [config, deployment(target, names.CANARY_TRACK)]


def foreign(existing: Mapping[str, Any] | None, uid: str) -> str | None:
    """Why GEO must leave ``existing`` alone: it is there and its controller is not the
    GeoDeployment ``uid`` (a user's object under a child's name); None when it is ours
    or absent. Applying over it would take it over, and deleting the GeoDeployment
    would then delete it."""
    if not existing:
        return None
    meta = existing.get("metadata") or {}
    owners = meta.get("ownerReferences") or []
    controller = next((o for o in owners if o.get("controller")), None)
    if controller is not None and controller.get("uid") == uid:
        return None
    by = f"{controller.get('kind')} {controller.get('name')}" if controller else "nothing"
    return (
        f"{existing.get('kind')} {meta.get('name')} already exists and is not this "
        f"GeoDeployment's (its controller: {by}); GEO leaves it alone: delete or rename it, "
        "or rename the GeoDeployment"
    )


def stamp(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with `names.APPLIED_ANNOTATION`: a hash of everything else in it."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
    meta = obj.get("metadata") or {}
    annotations = {**(meta.get("annotations") or {}), names.APPLIED_ANNOTATION: digest}
    return {**obj, "metadata": {**meta, "annotations": annotations}}


def unchanged(existing: Mapping[str, Any] | None, stamped: Mapping[str, Any]) -> bool:
    """Whether applying ``stamped`` (from `stamp`) again would change nothing: what is
    stored was applied from the same object (the hash: a field GEO stopped setting is
    still removed) and still holds every value it sets (a user's edit of one of them is
    repaired). Values the API server normalizes (a quantity's spelling) only cost an
    apply; they never skip one."""
    if not existing:
        return False
    annotations = (existing.get("metadata") or {}).get("annotations") or {}
    mine = stamped["metadata"]["annotations"][names.APPLIED_ANNOTATION]
    return annotations.get(names.APPLIED_ANNOTATION) == mine and _holds(existing, stamped)


def _holds(stored: Any, wanted: Any) -> bool:
    """Every value of ``wanted`` is in ``stored`` (which may hold more: defaults)."""
    if isinstance(wanted, Mapping):
        return isinstance(stored, Mapping) and all(
            k in stored and _holds(stored[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(stored, list)
            and len(stored) == len(wanted)
            and all(_holds(s, w) for s, w in zip(stored, wanted, strict=True))
        )
    return bool(stored == wanted and type(stored) is type(wanted))


def template_hash(deployment_: dict[str, Any] | None) -> str | None:
    """The configuration hash a Deployment's pod template carries (None: no Deployment)."""
    if not deployment_:
        return None
    template = (deployment_.get("spec") or {}).get("template") or {}
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(names.CONFIG_HASH_ANNOTATION)
    return None if value is None else str(value)
