"""Pydantic models of the GeoDeployment API (spec and status).

These models are the one source of truth for the API: `api.crd` renders the
CustomResourceDefinition's OpenAPI schema from them (descriptions, defaults,
enums, bounds and CEL rules included), the handlers parse every object through
them, and the pure logic (`artifacts`, `builders`, `scaling`) takes them as
input. Python attributes are snake_case; the wire format is camelCase.

Rules the schema alone cannot say are written twice on purpose: once as CEL
(`x-kubernetes-validations`, enforced by the API server) and once as a pydantic
validator (so `geo render -f` and the unit tests refuse the same objects).
A test evaluates the CEL rules against the same cases to keep the two in step.
"""

from __future__ import annotations

import enum
import itertools
import re
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field
from pydantic.alias_generators import to_camel

from geo_operator.api import quantity

GROUP = "geo.ai"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "GeoDeployment"
PLURAL = "geodeployments"
SINGULAR = "geodeployment"
SHORT_NAME = "geod"

# Bounds that also keep the API server's CEL cost estimate finite.
MAX_ARTIFACTS = 16
MAX_NAME = 63
MAX_URI = 2048

DnsLabel = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_NAME,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    ),
]
# An object name such as a Secret's (DNS-1123 subdomain).
DnsSubdomain = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    ),
]


# Kubernetes' own syntax for what the pods carry (k8s.io/apimachinery validation):
# a label key or resource name (optional DNS-subdomain prefix, then a name of at most
# 63), a label value (at most 63); a quantity's is `api.quantity`'s (CEL's isQuantity).
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"


ResourceKind = Literal["limits", "requests"]


def _cel(rule: str, message: str, field_path: str | None = None) -> dict[str, pydantic.JsonValue]:
    """One `x-kubernetes-validations` entry."""
    entry: dict[str, pydantic.JsonValue] = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def _rules(*rules: dict[str, pydantic.JsonValue]) -> pydantic.ConfigDict:
    """A model's CEL rules, for its schema (`x-kubernetes-validations`)."""
    return pydantic.ConfigDict(json_schema_extra={"x-kubernetes-validations": list(rules)})


class _Model(pydantic.BaseModel):
    """Base: camelCase on the wire, unknown fields refused, defaults validated."""

    model_config = pydantic.ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        validate_default=True,
    )


class Precision(enum.StrEnum):
    """Numeric precision of an artifact's weights."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"
    FP8 = "fp8"
    INT5 = "int5"  # GGUF Q5_K
    INT4 = "int4"
    INT3 = "int3"  # GGUF Q3_K
    INT2 = "int2"  # GGUF Q2_K


class ArtifactFormat(enum.StrEnum):
    """How Triton serves an artifact (which backend)."""

    ONNX = "onnx"
    TENSORRT_PLAN = "tensorrt_plan"
    TORCHSCRIPT = "torchscript"
    # An ONNX file run by Triton's python backend with onnxruntime (the model.py
    # ships with the operator); works with a Triton that has only that backend.
    PYTHON = "python"
    # A GGUF file run by llama.cpp in Triton's python backend, decoupled (one response per
    # token; the model.py ships with the operator): a generative model (model.kind).
    GGUF = "gguf"


class ModelKind(enum.StrEnum):
    """What the model does: answers a request, or generates a stream of tokens."""

    PREDICTIVE = "predictive"
    GENERATIVE = "generative"


class SelectionPolicy(enum.StrEnum):
    """How the artifact is chosen among those that qualify."""

    BEST_SCORE = "best-score"
    SMALLEST = "smallest"
    FASTEST = "fastest"
    PINNED = "pinned"
    MIN_COST = "min-cost"


class EvaluationMetric(enum.StrEnum):
    """How the held-out set is scored."""

    ACCURACY = "accuracy"  # top-1 against the file's labels
    AGREEMENT = "agreement"  # top-1 equal to the reference artifact's, for sets without labels
    # A generative model's, on held-out text (llama.cpp's own yardsticks), as a score in 0..1:
    PERPLEXITY = "perplexity"  # the reference's perplexity / the candidate's (at most 1)
    KL_DIVERGENCE = "kl-divergence"  # exp(-KL(reference || candidate)), mean per token


_TEXT_METRICS = (EvaluationMetric.PERPLEXITY, EvaluationMetric.KL_DIVERGENCE)

# Triton's image when the spec names none; a generative model on a GPU gets the image with
# Triton's vLLM backend instead (builders.children.triton_image).
DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.08-py3"
VLLM_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.08-vllm-python-py3"
TRTLLM_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.08-trtllm-python-py3"

# The p99 latency objective when none is given (tuning's budget and the autoscaler's target).
DEFAULT_P99_LATENCY_MS = 200.0


class MetricsSourceKind(enum.StrEnum):
    """Where the autoscaler reads QPS and latency."""

    DIRECT = "direct"
    PROMETHEUS = "prometheus"


DataType = Literal[
    "TYPE_BOOL",
    "TYPE_UINT8",
    "TYPE_UINT16",
    "TYPE_UINT32",
    "TYPE_UINT64",
    "TYPE_INT8",
    "TYPE_INT16",
    "TYPE_INT32",
    "TYPE_INT64",
    "TYPE_FP16",
    "TYPE_FP32",
    "TYPE_FP64",
    "TYPE_STRING",
    "TYPE_BF16",
]


class TensorSpec(_Model):
    """One input or output tensor of the model, as Triton's config.pbtxt names it."""

    name: str = Field(
        min_length=1, max_length=MAX_NAME, description="Tensor name, as in the model file."
    )
    data_type: DataType = Field(description="Triton data type, e.g. TYPE_FP32.")
    dims: list[Annotated[int, Field(ge=-1)]] = Field(
        min_length=1,
        max_length=8,
        description="Shape of one item, without the batch dimension; -1 is variable.",
    )


class HardwareRequirements(_Model):
    """What an artifact needs from the node it runs on."""

    gpu_arch: list[Annotated[str, Field(max_length=MAX_NAME)]] | None = Field(
        default=None,
        max_length=16,
        description=(
            "GPU architectures that can run this artifact (e.g. hopper, ada, ampere). "
            "Unset: any hardware, CPU included."
        ),
    )


class Artifact(_Model):
    """One quantized variant of the model."""

    name: DnsLabel = Field(description="Unique name of the artifact, e.g. int8.")
    precision: Precision = Field(description="Numeric precision of the weights.")
    format: ArtifactFormat = Field(description="Serving format, i.e. which Triton backend runs it.")
    uri: str = Field(
        max_length=MAX_URI,
        pattern=r"^(https?|s3|pvc|file)://.+",
        description=(
            "Where the artifact file is: http(s)://, s3://BUCKET/KEY (see model.s3), "
            "pvc://CLAIM/path or file://."
        ),
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[a-f0-9]{64}$",
        description=(
            "The file's SHA-256 (64 lowercase hex digits, as `sha256sum` prints it): the init "
            "container verifies it before anything serves the file, and a mismatch fails the "
            "pod with both digests in Ready's message."
        ),
    )
    accuracy: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description=(
            "Declared accuracy on the user's held-out set, 0..1. Required unless "
            "model.evaluation measures it; a measurement, where one exists, wins."
        ),
    )
    perplexity: float | None = Field(
        default=None,
        ge=1,
        description=(
            "gguf: declared perplexity on held-out text (lower is better); for a generative "
            "model `accuracy` is the top-1 token agreement with the reference, 0..1."
        ),
    )
    kl_divergence: float | None = Field(
        default=None,
        ge=0,
        description="gguf: declared mean KL divergence from the reference's token distribution.",
    )
    size_bytes: int | None = Field(default=None, ge=0, description="Size of the artifact file.")
    latency_ms: float | None = Field(
        default=None,
        gt=0,
        description="Measured latency of one request in milliseconds, if known.",
    )
    relative_cost: float | None = Field(
        default=None,
        gt=0,
        description="Cost of serving relative to the other artifacts (1.0 = reference), if known.",
    )
    requires: HardwareRequirements | None = Field(
        default=None, description="Hardware the artifact needs; unset means it runs anywhere."
    )


class SelectionWeights(_Model):
    """Weights of the best-score policy (normalised terms, so they are comparable)."""

    model_config = _rules(
        _cel(
            "self.accuracy + self.latency + self.cost > 0.0",
            "selection.weights must not all be 0: the pick would be arbitrary",
        )
    )

    accuracy: float = Field(default=0.6, ge=0, le=1, description="Weight of accuracy.")
    latency: float = Field(default=0.3, ge=0, le=1, description="Weight of speed (1/latency).")
    cost: float = Field(default=0.1, ge=0, le=1, description="Weight of cheapness (1/cost).")

    @pydantic.model_validator(mode="after")
    def _some_weight(self) -> SelectionWeights:
        if self.accuracy + self.latency + self.cost <= 0:
            raise ValueError("selection.weights must not all be 0: the pick would be arbitrary")
        return self


