"""`geo crd`, `geo alerts`, `geo dashboard`, `geo render`, `geo select`: what the operator
would create and serve, offline.

Called through `cli.main`; `make crd` writes crds/, the chart's CRD template, its
alerting rules and its dashboard with `geo crd`, `geo alerts` and `geo dashboard`.
render and select plan a GeoDeployment file exactly as the operator's reconcile does,
without a cluster; select reads a GeoDeployment's status (`--status`) through the
reconcile's own `plan.selection_inputs`, and takes figures on the command line
(`--measured`) and the load min-cost sizes for (`--expected-qps`, `--current-qps`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from geo_operator.api import crd, models, reference, yamlio
from geo_operator.artifacts import cost, selection
from geo_operator.builders import alerts, children, plan
from geo_operator.cli import io, options

if TYPE_CHECKING:
    from geo_operator.cli.options import Verbs

RENDER_UID = "00000000-0000-0000-0000-000000000000"


def register(verbs: Verbs) -> None:
    _add_crd(verbs)
    _add_alerts(verbs)
    _add_dashboard(verbs)
    _add_render(verbs)
    _add_select(verbs)


def _add_crd(verbs: Verbs) -> None:
    p = verbs.add_parser("crd", help="print the CRD YAML generated from the API models")
    p.add_argument(
        "--chart",
        action="store_true",
        help="print it as the Helm chart's templates/crd.yaml (what `make crd` writes)",
    )
    p.add_argument(
        "--reference",
        action="store_true",
        help="print the API reference (Markdown: every field's type, default, bounds and "
        "meaning, and the admission rules) that `make crd` writes to docs/reference/api.md",
    )
    p.set_defaults(func=cmd_crd)


def cmd_crd(args: argparse.Namespace) -> int:
    if args.reference and args.chart:
        raise io.UsageError("--chart and --reference print different things: pick one")
    if args.reference:
        sys.stdout.write(reference.reference())
    else:
        sys.stdout.write(crd.helm_template() if args.chart else crd.crd_yaml())
    return 0


def _add_alerts(verbs: Verbs) -> None:
    p = verbs.add_parser(
        "alerts",
        help="print the Prometheus alerting rules that follow each GeoDeployment's SLO",
        description="A Prometheus rule file (load it with rule_files, or install the chart "
        "with prometheusRule.enabled=true): p99 above the objective, errors above 0.1 %%, "
        "metrics missing, pinned at maxReplicas while breaching, tuning or rollout failed. "
        "Prometheus must scrape Triton's pods (with namespace and geodeployment labels) and "
        "the operator's --metrics-port.",
    )
    p.add_argument(
        "--for-seconds",
        type=options.int_in(0, 86400),
        metavar="N",
        help="hold every alert N seconds before it fires instead of the shipped minutes "
        "(for trying them out)",
    )
    p.set_defaults(func=cmd_alerts)


def cmd_alerts(args: argparse.Namespace) -> int:
    sys.stdout.write(alerts.rule_file(args.for_seconds))
    return 0


def _add_dashboard(verbs: Verbs) -> None:
    p = verbs.add_parser(
        "dashboard",
        help="print the Grafana dashboard of the GeoDeployments (JSON)",
        description="Load, p99 against each objective, replicas and decisions, queue, batch "
        "size, utilization, cache hits, tuning and rollout state, per GeoDeployment. Import "
        "it in Grafana, or install the chart with dashboards.enabled=true (a ConfigMap the "
        "Grafana sidecar of kube-prometheus-stack loads). Its p99 panel reads the alerts' "
        "recording rule: load `geo alerts` too.",
    )
    p.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from geo_operator.builders import dashboard  # Grafana's SDK: only this verb needs it

    sys.stdout.write(dashboard.dashboard_json())
    return 0


def _add_render(verbs: Verbs) -> None:
    p = verbs.add_parser(
        "render", help="print the ConfigMap, Deployment and Service the operator would create"
    )
    options.add_file(p)
    p.add_argument("-n", "--namespace", help="namespace (default: the file's, or default)")
    options.add_gpu_arch(p)
    p.set_defaults(func=cmd_render)


def cmd_render(args: argparse.Namespace) -> int:
    body = io.load_geodeployment(args.file)
    spec = io.spec_of(body)
    meta = body.get("metadata") or {}
    decided = plan.plan(
        name=meta.get("name", "unnamed"),
        namespace=args.namespace or meta.get("namespace") or "default",
        uid=RENDER_UID,
        spec=spec,
        status=models.GeoDeploymentStatus(),
        current_replicas=None,
        gpu_arch=args.gpu_arch,
    )
    if decided.target is None:
        raise io.UsageError(f"nothing to render: {decided.choice.reason}")
    sys.stdout.write(
        f"# artifact {decided.target.artifact.name}: {decided.choice.reason}\n"
        f"# ownerReferences carry a placeholder uid; the API server assigns the real one.\n"
    )
    sys.stdout.write(yamlio.dump_all(children.all_children(decided.target, replicas=True)))
    return 0


def _add_select(verbs: Verbs) -> None:
    p = verbs.add_parser(
        "select",
        help="which artifact would be served, and why",
        description="Select as the operator does, offline. min-cost sizes for "
        "--expected-qps, else objectives.expectedQps, else --current-qps (or the load in "
        "--status), else minReplicas' worth; measurements come from --status's tuning "
        "results and --measured figures (else selection goes by the declared figures).",
    )
    options.add_file(p)
    options.add_gpu_arch(p)
    options.add_output(p)
    p.add_argument(
        "--status",
        metavar="FILE",
        help="a GeoDeployment's status, YAML or JSON (`kubectl get geod NAME -o yaml`, or "
        "its .status alone), read as the operator reads it: its tuning results for this "
        "spec are the measurements, its last decision the current load, its "
        "selectedArtifact the one serving (min-cost keeps it unless another is clearly "
        "cheaper)",
    )
    p.add_argument(
        "--measured",
        metavar="NAME=QPS[,accuracy=A][,batch=B][,p99=MS][,samples=N]",
        type=measured_figures,
        action="append",
        default=[],
        help="an artifact's measured throughput per replica (req/s within the p99 "
        "objective) and, optionally, held-out accuracy (on N samples, default 1), tuned "
        "max_batch_size and p99; repeatable; overrides --status for the figures it gives",
    )
    p.add_argument(
        "--expected-qps",
        type=options.non_negative_float,
        help="min-cost: the load to size for, req/s (default: objectives.expectedQps)",
    )
    p.add_argument(
        "--current-qps",
        type=options.non_negative_float,
        help="min-cost: the total req/s the autoscaler sees now, used when no expected load "
        "is set (default: --status's lastDecision, qpsPerReplica × from)",
    )
    p.set_defaults(func=cmd_select)


@dataclasses.dataclass(frozen=True)
class Figures:
    """One --measured: an artifact's figures given on the command line."""

    name: str
    throughput: float
    accuracy: float | None = None
    batch: int | None = None
    p99_ms: float | None = None
    samples: int | None = None


