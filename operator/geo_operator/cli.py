"""The `geo` command: run the operator, and look at what it would do.

    geo run                       run the operator against the current kubeconfig
    geo crd                       print the CRD generated from the API models
    geo render -f gd.yaml         print the ConfigMap, Deployment and Service it would create
    geo select -f gd.yaml         which artifact it would serve, and why
    geo decide -f gd.yaml ...     one autoscaling decision, as JSON

Every verb that reads a GeoDeployment validates it exactly as the operator
does and exits 2 with the offending field named when it is invalid.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

import pydantic
import yaml

from geo_operator.api import crd, models, yamlio
from geo_operator.artifacts import selection
from geo_operator.builders import children, plan
from geo_operator.scaling import policy

RENDER_UID = "00000000-0000-0000-0000-000000000000"


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit code 2."""


def _load_geodeployment(path: str) -> dict[str, Any]:
    try:
        with open(path if path != "-" else "/dev/stdin", encoding="utf-8") as stream:
            documents = [d for d in yaml.safe_load_all(stream) if d]
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise UsageError(f"{path} is not valid YAML: {error}") from error
    found = [d for d in documents if isinstance(d, dict) and d.get("kind") == models.KIND]
    if len(found) != 1:
        raise UsageError(f"{path} must hold exactly one {models.KIND}, found {len(found)}")
    body = found[0]
    if body.get("apiVersion") != models.API_VERSION:
        raise UsageError(f"apiVersion must be {models.API_VERSION}, got {body.get('apiVersion')!r}")
    return body


def _spec(body: dict[str, Any]) -> models.GeoDeploymentSpec:
    try:
        return models.parse_spec(body.get("spec") or {})
    except pydantic.ValidationError as error:
        lines = [f"  spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()]
        raise UsageError("invalid GeoDeployment:\n" + "\n".join(lines)) from error


def cmd_crd(args: argparse.Namespace) -> int:
    sys.stdout.write(crd.helm_template() if args.chart else crd.crd_yaml())
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    body = _load_geodeployment(args.file)
    spec = _spec(body)
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
        raise UsageError(f"nothing to render: {decided.choice.reason}")
    sys.stdout.write(
        f"# artifact {decided.target.artifact.name}: {decided.choice.reason}\n"
        f"# ownerReferences carry a placeholder uid; the API server assigns the real one.\n"
    )
    sys.stdout.write(yamlio.dump_all(children.all_children(decided.target)))
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    body = _load_geodeployment(args.file)
    spec = _spec(body)
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


def cmd_decide(args: argparse.Namespace) -> int:
    body = _load_geodeployment(args.file)
    spec = _spec(body)
    if args.replicas < 0:
        raise UsageError("--replicas must be >= 0")
    ready = args.replicas if args.ready is None else args.ready
    missing = None
    if args.qps is None or args.p99_ms is None:
        absent = [n for n, v in (("--qps", args.qps), ("--p99-ms", args.p99_ms)) if v is None]
        missing = f"{' and '.join(absent)} not given"
    now = 1_000_000.0
    memory = policy.Memory()
    if args.low_for is not None:
        memory = policy.Memory(low_since=now - args.low_for)
    observation = policy.Observation(
        time=now,
        replicas=args.replicas,
        ready_replicas=ready,
        qps=args.qps,
        p99_ms=args.p99_ms,
        missing=missing,
    )
    decision, _ = policy.decide(spec.autoscaling, observation, memory)
    print(
        json.dumps(
            {
                "action": decision.action,
                "replicas": decision.replicas,
                "reason": decision.reason,
                "inputs": {
                    "replicas": args.replicas,
                    "readyReplicas": ready,
                    "qps": args.qps,
                    "p99Ms": args.p99_ms,
                    "lowForSeconds": args.low_for,
                    "qpsPerReplica": decision.qps_per_replica,
                },
                "policy": spec.autoscaling.model_dump(
                    by_alias=True, mode="json", exclude={"metrics"}
                ),
            },
            indent=2,
        )
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import kopf  # imported here: the other verbs must not pay for it

    from geo_operator import handlers  # noqa: F401  (registers the handlers)

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    namespaces = args.namespace or ()
    if args.metrics_port:
        import prometheus_client

        prometheus_client.start_http_server(args.metrics_port, addr=args.metrics_address)
        logging.getLogger(__name__).info(
            "operator metrics on http://%s:%d/metrics", args.metrics_address, args.metrics_port
        )
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness,
    )
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="geo",
        description=(
            "GEO serves models with NVIDIA Triton on Kubernetes: it picks the quantized "
            "artifact that meets the accuracy floor on your hardware, renders the Triton "
            "model repository, deploys it and keeps it scaled."
        ),
        epilog="Try: geo select -f manifests/examples/digits.yaml; geo render -f ...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")

    run = verbs.add_parser("run", help="run the operator against the current kubeconfig")
    run.add_argument(
        "-n",
        "--namespace",
        action="append",
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    run.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        help="kopf liveness endpoint (default: %(default)s)",
    )
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    run.add_argument(
        "--metrics-port",
        type=int,
        default=9090,
        help="port of the operator's own Prometheus metrics, 0 to turn off (default: %(default)s)",
    )
    run.add_argument("--metrics-address", default="0.0.0.0", help="address to serve metrics on")
    run.set_defaults(func=cmd_run)

    crd_cmd = verbs.add_parser("crd", help="print the CRD YAML generated from the API models")
    crd_cmd.add_argument(
        "--chart",
        action="store_true",
        help="print it as the Helm chart's templates/crd.yaml (what `make crd` writes)",
    )
    crd_cmd.set_defaults(func=cmd_crd)

    render = verbs.add_parser(
        "render", help="print the ConfigMap, Deployment and Service the operator would create"
    )
    render.add_argument("-f", "--file", required=True, help="GeoDeployment YAML ('-' = stdin)")
    render.add_argument("-n", "--namespace", help="namespace (default: the file's, or default)")
    render.add_argument("--gpu-arch", help="GPU architecture the pods land on, e.g. hopper")
    render.set_defaults(func=cmd_render)

    select = verbs.add_parser("select", help="which artifact would be served, and why")
    select.add_argument("-f", "--file", required=True, help="GeoDeployment YAML ('-' = stdin)")
    select.add_argument(
        "--gpu-arch",
        help="GPU architecture the pods land on (hopper, ada, ampere, ...); "
        "default: from spec.triton resources and nodeSelector",
    )
    select.add_argument("--json", action="store_true", help="print JSON")
    select.set_defaults(func=cmd_select)

    decide = verbs.add_parser(
        "decide",
        help="one autoscaling decision for given replicas, QPS and p99, as JSON",
        description="Run the autoscaling policy once. Without --qps or --p99-ms the metrics "
        "count as missing, and the decision is maintain: GEO never scales in blind.",
    )
    decide.add_argument("-f", "--file", required=True, help="GeoDeployment YAML ('-' = stdin)")
    decide.add_argument("--replicas", type=int, required=True, help="current replicas")
    decide.add_argument("--ready", type=int, help="ready replicas (default: --replicas)")
    decide.add_argument("--qps", type=float, help="total requests per second")
    decide.add_argument("--p99-ms", type=float, help="p99 latency in milliseconds")
    decide.add_argument(
        "--low-for",
        type=float,
        metavar="SECONDS",
        help="how long the load has already been low (for the scale-in window)",
    )
    decide.set_defaults(func=cmd_decide)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as error:
        print(f"geo {args.verb}: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `geo ... | head`: the reader left, not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