class Selection(_Model):
    """How the operator picks the artifact to serve."""

    model_config = _rules(
        _cel(
            "self.policy != 'pinned' || has(self.pinned)",
            "selection.pinned must name an artifact when policy is pinned",
            ".pinned",
        )
    )

    policy: SelectionPolicy = Field(
        default=SelectionPolicy.BEST_SCORE,
        description=(
            "best-score: weighted accuracy, speed and cost; smallest: fewest bytes; "
            "fastest: lowest latency; pinned: the artifact named in `pinned`; min-cost: the "
            "one whose replicas for the expected load cost least per hour (objectives)."
        ),
    )
    min_accuracy_ratio: float = Field(
        default=0.95,
        ge=0,
        le=1,
        description="Accuracy floor, as a fraction of the best artifact's accuracy.",
    )
    weights: SelectionWeights = Field(
        default_factory=SelectionWeights, description="Weights of the best-score policy."
    )
    pinned: DnsLabel | None = Field(
        default=None, description="Name of the artifact to serve when policy is pinned."
    )

    @pydantic.model_validator(mode="after")
    def _pinned_named(self) -> Selection:
        if self.policy is SelectionPolicy.PINNED and self.pinned is None:
            raise ValueError("selection.pinned must name an artifact when policy is pinned")
        return self


class Evaluation(_Model):
    """The held-out set the tuning Job sends through each candidate, and how it is scored."""

    uri: str = Field(
        max_length=MAX_URI,
        pattern=r"^(https?|s3|pvc|file)://.+",
        description=(
            "Where the held-out set is (http(s)://, s3://, pvc://CLAIM/path or file://). A "
            "predictive model's: an .npz, one array per model input, named as the input, "
            "first axis the samples; plus `labels` (class index per sample) for metric "
            "accuracy. numpy: np.savez('heldout.npz', input=x, labels=y). A generative "
            "model's: UTF-8 text, scored in windows of the context length."
        ),
    )
    metric: EvaluationMetric = Field(
        default=EvaluationMetric.ACCURACY,
        description=(
            "accuracy: top-1 against `labels`; agreement: the fraction of top-1 answers "
            "(a generative model: next tokens) equal to the reference artifact's (no labels "
            "needed). A generative model's also: perplexity (scored as the reference's "
            "perplexity / the candidate's) and kl-divergence (scored as exp(-KL) from the "
            "reference), both on held-out text; a generative model can't use accuracy."
        ),
    )
    reference: DnsLabel | None = Field(
        default=None,
        description=(
            "agreement: the artifact whose answers count as right; unset: the one of "
            "highest precision (fp32 before fp16 before int8; first in spec order on a tie)."
        ),
    )
    output: str | None = Field(
        default=None,
        max_length=MAX_NAME,
        description=(
            "The output tensor scored (class scores or a class index); unset: the first "
            "output with more than one value per sample, else the first output."
        ),
    )
    tolerance: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description=(
            "A declared accuracy above the measured one by more than this is contradicted: "
            "a Warning Event and a line in ArtifactSelected."
        ),
    )


class S3Storage(_Model):
    """Where s3:// URIs are read from, and with which keys (the init containers' fetch)."""

    endpoint: str | None = Field(
        default=None,
        max_length=MAX_URI,
        pattern=r"^https?://[^/?#]+/?$",
        description=(
            "An S3-compatible server (MinIO, Ceph RGW, SeaweedFS, S3Proxy; Cloud Storage's "
            "XML API at https://storage.googleapis.com with HMAC keys), read path-style: "
            "ENDPOINT/BUCKET/KEY. Unset: AWS S3, https://BUCKET.s3.REGION.amazonaws.com/KEY."
        ),
    )
    region: str = Field(
        default="us-east-1",
        min_length=1,
        max_length=64,
        pattern=r"^[a-z0-9][-a-z0-9]*$",
        description="The region requests are signed for (AWS Signature Version 4).",
    )
    secret_name: DnsSubdomain | None = Field(
        default=None,
        description=(
            "A Secret in the GeoDeployment's namespace with the keys AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (and, optional, AWS_SESSION_TOKEN): the kubelet gives them "
            "to the fetching init containers as environment variables; they are never in a "
            "ConfigMap, and the operator never reads them. Unset: unsigned requests (a "
            "public bucket)."
        ),
    )


GENERATIVE_METRIC_MESSAGE = (
    "a generative model's model.evaluation.metric is agreement, perplexity or kl-divergence "
    "(accuracy needs labels; held-out text has none): set it"
)
PREDICTIVE_METRIC_MESSAGE = (
    "model.evaluation.metric perplexity and kl-divergence score held-out text: a generative "
    "model's (model.kind: generative); a predictive model's is accuracy or agreement"
)


