"""What the kubelet runner runs for a pod, read from the pod alone: no cluster, no processes.

`read(pod)` turns a GEO pod (a plain dict, as the API returns it) into a frozen
`PodSpec`: where its model repository comes from (the `model-config` ConfigMap
volume, the `fetch-artifact` init container's `ARTIFACT_URI`), whether it is a
batch-tuning Job's pod and, for one, the `tune` container's image, args and env.
`model_source(data)` reads the ConfigMap's data the same way: the model's name,
max_batch_size and artifact format as the builders chose them. `tuner_command`
points the tuner's args at the runner's Triton and result file. `config_error` says,
in the kubelet's words, why a container's Secret references cannot be resolved.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from geo_operator.api import models, names
from geo_operator.triton import model_config

PodKey = tuple[str, str]  # (namespace, pod name)

# The names GEO's builders write (api.names): the runner reads pods by them.
LABEL_SELECTOR = f"{names.MANAGED_BY_LABEL}={names.MANAGER}"
OWNER_LABEL = names.OWNER_LABEL
ARTIFACT_ANNOTATION = names.ARTIFACT_ANNOTATION
METRICS_URL_ANNOTATION = names.METRICS_URL_ANNOTATION
# Names the Deployment builder gives the ConfigMap volume and the init container.
CONFIG_VOLUME = names.CONFIG_VOLUME
INIT_CONTAINER = names.FETCH_CONTAINER
URI_ENV = "ARTIFACT_URI"

# tritonserver flags of the pod that the local server gets too (the levers' server side);
# the rest (ports, repository, model control) the runner sets for itself.
PASSED_FLAGS = ("--cache-config=", "--rate-limit=")


@dataclasses.dataclass(frozen=True)
class Tuner:
    """A tuning pod's `tune` container: what `geo tune` gets."""

    container: str
    image: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class Container:
    """A container of the pod, as far as its status goes (podstatus writes it)."""

    name: str
    image: str
    sidecar: bool = False  # an init container with restartPolicy Always (a native sidecar)
    fallback_to_logs: bool = False  # terminationMessagePolicy FallbackToLogsOnError


@dataclasses.dataclass(frozen=True)
class SecretRef:
    """An env var of a container taken from a Secret's key (env[].valueFrom.secretKeyRef)."""

    env: str
    secret: str
    key: str
    optional: bool = False


@dataclasses.dataclass(frozen=True)
class PodSpec:
    """One pod, as far as the runner cares: what to lay out and what to run."""

    namespace: str
    name: str
    uid: str
    config_map: str
    uri: str
    geodeployment: str
    artifact: str  # the artifact's name (pod annotation geo.ai/artifact), else its URI
    tuner: Tuner | None = None  # set for a batch-tuning Job's pod
    evaluation_uri: str | None = None  # a tuning pod's held-out set (model.evaluation)
    reference_uri: str | None = None  # agreement: the reference artifact, as <model>-reference
    track: str = names.STABLE_TRACK  # a rollout's track (the geo.ai/track label)
    server_flags: tuple[str, ...] = ()  # the triton container's PASSED_FLAGS
    init_containers: tuple[Container, ...] = ()
    containers: tuple[Container, ...] = ()
    restart_policy: str = "Always"
    secret_refs: tuple[SecretRef, ...] = ()  # the fetch-artifact init container's

    @property
    def key(self) -> PodKey:
        return (self.namespace, self.name)

    @property
    def is_tuner(self) -> bool:
        return self.tuner is not None


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """The model repository's essentials, from the pod's ConfigMap data."""

    name: str
    max_batch_size: int
    format: models.ArtifactFormat


def key(pod: Mapping[str, Any]) -> PodKey:
    meta = pod["metadata"]
    return (str(meta["namespace"]), str(meta["name"]))


def name(key_: PodKey) -> str:
    return f"{key_[0]}/{key_[1]}"


def should_run(pod: Mapping[str, Any] | None) -> bool:
    """Running and not being deleted: what a kubelet keeps containers up for."""
    if pod is None:
        return False
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    return bool(pod.get("status", {}).get("phase") == "Running")


def is_tuner(pod: Mapping[str, Any]) -> bool:
    """A GEO batch-tuning Job's pod (Triton sidecar + `geo tune`), not a serving pod."""
    labels = pod.get("metadata", {}).get("labels") or {}
    return bool(labels.get(names.COMPONENT_LABEL) == names.TUNING_COMPONENT)


def pod_sources(pod: Mapping[str, Any]) -> tuple[str, str]:
    """(ConfigMap name, artifact URI) from a GEO Triton pod's spec."""
    spec = pod.get("spec", {})
    config_map = next(
        (
            v["configMap"]["name"]
            for v in spec.get("volumes", [])
            if v.get("name") == CONFIG_VOLUME and v.get("configMap")
        ),
        None,
    )
    uri = init_env(pod, URI_ENV)
    if not config_map or not uri:
        raise ValueError(
            f"pod has no {CONFIG_VOLUME!r} ConfigMap volume or no {URI_ENV} in its "
            f"{INIT_CONTAINER!r} init container: not a GEO Triton pod"
        )
    return config_map, uri


def _tuner(pod: Mapping[str, Any]) -> Tuner:
    containers = pod.get("spec", {}).get("containers", [])
    container = next((c for c in containers if c.get("name") == names.TUNER_CONTAINER), None)
    if container is None:
        raise ValueError(f"tuning pod has no {names.TUNER_CONTAINER!r} container")
    return Tuner(
        container=str(container["name"]),
        image=str(container.get("image", "")),
        args=tuple(str(a) for a in container.get("args", [])),
        env=tuple(
            (str(e["name"]), str(e.get("value", "")))
            for e in container.get("env", [])
            if "valueFrom" not in e
        ),
    )