_FIGURE_KEYS: dict[str, Callable[[str], float | int]] = {
    "accuracy": options.float_in(0, 1),
    "batch": options.positive_int,
    "p99": options.positive_float,
    "samples": options.positive_int,
}


def measured_figures(text: str) -> Figures:
    """``NAME=QPS[,accuracy=A][,batch=B][,p99=MS][,samples=N]``, as argparse type=."""
    name, equals, rest = text.partition("=")
    if not equals or not name.strip() or not rest.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=QPS[,key=value...]")
    first, *pairs = rest.split(",")
    try:
        throughput = options.positive_float(first)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"{name.strip()}: throughput {error}") from None
    values: dict[str, float | int] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        key = key.strip()
        if key not in _FIGURE_KEYS or not equals:
            raise argparse.ArgumentTypeError(
                f"{pair.strip()!r} in {text!r}: expected key=value, key one of "
                + ", ".join(_FIGURE_KEYS)
            )
        if key in values:
            raise argparse.ArgumentTypeError(f"{key} given twice in {text!r}")
        try:
            values[key] = _FIGURE_KEYS[key](value)
        except argparse.ArgumentTypeError as error:
            raise argparse.ArgumentTypeError(f"{name.strip()}: {key} {error}") from None
    return Figures(
        name=name.strip(),
        throughput=throughput,
        accuracy=float(values["accuracy"]) if "accuracy" in values else None,
        batch=int(values["batch"]) if "batch" in values else None,
        p99_ms=float(values["p99"]) if "p99" in values else None,
        samples=int(values["samples"]) if "samples" in values else None,
    )


def status_notes(
    spec: models.GeoDeploymentSpec,
    status: models.GeoDeploymentStatus,
    inputs: plan.SelectionInputs,
) -> list[str]:
    """What of the status's tuning results the operator does not use, and why: the runs of
    an artifact the spec lacks, of another spec (another key), or any when the spec does
    not tune (selection then goes by the declared figures, as the operator's does)."""
    names = [a.name for a in spec.model.artifacts]
    notes = []
    unused = [r for r in status.tuning or () if r.artifact in names and r.result is not None]
    for run in status.tuning or ():
        if run.artifact not in names:
            notes.append(f"status.tuning has {run.artifact}, not an artifact of the spec: ignored")
    if unused and not inputs.keys:
        why = (
            "a generative model without model.evaluation is not measured"
            if spec.model.generative
            else f"spec.triton.maxBatchSize is {spec.triton.max_batch_size}, not 0 (tune)"
        )
        notes.append(f"status.tuning's results are ignored, as the operator ignores them: {why}")
        return notes
    for run in unused:
        if run.artifact in inputs.measured:
            continue
        this = inputs.keys.get(run.artifact)
        why = f"this spec's is {this}" if this else "not a tuning candidate of this spec"
        notes.append(
            f"{run.artifact}: its tuning result is for another spec (key {run.key}; {why}): "
            "ignored, as the operator ignores it"
        )
    return notes