class ModelSpec(_Model):
    """The model to serve and its quantized artifacts."""

    model_config = _rules(
        _cel(
            "!has(self.selection) || !has(self.selection.pinned) || "
            "self.artifacts.exists(a, a.name == self.selection.pinned)",
            "selection.pinned must be the name of one of model.artifacts",
            ".selection.pinned",
        ),
        _cel(
            "(has(self.kind) && self.kind == 'generative') || "
            "(has(self.inputs) && size(self.inputs) > 0 && "
            "has(self.outputs) && size(self.outputs) > 0)",
            "a predictive model needs model.inputs and model.outputs",
            ".inputs",
        ),
        _cel(
            "!has(self.kind) || self.kind != 'generative' || "
            "((!has(self.inputs) || size(self.inputs) == 0) && "
            "(!has(self.outputs) || size(self.outputs) == 0))",
            "model.inputs and model.outputs do not apply to a generative model: its tensors "
            "are those of Triton's LLM backends (text_input ... text_output)",
            ".inputs",
        ),
        _cel(
            "(has(self.kind) && self.kind == 'generative') == "
            "self.artifacts.all(a, a.format == 'gguf')",
            "a generative model's artifacts are all format gguf, and gguf is for "
            "generative models only (model.kind: generative)",
            ".artifacts",
        ),
        _cel(
            "has(self.evaluation) || self.artifacts.all(a, has(a.accuracy))",
            "every artifact needs an accuracy unless model.evaluation measures it",
            ".artifacts",
        ),
        _cel(
            "!has(self.evaluation) || !has(self.evaluation.reference) || "
            "self.artifacts.exists(a, a.name == self.evaluation.reference)",
            "evaluation.reference must be the name of one of model.artifacts",
            ".evaluation.reference",
        ),
        _cel(
            "!has(self.kind) || self.kind != 'generative' || !has(self.evaluation) || "
            "(has(self.evaluation.metric) && self.evaluation.metric != 'accuracy')",
            GENERATIVE_METRIC_MESSAGE,
            ".evaluation.metric",
        ),
        _cel(
            "(has(self.kind) && self.kind == 'generative') || !has(self.evaluation) || "
            "!has(self.evaluation.metric) || "
            "(self.evaluation.metric != 'perplexity' && self.evaluation.metric != 'kl-divergence')",
            PREDICTIVE_METRIC_MESSAGE,
            ".evaluation.metric",
        ),
    )

    name: DnsLabel = Field(description="Model name in Triton's repository.")
    kind: ModelKind = Field(
        default=ModelKind.PREDICTIVE,
        description=(
            "predictive: a request in, an answer out (inputs and outputs as declared); "
            "generative: a prompt in, a stream of tokens out, served by llama.cpp from gguf "
            "artifacts with the tensors of Triton's LLM backends (text_input, stream, "
            "sampling_parameters, max_tokens in; text_output out), so no inputs or outputs "
            "are declared."
        ),
    )
    inputs: list[TensorSpec] = Field(
        default_factory=list,
        max_length=16,
        description="Input tensors of the model (predictive: at least one).",
    )
    outputs: list[TensorSpec] = Field(
        default_factory=list,
        max_length=16,
        description="Output tensors of the model (predictive: at least one).",
    )
    artifacts: list[Artifact] = Field(
        min_length=1,
        max_length=MAX_ARTIFACTS,
        description="The quantized variants of the model (fp32, fp16, int8, ...); names unique.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )
    selection: Selection = Field(
        default_factory=Selection, description="How the artifact to serve is chosen."
    )
    evaluation: Evaluation | None = Field(
        default=None,
        description=(
            "A held-out set to measure each candidate's accuracy on (in its tuning Job); "
            "unset: the declared accuracies are trusted."
        ),
    )
    s3: S3Storage | None = Field(
        default=None,
        description="Where s3:// artifact and evaluation URIs are read from, and the keys.",
    )

    @property
    def generative(self) -> bool:
        return self.kind is ModelKind.GENERATIVE

    @pydantic.model_validator(mode="after")
    def _artifacts_consistent(self) -> ModelSpec:
        if self.generative:
            if self.inputs or self.outputs:
                raise ValueError(
                    "model.inputs and model.outputs do not apply to a generative model: its "
                    "tensors are those of Triton's LLM backends (text_input ... text_output)"
                )
        elif not self.inputs or not self.outputs:
            raise ValueError("a predictive model needs model.inputs and model.outputs")
        formats = {a.name: a.format for a in self.artifacts}
        wrong = sorted(
            n for n, f in formats.items() if (f is ArtifactFormat.GGUF) != self.generative
        )
        if wrong:
            raise ValueError(
                "a generative model's artifacts are all format gguf, and gguf is for generative "
                f"models only (model.kind: generative); model.kind is {self.kind}, "
                f"artifacts {wrong} are {sorted({str(formats[n]) for n in wrong})}"
            )
        if self.evaluation is not None:
            metric = self.evaluation.metric
            if self.generative and metric is EvaluationMetric.ACCURACY:
                raise ValueError(GENERATIVE_METRIC_MESSAGE)
            if not self.generative and metric in _TEXT_METRICS:
                raise ValueError(f"{PREDICTIVE_METRIC_MESSAGE} (got {metric})")
        names = [a.name for a in self.artifacts]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model.artifacts names must be unique, repeated: {duplicates}")
        pinned = self.selection.pinned
        if pinned is not None and pinned not in names:
            raise ValueError(
                f"selection.pinned must be the name of one of model.artifacts; "
                f"{pinned!r} is not in {names}"
            )
        if self.evaluation is None:
            undeclared = [a.name for a in self.artifacts if a.accuracy is None]
            if undeclared:
                raise ValueError(
                    "every artifact needs an accuracy unless model.evaluation measures it; "
                    f"missing for {undeclared}"
                )
        elif self.evaluation.reference is not None and self.evaluation.reference not in names:
            raise ValueError(
                f"evaluation.reference must be the name of one of model.artifacts; "
                f"{self.evaluation.reference!r} is not in {names}"
            )
        return self


class TimeoutAction(enum.StrEnum):
    """What Triton does with a request that waited past its queue's timeout."""

    REJECT = "REJECT"  # answer at once with an error (counted as failure reason REJECTED)
    DELAY = "DELAY"  # keep it, behind every request that has not timed out


# Bounds of the queue levers (the API server's CEL cost estimate needs finite lists).
MAX_PRIORITY_LEVELS = 16
MAX_TIMEOUT_MICROSECONDS = 3_600_000_000


class QueuePolicy(_Model):
    """A queue of Triton's dynamic batcher: how many requests may wait and for how long."""

    max_queue_size: int = Field(
        default=0,
        ge=0,
        le=1_000_000,
        description=(
            "Most requests waiting in the queue; one past it is refused at once (HTTP 503 "
            "'Exceeds maximum queue size'). 0: unbounded. Triton 2.51 counts these refusals "
            "in no metric, so the autoscaler reads a full queue as saturation (see README)."
        ),
    )
    default_timeout_microseconds: int = Field(
        default=0,
        ge=0,
        le=MAX_TIMEOUT_MICROSECONDS,
        description=(
            "How long a request may wait before timeoutAction applies; 0: no timeout. "
            "Timed-out requests are counted as nv_inference_request_failure{reason=REJECTED}, "
            "which the autoscaler adds to the demand."
        ),
    )
    timeout_action: TimeoutAction = Field(
        default=TimeoutAction.REJECT,
        description="REJECT answers a timed-out request with an error; DELAY serves it last.",
    )
    allow_timeout_override: bool = Field(
        default=False,
        description="Let a request ask for a shorter timeout than defaultTimeoutMicroseconds.",
    )


class PriorityQueuePolicy(QueuePolicy):
    """The queue policy of one priority level (overrides defaultQueuePolicy for it)."""

    level: int = Field(
        ge=1, le=MAX_PRIORITY_LEVELS, description="The priority level (1 is the highest)."
    )


class DynamicBatching(_Model):
    """Triton's dynamic batcher."""

    model_config = _rules(
        _cel(
            "self.defaultPriorityLevel <= self.priorityLevels",
            "dynamicBatching.defaultPriorityLevel must be <= priorityLevels",
            ".defaultPriorityLevel",
        ),
        _cel(
            "!has(self.priorityQueuePolicies) || "
            "self.priorityQueuePolicies.all(p, p.level <= self.priorityLevels)",
            "every dynamicBatching.priorityQueuePolicies level must be <= priorityLevels",
            ".priorityQueuePolicies",
        ),
        _cel(
            "!has(self.priorityQueuePolicies) || self.priorityQueuePolicies.all(p, "
            "self.priorityQueuePolicies.exists_one(q, q.level == p.level))",
            "dynamicBatching.priorityQueuePolicies has one entry per level at most",
            ".priorityQueuePolicies",
        ),
    )

    enabled: bool = Field(default=True, description="Turn Triton's dynamic batcher on.")
    max_queue_delay_microseconds: int = Field(
        default=100,
        ge=0,
        le=10_000_000,
        description="How long a request may wait for others to form a batch.",
    )
    preferred_batch_sizes: list[Annotated[int, Field(ge=1)]] | None = Field(
        default=None, max_length=16, description="Batch sizes the batcher should aim for."
    )
    priority_levels: int = Field(
        default=0,
        ge=0,
        le=MAX_PRIORITY_LEVELS,
        description=(
            "Priority levels of the queue (1 is served first); 0: one queue, no priorities. "
            "A request picks its level with the 'priority' parameter of the inference request."
        ),
    )
    default_priority_level: int = Field(
        default=0,
        ge=0,
        le=MAX_PRIORITY_LEVELS,
        description=(
            "The level of a request that names none; 0: the lowest (= priorityLevels), so "
            "traffic must ask to go first."
        ),
    )
    default_queue_policy: QueuePolicy | None = Field(
        default=None,
        description="The queue policy of every level without its own: bounds and timeouts.",
    )
    priority_queue_policies: list[PriorityQueuePolicy] | None = Field(
        default=None,
        max_length=MAX_PRIORITY_LEVELS,
        description="Queue policies of single priority levels.",
    )

    @pydantic.model_validator(mode="after")
    def _levels(self) -> DynamicBatching:
        if self.default_priority_level > self.priority_levels:
            raise ValueError(
                f"dynamicBatching.defaultPriorityLevel {self.default_priority_level} must be "
                f"<= priorityLevels {self.priority_levels}"
            )
        levels = [p.level for p in self.priority_queue_policies or ()]
        beyond = [level for level in levels if level > self.priority_levels]
        if beyond:
            raise ValueError(
                f"every dynamicBatching.priorityQueuePolicies level must be <= priorityLevels "
                f"{self.priority_levels}; {beyond} is not"
            )
        if len(set(levels)) != len(levels):
            raise ValueError(
                "dynamicBatching.priorityQueuePolicies has one entry per level at most; "
                f"levels {levels}"
            )
        return self


class ResponseCache(_Model):
    """Triton's response cache: an identical request is answered from memory."""

    enabled: bool = Field(
        default=False,
        description=(
            "Cache this model's responses (the model config's response_cache and the "
            "server's --cache-config local,size=...). Triton does not cache decoupled or "
            "sequence models, an ensemble's top level, or outputs held in GPU memory. With "
            "the cache on Triton publishes no request-latency summary: the autoscaler's p99 "
            "is then the sum of the queue and compute summaries' p99s (see README)."
        ),
    )
    size_bytes: int = Field(
        default=64 * 2**20,
        ge=2**20,
        le=64 * 2**30,
        description="Memory of the server's local cache, bytes (1 MiB to 64 GiB).",
    )


class InstanceKind(enum.StrEnum):
    """Where Triton runs a model instance."""

    CPU = "CPU"
    GPU = "GPU"
    AUTO = "AUTO"  # GPU when the server sees one, else CPU


class RateLimiterResource(_Model):
    """A resource an instance needs from Triton's rate limiter to run."""

    name: str = Field(
        min_length=1,
        max_length=MAX_NAME,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Resource name (any label shared by the instances that compete for it).",
    )
    count: int = Field(ge=1, le=1_000_000, description="Units an execution holds.")
    global_: bool = Field(
        default=False,
        alias="global",
        description="One pool for the whole server instead of one per device.",
    )


class RateLimiter(_Model):
    """Triton's rate limiter for one instance group (the server runs with
    --rate-limit=execution_count when any group has one)."""

    resources: list[RateLimiterResource] = Field(
        default_factory=list, max_length=8, description="Resources each execution holds."
    )
    priority: int = Field(
        default=1,
        ge=1,
        le=1_000_000,
        description="Weight against other instances competing for the same resources.",
    )


class InstanceGroup(_Model):
    """One group of model instances in each Triton server."""

    model_config = _rules(
        _cel(
            "!has(self.gpus) || (has(self.kind) && self.kind == 'GPU')",
            "instanceGroups[].gpus needs kind GPU",
            ".gpus",
        ),
    )

    count: int = Field(default=1, ge=1, le=64, description="Instances in the group.")
    kind: InstanceKind | None = Field(
        default=None,
        description="CPU, GPU or AUTO; unset: GPU when the pods ask for nvidia.com/gpu, else CPU.",
    )
    gpus: list[Annotated[int, Field(ge=0, le=63)]] | None = Field(
        default=None,
        max_length=16,
        description="GPU ids the group's instances run on (kind GPU); unset: every GPU.",
    )
    rate_limiter: RateLimiter | None = Field(
        default=None, description="The rate limiter's resources and priority for the group."
    )

    @pydantic.model_validator(mode="after")
    def _gpus_need_gpu(self) -> InstanceGroup:
        if self.gpus is not None and self.kind is not InstanceKind.GPU:
            raise ValueError("instanceGroups[].gpus needs kind GPU")
        return self


class WarmupData(enum.StrEnum):
    """What a warmup request carries."""

    ZERO = "zero"
    RANDOM = "random"
    FILE = "file"  # each input's raw bytes from `files`


class Warmup(_Model):
    """A warmup sample: Triton runs it on every instance before the model is ready."""

    model_config = _rules(
        _cel(
            "(self.data == 'file') == has(self.files)",
            "triton.warmup[].files is needed with data file, and only then",
            ".files",
        )
    )

    batch_size: int = Field(
        default=1,
        ge=1,
        le=4096,
        description=(
            "Batch size of the sample (capped at the max_batch_size in use, e.g. a tuned one)."
        ),
    )
    count: int = Field(default=1, ge=1, le=1000, description="How many times it runs.")
    data: WarmupData = Field(
        default=WarmupData.ZERO,
        description=(
            "zero or random values of each input's type and dims (a variable dim, -1, is 1), "
            "or file: each input's raw bytes (row-major, one sample of its dims, no batch "
            "dimension) from files."
        ),
    )
    files: dict[str, Annotated[str, Field(min_length=1, max_length=MAX_URI)]] | None = Field(
        default=None,
        max_length=16,
        description=(
            "data file: a URI per model input (http(s)://, file://, pvc://, as artifacts), "
            "fetched by the init container beside the model; a file of the wrong size "
            "fails the model's load (the pods never get ready: see Ready's message)."
        ),
    )

    @pydantic.model_validator(mode="after")
    def _files_for_file_data(self) -> Warmup:
        if (self.data is WarmupData.FILE) != (self.files is not None):
            raise ValueError("triton.warmup[].files is needed with data file, and only then")
        return self


class GpuAccelerator(enum.StrEnum):
    """ONNX Runtime's execution accelerator on a GPU."""

    NONE = "none"  # ONNX Runtime's default (its CUDA execution provider)
    TENSORRT = "tensorrt"
    CUDA = "cuda"


class PrecisionMode(enum.StrEnum):
    """The precision TensorRT builds its engine in."""

    FP32 = "FP32"
    FP16 = "FP16"
    INT8 = "INT8"


class GpuOptimization(_Model):
    """GPU-only levers; rendered only when the pods ask for nvidia.com/gpu."""

    accelerator: GpuAccelerator = Field(
        default=GpuAccelerator.NONE,
        description=(
            "For onnx artifacts: ONNX Runtime's gpu_execution_accelerator (tensorrt or cuda)."
        ),
    )
    precision_mode: PrecisionMode = Field(
        default=PrecisionMode.FP16,
        description="TensorRT accelerator's precision_mode (FP32, FP16 or INT8).",
    )
    max_workspace_size_bytes: int | None = Field(
        default=None,
        ge=2**20,
        le=64 * 2**30,
        description="TensorRT accelerator's max_workspace_size_bytes; unset: Triton's default.",
    )
    cuda_graphs: bool = Field(
        default=False,
        description="For tensorrt_plan artifacts: capture CUDA graphs (optimization.cuda.graphs).",
    )


class PodSecurity(_Model):
    """How the Triton pods run. The defaults pass the `restricted` Pod Security Standard:
    a non-root user, no privilege escalation, every capability dropped, the runtime's
    default seccomp profile and a read-only root filesystem (Triton writes only to its
    model repository and /tmp, both emptyDirs)."""

    run_as_user: int = Field(
        default=1000,
        ge=1,
        le=2147483647,
        description="UID of the Triton containers (1000 is the NGC image's triton-server).",
    )
    run_as_group: int = Field(
        default=1000, ge=0, le=2147483647, description="GID of the Triton containers."
    )
    fs_group: int | None = Field(
        default=1000,
        ge=0,
        le=2147483647,
        description="Group that owns the pod's volumes (null: the volumes' own).",
    )
    read_only_root_filesystem: bool = Field(
        default=True,
        description="Mount the image read-only (false for an image that writes elsewhere).",
    )


class EngineSpec(_Model):
    """The generative engine's levers (llama.cpp in Triton's python backend)."""

    model_config = _rules(
        _cel(
            "self.backend != 'tensorrtllm' || has(self.tensorrtllmEngine)",
            "triton.engine.backend tensorrtllm needs triton.engine.tensorrtllmEngine "
            "(a trtllm-build engine directory; a GGUF file is not an engine)",
            ".tensorrtllmEngine",
        ),
        _cel(
            "!has(self.tensorrtllmEngine) || self.backend == 'tensorrtllm'",
            "triton.engine.tensorrtllmEngine applies only to triton.engine.backend tensorrtllm",
            ".tensorrtllmEngine",
        ),
    )

    backend: Literal["vllm", "tensorrtllm"] = Field(
        default="vllm",
        description=(
            "On a GPU, the Triton backend that serves: vllm (Triton's vLLM backend, the "
            "artifact's GGUF) or tensorrtllm (Triton's TensorRT-LLM backend, the built engine "
            "in tensorrtllmEngine). On CPU llama.cpp serves either way."
        ),
    )
    tensorrtllm_engine: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description=(
            "URI of a TensorRT-LLM engine directory archive (trtllm-build's output for the "
            "target GPU, with the model's Hugging Face tokenizer under tokenizer/)."
        ),
    )
    slots: int = Field(
        default=4,
        ge=0,
        le=64,
        description=(
            "Sequences decoded together in one batch per step (continuous batching), each "
            "with its own KV cache of contextLength tokens: a request beyond them waits. 0: "
            "measure it: each candidate's tuning Job tries batchTuning.candidates (up to 64) "
            "as slots and keeps the highest token throughput whose time to first token and "
            "inter-token p99 stay within the objectives."
        ),
    )
    context_length: int | None = Field(
        default=None,
        ge=16,
        le=131072,
        description="Tokens of one sequence (prompt and generated); unset: the model's own.",
    )
    max_tokens_cap: int | None = Field(
        default=None,
        ge=1,
        le=131072,
        description="The most max_tokens a request may ask; unset: the context length.",
    )
    batch_tokens: int = Field(
        default=512,
        ge=16,
        le=8192,
        description="Tokens one llama_decode step takes (prompt chunks and decoding tokens).",
    )
    threads: int = Field(default=2, ge=1, le=256, description="llama.cpp's CPU threads.")

    @pydantic.model_validator(mode="after")
    def _trtllm_engine(self) -> EngineSpec:
        if self.backend == "tensorrtllm" and self.tensorrtllm_engine is None:
            raise ValueError(
                "triton.engine.backend tensorrtllm needs triton.engine.tensorrtllmEngine "
                "(a trtllm-build engine directory; a GGUF file is not an engine)"
            )
        if self.tensorrtllm_engine is not None and self.backend != "tensorrtllm":
            raise ValueError(
                "triton.engine.tensorrtllmEngine applies only to triton.engine.backend tensorrtllm"
            )
        return self