def server_flags(pod: Mapping[str, Any]) -> tuple[str, ...]:
    """The triton container's (or sidecar's) flags in PASSED_FLAGS, in order."""
    spec = pod.get("spec", {})
    containers = [*spec.get("containers", []), *spec.get("initContainers", [])]
    triton = next((c for c in containers if c.get("name") == names.TRITON_CONTAINER), {})
    return tuple(str(a) for a in triton.get("args", []) if str(a).startswith(PASSED_FLAGS))


def init_env(pod: Mapping[str, Any], name: str) -> str | None:
    """An env value of the fetch-artifact init container, if set."""
    spec = pod.get("spec", {})
    init: dict[str, Any] = next(
        (c for c in spec.get("initContainers", []) if c["name"] == INIT_CONTAINER), {}
    )
    return next((e.get("value") for e in init.get("env", []) if e.get("name") == name), None)


def _containers(pod: Mapping[str, Any], kind: str) -> tuple[Container, ...]:
    return tuple(
        Container(
            name=str(c["name"]),
            image=str(c.get("image", "")),
            sidecar=c.get("restartPolicy") == "Always",
            fallback_to_logs=c.get("terminationMessagePolicy") == "FallbackToLogsOnError",
        )
        for c in pod.get("spec", {}).get(kind, [])
    )


def secret_refs(pod: Mapping[str, Any]) -> tuple[SecretRef, ...]:
    """The fetch-artifact init container's env vars that name a Secret's key, in order."""
    spec = pod.get("spec", {})
    init: dict[str, Any] = next(
        (c for c in spec.get("initContainers", []) if c["name"] == INIT_CONTAINER), {}
    )
    refs = []
    for e in init.get("env", []):
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            refs.append(
                SecretRef(
                    env=str(e["name"]),
                    secret=str(ref.get("name", "")),
                    key=str(ref.get("key", "")),
                    optional=bool(ref.get("optional", False)),
                )
            )
    return tuple(refs)


def config_error(
    namespace: str,
    refs: Sequence[SecretRef],
    secrets: Mapping[str, frozenset[str] | None],
) -> str | None:
    """Why the kubelet cannot make the container's environment (its CreateContainerConfigError
    message), or None: ``secrets`` holds each referenced Secret's keys, None when it does not
    exist. The kubelet's words (pkg/kubelet makeEnvironmentVariables), first failure first."""
    for ref in refs:
        keys = secrets.get(ref.secret)
        if keys is None:
            if ref.optional:
                continue
            return f'secret "{ref.secret}" not found'
        if ref.key not in keys and not ref.optional:
            return f"couldn't find key {ref.key} in Secret {namespace}/{ref.secret}"
    return None


def read(pod: Mapping[str, Any]) -> PodSpec:
    """The PodSpec of a GEO pod; ValueError for a pod that is not one."""
    meta = pod["metadata"]
    config_map, uri = pod_sources(pod)
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    return PodSpec(
        namespace=str(meta["namespace"]),
        name=str(meta["name"]),
        uid=str(meta.get("uid", "")),
        config_map=config_map,
        uri=uri,
        geodeployment=str(labels.get(OWNER_LABEL) or labels.get(names.TUNING_FOR_LABEL, "")),
        artifact=str(annotations.get(ARTIFACT_ANNOTATION) or uri),
        tuner=_tuner(pod) if is_tuner(pod) else None,
        evaluation_uri=init_env(pod, names.EVALUATION_URI_ENV),
        reference_uri=init_env(pod, names.REFERENCE_URI_ENV),
        track=str(labels.get(names.TRACK_LABEL) or names.STABLE_TRACK),
        server_flags=server_flags(pod),
        init_containers=_containers(pod, "initContainers"),
        containers=_containers(pod, "containers"),
        restart_policy=str(pod.get("spec", {}).get("restartPolicy") or "Always"),
        secret_refs=secret_refs(pod),
    )


def artifact_format(data: Mapping[str, str], backend: str) -> models.ArtifactFormat:
    """The artifact's format as the builders chose it, recovered from the ConfigMap."""
    config = model_config.parse(data.get("config.pbtxt", ""))
    config.backend = backend
    if backend == "python" and "model.py" not in data:
        raise ValueError("config.pbtxt names the python backend but the ConfigMap has no model.py")
    try:
        return model_config.artifact_format_of(config)
    except KeyError:
        raise ValueError(f"config.pbtxt names backend {backend!r}, unknown to GEO") from None


def model_source(data: Mapping[str, str]) -> ModelSource:
    """The model the ConfigMap's config.pbtxt describes, and the artifact's format."""
    config = model_config.parse(data["config.pbtxt"])
    return ModelSource(
        name=config.name,
        max_batch_size=int(config.max_batch_size),
        format=artifact_format(data, config.backend),
    )


def tuner_command(
    tuner: Tuner,
    geo: pathlib.Path,
    url: str,
    result_file: pathlib.Path,
    heldout: pathlib.Path | None = None,
    repository: pathlib.Path | None = None,
) -> list[str]:
    """`geo tune` with the container's args, pointed at this Triton, this result file and
    the held-out set fetched here."""
    args = []
    for arg in tuner.args:
        if arg.startswith("--url="):
            arg = f"--url={url}"
        elif arg.startswith("--result-file="):
            arg = f"--result-file={result_file}"
        elif arg.startswith("--evaluate=") and heldout is not None:
            arg = f"--evaluate={heldout}"
        elif arg.startswith("--repository=") and repository is not None:
            arg = f"--repository={repository}"  # geo tune-llm reads the GGUFs there
        args.append(arg)
    return [str(geo), *args]
