"""Pick the artifact to serve: a pure function from the spec and the hardware.

Called by the reconcile handler and by `geo select`. Steps, each explained in
the returned reason:

1. drop artifacts the hardware can't run (GPU architecture, TensorRT plans and
   fp8 need a GPU);
2. drop those under the accuracy floor, `minAccuracyRatio` × the best
   accuracy, each judged on its **measured** accuracy (model.evaluation, scored
   by the tuning Job on the held-out set) where one exists, else its declared
   one; a declared figure the measurement contradicts beyond
   evaluation.tolerance is named in the reason (and `Choice.contradicted`);
3. apply the policy: `best-score` (weighted, normalised accuracy, speed and
   cheapness), `smallest`, `fastest` or `pinned`.

Speed comes from measurements when the tuner has them, else from the declared
`latencyMs`, else from a nominal factor per precision (said so in the reason).
Cost comes from `relativeCost`, else from the file size, else from bytes per
weight of the precision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from geo_operator.api import models

GPU_RESOURCE = "nvidia.com/gpu"
GPU_FAMILY_LABEL = "nvidia.com/gpu.family"

# Nominal speed relative to fp32 and bytes per weight, used only when neither a
# measurement nor a declared figure exists. Conservative, rounded figures.
_NOMINAL_LATENCY = {
    models.Precision.FP32: 1.0,
    models.Precision.FP16: 0.6,
    models.Precision.BF16: 0.6,
    models.Precision.INT8: 0.45,
    models.Precision.FP8: 0.4,
    models.Precision.INT4: 0.35,
}
_BYTES_PER_WEIGHT = {
    models.Precision.FP32: 4.0,
    models.Precision.FP16: 2.0,
    models.Precision.BF16: 2.0,
    models.Precision.INT8: 1.0,
    models.Precision.FP8: 1.0,
    models.Precision.INT4: 0.5,
}
# fp8 kernels exist on these architectures only (Ada, Hopper and later).
_FP8_ARCHS = ("ada", "hopper", "blackwell")


@dataclasses.dataclass(frozen=True)
class Hardware:
    """What the Triton pods will run on."""

    gpu: bool
    gpu_arch: str | None = None

    def describe(self) -> str:
        if not self.gpu:
            return "CPU only (no nvidia.com/gpu limit)"
        return f"GPU {self.gpu_arch}" if self.gpu_arch else "GPU of unknown architecture"


@dataclasses.dataclass(frozen=True)
class Measurement:
    """Figures measured on the real Triton by the tuner, per artifact."""

    latency_ms: float  # p99 at the tuned configuration's throughput
    throughput: float | None = None  # req/s one replica serves within the p99 objective
    max_batch_size: int | None = None  # the tuned configuration's
    accuracy: models.MeasuredAccuracy | None = None  # on the held-out set (model.evaluation)


@dataclasses.dataclass(frozen=True)
class Choice:
    """The outcome of selection: an artifact or none, and why."""

    artifact: models.Artifact | None
    reason: str
    rejected: tuple[tuple[str, str], ...] = ()
    scores: tuple[tuple[str, float], ...] = ()
    # Declared accuracies a measurement contradicts beyond evaluation.tolerance: (name, words).
    contradicted: tuple[tuple[str, str], ...] = ()


# Highest precision first: agreement's default reference is the first of these present.
PRECISION_ORDER = (
    models.Precision.FP32,
    models.Precision.FP16,
    models.Precision.BF16,
    models.Precision.FP8,
    models.Precision.INT8,
    models.Precision.INT4,
)


def reference(spec: models.ModelSpec) -> models.Artifact | None:
    """metric agreement: the artifact whose answers count as right (evaluation.reference, else
    the highest precision, first in spec order on a tie); None for metric accuracy."""
    evaluation = spec.evaluation
    if evaluation is None or evaluation.metric is not models.EvaluationMetric.AGREEMENT:
        return None
    if evaluation.reference is not None:
        return next(a for a in spec.artifacts if a.name == evaluation.reference)
    return min(spec.artifacts, key=lambda a: PRECISION_ORDER.index(a.precision))


def hardware_of(triton: models.TritonSpec, gpu_arch: str | None = None) -> Hardware:
    """The hardware the pods land on, from the GPU limit and node selector.

    `gpu_arch` (e.g. from `geo select --gpu-arch`) overrides the node selector
    and implies a GPU.
    """
    if gpu_arch:
        return Hardware(gpu=True, gpu_arch=gpu_arch.lower())
    limits = triton.resources.get("limits", {})
    gpu = str(limits.get(GPU_RESOURCE, "0")) not in ("0", "")
    arch = triton.node_selector.get(GPU_FAMILY_LABEL)
    return Hardware(gpu=gpu, gpu_arch=arch.lower() if (gpu and arch) else None)


def _hardware_problem(artifact: models.Artifact, hw: Hardware) -> str | None:
    """Why this hardware can't run the artifact, or None if it can."""
    archs: Sequence[str] | None = artifact.requires.gpu_arch if artifact.requires else None
    if archs is None and artifact.precision is models.Precision.FP8:
        archs = _FP8_ARCHS
    if archs is None and artifact.format is models.ArtifactFormat.TENSORRT_PLAN and not hw.gpu:
        return "a TensorRT plan needs a GPU; " + hw.describe()
    if archs is None:
        return None
    wanted = "|".join(archs)
    if not hw.gpu:
        return f"needs GPU {wanted}; pods are {hw.describe()}"
    if hw.gpu_arch is None:
        return (
            f"needs GPU {wanted}; the GPU architecture is unknown "
            f"(set triton.nodeSelector {GPU_FAMILY_LABEL})"
        )
    if hw.gpu_arch not in {a.lower() for a in archs}:
        return f"needs GPU {wanted}; pods are {hw.describe()}"
    return None