class TritonSpec(_Model):
    """The Triton Inference Server that serves the model."""

    model_config = _rules(
        _cel(
            "!has(self.instanceGroups) || self.instanceCount == 1",
            "set triton.instanceGroups or triton.instanceCount, not both",
            ".instanceGroups",
        ),
        _cel(
            "!has(self.resources) || self.resources.all(k, k == 'limits' || k == 'requests')",
            "triton.resources has only limits and requests",
            ".resources",
        ),
        _cel(
            "!has(self.resources) || self.resources.all(k, self.resources[k].all(r, "
            "isQuantity(string(self.resources[k][r])) && "
            "!string(self.resources[k][r]).startsWith('-')))",
            "triton.resources values must be non-negative quantities, e.g. 500m, 2Gi or 1",
            ".resources",
        ),
        _cel(
            "self.maxBatchSize == 0 || !has(self.dynamicBatching) || "
            "!has(self.dynamicBatching.preferredBatchSizes) || "
            "self.dynamicBatching.preferredBatchSizes.all(b, b <= self.maxBatchSize)",
            "triton.dynamicBatching.preferredBatchSizes must be <= triton.maxBatchSize",
            ".dynamicBatching.preferredBatchSizes",
        ),
        _cel(
            "!has(self.engine) || !has(self.engine.backend) || "
            "self.engine.backend != 'tensorrtllm' || (has(self.resources) && "
            "'limits' in self.resources && 'nvidia.com/gpu' in self.resources.limits)",
            "triton.engine.backend tensorrtllm needs a GPU: "
            "triton.resources.limits['nvidia.com/gpu']",
            ".engine.backend",
        ),
    )

    image: str = Field(
        default=DEFAULT_TRITON_IMAGE,
        min_length=1,
        max_length=512,
        description="Triton container image.",
    )
    engine: EngineSpec | None = Field(
        default=None,
        description="A generative model's engine levers (slots, context); unset: defaults.",
    )
    max_batch_size: int = Field(
        default=0,
        ge=0,
        le=4096,
        description=(
            "Triton max_batch_size; 0 asks the operator to tune it by measurement "
            "(a generative model: 0, its engine batches its slots)."
        ),
    )
    dynamic_batching: DynamicBatching = Field(
        default_factory=DynamicBatching,
        description="Triton's dynamic batcher: queue delay, priorities, queue bounds.",
    )
    instance_count: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Model instances per Triton server (one group; see instanceGroups).",
    )
    instance_groups: list[InstanceGroup] | None = Field(
        default=None,
        min_length=1,
        max_length=8,
        description="Triton's instance groups, when one group of instanceCount is not enough.",
    )
    response_cache: ResponseCache = Field(
        default_factory=ResponseCache, description="Triton's response cache."
    )
    warmup: list[Warmup] | None = Field(
        default=None,
        max_length=8,
        description=(
            "Warmup samples: a new pod reports ready only after they ran, so a ready "
            "replica is a fast one."
        ),
    )
    gpu: GpuOptimization = Field(
        default_factory=GpuOptimization,
        description="GPU execution accelerators and CUDA graphs (pods with nvidia.com/gpu).",
    )
    # Map keys can't be bounded in a structural schema, so a CEL rule on them would be
    # too costly for the API server: resource names and label keys are checked by the
    # operator (Ready=False InvalidSpec, the key named); values at admission.
    resources: dict[
        ResourceKind,
        Annotated[
            dict[str, int | Annotated[str, Field(max_length=64)]],
            Field(max_length=16),
        ],
    ] = Field(
        default_factory=dict,
        max_length=2,
        description="Container resources: {limits: {...}, requests: {...}}, e.g. nvidia.com/gpu.",
    )
    security_context: PodSecurity = Field(
        default_factory=PodSecurity,
        description=(
            "User, group and root filesystem of the Triton and tuning pods; the rest of "
            "the restricted profile (non-root, no escalation, no capabilities, "
            "RuntimeDefault seccomp) is fixed."
        ),
    )
    node_selector: dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]] = Field(
        default_factory=dict,
        max_length=32,
        description=(
            "Node selector for the Triton pods; nvidia.com/gpu.family (e.g. hopper) "
            "tells artifact selection which GPU the pods land on."
        ),
    )

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> TritonSpec:
        if self.instance_groups is not None and self.instance_count != 1:
            raise ValueError("set triton.instanceGroups or triton.instanceCount, not both")
        for kind, values in self.resources.items():
            for name, value in values.items():
                if not re.match(QUALIFIED_NAME, name):
                    raise ValueError(
                        f"triton.resources names must be resource names, e.g. cpu or "
                        f"nvidia.com/gpu; {kind}.{name!r} is not"
                    )
                if not quantity.is_non_negative(value):
                    raise ValueError(
                        "triton.resources values must be non-negative quantities, e.g. 500m, "
                        f"2Gi or 1; {kind}.{name}: {value!r} is not"
                    )
        for key, label in self.node_selector.items():
            if not re.match(QUALIFIED_NAME, key) or not re.match(LABEL_VALUE, label):
                raise ValueError(
                    "triton.nodeSelector needs label keys (prefix/name) and values of at most "
                    f"63 characters; {key!r}: {label!r} is not"
                )
        # (the CRD's rule checks the limit is there; a zero one is the operator's to refuse:
        # reading the value in CEL costs more than the API server's budget allows)
        gpus = self.resources.get("limits", {}).get("nvidia.com/gpu")
        if (
            self.engine is not None
            and self.engine.backend == "tensorrtllm"
            and (gpus is None or quantity.parse(gpus) <= 0)
        ):
            raise ValueError(
                "triton.engine.backend tensorrtllm needs a GPU: "
                "triton.resources.limits['nvidia.com/gpu']"
            )
        memory = self.resources.get("limits", {}).get("memory")
        cache = self.response_cache
        if cache.enabled and memory is not None and cache.size_bytes >= quantity.parse(memory):
            raise ValueError(
                f"triton.responseCache.sizeBytes {cache.size_bytes} "
                f"({cache.size_bytes / 2**30:.3g} GiB) must be below "
                f"triton.resources.limits.memory {memory} "
                f"({quantity.parse(memory) / 2**30:.3g} GiB): Triton reserves the whole cache "
                "at start, with the model beside it, and the kernel kills the pod over its limit"
            )
        preferred = self.dynamic_batching.preferred_batch_sizes or ()
        if self.max_batch_size and any(b > self.max_batch_size for b in preferred):
            raise ValueError(
                f"triton.dynamicBatching.preferredBatchSizes {list(preferred)} must be <= "
                f"triton.maxBatchSize {self.max_batch_size}"
            )
        return self

    def instances(self) -> int:
        """Model instances per server: the groups' counts, or instanceCount."""
        groups = self.instance_groups
        return sum(g.count for g in groups) if groups else self.instance_count

    def queue_bound(self) -> int | None:
        """Most requests one server's queues hold (every level bounded), else None."""
        batching = self.dynamic_batching
        if not batching.enabled:
            return None
        own = {p.level: p for p in batching.priority_queue_policies or ()}
        default = batching.default_queue_policy
        levels = range(1, batching.priority_levels + 1) if batching.priority_levels else [0]
        bounds = [(own.get(level) or default) for level in levels]
        if any(b is None or b.max_queue_size == 0 for b in bounds):
            return None
        return sum(b.max_queue_size for b in bounds if b is not None)

    def unbounded(self) -> TritonSpec:
        """The same server with no queue bounds or timeouts (priorities stay)."""
        batching = self.dynamic_batching.model_copy(
            update={"default_queue_policy": None, "priority_queue_policies": None}
        )
        return self.model_copy(update={"dynamic_batching": batching})

    def rate_limited(self) -> bool:
        """Whether any instance group uses the rate limiter (the server's --rate-limit)."""
        return any(g.rate_limiter is not None for g in self.instance_groups or ())


