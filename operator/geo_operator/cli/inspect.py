"""`geo crd`, `geo render`, `geo select`: what the operator would create and serve, offline.

Called through `cli.main`; `make crd` writes crds/ and the chart's CRD template
with `geo crd`. render and select plan a GeoDeployment file exactly as the
operator's reconcile does, without a cluster.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from geo_operator.api import crd, models, yamlio
from geo_operator.artifacts import selection
from geo_operator.builders import children, plan
from geo_operator.cli import io, options

if TYPE_CHECKING:
    from geo_operator.cli.options import Verbs

RENDER_UID = "00000000-0000-0000-0000-000000000000"


def register(verbs: Verbs) -> None:
    _add_crd(verbs)
    _add_render(verbs)
    _add_select(verbs)


def _add_crd(verbs: Verbs) -> None:
    p = verbs.add_parser("crd", help="print the CRD YAML generated from the API models")
    p.add_argument(
        "--chart",
        action="store_true",
        help="print it as the Helm chart's templates/crd.yaml (what `make crd` writes)",
    )
    p.set_defaults(func=cmd_crd)


def cmd_crd(args: argparse.Namespace) -> int:
    sys.stdout.write(crd.helm_template() if args.chart else crd.crd_yaml())
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
    sys.stdout.write(yamlio.dump_all(children.all_children(decided.target)))
    return 0


def _add_select(verbs: Verbs) -> None:
    p = verbs.add_parser("select", help="which artifact would be served, and why")
    options.add_file(p)
    options.add_gpu_arch(p)
    options.add_json(p)
    p.set_defaults(func=cmd_select)


def cmd_select(args: argparse.Namespace) -> int:
    spec = io.load_spec(args.file)
    hardware = selection.hardware_of(spec.triton, args.gpu_arch)
    choice = selection.select(spec.model, hardware)
    result = {
        "artifact": choice.artifact.name if choice.artifact else None,
        "hardware": hardware.describe(),
        "reason": choice.reason,
        "rejected": [{"name": n, "why": w} for n, w in choice.rejected],
        "scores": dict(choice.scores),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"artifact: {result['artifact'] or '(none)'}")
        print(f"hardware: {result['hardware']}")
        print(f"reason:   {choice.reason}")
        for name, why in choice.rejected:
            print(f"dropped:  {name}: {why}")
    return 0 if choice.artifact else 1
