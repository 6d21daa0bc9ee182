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
   cheapness), `min-cost` (the fewest dollars an hour that carry the load: the cost
   model is `artifacts.cost`), `smallest`, `fastest` or `pinned`.

Speed comes from measurements when the tuner has them, else from the declared
`latencyMs`, else from a nominal factor per precision (said so in the reason).
Cost comes from `relativeCost`, else from the file size, else from bytes per
weight of the precision.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from geo_operator.api import models, quantity
from geo_operator.artifacts import cost

GPU_RESOURCE = cost.GPU_RESOURCE
GPU_FAMILY_LABEL = "nvidia.com/gpu.family"

# Nominal speed relative to fp32 and bytes per weight, used only when neither a
# measurement nor a declared figure exists. Conservative, rounded figures.
_NOMINAL_LATENCY = {
    models.Precision.FP32: 1.0,
    models.Precision.FP16: 0.6,
    models.Precision.BF16: 0.6,
    models.Precision.INT8: 0.45,
    models.Precision.FP8: 0.4,
    models.Precision.INT5: 0.4,
    models.Precision.INT4: 0.35,
    models.Precision.INT3: 0.33,
    models.Precision.INT2: 0.3,
}
_BYTES_PER_WEIGHT = {
    models.Precision.FP32: 4.0,
    models.Precision.FP16: 2.0,
    models.Precision.BF16: 2.0,
    models.Precision.INT8: 1.0,
    models.Precision.FP8: 1.0,
    models.Precision.INT5: 0.625,
    models.Precision.INT4: 0.5,
    models.Precision.INT3: 0.375,
    models.Precision.INT2: 0.25,
}
# The GPU architectures GEO knows, oldest first: the values of nvidia.com/gpu.family it
# compares requires.gpuArch with (`geo select --gpu-arch` takes these only).
GPU_ARCHS = ("pascal", "volta", "turing", "ampere", "ada", "hopper", "blackwell")
# fp8 kernels exist on these architectures only (Ada, Hopper and later).
_FP8_ARCHS = ("ada", "hopper", "blackwell")
# The ArtifactSelected message is a condition message: keep min-cost's comparison short.
MAX_REASON_CHARS = 1500


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
    scores: tuple[tuple[str, float], ...] = ()  # best-score: scores; min-cost: dollars/hour
    # Declared accuracies a measurement contradicts beyond evaluation.tolerance: (name, words).
    contradicted: tuple[tuple[str, str], ...] = ()
    costs: tuple[cost.Cost, ...] = ()  # min-cost: every qualifying artifact, cheapest first
    # The accuracy floor the choice was judged against (minAccuracyRatio × the best), and how
    # to say it; None when nothing had an accuracy. A rollout's canary is held to it.
    accuracy_floor: float | None = None
    floor_text: str = ""


# Highest precision first: agreement's default reference is the first of these present.
PRECISION_ORDER = (
    models.Precision.FP32,
    models.Precision.FP16,
    models.Precision.BF16,
    models.Precision.FP8,
    models.Precision.INT8,
    models.Precision.INT5,
    models.Precision.INT4,
    models.Precision.INT3,
    models.Precision.INT2,
)


def reference(spec: models.ModelSpec) -> models.Artifact | None:
    """metric agreement (perplexity, kl-divergence: what the candidate is scored against): the
    artifact whose answers count as right (evaluation.reference, else the highest precision,
    first in spec order on a tie); None for metric accuracy."""
    evaluation = spec.evaluation
    if evaluation is None or evaluation.metric is models.EvaluationMetric.ACCURACY:
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
    # The GPU limit by the quantity grammar: "0", "0.0" and "0m" are no GPU, "1" one.
    gpus = triton.resources.get("limits", {}).get(GPU_RESOURCE)
    gpu = gpus is not None and quantity.parse(gpus) > 0
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
    word: str = "accuracy"  # what the floor is on, in words ("agreement": a generative model)
    rate: str = "req/s"  # what a measured throughput counts (a generative model: tokens/s)


def accuracies(
    spec: models.ModelSpec, measured: Mapping[str, Measurement]
) -> tuple[dict[str, float], dict[str, str]]:
    """The accuracy each artifact is judged on (measured where it exists, else declared)
    and how to say it."""
    values: dict[str, float] = {}
    words: dict[str, str] = {}
    for a in spec.artifacts:
        m = measured.get(a.name)
        declared_ = declared(spec, a)
        if m is not None and m.accuracy is not None:
            values[a.name] = m.accuracy.value
            words[a.name] = _measured_words(m.accuracy, spec.generative)
        elif declared_ is not None:
            values[a.name] = declared_
            words[a.name] = f"{declared_:.4f}" + (" declared" if measured else "")
    return values, words