class BatchTuning(_Model):
    """How max_batch_size is tuned when triton.maxBatchSize is 0."""

    candidates: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default=[1, 2, 4, 8, 16, 32, 64],
        min_length=1,
        max_length=32,
        description="max_batch_size values the tuner may choose from.",
    )
    latency_budget_ms: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Deprecated: set objectives.p99LatencyMs. p99 latency the tuned configuration "
            "must stay within; used only when objectives.p99LatencyMs is unset."
        ),
    )
    queue_delays_microseconds: list[Annotated[int, Field(ge=0, le=1_000_000)]] = Field(
        default=[0, 100, 500, 2000],
        min_length=1,
        max_length=16,
        description=(
            "Dynamic batcher max_queue_delay_microseconds values the tuner may choose from "
            "(ignored when triton.dynamicBatching.enabled is false)."
        ),
    )
    concurrency: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        default=[1, 4, 16, 32],
        min_length=1,
        max_length=16,
        description="In-flight requests of each load level the tuner drives.",
    )
    seconds_per_level: float = Field(
        default=3.0, gt=0, le=300, description="How long each load level is driven."
    )
    parallelism: int = Field(
        default=1,
        ge=1,
        le=16,
        description=(
            "Tuning Jobs running at once for this GeoDeployment. 1 (the default) measures "
            "one candidate at a time, so candidates never contend for one node's CPUs or GPU "
            "and their figures compare; raise it when each tuning pod gets its own hardware."
        ),
    )
    timeout_seconds: int = Field(
        default=1800,
        ge=30,
        le=86400,
        description="The tuning Job's activeDeadlineSeconds: past it, the run counts as failed.",
    )
    retry_backoff_seconds: int = Field(
        default=60,
        ge=1,
        le=86400,
        description=(
            "Wait before retrying a failed tuning run; doubles after each failure, "
            "up to 64 times this."
        ),
    )


class MetricsSource(_Model):
    """Where the autoscaler reads its metrics."""

    source: MetricsSourceKind = Field(
        default=MetricsSourceKind.DIRECT,
        description=(
            "direct: the operator scrapes each ready pod's :8002/metrics itself; "
            "prometheus: it queries prometheusUrl."
        ),
    )
    prometheus_url: str | None = Field(
        default=None,
        max_length=MAX_URI,
        pattern=r"^https?://.+",
        description="Prometheus base URL, e.g. http://prometheus.monitoring:9090.",
    )
    rate_window_seconds: int = Field(
        default=60,
        ge=2,
        le=3600,
        description=(
            "prometheus: the rate() window for QPS; at least 4 × your scrape interval. "
            "Shorter reacts faster, longer is smoother."
        ),
    )


class Autoscaling(_Model):
    """The QPS and p99 latency autoscaler."""

    model_config = _rules(
        _cel(
            "self.minReplicas <= self.maxReplicas",
            "autoscaling.minReplicas must be <= autoscaling.maxReplicas",
            ".minReplicas",
        ),
        _cel(
            "self.scaleInRatio < self.scaleOutRatio",
            "autoscaling.scaleInRatio must be < autoscaling.scaleOutRatio",
            ".scaleInRatio",
        ),
        _cel(
            "self.metrics.source != 'prometheus' || has(self.metrics.prometheusUrl)",
            "autoscaling.metrics.prometheusUrl is required when source is prometheus",
            ".metrics.prometheusUrl",
        ),
    )

    enabled: bool = Field(
        default=True, description="Scale on load; when false spec.replicas (kubectl scale) rules."
    )
    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest replicas.")
    max_replicas: int = Field(default=10, ge=1, le=1000, description="Most replicas.")
    target_qps_per_replica: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Requests per second one replica should carry. Unset: the chosen artifact's "
            "measured throughput within the p99 objective × targetUtilization (corrected "
            "by what production shows); set: this number wins."
        ),
    )
    target_utilization: float = Field(
        default=0.7,
        gt=0,
        le=1,
        description=(
            "With targetQpsPerReplica unset: the fraction of a replica's measured capacity "
            "to aim for (headroom for bursts and start-up; Knative's KPA uses 0.7)."
        ),
    )
    target_p99_latency_ms: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Deprecated: set objectives.p99LatencyMs. The autoscaler's p99 target; used only "
            "when objectives.p99LatencyMs is unset."
        ),
    )
    scale_out_ratio: float = Field(
        default=1.5, gt=0, description="Scale out when QPS per replica exceeds target times this."
    )
    scale_in_ratio: float = Field(
        default=0.7, gt=0, description="Scale in when QPS per replica is below target times this."
    )
    latency_headroom: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Scale in only when p99 is below targetP99LatencyMs times this.",
    )
    interval_seconds: float = Field(
        default=15, ge=1, le=3600, description="Seconds between two decisions."
    )
    scale_in_stabilization_seconds: float = Field(
        default=300,
        ge=0,
        le=3600,
        description=(
            "Scale in only after this long with no scale-out and no blind tick, to the "
            "highest replicas any tick in the window needed."
        ),
    )
    violation_cost_replica_seconds: float = Field(
        default=20,
        ge=0,
        le=1e6,
        description=(
            "What one second over the p99 objective is worth, in replica-seconds: the price "
            "of keeping replicas warm between bursts. When bursts recur (the loop saw at "
            "least two scale-outs for load), scale-in keeps the last bursts' replicas while "
            "keeping them until the next burst costs less than the seconds over SLO a "
            "cold start would cost (about one measured pod start-up) times this. 0: never "
            "keep replicas past the stabilization window."
        ),
    )
    metrics: MetricsSource = Field(
        default_factory=MetricsSource, description="Where QPS and latency are read."
    )

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.minReplicas must be <= autoscaling.maxReplicas")
        if self.scale_in_ratio >= self.scale_out_ratio:
            raise ValueError("autoscaling.scaleInRatio must be < autoscaling.scaleOutRatio")
        if (
            self.metrics.source is MetricsSourceKind.PROMETHEUS
            and self.metrics.prometheus_url is None
        ):
            raise ValueError(
                "autoscaling.metrics.prometheusUrl is required when source is prometheus"
            )
        return self


