"""`geo decide`: one autoscaling decision for given replicas, QPS and p99, as JSON.

Called through `cli.main`, to see what the operator's scaling loop would do
for a GeoDeployment file and an observation given as flags: it runs
`scaling.policy.decide` once, the same function the loop runs every tick.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from geo_operator.api import models
from geo_operator.cli import io, options
from geo_operator.scaling import capacity, policy

if TYPE_CHECKING:
    from geo_operator.cli.options import Verbs

NOW = 1_000_000.0  # the observation's clock: any origin does, --low-for counts back from it


def register(verbs: Verbs) -> None:
    p = verbs.add_parser(
        "decide",
        help="one autoscaling decision for given replicas, QPS and p99, as JSON or YAML",
        description="Run the autoscaling policy once. Without --qps or --p99-ms the metrics "
        "count as missing, and the decision is maintain: GEO never scales in blind.",
    )
    options.add_file(p)
    p.add_argument(
        "--replicas", type=options.non_negative_int, required=True, help="current replicas"
    )
    p.add_argument(
        "--ready", type=options.non_negative_int, help="ready replicas (default: --replicas)"
    )
    p.add_argument("--qps", type=options.non_negative_float, help="total requests per second")
    p.add_argument("--p99-ms", type=options.non_negative_float, help="p99 latency in milliseconds")
    p.add_argument(
        "--capacity",
        type=options.positive_float,
        help="req/s one replica serves within the p99 objective (the tuning Job's measured "
        "throughput); with targetQpsPerReplica unset the target is this × "
        "targetUtilization (default: none measured: p99 rules alone)",
    )
    p.add_argument(
        "--low-for",
        type=options.non_negative_float,
        metavar="SECONDS",
        help="how long the load has already been low (for the scale-in window)",
    )
    options.add_output(p, text=False)
    p.set_defaults(func=cmd_decide)


def cmd_decide(args: argparse.Namespace) -> int:
    observation = observation_from_args(args)
    spec = io.load_spec(args.file)
    memory = policy.Memory()
    if args.low_for is not None:
        memory = policy.Memory(low_since=observation.time - args.low_for)
    target = capacity.target(spec, args.capacity)
    autoscaling = capacity.resolve(spec, target)
    decision, _ = policy.decide(autoscaling, observation, memory)
    out = _as_json(args, observation, decision, autoscaling)
    out["target"] = target.status().model_dump(by_alias=True, mode="json", exclude_none=True)
    io.emit(out, args.output)
    return 0


def observation_from_args(args: argparse.Namespace) -> policy.Observation:
    """What the loop would have observed, from --replicas, --ready, --qps and --p99-ms.

    Raises UsageError for more ready replicas than replicas: no Deployment reports that.
    """
    if args.ready is not None and args.ready > args.replicas:
        raise io.UsageError(
            f"--ready {args.ready} is more than --replicas {args.replicas}: "
            "ready replicas are among the replicas"
        )
    absent = [n for n, v in (("--qps", args.qps), ("--p99-ms", args.p99_ms)) if v is None]
    return policy.observation(
        NOW,
        args.replicas,
        args.replicas if args.ready is None else args.ready,
        args.qps,
        args.p99_ms,
        missing=f"{' and '.join(absent)} not given" if absent else None,
    )


def _as_json(
    args: argparse.Namespace,
    observation: policy.Observation,
    decision: policy.Decision,
    autoscaling: models.Autoscaling,
) -> dict[str, Any]:
    return {
        "action": decision.action,
        "replicas": decision.replicas,
        "reason": decision.reason,
        "inputs": {
            "replicas": observation.replicas,
            "readyReplicas": observation.ready_replicas,
            "qps": observation.qps,
            "p99Ms": observation.p99_ms,
            "lowForSeconds": args.low_for,
            "qpsPerReplica": decision.qps_per_replica,
        },
        "policy": autoscaling.model_dump(by_alias=True, mode="json", exclude={"metrics"}),
    }