@dataclasses.dataclass(frozen=True)
class _Field:
    """The artifacts in the running: those the hardware runs above the accuracy floor, and
    why each other one is out (hardware first, in spec order, then accuracy)."""

    qualifying: tuple[models.Artifact, ...]
    rejected: tuple[tuple[str, str], ...]
    unrunnable: tuple[tuple[str, str], ...]  # the hardware's part of `rejected`
    floor: float
    floor_text: str
    accuracy: Mapping[str, float]  # the accuracy each artifact is judged on, where known
    contradicted: tuple[tuple[str, str], ...] = ()
    unmeasured: tuple[models.Artifact, ...] = ()  # runnable, accuracy neither declared nor measured


def accuracies(
    spec: models.ModelSpec, measured: Mapping[str, Measurement]
) -> tuple[dict[str, float], dict[str, str]]:
    """The accuracy each artifact is judged on (measured where it exists, else declared)
    and how to say it."""
    values: dict[str, float] = {}
    words: dict[str, str] = {}
    for a in spec.artifacts:
        m = measured.get(a.name)
        if m is not None and m.accuracy is not None:
            values[a.name] = m.accuracy.value
            agreement = m.accuracy.metric is models.EvaluationMetric.AGREEMENT
            words[a.name] = f"{m.accuracy.value:.4f} measured on {m.accuracy.samples} samples" + (
                f" (agreement with {m.accuracy.reference})" if agreement else ""
            )
        elif a.accuracy is not None:
            values[a.name] = a.accuracy
            words[a.name] = f"{a.accuracy:.4f}" + (" declared" if measured else "")
    return values, words


def contradictions(
    spec: models.ModelSpec, measured: Mapping[str, Measurement]
) -> tuple[tuple[str, str], ...]:
    """Declared accuracies the measurement contradicts by more than evaluation.tolerance."""
    if spec.evaluation is None:
        return ()
    out = []
    for a in spec.artifacts:
        m = measured.get(a.name)
        if a.accuracy is None or m is None or m.accuracy is None:
            continue
        if a.accuracy - m.accuracy.value > spec.evaluation.tolerance:
            out.append(
                (
                    a.name,
                    f"{a.name} declared {a.accuracy:.4f}, measured {m.accuracy.value:.4f} on "
                    f"{m.accuracy.samples} samples",
                )
            )
    return tuple(out)


