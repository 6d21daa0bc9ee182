"""The names other parts rely on, in one place: labels, annotations, ports, container and
volume names, field managers, the time format.

The builders write them onto the children, the controller selects and reads by them,
the autoscaler finds metrics by them, and the e2e kubelet runner plays pods by them:
a change here is a change to all of those at once (and to running clusters: the
labels are the children's selectors).
"""

from __future__ import annotations

import datetime

from geo_operator.api import models

PREFIX = models.GROUP

# ---- labels
MANAGER = "geo-operator"  # app.kubernetes.io/managed-by of every child
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
COMPONENT_LABEL = "app.kubernetes.io/component"
INSTANCE_LABEL = "app.kubernetes.io/instance"
NAME_LABEL = "app.kubernetes.io/name"
PART_OF_LABEL = "app.kubernetes.io/part-of"
OWNER_LABEL = f"{PREFIX}/geodeployment"  # serving children and Triton pods: their owner's name
TUNING_FOR_LABEL = f"{PREFIX}/tuning-for"  # tuning Jobs, their pods and ConfigMaps
# Triton pods: which track of a rollout they serve (the Service selects both).
TRACK_LABEL = f"{PREFIX}/track"
STABLE_TRACK = "stable"
CANARY_TRACK = "canary"
TUNING_KEY_LABEL = f"{PREFIX}/tuning-key"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # set by the Job controller on its pods
SERVING_COMPONENT = "inference-server"
TUNING_COMPONENT = "batch-tuner"

# ---- annotations
CONFIG_HASH_ANNOTATION = f"{PREFIX}/config-hash"  # pod template: a change rolls the pods
ARTIFACT_ANNOTATION = f"{PREFIX}/artifact"  # pod template: the artifact served
METRICS_URL_ANNOTATION = f"{PREFIX}/metrics-url"  # pod: where its Triton metrics are
# pod: where its Triton HTTP endpoint is (host:port), when not <podIP>:8000.
INFERENCE_URL_ANNOTATION = f"{PREFIX}/inference-url"
# GeoDeployment: a by-hand rollout action (promote or abort), removed once acted on.
ROLLOUT_ANNOTATION = f"{PREFIX}/rollout"
# every child: a hash of the object GEO last applied, so that an unchanged one is not
# applied again (`builders.children.stamp` and `unchanged`).
APPLIED_ANNOTATION = f"{PREFIX}/applied"

# ---- Triton's ports and the pod's layout
HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002
MODEL_REPOSITORY = "/models"
CONFIG_MOUNT = "/config"
PVC_MOUNT = "/artifact-source"
TRITON_CONTAINER = "triton"
FETCH_CONTAINER = "fetch-artifact"
TUNER_CONTAINER = "tune"
# The tuning pod's held-out set (model.evaluation), fetched by the init container.
EVALUATION_VOLUME = "evaluation"
EVALUATION_MOUNT = "/evaluation"
HELDOUT_FILE = f"{EVALUATION_MOUNT}/heldout.npz"
EVALUATION_URI_ENV = "EVALUATION_URI"
# agreement: the reference artifact, served next to the candidate as <model>-reference.
REFERENCE_URI_ENV = "REFERENCE_URI"
REFERENCE_SUFFIX = "-reference"
WARMUP_FILES = "warmup.json"  # ConfigMap entry: warmup file path under the model -> URI
WARMUP_URI_ENV = "WARMUP_URI"  # _0, _1...: the init container's warmup file URIs
REFERENCE_CONFIG = "reference.pbtxt"  # its config.pbtxt, in the tuning ConfigMap
REPOSITORY_VOLUME = "model-repository"
CONFIG_VOLUME = "model-config"
ARTIFACT_VOLUME = "artifact-source"
# Scratch space under a read-only root filesystem (an emptyDir on /tmp in every container).
TMP_VOLUME = "tmp"
TMP_MOUNT = "/tmp"
# The tuner writes its result here; the operator reads it from the pod's status.
TERMINATION_LOG = "/dev/termination-log"

# The image the tuning Jobs run `geo tune` in: the operator's own (`geo run --tuner-image`).
DEFAULT_TUNER_IMAGE = "ghcr.io/geo-ai/geo-operator:0.1.0"

# ---- server-side apply field managers: one per writer, so the API server keeps
# each writer to its own fields (status conditions are a map keyed by type).
CHILDREN_MANAGER = "geo-operator"
RECONCILE_MANAGER = "geo-operator/reconcile"
AUTOSCALER_MANAGER = "geo-operator/autoscaler"
# Deployment.spec.replicas has this one owner, written through the scale subresource
# only (the autoscaler's scale, a rollout's split, spec.replicas when autoscaling is
# off); the children's apply leaves the field out, so a template change made from a
# stale gather never undoes a scale.
REPLICAS_MANAGER = "geo-operator/replicas"

# ---- time, as Kubernetes writes it (RFC 3339, seconds, UTC)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format_time(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime(TIME_FORMAT)


def parse_time(text: str) -> float:
    return datetime.datetime.strptime(text, TIME_FORMAT).replace(tzinfo=datetime.UTC).timestamp()


def now() -> str:
    """The current time in RFC 3339."""
    return datetime.datetime.now(datetime.UTC).strftime(TIME_FORMAT)
