"""`geo simulate`: replay a traffic trace through simulated Triton replicas under an autoscaler.

Called through `cli.main`; e2e/bench_simulate.py runs the same `simulation`
code directly. This module holds the verb's options and turns them into one
`simulation.replay` per policy; numpy, numba and matplotlib are imported in
the body, so the other verbs don't load them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
from typing import TYPE_CHECKING

from geo_operator.api import models
from geo_operator.cli import io, options

if TYPE_CHECKING:
    from geo_operator.cli.options import Verbs
    from geo_operator.simulation import engine, replay, replica
    from geo_operator.simulation.trace import Trace

DESCRIPTION = (
    "Replay a request trace (Azure LLM trace CSV: a TIMESTAMP column, one row "
    "per request) through a model of Triton replicas (dynamic batcher, batch service time "
    "a + b*batch calibrated on the real Triton by e2e/calibrate_replica.py, pod start-up "
    "delay, metric lag) under GEO's policy or an anchor: Kubernetes HPA, KEDA, Knative KPA, "
    "or an oracle that knows the future. Prints SLO-violation seconds (10-second windows "
    "whose p99 exceeds targetP99LatencyMs), replica-seconds, scaling actions, direction "
    "changes and the worst p99. Every policy gets the GeoDeployment's targets. "
    "Deterministic for a seed."
)
EPILOG = (
    "example: geo simulate -f manifests/examples/digits-simulate.yaml "
    "--trace ../shared/traces/azure-llm-2023-code.csv --policy all --plot out/azure.png"
)


def register(verbs: Verbs) -> None:
    p = verbs.add_parser(
        "simulate",
        help="replay a traffic trace through simulated Triton replicas under an autoscaler",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    options.add_file(p)
    _add_trace_options(p)
    _add_replay_options(p)
    p.add_argument("--profile", help="replica profile JSON (default: the calibrated one)")
    p.add_argument("--plot", type=pathlib.Path, help="write a PNG of replicas and p99")
    options.add_json(p)
    p.set_defaults(func=cmd_simulate)


def _add_trace_options(p: argparse.ArgumentParser) -> None:
    """The traffic: a trace file or a synthetic shape, its length and its scale."""
    p.add_argument("--trace", help="trace CSV with a TIMESTAMP column")
    p.add_argument(
        "--synthetic",
        choices=["step", "ramp", "spike", "diurnal"],
        help="a synthetic trace instead of --trace",
    )
    p.add_argument(
        "--peak-replicas",
        type=options.non_negative_float,
        default=8,
        help="scale the rate so the busiest 10 s need this many replicas at "
        "targetQpsPerReplica; 0 = replay the rate as recorded (default: %(default)s)",
    )
    p.add_argument(
        "--rate-resolution",
        type=options.positive_int,
        default=10,
        metavar="SECONDS",
        help="the trace's rate is counted per this many seconds; arrivals within are "
        "Poisson (default: %(default)s)",
    )
    p.add_argument(
        "--duration",
        type=options.int_in(60),
        help="replay only the first SECONDS, at least 60 (synthetic: length, default 1800)",
    )


def _add_replay_options(p: argparse.ArgumentParser) -> None:
    """The autoscalers and the simulated cluster they act on."""
    p.add_argument(
        "--policy",
        default="geo",
        help="geo, hpa, keda, kpa, oracle, a comma-separated list, or all; also instant: the "
        "oracle without foresight: exact sizing, a start-up late (default: %(default)s)",
    )
    p.add_argument(
        "--startup-seconds",
        type=options.non_negative_float,
        default=30.0,
        help="from a pod's order to ready: scheduling, model load (default: %(default)s)",
    )
    p.add_argument(
        "--metrics-lag-seconds",
        type=options.non_negative_int,
        default=5,
        help="age of the metrics every autoscaler sees (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def cmd_simulate(args: argparse.Namespace) -> int:
    from geo_operator.simulation import autoscalers, replay, report

    spec = io.load_spec(args.file)
    names = _policies(args.policy)
    profile, trace = _inputs(args, spec)
    scaling = replay.resolved(spec, profile)
    replay_options = replay.Options(
        startup_seconds=args.startup_seconds,
        metrics_lag_seconds=args.metrics_lag_seconds,
        seed=args.seed,
        profile=profile,
    )
    print(_header(args, spec, trace, profile), file=sys.stderr)
    results = [_replay_one(spec, trace, name, replay_options) for name in names]
    if args.plot:
        report.plot(results, autoscalers.target_qps(scaling), spec.target_p99_ms(), args.plot)
    if args.json:
        summaries = [r.summary() for r in results]
        print(json.dumps(summaries[0] if len(summaries) == 1 else summaries, indent=2))
    else:
        print(report.table(results))
    return 0


def _policies(policy: str) -> list[str]:
    """The policy names --policy asks for; an unknown one is a UsageError."""
    from geo_operator.simulation import autoscalers

    names = list(autoscalers.POLICIES) if policy == "all" else policy.split(",")
    unknown = [n for n in names if n not in autoscalers.POLICIES + autoscalers.REFERENCES]
    if unknown:
        raise io.UsageError(
            f"unknown policy {', '.join(unknown)}: "
            f"choose from {', '.join(autoscalers.POLICIES)} or all"
        )
    return names


def _inputs(
    args: argparse.Namespace, spec: models.GeoDeploymentSpec
) -> tuple[replica.Profile, Trace]:
    """The replica profile and the trace, cut to --duration and scaled to --peak-replicas."""
    from geo_operator.simulation import autoscalers, replay, replica
    from geo_operator.simulation import trace as traces

    if (args.trace is None) == (args.synthetic is None):
        raise io.UsageError("give exactly one of --trace FILE.csv or --synthetic SHAPE")
    try:
        profile = replica.Profile.load(args.profile) if args.profile else replica.Profile.load()
        if args.trace is not None:
            trace = traces.from_csv(args.trace, args.rate_resolution)
        else:
            trace = traces.synthetic(args.synthetic, duration=args.duration or 1800, seed=args.seed)
    except ValueError as error:
        raise io.UsageError(str(error)) from error
    if args.duration:
        trace = dataclasses.replace(trace, rate=trace.rate[: args.duration])
    if args.peak_replicas > 0:
        target = autoscalers.target_qps(replay.resolved(spec, profile))
        trace = traces.scale_to_peak(trace, args.peak_replicas, target)
    return profile, trace


def _header(
    args: argparse.Namespace, spec: models.GeoDeploymentSpec, trace: Trace, profile: replica.Profile
) -> str:
    """The line on stderr that says what is replayed, through which replica model."""
    from geo_operator.simulation import autoscalers, replay

    peak = trace.peak(10)
    batch = replay.batching(spec, profile)
    target = autoscalers.target_qps(replay.resolved(spec, profile))
    return (
        f"[simulate] {trace.name}: {trace.duration} s, peak {peak:.0f} req/s over 10 s "
        f"(= {peak / target:.1f} replicas at the target {target:g}), "
        f"replica model a={profile.service_a_ms} ms + b={profile.service_b_ms} ms/item, "
        f"capacity {profile.capacity(batch.max_batch_size, batch.instances):.0f} req/s "
        f"at full batches; start-up {args.startup_seconds:g} s, metrics lag "
        f"{args.metrics_lag_seconds} s, seed {args.seed}"
    )


def _replay_one(
    spec: models.GeoDeploymentSpec, trace: Trace, name: str, replay_options: replay.Options
) -> engine.Result:
    """One policy's replay; progress on stderr when it is a terminal."""
    from geo_operator.simulation import replay

    def progress(second: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r[simulate] {name}: {second}/{total} s", end="", file=sys.stderr)

    result, _ = replay.replay(spec, trace, name, replay_options, progress)
    if sys.stderr.isatty():
        print("\r", end="", file=sys.stderr)
    return result