class Prices(_Model):
    """What one replica's resources cost per hour, for the min-cost policy. The defaults
    are round on-demand cloud figures; put your own."""

    cpu_core_hour: float = Field(default=0.04, ge=0, description="One CPU core for an hour.")
    memory_gib_hour: float = Field(
        default=0.005, ge=0, description="One GiB of memory for an hour."
    )
    gpu_hour: float = Field(default=2.5, ge=0, description="One nvidia.com/gpu for an hour.")


class Objectives(_Model):
    """What the user wants; GEO measures the rest and chooses (latency, load, cost)."""

    p99_latency_ms: float | None = Field(
        default=None,
        gt=0,
        description=(
            "The p99 latency objective (SLO) in milliseconds: the tuning budget and the "
            "autoscaler's target. Unset: batchTuning.latencyBudgetMs / "
            "autoscaling.targetP99LatencyMs (deprecated), else 200."
        ),
    )
    time_to_first_token_p99_ms: float | None = Field(
        default=None,
        gt=0,
        description="A generative model's p99 time to first token objective, milliseconds.",
    )
    inter_token_latency_p99_ms: float | None = Field(
        default=None,
        gt=0,
        description=(
            "A generative model's p99 time between tokens (time per output token) objective, "
            "milliseconds."
        ),
    )
    expected_qps: float | None = Field(
        default=None,
        ge=0,
        description=(
            "min-cost: the load to size for, requests/s. Unset: the load the autoscaler "
            "last saw, or minReplicas' worth of the first candidate at start."
        ),
    )
    prices: Prices = Field(
        default_factory=Prices,
        description="min-cost: the price of one replica's resources (triton.resources).",
    )


class RolloutStrategy(enum.StrEnum):
    """How a change to what serves goes out."""

    CANARY = "canary"
    ROLLING = "rolling"


class OnDeadline(enum.StrEnum):
    """What a rollout does when a step reaches no verdict within its deadline."""

    ROLLBACK = "rollback"
    HOLD = "hold"


# Steps of a rollout at most (bounds the CEL rule below, which checks them pairwise).
MAX_ROLLOUT_STEPS = 10

# A first step of 100 would give an unjudged canary all the traffic and scale the stable to
# zero on the rollout's first tick (a rollback would then start cold): refused at admission.
# `strategy: rolling` is the way to change every pod at once.
FIRST_STEP_MESSAGE = (
    "rollout.steps: the first step must be below 100: a canary is judged on part of the "
    "traffic before it takes all of it (e.g. [10, 50, 100]; strategy rolling changes every "
    "pod at once)"
)


def _steps_increasing_rule() -> str:
    """CEL: each step above the one before. Kubernetes' CEL has no index ranges in its
    macros, so the pairs are written out; `||` absorbs the index error past the end."""
    return " && ".join(
        f"(size(self.steps) <= {i} || self.steps[{i - 1}] < self.steps[{i}])"
        for i in range(1, MAX_ROLLOUT_STEPS)
    )


class Rollout(_Model):
    """How a change to what serves (the artifact, its Triton configuration, the image) goes
    out: as a canary judged against the stable by measurement, or all at once."""

    model_config = _rules(
        _cel(
            _steps_increasing_rule(),
            "rollout.steps must be strictly increasing",
            ".steps",
        ),
        _cel(
            "size(self.steps) > 0 && self.steps[size(self.steps) - 1] == 100",
            "rollout.steps must end at 100",
            ".steps",
        ),
        _cel("size(self.steps) > 0 && self.steps[0] < 100", FIRST_STEP_MESSAGE, ".steps"),
    )

    strategy: RolloutStrategy = Field(
        default=RolloutStrategy.CANARY,
        description=(
            "canary: once something stable serves, a change goes out to a second set of "
            "pods, judged against the stable at each step and promoted or rolled back; "
            "rolling: every pod rolls at once (the first deployment always rolls so)."
        ),
    )
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default=[10, 50, 100],
        min_length=1,
        max_length=MAX_ROLLOUT_STEPS,
        description=(
            "The canary's share of the replicas at each step, in percent: strictly "
            "increasing, ending at 100, the first below 100 (a canary is judged on part of "
            "the traffic before it takes all of it). At least one canary pod at every step; "
            "the stable keeps at least one pod below 100 and none at 100, where the canary "
            "serves everything. After a pass at 100 the canary is promoted."
        ),
    )
    analysis_interval_seconds: int = Field(
        default=30,
        ge=5,
        le=3600,
        description="Seconds between two analyses of the canary against the stable.",
    )
    min_requests: int = Field(
        default=200,
        ge=1,
        le=10_000_000,
        description=(
            "Requests the canary must have served since the last conclusive analysis for a "
            "pass or a p99 verdict; fewer is inconclusive (the step waits, the requests add "
            "up), except for an error rate or held-out score that is wrong beyond doubt."
        ),
    )
    max_failed_analyses: int = Field(
        default=2,
        ge=1,
        le=100,
        description=(
            "Failed analyses (over the whole rollout) that roll the canary back. A hard "
            "failure (held-out score under the floor, or an error rate above maxErrorRate "
            "beyond doubt) rolls back at once."
        ),
    )
    progress_deadline_seconds: int = Field(
        default=600,
        ge=10,
        le=86400,
        description=(
            "How long one step may go without a verdict that moves it (a pass); past it, "
            "onDeadline applies. Restarts at each step and when a pause ends."
        ),
    )
    on_deadline: OnDeadline = Field(
        default=OnDeadline.ROLLBACK,
        description=(
            "Past progressDeadlineSeconds: rollback (the default: a change nobody could "
            "judge does not keep a share of the traffic; the stable, proven in production, "
            "serves all of it again, and the configuration is remembered as rejected until "
            "the spec or the measurements change) or hold (the canary keeps its share and "
            "the rollout waits for `geo rollout promote|abort`; a hard failure still rolls "
            "back)."
        ),
    )
    p99_tolerance: float = Field(
        default=1.2,
        ge=1,
        le=10,
        description=(
            "The canary's p99 may exceed the stable's by this factor (1.2: 20 % slower) "
            "and must keep the p99 objective whenever the stable keeps it."
        ),
    )
    max_error_rate: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description=(
            "The highest error rate (failed over total requests) a canary may have; judged "
            "by an exact one-sided binomial test, so a few requests neither pass nor fail it."
        ),
    )
    paused: bool = Field(
        default=False,
        description=(
            "Hold rollouts: none starts, a running one keeps its weight and its deadline "
            "stops (manual promote and abort still act; a hard failure still rolls back)."
        ),
    )

    @pydantic.field_validator("steps")
    @classmethod
    def _steps_valid(cls, steps: list[int]) -> list[int]:
        if any(a >= b for a, b in itertools.pairwise(steps)):
            raise ValueError(f"rollout.steps must be strictly increasing, got {steps}")
        if steps[-1] != 100:
            raise ValueError(f"rollout.steps must end at 100, got {steps}")
        if steps[0] >= 100:
            raise ValueError(f"{FIRST_STEP_MESSAGE}, got {steps}")
        return steps