def _field(
    spec: models.ModelSpec, hardware: Hardware, measured: Mapping[str, Measurement] | None = None
) -> _Field:
    measured = measured or {}
    values, words = accuracies(spec, measured)
    best = max(values.values(), default=0.0)
    ratio = spec.selection.min_accuracy_ratio
    floor = ratio * best
    floor_text = f"floor {floor:.4f} = {ratio:g} × best {best:.4f}"
    problems = {a.name: _hardware_problem(a, hardware) for a in spec.artifacts}
    unrunnable = tuple((a.name, p) for a in spec.artifacts if (p := problems[a.name]))
    runnable = [a for a in spec.artifacts if not problems[a.name]]
    unmeasured = tuple(a for a in runnable if a.name not in values)
    contradicted = contradictions(spec, measured)
    bad = {n for n, _ in contradicted}
    too_weak = tuple(
        (
            a.name,
            f"accuracy {words[a.name]} < {floor_text}"
            + ("; declared figure contradicted: excluded" if a.name in bad else ""),
        )
        for a in runnable
        if a.name in values and values[a.name] < floor
    )
    waiting = tuple((a.name, "accuracy not measured yet") for a in unmeasured)
    qualifying = tuple(a for a in runnable if a.name in values and values[a.name] >= floor)
    return _Field(
        qualifying,
        unrunnable + too_weak + waiting,
        unrunnable,
        floor,
        floor_text,
        values,
        contradicted,
        unmeasured,
    )


def candidates(spec: models.ModelSpec, hardware: Hardware) -> list[models.Artifact]:
    """The artifacts the tuner measures and selection chooses among: the pinned one if it can
    run; with model.evaluation every one the hardware runs (measurement decides, so the
    declared figures filter nothing); else those at or above the declared accuracy floor
    (the same filter `select` applies)."""
    if spec.selection.policy is models.SelectionPolicy.PINNED:
        pinned = [a for a in spec.artifacts if a.name == spec.selection.pinned]
        return [a for a in pinned if _hardware_problem(a, hardware) is None]
    if spec.evaluation is not None:
        return [a for a in spec.artifacts if _hardware_problem(a, hardware) is None]
    return list(_field(spec, hardware).qualifying)


def _latencies(
    artifacts: Sequence[models.Artifact], measured: Mapping[str, Measurement]
) -> tuple[dict[str, float], str]:
    """Latency per artifact on one basis for all of them, so they compare.

    Measured figures if every artifact has one (the time per request at the measured
    throughput when all have a throughput: what a replica serves, the figure the
    tuner maximises; else the measured latency), else declared ones if every
    artifact declares one, else nominal factors per precision (× fp32). One basis
    for all: a measured p99 under load and a declared batch-1 median don't compare.
    """
    if all(a.name in measured for a in artifacts):
        if all(measured[a.name].throughput for a in artifacts):
            return {
                a.name: 1000.0 / (measured[a.name].throughput or 1.0) for a in artifacts
            }, "measured throughput"
        return {a.name: measured[a.name].latency_ms for a in artifacts}, "measured"
    if all(a.latency_ms is not None for a in artifacts):
        return {a.name: float(a.latency_ms or 0) for a in artifacts}, "declared"
    return {a.name: _NOMINAL_LATENCY[a.precision] for a in artifacts}, "nominal"


def _costs(artifacts: Sequence[models.Artifact]) -> tuple[dict[str, float], str]:
    """Cost per artifact on one basis: declared relative cost, else size, else nominal."""
    if all(a.relative_cost is not None for a in artifacts):
        return {a.name: float(a.relative_cost or 0) for a in artifacts}, "declared relative cost"
    if all(a.size_bytes for a in artifacts):
        return {a.name: float(a.size_bytes or 0) for a in artifacts}, "size"
    return {a.name: _BYTES_PER_WEIGHT[a.precision] for a in artifacts}, "nominal bytes per weight"


def select(
    spec: models.ModelSpec,
    hardware: Hardware,
    measured: Mapping[str, Measurement] | None = None,
) -> Choice:
    """Choose the artifact to serve; a Choice with artifact None if none qualifies."""
    choice = _select(spec, hardware, measured or {})
    contradicted = contradictions(spec, measured or {})
    if not contradicted:
        return choice
    out = {n for n, _ in choice.rejected}
    said = tuple(
        (name, f"{words}: " + ("excluded" if name in out else "judged on the measured figure"))
        for name, words in contradicted
    )
    lines = "; ".join(words for _, words in said)
    return dataclasses.replace(
        choice, reason=f"{choice.reason}; contradicted: {lines}", contradicted=said
    )