def _apply_figures(
    spec: models.GeoDeploymentSpec,
    measured: dict[str, selection.Measurement],
    given: list[Figures],
) -> None:
    """--measured into ``measured``: each figure given replaces the status's."""
    names = [a.name for a in spec.model.artifacts]
    evaluation = spec.model.evaluation
    metric = evaluation.metric if evaluation else models.EvaluationMetric.ACCURACY
    reference = selection.reference(spec.model)
    for f in given:
        if f.name not in names:
            raise io.UsageError(
                f"--measured {f.name}: no such artifact (the spec has {', '.join(names)})"
            )
        old = measured.get(f.name)
        accuracy = old.accuracy if old else None
        if f.accuracy is not None:
            accuracy = models.MeasuredAccuracy(
                metric=metric,
                value=f.accuracy,
                samples=f.samples or 1,
                reference=reference.name if reference else None,
            )
        measured[f.name] = selection.Measurement(
            latency_ms=f.p99_ms or (old.latency_ms if old else spec.tuning_budget_ms()),
            throughput=f.throughput,
            max_batch_size=f.batch or (old.max_batch_size if old else None),
            accuracy=accuracy,
        )


def cmd_select(args: argparse.Namespace) -> int:
    spec = io.load_spec(args.file)
    status = io.load_status(args.status) if args.status else models.GeoDeploymentStatus()
    # The operator's own path to selection's inputs (plan.selection_inputs); the flags
    # below then replace what they give, each said in the output.
    inputs = plan.selection_inputs(spec, status, args.gpu_arch)
    notes = status_notes(spec, status, inputs)
    measured = dict(inputs.measured)
    _apply_figures(spec, measured, args.measured)
    demand = inputs.demand
    if args.current_qps is not None:
        demand = cost.demand(spec, args.current_qps, demand.served)
    if args.expected_qps is not None:
        demand = dataclasses.replace(
            demand, expected_qps=args.expected_qps, source="--expected-qps"
        )
    elif demand.expected_qps is not None and spec.objectives.expected_qps is None:
        where = "--current-qps" if args.current_qps is not None else f"{demand.source}, in --status"
        demand = dataclasses.replace(demand, source=where)
    inputs = dataclasses.replace(inputs, measured=measured, demand=demand)
    choice = plan.choose(spec, status, inputs)
    hardware = inputs.hardware
    result = {
        "artifact": choice.artifact.name if choice.artifact else None,
        "hardware": hardware.describe(),
        "reason": choice.reason,
        "rejected": [{"name": n, "why": w} for n, w in choice.rejected],
        "scores": dict(choice.scores),
        "demand": {
            "expectedQps": demand.expected_qps,
            "source": demand.source,
            "minReplicas": demand.min_replicas,
            "maxReplicas": demand.max_replicas,
            "replicaPricePerHour": demand.replica_price,
            "priceBasis": demand.price_basis,
            "served": demand.served,
        },
        "candidates": [
            {
                "name": c.name,
                "accuracy": c.accuracy,
                "capacity": c.capacity,
                "maxBatchSize": c.max_batch_size,
                "replicas": c.replicas,
                "costPerHour": c.per_hour,
                "overMaxReplicas": c.over,
                "chosen": choice.artifact is not None and c.name == choice.artifact.name,
            }
            for c in choice.costs
        ],
        "notes": notes,
    }
    if args.output != "text":
        io.emit(result, args.output)
        return 0 if choice.artifact else 1
    print(f"artifact: {result['artifact'] or '(none)'}")
    print(f"hardware: {result['hardware']}")
    print(f"reason:   {choice.reason}")
    if choice.costs:
        print(_cost_table(choice))
    for name, why in choice.rejected:
        print(f"dropped:  {name}: {why}")
    for note in notes:
        print(f"note:     {note}")
    return 0 if choice.artifact else 1


def _cost_table(choice: selection.Choice) -> str:
    """min-cost's comparison as columns, cheapest first."""
    rows = [("candidate", "accuracy", "capacity", "batch", "replicas", "cost/h", "")]
    for c in choice.costs:
        rows.append(
            (
                c.name,
                f"{c.accuracy:.4f}",
                f"{c.capacity:.0f} req/s",
                str(c.max_batch_size) if c.max_batch_size is not None else "-",
                f"{c.replicas}" + (" (over)" if c.over else ""),
                f"${c.per_hour:.4g}",
                "<- chosen" if choice.artifact and c.name == choice.artifact.name else "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in rows
    )