def declared(spec: models.ModelSpec, artifact: models.Artifact) -> float | None:
    """The declared figure comparable with what model.evaluation measures: the accuracy
    (a generative model's: its agreement); for perplexity the reference's declared
    perplexity / the artifact's, for kl-divergence exp(-its declared KL divergence), as
    the tuner scores them (None when the figures for it are not declared)."""
    metric = spec.evaluation.metric if spec.evaluation is not None else None
    if metric is models.EvaluationMetric.PERPLEXITY:
        ref = reference(spec)
        if ref is None or ref.perplexity is None or artifact.perplexity is None:
            return None
        return min(1.0, ref.perplexity / artifact.perplexity)
    if metric is models.EvaluationMetric.KL_DIVERGENCE:
        kld = artifact.kl_divergence
        return None if kld is None else math.exp(-kld)
    return artifact.accuracy


def _measured_words(accuracy: models.MeasuredAccuracy, generative: bool) -> str:
    unit = "tokens" if generative else "samples"
    words = f"{accuracy.value:.4f} measured on {accuracy.samples} {unit}"
    if accuracy.metric is models.EvaluationMetric.AGREEMENT and not generative:
        return words + f" (agreement with {accuracy.reference})"
    if accuracy.reference is not None and generative:
        words += f" against {accuracy.reference}"
        if accuracy.perplexity is not None:
            words += f" (perplexity {accuracy.perplexity:g})"
    return words


def contradictions(
    spec: models.ModelSpec, measured: Mapping[str, Measurement]
) -> tuple[tuple[str, str], ...]:
    """Declared accuracies the measurement contradicts by more than evaluation.tolerance."""
    if spec.evaluation is None:
        return ()
    out = []
    unit = "tokens" if spec.generative else "samples"
    for a in spec.artifacts:
        m = measured.get(a.name)
        declared_ = declared(spec, a)
        if declared_ is None or m is None or m.accuracy is None:
            continue
        if declared_ - m.accuracy.value > spec.evaluation.tolerance:
            out.append(
                (
                    a.name,
                    f"{a.name} declared {declared_:.4f}, measured {m.accuracy.value:.4f} on "
                    f"{m.accuracy.samples} {unit}",
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
    # a generative model's "accuracy" is its top-1 token agreement with the reference
    word = "accuracy"
    if spec.generative:  # its held-out metric's score, else its declared agreement
        word = str(spec.evaluation.metric) if spec.evaluation is not None else "agreement"
    problems = {a.name: _hardware_problem(a, hardware) for a in spec.artifacts}
    unrunnable = tuple((a.name, p) for a in spec.artifacts if (p := problems[a.name]))
    runnable = [a for a in spec.artifacts if not problems[a.name]]
    unmeasured = tuple(a for a in runnable if a.name not in values)
    contradicted = contradictions(spec, measured)
    bad = {n for n, _ in contradicted}
    too_weak = tuple(
        (
            a.name,
            f"{word} {words[a.name]} < {floor_text}"
            + ("; declared figure contradicted: excluded" if a.name in bad else ""),
        )
        for a in runnable
        if a.name in values and values[a.name] < floor
    )
    waiting = tuple((a.name, f"{word} not measured yet") for a in unmeasured)
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
        word,
        "tokens/s" if spec.generative else "req/s",
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
    *,
    demand: cost.Demand | None = None,
) -> Choice:
    """Choose the artifact to serve; a Choice with artifact None if none qualifies.

    ``demand`` is what min-cost sizes for (`cost.demand(spec, current_qps)`); None:
    minReplicas' worth at the default prices (`cost.DEFAULT_DEMAND`).
    """
    field = _field(spec, hardware, measured)
    choice = _select(spec, hardware, measured or {}, demand or cost.DEFAULT_DEMAND, field)
    if field.accuracy:
        choice = dataclasses.replace(
            choice, accuracy_floor=field.floor, floor_text=field.floor_text
        )
    contradicted = field.contradicted
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
    spec: models.ModelSpec,
    hardware: Hardware,
    measured: Mapping[str, Measurement],
    demand: cost.Demand,
    field: _Field,
) -> Choice:
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
            f"no artifact qualifies on {hardware.describe()} with {field.word} {field.floor_text}"
            f"{dropped_text}",
            field.rejected,
        )
    if policy is models.SelectionPolicy.SMALLEST:
        return _smallest(field, dropped_text)
    latencies, latency_basis = _latencies(field.qualifying, measured or {})
    if policy is models.SelectionPolicy.FASTEST:
        return _fastest(field, latencies, latency_basis, dropped_text)
    if policy is models.SelectionPolicy.MIN_COST:
        return _min_cost(field, latencies, latency_basis, measured, demand, dropped_text)
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
        else f" (below the {field.word} {field.floor_text}; pinned wins)"
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
        f"smallest of {len(field.qualifying)} qualifying ({size}); {field.word} "
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
        speed = f"measured throughput {1000.0 / value:.0f} {field.rate}"
    return Choice(
        chosen,
        f"fastest of {len(field.qualifying)} qualifying ({speed}); {field.word} "
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
        f"best score of {len(qualifying)} qualifying ({ranking}; {basis}); {field.word} "
        f"{accuracy[chosen.name]:.4f} ≥ {field.floor_text}{dropped_text}",
        field.rejected,
        tuple(sorted(scores.items())),
    )