def _select(
    spec: models.ModelSpec, hardware: Hardware, measured: Mapping[str, Measurement]
) -> Choice:
    field = _field(spec, hardware, measured)
    policy = spec.selection.policy
    if policy is models.SelectionPolicy.PINNED:
        return _pinned(spec, hardware, field)
    dropped = "; ".join(f"{n}: {why}" for n, why in field.rejected)
    dropped_text = f"; dropped {dropped}" if dropped else ""
    if not field.qualifying and field.unmeasured and not field.accuracy:
        # Nothing declared, nothing measured yet: the highest precision is the safe bet.
        safest = min(field.unmeasured, key=lambda a: PRECISION_ORDER.index(a.precision))
        return Choice(
            safest,
            f"no accuracy measured yet: serving the highest-precision artifact {safest.name} "
            f"until the tuning Jobs measure {len(field.unmeasured)} candidates on the held-out "
            "set",
            field.rejected,
        )
    if not field.qualifying:
        return Choice(
            None,
            f"no artifact qualifies on {hardware.describe()} with accuracy {field.floor_text}"
            f"{dropped_text}",
            field.rejected,
        )
    if policy is models.SelectionPolicy.SMALLEST:
        return _smallest(field, dropped_text)
    latencies, latency_basis = _latencies(field.qualifying, measured or {})
    if policy is models.SelectionPolicy.FASTEST:
        return _fastest(field, latencies, latency_basis, dropped_text)
    return _best_score(spec, field, latencies, latency_basis, dropped_text)


def _pinned(spec: models.ModelSpec, hardware: Hardware, field: _Field) -> Choice:
    pinned = next(a for a in spec.artifacts if a.name == spec.selection.pinned)
    problem = _hardware_problem(pinned, hardware)
    if problem:
        why = f"pinned artifact {pinned.name} can't run here: {problem}"
        return Choice(None, why, field.unrunnable)
    accuracy = field.accuracy.get(pinned.name)
    note = (
        ""
        if accuracy is None or accuracy >= field.floor
        else f" (below the accuracy {field.floor_text}; pinned wins)"
    )
    return Choice(pinned, f"pinned by spec.model.selection.pinned{note}", field.unrunnable)


def _smallest(field: _Field, dropped_text: str) -> Choice:
    # Known sizes first; among unknown sizes, fewer bytes per weight.
    chosen = min(
        field.qualifying,
        key=lambda a: (a.size_bytes is None, a.size_bytes or 0, _BYTES_PER_WEIGHT[a.precision]),
    )
    size = f"{chosen.size_bytes} bytes" if chosen.size_bytes is not None else "size unknown"
    return Choice(
        chosen,
        f"smallest of {len(field.qualifying)} qualifying ({size}); accuracy "
        f"{field.accuracy[chosen.name]:.4f} ≥ {field.floor_text}{dropped_text}",
        field.rejected,
    )


def _fastest(
    field: _Field, latencies: Mapping[str, float], basis: str, dropped_text: str
) -> Choice:
    chosen = min(field.qualifying, key=lambda a: latencies[a.name])
    value = latencies[chosen.name]
    unit = " × fp32" if basis == "nominal" else " ms"
    speed = f"{basis} latency {value:g}{unit}"
    if basis == "measured throughput":
        speed = f"measured throughput {1000.0 / value:.0f} req/s"
    return Choice(
        chosen,
        f"fastest of {len(field.qualifying)} qualifying ({speed}); accuracy "
        f"{field.accuracy[chosen.name]:.4f} ≥ {field.floor_text}{dropped_text}",
        field.rejected,
    )


def _best_score(
    spec: models.ModelSpec,
    field: _Field,
    latencies: Mapping[str, float],
    latency_basis: str,
    dropped_text: str,
) -> Choice:
    """Each term normalised to (0, 1] by the best value among the qualifying artifacts, so
    the weights mean what they say."""
    qualifying = field.qualifying
    costs, cost_basis = _costs(qualifying)
    weights = spec.selection.weights
    accuracy = field.accuracy
    top_accuracy = max(accuracy[a.name] for a in qualifying) or 1.0
    fastest, cheapest = min(latencies.values()), min(costs.values())
    scores = {
        a.name: weights.accuracy * (accuracy[a.name] / top_accuracy)
        + weights.latency * (fastest / latencies[a.name])
        + weights.cost * (cheapest / costs[a.name])
        for a in qualifying
    }
    chosen = max(qualifying, key=lambda a: scores[a.name])  # first wins a tie
    ranking = ", ".join(f"{n} {s:.3f}" for n, s in sorted(scores.items(), key=lambda x: -x[1]))
    basis = f"latency {latency_basis}, cost by {cost_basis}"
    return Choice(
        chosen,
        f"best score of {len(qualifying)} qualifying ({ranking}; {basis}); accuracy "
        f"{accuracy[chosen.name]:.4f} ≥ {field.floor_text}{dropped_text}",
        field.rejected,
        tuple(sorted(scores.items())),
    )
