"""Pure builders: one GeoDeployment -> the ConfigMap, Deployment and Service it owns.

Called by the reconcile handler (which applies the dicts through `k8s/`) and by
`geo render`. Nothing here touches the cluster; tests compare the output with
checked-in YAML under tests/builders/golden/.

The Triton pod: an init container (the Triton image's python3 running the
operator's `fetch.py` from the ConfigMap) lays out the model repository in an
emptyDir — config.pbtxt, the artifact, and for the python format our model.py —
then `tritonserver` serves it. A hash of everything in the ConfigMap and the
artifact URI is a pod-template annotation, so any change rolls the pods.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import json
import posixpath
import urllib.parse
from typing import Any

from geo_operator.api import models
from geo_operator.triton import model_config

MANAGER = "geo-operator"
ANNOTATION_PREFIX = models.GROUP
CONFIG_HASH_ANNOTATION = f"{ANNOTATION_PREFIX}/config-hash"
ARTIFACT_ANNOTATION = f"{ANNOTATION_PREFIX}/artifact"
OWNER_LABEL = f"{ANNOTATION_PREFIX}/geodeployment"

HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002
MODEL_REPOSITORY = "/models"
CONFIG_MOUNT = "/config"
PVC_MOUNT = "/artifact-source"


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
    return {"app.kubernetes.io/name": "triton", "app.kubernetes.io/instance": name}


def selector(name: str) -> str:
    """The selector as a string, for `.status.selector` (the scale subresource)."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(name).items())


def labels(name: str) -> dict[str, str]:
    """Recommended labels for every child object."""
    return {
        **selector_labels(name),
        "app.kubernetes.io/component": "inference-server",
        "app.kubernetes.io/part-of": "geo",
        "app.kubernetes.io/managed-by": MANAGER,
        OWNER_LABEL: name,
    }


def config_map_name(name: str) -> str:
    return f"{name}-model"


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


def _package_text(module: str) -> str:
    return (importlib.resources.files("geo_operator.triton") / f"{module}.py").read_text()


def config_map_data(target: Target) -> dict[str, str]:
    """The files of the model repository that live in the ConfigMap."""
    config = model_config.build(
        target.spec.model,
        target.artifact,
        target.batch,
        instance_count=target.spec.triton.instance_count,
        gpu=target.gpu,
    )
    data = {"config.pbtxt": model_config.render(config), "fetch.py": _package_text("fetch")}
    if target.artifact.format is models.ArtifactFormat.PYTHON:
        data["model.py"] = _package_text("python_model")
    return data


def config_hash(target: Target) -> str:
    """Hash of what the pods load: any change to it must roll them."""
    digest = hashlib.sha256()
    digest.update(json.dumps(config_map_data(target), sort_keys=True).encode())
    digest.update(target.artifact.uri.encode())
    return digest.hexdigest()[:16]


def config_map(target: Target) -> dict[str, Any]:
    """The ConfigMap holding config.pbtxt (and model.py, fetch.py)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": owned_metadata(target, config_map_name(target.name)),
        "data": config_map_data(target),
    }


def _init_script(target: Target) -> str:
    """Shell for the init container: fetch the artifact, lay out the repository."""
    model = target.spec.model.name
    version_dir = posixpath.join(MODEL_REPOSITORY, model, "1")
    filename = model_config.FILENAMES[target.artifact.format]
    lines = [
        "set -eu",
        f"mkdir -p {version_dir}",
        f'python3 {CONFIG_MOUNT}/fetch.py "$ARTIFACT_URI" {version_dir}/{filename}',
        f"cp {CONFIG_MOUNT}/config.pbtxt {MODEL_REPOSITORY}/{model}/config.pbtxt",
    ]
    if target.artifact.format is models.ArtifactFormat.PYTHON:
        lines.append(f"cp {CONFIG_MOUNT}/model.py {version_dir}/model.py")
    return "\n".join(lines) + "\n"


def _pvc_claim(uri: str) -> str | None:
    parsed = urllib.parse.urlparse(uri)
    return parsed.netloc if parsed.scheme == "pvc" else None


def repository_volumes(target: Target) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pod's volumes and the fetch container's mounts (also used by the tuning Job)."""
    volumes: list[dict[str, Any]] = [
        {"name": "model-repository", "emptyDir": {}},
        {"name": "model-config", "configMap": {"name": config_map_name(target.name)}},
    ]
    init_mounts: list[dict[str, Any]] = [
        {"name": "model-repository", "mountPath": MODEL_REPOSITORY},
        {"name": "model-config", "mountPath": CONFIG_MOUNT, "readOnly": True},
    ]
    claim = _pvc_claim(target.artifact.uri)
    if claim:
        volumes.append(
            {
                "name": "artifact-source",
                "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
            }
        )
        init_mounts.append({"name": "artifact-source", "mountPath": PVC_MOUNT, "readOnly": True})
    return volumes, init_mounts


def fetch_container(target: Target, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """The init container that fetches the artifact and lays out the model repository."""
    return {
        "name": "fetch-artifact",
        "image": target.spec.triton.image,
        "command": ["sh", "-c", _init_script(target)],
        "env": [{"name": "ARTIFACT_URI", "value": target.artifact.uri}],
        "volumeMounts": mounts,
    }


def deployment(target: Target) -> dict[str, Any]:
    """The Deployment running tritonserver on the model repository."""
    spec = target.spec
    resources = {k: dict(v) for k, v in spec.triton.resources.items()}
    volumes, init_mounts = repository_volumes(target)

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "http"},
            "periodSeconds": period,
            "failureThreshold": failures,
            "timeoutSeconds": 3,
        }

    pod_spec: dict[str, Any] = {
        "initContainers": [fetch_container(target, init_mounts)],
        "containers": [
            {
                "name": "triton",
                "image": spec.triton.image,
                "args": [
                    "tritonserver",
                    f"--model-repository={MODEL_REPOSITORY}",
                    "--model-control-mode=none",
                    f"--http-port={HTTP_PORT}",
                    f"--grpc-port={GRPC_PORT}",
                    f"--metrics-port={METRICS_PORT}",
                    "--metrics-config=summary_latencies=true",
                ],
                "ports": [
                    {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
                    {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                    {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
                ],
                "readinessProbe": probe("/v2/health/ready", 5, 3),
                "livenessProbe": probe("/v2/health/live", 10, 6),
                # Loading a large model can take minutes; don't let liveness kill it.
                "startupProbe": probe("/v2/health/ready", 5, 120),
                "resources": resources,
                "volumeMounts": [{"name": "model-repository", "mountPath": MODEL_REPOSITORY}],
            }
        ],
        "volumes": volumes,
    }
    if spec.triton.node_selector:
        pod_spec["nodeSelector"] = dict(spec.triton.node_selector)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": owned_metadata(target, target.name),
        "spec": {
            "replicas": target.replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(target.name)},
            # Never fewer ready servers than asked for while rolling.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": labels(target.name),
                    "annotations": {
                        CONFIG_HASH_ANNOTATION: config_hash(target),
                        ARTIFACT_ANNOTATION: target.artifact.name,
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(METRICS_PORT),
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
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
                {
                    "name": "metrics",
                    "port": METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }


def all_children(target: Target) -> list[dict[str, Any]]:
    """The children in apply order: config first, so new pods find it."""
    return [config_map(target), deployment(target), service(target)]