class GeoDeploymentSpec(_Model):
    """What the user asks for: a model, how to serve it, how to scale it."""

    model_config = _rules(
        _cel(
            "!has(self.triton) || !has(self.triton.warmup) || self.triton.warmup.all(w, "
            "!has(w.files) || (w.files.all(k, self.model.inputs.exists(i, i.name == k)) && "
            "self.model.inputs.all(i, i.name in w.files)))",
            "triton.warmup[].files must name each of model.inputs, and only those",
            ".triton.warmup",
        ),
        _cel(
            "!has(self.model.kind) || self.model.kind != 'generative' || !has(self.triton) || "
            "!has(self.triton.dynamicBatching) || ("
            "(!has(self.triton.dynamicBatching.maxQueueDelayMicroseconds) || "
            "self.triton.dynamicBatching.maxQueueDelayMicroseconds == 100) && "
            "(!has(self.triton.dynamicBatching.priorityLevels) || "
            "self.triton.dynamicBatching.priorityLevels == 0) && "
            "!has(self.triton.dynamicBatching.preferredBatchSizes) && "
            "!has(self.triton.dynamicBatching.defaultQueuePolicy) && "
            "!has(self.triton.dynamicBatching.priorityQueuePolicies))",
            "triton.dynamicBatching does not apply to a generative model: it is decoupled and "
            "its engine batches its sequences itself (set triton.engine.slots)",
            ".triton.dynamicBatching",
        ),
        _cel(
            "!has(self.model.kind) || self.model.kind != 'generative' || !has(self.triton) || "
            "!has(self.triton.maxBatchSize) || self.triton.maxBatchSize == 0",
            "triton.maxBatchSize does not apply to a generative model: its engine batches "
            "its sequences itself (set triton.engine.slots)",
            ".triton.maxBatchSize",
        ),
        _cel(
            "(has(self.model.kind) && self.model.kind == 'generative') || "
            "!has(self.triton) || !has(self.triton.engine)",
            "triton.engine applies to a generative model only (model.kind: generative)",
            ".triton.engine",
        ),
        _cel(
            "(has(self.model.kind) && self.model.kind == 'generative') || "
            "!has(self.objectives) || (!has(self.objectives.timeToFirstTokenP99Ms) && "
            "!has(self.objectives.interTokenLatencyP99Ms))",
            "objectives.timeToFirstTokenP99Ms and interTokenLatencyP99Ms apply to a "
            "generative model only (model.kind: generative)",
            ".objectives",
        ),
    )

    model: ModelSpec = Field(description="The model and its quantized artifacts.")
    triton: TritonSpec = Field(
        default_factory=TritonSpec, description="Triton Inference Server settings."
    )
    batch_tuning: BatchTuning = Field(
        default_factory=BatchTuning, description="How max_batch_size is tuned."
    )
    replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Replicas when autoscaling is off (kubectl scale sets this).",
    )
    autoscaling: Autoscaling = Field(
        default_factory=Autoscaling, description="The QPS and p99 latency autoscaler."
    )
    objectives: Objectives = Field(
        default_factory=Objectives,
        description="The objectives: p99 latency, expected load, prices.",
    )
    rollout: Rollout = Field(
        default_factory=Rollout,
        description="How a change to what serves goes out: canary steps and their gates.",
    )

    @pydantic.model_validator(mode="after")
    def _generative_levers(self) -> GeoDeploymentSpec:
        generative = self.model.generative
        # the API server fills dynamicBatching's defaults in: what differs from them is refused
        batching, default = self.triton.dynamic_batching, DynamicBatching()
        levers = (
            "max_queue_delay_microseconds",
            "priority_levels",
            "preferred_batch_sizes",
            "default_queue_policy",
            "priority_queue_policies",
        )
        if generative and any(getattr(batching, f) != getattr(default, f) for f in levers):
            raise ValueError(
                "triton.dynamicBatching does not apply to a generative model: it is decoupled "
                "and its engine batches its sequences itself (set triton.engine.slots)"
            )
        if generative and self.triton.max_batch_size != 0:
            raise ValueError(
                f"triton.maxBatchSize does not apply to a generative model (got "
                f"{self.triton.max_batch_size}): its engine batches its sequences itself "
                "(set triton.engine.slots)"
            )
        if not generative and self.triton.engine is not None:
            raise ValueError(
                "triton.engine applies to a generative model only (model.kind: generative)"
            )
        token_objectives = (
            self.objectives.time_to_first_token_p99_ms,
            self.objectives.inter_token_latency_p99_ms,
        )
        if not generative and any(v is not None for v in token_objectives):
            raise ValueError(
                "objectives.timeToFirstTokenP99Ms and interTokenLatencyP99Ms apply to a "
                "generative model only (model.kind: generative)"
            )
        engine = self.triton.engine or EngineSpec()
        if (
            engine.context_length is not None
            and engine.max_tokens_cap is not None
            and engine.max_tokens_cap >= engine.context_length
        ):
            raise ValueError(
                f"triton.engine.maxTokensCap {engine.max_tokens_cap} must be below "
                f"contextLength {engine.context_length} (the prompt takes at least a token)"
            )
        return self

    @pydantic.model_validator(mode="after")
    def _warmup_files_name_the_inputs(self) -> GeoDeploymentSpec:
        inputs = sorted(t.name for t in self.model.inputs)
        for sample in self.triton.warmup or ():
            if sample.files is not None and sorted(sample.files) != inputs:
                raise ValueError(
                    "triton.warmup[].files must name each of model.inputs, and only those: "
                    f"inputs {inputs}, files for {sorted(sample.files)}"
                )
        return self

    def tuning_budget_ms(self) -> float:
        """The p99 the tuned configuration must keep: the one latency objective."""
        return (
            self.objectives.p99_latency_ms
            or self.batch_tuning.latency_budget_ms
            or self.autoscaling.target_p99_latency_ms
            or DEFAULT_P99_LATENCY_MS
        )

    def target_p99_ms(self) -> float:
        """The autoscaler's p99 target: the same objective (old fields as before)."""
        return (
            self.objectives.p99_latency_ms
            or self.autoscaling.target_p99_latency_ms
            or self.batch_tuning.latency_budget_ms
            or DEFAULT_P99_LATENCY_MS
        )

    def deprecations(self) -> list[str]:
        """What the user should move to objectives.p99LatencyMs, in words."""
        notes = []
        old = {
            "batchTuning.latencyBudgetMs": self.batch_tuning.latency_budget_ms,
            "autoscaling.targetP99LatencyMs": self.autoscaling.target_p99_latency_ms,
        }
        for field, value in old.items():
            if value is None:
                continue
            if self.objectives.p99_latency_ms is None:
                notes.append(f"{field} is deprecated: set objectives.p99LatencyMs instead")
            elif value != self.objectives.p99_latency_ms:
                notes.append(
                    f"{field} {value:g} is ignored: objectives.p99LatencyMs "
                    f"{self.objectives.p99_latency_ms:g} is the one latency objective"
                )
        return notes


# ---------------------------------------------------------------- status


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(_Model):
    """A condition by the Kubernetes API conventions."""

    type: str = Field(max_length=MAX_NAME, description="PascalCase condition type, e.g. Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(max_length=128, description="One-word CamelCase reason.")
    message: str = Field(default="", max_length=4096, description="Human-readable detail.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, description="metadata.generation this condition was computed from."
    )


class SelectedArtifact(_Model):
    """The artifact being served, and why."""

    name: str = Field(description="Name of the chosen artifact.")
    precision: Precision = Field(description="Its precision.")
    format: ArtifactFormat = Field(description="Its serving format.")
    uri: str = Field(description="Its URI.")
    reason: str = Field(description="Why it was chosen, in words.")


Action = Literal["scale_out", "scale_in", "maintain"]


class Decision(_Model):
    """One autoscaling decision, with the inputs behind it."""

    action: Action = Field(description="scale_out, scale_in or maintain.")
    from_replicas: int = Field(alias="from", description="Replicas before the decision.")
    to_replicas: int = Field(alias="to", description="Replicas after the decision.")
    qps_per_replica: float | None = Field(default=None, description="Observed QPS per replica.")
    p99_latency_ms: float | None = Field(default=None, description="Observed p99 latency.")
    rejected_qps: float | None = Field(
        default=None,
        description="Requests per second Triton refused after their queue timeout (in demand).",
    )
    reason: str = Field(description="Why, in words.")
    time: str = Field(description="When (RFC 3339).")


class MeasuredAccuracy(_Model):
    """The candidate's score on the held-out set, measured through the real Triton."""

    metric: EvaluationMetric = Field(
        description="accuracy (vs labels), agreement, perplexity or kl-divergence."
    )
    value: float = Field(
        ge=0,
        le=1,
        description="The fraction of samples answered right (perplexity: the reference's "
        "perplexity / this one's; kl-divergence: exp(-KL)).",
    )
    samples: int = Field(ge=1, description="Samples scored (a generative model: tokens).")
    reference: str | None = Field(
        default=None, description="agreement: the artifact whose answers counted as right."
    )
    # A generative artifact's figures on the held-out text, whichever metric is the score.
    perplexity: float | None = Field(
        default=None, ge=1, description="Its perplexity on the held-out text (generative)."
    )
    kl_divergence: float | None = Field(
        default=None,
        ge=0,
        description="Its mean KL divergence from the reference, per token (generative).",
    )
    agreement: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Its top-1 next-token agreement with the reference (generative).",
    )


class TunedBatch(_Model):
    """The configuration a tuning run chose, and the figures behind it."""

    max_batch_size: int = Field(ge=1, description="The chosen max_batch_size.")
    max_queue_delay_microseconds: int | None = Field(
        default=None, description="The chosen queue delay; absent: dynamic batching off."
    )
    throughput: float = Field(
        description="Its measured throughput, requests/s (a generative model: generated "
        "tokens/s with every slot streaming)."
    )
    p99_ms: float = Field(
        description="Its client-side p99 latency at that throughput (a generative model: "
        "between tokens)."
    )
    prefill_tokens_per_second: float | None = Field(
        default=None,
        description="A generative model's prompt tokens/s, one request alone (its prefill).",
    )
    concurrency: int | None = Field(default=None, description="In-flight requests it ran at.")
    measurements: int = Field(description="Measurements the search took.")
    grid_size: int = Field(description="Configurations in the grid (a full sweep's count).")
    accuracy: MeasuredAccuracy | None = Field(
        default=None,
        description="Held-out accuracy at that configuration, when model.evaluation is set.",
    )


class TuningStatus(_Model):
    """The batch tuning of one candidate artifact: which inputs, which Job, what came of it."""

    artifact: str = Field(description="The candidate artifact this run measures.")
    key: str = Field(
        description="Hash of what was tuned (artifact, model, candidates, budget, image); a "
        "spec change gives a new key and voids the result."
    )
    job: str | None = Field(default=None, description="The latest tuning Job.")
    attempts: int = Field(default=0, description="Tuning Jobs started for this key.")
    failures: int = Field(default=0, description="Of those, how many failed.")
    next_retry_time: str | None = Field(
        default=None, description="When the next attempt may start (RFC 3339), after a failure."
    )
    result: TunedBatch | None = Field(default=None, description="The tuned configuration.")
    failure_reason: str | None = Field(
        default=None, description="TuningFailed or TuningTimedOut, after a failed attempt."
    )
    failure_message: str | None = Field(default=None, description="What went wrong.")