def _money(dollars: float) -> str:
    return f"${dollars:.4g}"


def _rate(qps: float) -> str:
    return f"{qps:.0f}" if qps >= 100 else f"{qps:.3g}"


def _min_cost(
    field: _Field,
    latencies: Mapping[str, float],
    latency_basis: str,
    measured: Mapping[str, Measurement],
    demand: cost.Demand,
    dropped_text: str,
) -> Choice:
    """The qualifying artifact that carries the load for the fewest dollars an hour.

    One replica's capacity is the declared targetQpsPerReplica, else its throughput
    (measured within the p99 objective at its tuned max_batch_size; else 1000 /
    declared latencyMs; else nominal) × targetUtilization, the autoscaler's own
    rule; `cost.priced` sizes and prices each on it and ranks them, `cost.kept` keeps
    the one serving within the switch margin; this words the comparison.
    """
    qualifying = field.qualifying
    load = demand.expected_qps
    if demand.target_qps_per_replica is not None:
        capacity_rule = f"capacity = declared targetQpsPerReplica {demand.target_qps_per_replica:g}"
    else:
        throughput = {
            "measured throughput": "measured throughput",
            "measured": "1000 / measured p99 (no throughput measured)",
            "declared": "1000 / declared latencyMs (batch 1, no throughput measured)",
            "nominal": "nominal 1000 req/s × fp32 speed per precision (nothing measured or "
            "declared)",
        }[latency_basis]
        capacity_rule = f"capacity = {throughput} × targetUtilization {demand.target_utilization:g}"
    if demand.target_qps_per_replica is not None:
        capacity = {a.name: demand.target_qps_per_replica for a in qualifying}
    else:
        capacity = {
            a.name: 1000.0 / latencies[a.name] * demand.target_utilization for a in qualifying
        }
    batch: dict[str, int] = {}
    if latency_basis.startswith("measured"):
        batch = {
            n: m.max_batch_size
            for n, m in measured.items()
            if n in capacity and m.max_batch_size is not None
        }
    ranked = cost.priced(qualifying, field.accuracy, capacity, batch, demand)
    best = ranked[0]
    kept = ""
    serving = cost.kept(ranked, demand)
    if serving is not None:
        kept = (
            f"; keeps serving {serving.name}: {best.name} would cost {_money(best.per_hour)}/h "
            f"against {_money(serving.per_hour)}/h, within the {cost.SWITCH_MARGIN:.0%} "
            "switch margin (a switch rolls the pods)"
        )
        best = serving
    by_name = {a.name: a for a in qualifying}
    chosen = by_name[best.name]
    bound = (
        f"spec.replicas {demand.max_replicas} (autoscaling off)"
        if demand.fixed
        else f"maxReplicas {demand.max_replicas}"
    )

    def line(c: cost.Cost) -> str:
        batch = f" b{c.max_batch_size}" if c.max_batch_size is not None else ""
        plural = "" if c.replicas == 1 else "s"
        over = " (over)" if c.over else ""
        relative = by_name[c.name].relative_cost
        factor = f" ×{relative:g}" if relative is not None else ""
        return (
            f"{c.name} acc {c.accuracy:.4f} cap {_rate(c.capacity)} req/s{batch} → "
            f"{c.replicas} replica{plural}{over}{factor} {_money(c.per_hour)}/h"
            + (" <- chosen" if c is best else "")
        )

    if load is None:
        what = f"minReplicas' worth ({demand.min_replicas}; {demand.source})"
    else:
        what = f"{_rate(load)} req/s ({demand.source})"
    head = (
        f"min-cost for {what} at {_money(demand.replica_price)}/replica-h "
        f"({demand.price_basis}); {capacity_rule}: "
    )
    tail = f"{kept}; {field.word} {field.floor_text}{dropped_text}"
    if best.over:
        tail = f"; no artifact carries the load within {bound}: the most capacity wins{tail}"
    elif any(c.over for c in ranked):
        tail = f"; over: needs more than {bound}{tail}"
    lines = [line(c) for c in ranked]
    shown = len(lines)
    while shown > 1 and len(head) + len("; ".join(lines[:shown])) + len(tail) > MAX_REASON_CHARS:
        shown -= 1
    more = f"; {len(lines) - shown} more" if shown < len(lines) else ""
    return Choice(
        chosen,
        head + "; ".join(lines[:shown]) + more + tail,
        field.rejected,
        tuple(sorted((c.name, c.per_hour) for c in ranked)),
        costs=tuple(ranked),
    )