TargetSource = Literal["declared", "measured", "learned", "unknown"]


class AutoscalingStatus(_Model):
    """The autoscaler's effective target and where it came from (written by the autoscaler)."""

    effective_target_qps_per_replica: float | None = Field(
        default=None, description="QPS per replica the autoscaler aims for now."
    )
    source: TargetSource = Field(
        description=(
            "declared: autoscaling.targetQpsPerReplica; measured: the tuned capacity × "
            "targetUtilization; learned: that, corrected by production; unknown: nothing "
            "measured yet (scales on p99 only, never in)."
        )
    )
    measured_capacity: float | None = Field(
        default=None, description="The served artifact's tuned throughput within the SLO."
    )
    correction: float | None = Field(
        default=None,
        description="Learned factor on the measured capacity (1 = the lab holds in production).",
    )
    reason: str = Field(default="", max_length=1024, description="The figures, in words.")
    pod_startup_seconds: float | None = Field(
        default=None,
        description=(
            "How long this deployment's Triton pods take from creation to Ready: the median "
            "of the last pods the autoscaler saw start. The trend looks this far ahead. "
            "Absent: none seen yet (30 s is assumed)."
        ),
    )
    pod_startup_samples: int | None = Field(
        default=None, description="How many pods pod_startup_seconds was measured on."
    )


RolloutPhase = Literal["Idle", "Progressing", "Paused", "Inconclusive", "Promoted", "RolledBack"]
GateOutcome = Literal["pass", "fail", "inconclusive", "skipped"]
VerdictOutcome = Literal["pass", "fail", "inconclusive"]

# Entries kept in status.rollout.rejected and status.rollout.history (oldest dropped first).
MAX_REJECTED = 10
MAX_HISTORY = 10


class TrackFigures(_Model):
    """What one track (canary or stable) served over an analysis window."""

    requests: int = Field(ge=0, description="Requests it completed in the window.")
    errors: int = Field(ge=0, description="Of those, how many failed.")
    p99_ms: float | None = Field(
        default=None, description="Its p99 latency over the window (ms); absent: no traffic."
    )
    accuracy: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Its score on the held-out set (model.evaluation), when measured.",
    )
    samples: int | None = Field(default=None, ge=0, description="Held-out samples scored.")
    first_tokens: int | None = Field(
        default=None,
        ge=0,
        description="A generative engine's first tokens in the window (one a request).",
    )
    ttft_p99_ms: float | None = Field(
        default=None, description="Its p99 time to first token over the window (ms)."
    )
    tokens: int | None = Field(
        default=None,
        ge=0,
        description="Its inter-token gaps in the window: what the inter-token p99 is over.",
    )
    itl_p99_ms: float | None = Field(
        default=None, description="Its p99 time between tokens over the window (ms)."
    )


class RolloutGate(_Model):
    """One gate of an analysis and what it found."""

    gate: str = Field(
        description=(
            "traffic, error-rate, p99-objective, p99-relative (a generative engine's: "
            "ttft-objective, ttft-relative, itl-objective, itl-relative) or accuracy."
        )
    )
    outcome: GateOutcome = Field(description="pass, fail, inconclusive or skipped.")
    message: str = Field(default="", max_length=1024, description="The figures, in words.")


class RolloutVerdict(_Model):
    """The verdict of the latest analysis."""

    outcome: VerdictOutcome = Field(description="pass, fail or inconclusive.")
    hard: bool = Field(
        default=False, description="A failure that rolls back at once (not counted)."
    )
    reason: str = Field(default="", max_length=2048, description="Why, in words.")
    gates: list[RolloutGate] = Field(
        default_factory=list, max_length=8, description="Each gate and what it found."
    )


class RejectedConfiguration(_Model):
    """A configuration rolled back; not retried until the spec or the measurements change."""

    config_hash: str = Field(
        max_length=MAX_NAME,
        description="Hash of the configuration (it covers the spec and measurements).",
    )
    artifact: str | None = Field(default=None, description="The artifact it served.")
    reason: str = Field(default="", max_length=2048, description="Why it was rolled back.")
    time: str = Field(description="When (RFC 3339).")


class PromotedConfiguration(_Model):
    """A configuration that was promoted to stable, and the figures it was promoted on."""

    artifact: str = Field(description="The artifact served.")
    uri: str = Field(description="Its URI.")
    config_hash: str = Field(max_length=MAX_NAME, description="Hash of the configuration.")
    max_batch_size: int | None = Field(default=None, description="Triton max_batch_size.")
    image: str | None = Field(default=None, description="The Triton image.")
    figures: TrackFigures | None = Field(
        default=None,
        description="The canary's figures at the analysis it was promoted on; absent: "
        "rolled without a canary (first deployment, strategy rolling, promoted by hand "
        "before any analysis).",
    )
    reason: str = Field(default="", max_length=1024, description="How it was promoted.")
    time: str = Field(description="When (RFC 3339).")


class RolloutStatus(_Model):
    """Where the current (or latest) rollout stands (written by the reconcile)."""

    phase: RolloutPhase = Field(
        default="Idle",
        description=(
            "Idle: nothing to roll out; Progressing: a canary is being judged; Paused: "
            "rollout.paused holds it; Inconclusive: past its deadline with onDeadline hold, "
            "waiting for promote or abort; Promoted / RolledBack: how the latest one ended."
        ),
    )
    step: int | None = Field(default=None, ge=0, description="Index into rollout.steps.")
    weight: int = Field(default=0, ge=0, le=100, description="The canary's share, percent.")
    canary_hash: str | None = Field(
        default=None, max_length=MAX_NAME, description="The canary's configuration hash."
    )
    stable_hash: str | None = Field(
        default=None, max_length=MAX_NAME, description="The stable's configuration hash."
    )
    canary: TrackFigures | None = Field(
        default=None, description="The canary's figures at the last analysis."
    )
    stable: TrackFigures | None = Field(
        default=None, description="The stable's figures at the last analysis."
    )
    verdict: RolloutVerdict | None = Field(default=None, description="The last analysis.")
    reason: str = Field(default="", max_length=2048, description="The last decision, in words.")
    started_time: str | None = Field(default=None, description="When the rollout started.")
    step_started_time: str | None = Field(
        default=None, description="When the current step started (its deadline's origin)."
    )
    window_start_time: str | None = Field(
        default=None,
        description="Start of the current analysis window: the last conclusive analysis.",
    )
    last_analysis_time: str | None = Field(default=None, description="When the last analysis ran.")
    failed_analyses: int = Field(default=0, ge=0, description="Failed analyses so far.")
    rejected: list[RejectedConfiguration] = Field(
        default_factory=list,
        max_length=MAX_REJECTED,
        description="Configurations rolled back (newest last), not retried until they change.",
    )
    history: list[PromotedConfiguration] = Field(
        default_factory=list,
        max_length=MAX_HISTORY,
        description="What served when: the promoted configurations, newest last.",
    )


class GeoDeploymentStatus(_Model):
    """What the operator observed and did."""

    observed_generation: int | None = Field(
        default=None, description="metadata.generation the status reflects."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "Ready, ArtifactSelected, BatchTuned, ScalingActive, MetricsAvailable, Progressing."
        ),
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    selected_artifact: SelectedArtifact | None = Field(
        default=None, description="The artifact being served, and why."
    )
    max_batch_size: int | None = Field(default=None, description="max_batch_size in use.")
    tuning: list[TuningStatus] | None = Field(
        default=None,
        description="The batch tuning runs, one per candidate artifact: Job, result or failures.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["artifact"],
        },
    )

    @pydantic.field_validator("tuning", mode="before")
    @classmethod
    def _one_run_per_artifact(cls, value: Any) -> Any:
        # Before per-artifact tuning this was one object: its result is dropped (re-measured).
        return value if value is None or isinstance(value, list) else None

    config_hash: str | None = Field(
        default=None,
        description=(
            "Hash of the model configuration the stable pods run (a change still held back "
            "or out as a canary is in status.rollout)."
        ),
    )
    replicas: int | None = Field(
        default=None,
        description=(
            "Triton pods asked of the Deployments: the stable's and, while a rollout's "
            "canary exists, the canary's (the pods that serve, and that the selector selects)."
        ),
    )
    ready_replicas: int | None = Field(
        default=None, description="Triton pods ready, over both tracks (stable and canary)."
    )
    selector: str | None = Field(
        default=None, description="Label selector of the pods (for the scale subresource)."
    )
    last_decision: Decision | None = Field(
        default=None, description="The latest autoscaling decision."
    )
    decisions: list[Decision] = Field(
        default_factory=list, max_length=20, description="Recent autoscaling decisions."
    )
    autoscaling: AutoscalingStatus | None = Field(
        default=None, description="The autoscaler's effective target and its source."
    )
    rollout: RolloutStatus | None = Field(
        default=None, description="The current or latest rollout: step, weight, figures, verdict."
    )


def parse_spec(spec: Any) -> GeoDeploymentSpec:
    """Validate a GeoDeployment's `.spec` (as a dict) into the model."""
    return GeoDeploymentSpec.model_validate(spec)


def parse_status(status: Any) -> GeoDeploymentStatus:
    """Parse `.status`, tolerating fields written by other versions (ignored)."""
    if not isinstance(status, dict):
        return GeoDeploymentStatus()
    known = {f.alias or n for n, f in GeoDeploymentStatus.model_fields.items()}
    return GeoDeploymentStatus.model_validate({k: v for k, v in status.items() if k in known})
