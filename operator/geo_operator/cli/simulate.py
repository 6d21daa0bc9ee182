"""`geo simulate`: replay a traffic trace through simulated Triton replicas under an autoscaler.

Called through `cli.main`; e2e/bench_simulate.py runs the same `simulation`
code directly. This module holds the verb's options and turns them into one
`simulation.replay` per policy; numpy, numba and matplotlib are imported in
the body, so the other verbs don't load them.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import pathlib
import sys
from typing import TYPE_CHECKING

from geo_operator.api import models
from geo_operator.cli import io, options

if TYPE_CHECKING:
    from geo_operator.cli.options import Verbs
    from geo_operator.scaling import capacity
    from geo_operator.simulation import autoscalers, engine, replay, replica
    from geo_operator.simulation.trace import Trace

DESCRIPTION = (
    "Replay a request trace (Azure LLM trace CSV: a TIMESTAMP column, one row "
    "per request) through a model of Triton replicas (dynamic batcher, batch service time "
    "a + b*batch calibrated on the real Triton by e2e/calibrate_replica.py, pod start-up "
    "delay, metric lag) under GEO's policy or an anchor: Kubernetes HPA, KEDA, Knative KPA, "
    "or an oracle that knows the future. Prints SLO-violation seconds (10-second windows "
    "whose p99 exceeds the p99 objective), replica-seconds, scaling actions, direction "
    "changes and the worst p99. Every policy gets the same target QPS per replica: "
    "targetQpsPerReplica when set, else the measured capacity (--capacity, --status, or "
    "what the tuning Job would measure on the profile: the best throughput whose p99 stays "
    "within the objective) x targetUtilization; GEO corrects it from what it sees, as the "
    "operator does. Deterministic for a seed."
)
EPILOG = (
    "example: geo simulate -f manifests/examples/digits-simulate.yaml "
    "--trace traces/azure-llm-2023-code.csv --policy all --plot out/azure.png\n"
    "A generative spec (model.kind generative) is replayed token by token: each request's "
    "ContextTokens and GeneratedTokens through replicas of its engine (slots, a KV cache "
    "per slot, chunked prefill beside decoding; prefill and decode step costs calibrated "
    "on the real llama.cpp engine by e2e/calibrate_llm_replica.py), each 10-second window "
    "scored on TTFT p99 and inter-token p99 against the objectives, under geo, "
    "keda-waiting, aibrix-kpa, llmd-wva, dynamo-planner, hpa or oracle: "
    "geo simulate -f manifests/examples/simulate-pycode.yaml "
    "--trace traces/azure-llm-2023-code.csv --policy all -o json"
)

# simulation.token_trace.MIXES and token_autoscalers.POLICIES (not imported: numpy).
MIXES = ("long-prompt", "long-answer", "shift", "burst")
GENERATIVE_POLICIES = (
    "geo",
    "keda-waiting",
    "aibrix-kpa",
    "llmd-wva",
    "dynamo-planner",
    "hpa",
    "oracle",
)


# simulation.trace.SHAPES (not imported here: it loads numpy).
SHAPES = ("step", "ramp", "spike", "diurnal", "steady-low", "steady-mid", "steady-high")


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
    _add_capacity_options(p)
    p.add_argument("--profile", help="replica profile JSON (default: the calibrated one)")
    p.add_argument("--plot", type=pathlib.Path, help="write a PNG of replicas and p99")
    options.add_output(p)
    p.set_defaults(func=cmd_simulate)


def _add_trace_options(p: argparse.ArgumentParser) -> None:
    """The traffic: a trace file or a synthetic shape, its length and its scale."""
    p.add_argument("--trace", help="trace CSV with a TIMESTAMP column")
    p.add_argument(
        "--synthetic",
        choices=SHAPES,
        help="a synthetic trace instead of --trace: a shape, or stationary load whose "
        "10-second windows vary with a coefficient of variation of 0.1, 0.25 or 0.4 "
        "(steady-low|mid|high)",
    )
    p.add_argument(
        "--mix",
        choices=MIXES,
        help="a generative spec: a synthetic token trace instead of --trace: long prompts "
        "and short answers, short prompts and long answers, a shift from one to the other "
        "mid-trace, or a burst",
    )
    p.add_argument(
        "--rate-factor",
        type=options.positive_float,
        default=1.0,
        metavar="FACTOR",
        help="a generative spec: replay the trace at FACTOR times its recorded rate (its "
        "windows' mix kept; default: %(default)s); --mix: requests/s on average (default 2)",
    )
    p.add_argument(
        "--peak-replicas",
        type=options.non_negative_float,
        default=8,
        help="scale the rate so the busiest 10 s need this many replicas at "
        "the effective target; 0 = replay the rate as recorded (default: %(default)s)",
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
    p.add_argument(
        "--start",
        choices=("fair", "cold"),
        default="fair",
        help="fair: every policy starts with the replicas the trace's first minute needs "
        "at the target (a running system is not cold at the trace's first second); cold: "
        "those of its first 10 s only (default: %(default)s)",
    )
    p.add_argument(
        "--queue",
        choices=("spec", "unbounded", "both"),
        default="spec",
        help="spec: the queue as the spec bounds it (triton.dynamicBatching."
        "defaultQueuePolicy: maxQueueSize and a REJECT timeout shed load); unbounded: the "
        "same without bounds (every request queues); both: each policy twice, as "
        "POLICY/shed and POLICY/queue (default: %(default)s)",
    )
    p.add_argument(
        "--warmup-seconds",
        type=options.non_negative_int,
        default=0,
        metavar="SECONDS",
        help="also score from SECONDS on only (SLO-violation and replica-seconds after "
        "the warm-up), so no policy is judged on its start (default: %(default)s)",
    )


def _add_capacity_options(p: argparse.ArgumentParser) -> None:
    """Where the measured capacity comes from, and how far production departs from it."""
    given = p.add_mutually_exclusive_group()
    given.add_argument(
        "--capacity",
        type=options.positive_float,
        metavar="REQ_PER_S",
        help="one replica's tuned throughput within the p99 objective, given by hand "
        "(default: what the tuning Job would measure on the replica profile)",
    )
    given.add_argument(
        "--status",
        metavar="FILE",
        help="a GeoDeployment (or its .status) as YAML or JSON: the served artifact's "
        "status.tuning[].result.throughput is the measured capacity",
    )
    p.add_argument(
        "--capacity-error",
        type=options.float_in(0.1, 2.0),
        default=1.0,
        metavar="FACTOR",
        help="production replicas serve FACTOR of the measured capacity (0.7: 30 %% slower "
        "than the lab measured); GEO learns the correction, the anchors keep the target "
        "(default: %(default)s)",
    )


@dataclasses.dataclass(frozen=True)
class _Capacity:
    """The measured capacity every policy's target derives from, and where it came from."""

    value: float
    origin: str


def cmd_simulate(args: argparse.Namespace) -> int:
    from geo_operator.scaling import capacity
    from geo_operator.simulation import autoscalers, replay, report

    spec = io.load_spec(args.file)
    if spec.model.generative:
        return _simulate_generative(args, spec)
    if args.mix is not None:
        raise io.UsageError(
            f"--mix is a generative spec's synthetic token trace; {args.file} is predictive: "
            "give --synthetic SHAPE or --trace"
        )
    if args.plot:
        _check_plot(args.plot)
    names = _policies(args.policy)
    profile = _profile(args)
    measured = _measured(args, spec, profile)
    target = capacity.target(spec, measured.value)
    trace = _trace(args, autoscalers.target_qps(capacity.resolve(spec, target)))
    replay_options = replay.Options(
        startup_seconds=args.startup_seconds,
        metrics_lag_seconds=args.metrics_lag_seconds,
        seed=args.seed,
        profile=profile,
        capacity=measured.value,
        capacity_error=args.capacity_error,
        start=args.start,
    )
    print(_header(args, spec, trace, profile, target, measured), file=sys.stderr)
    runs = [
        (dataclasses.replace(result, policy=result.policy + suffix), scaler)
        for variant, suffix in _queues(spec, args.queue)
        for result, scaler in (_replay_one(variant, trace, name, replay_options) for name in names)
    ]
    results = [result for result, _ in runs]
    if args.output != "text":
        summaries = [
            _summary(result, scaler, target, measured, args.warmup_seconds)
            for result, scaler in runs
        ]
        io.emit(summaries[0] if len(summaries) == 1 else summaries, args.output)
    else:
        print(report.table(results, args.warmup_seconds))
        for result, scaler in runs:
            if isinstance(scaler, autoscalers.Geo):
                print(_learned(scaler, result.policy))
    if args.plot and target.value is not None:  # after the table: a plot never loses it
        sys.stdout.flush()
        report.plot(results, target.value, spec.target_p99_ms(), args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def _check_plot(path: pathlib.Path) -> None:
    """--plot's needs, before the replay runs: matplotlib, and a directory to write in."""
    if importlib.util.find_spec("matplotlib") is None:
        raise io.UsageError(
            "--plot needs matplotlib, which is not installed: "
            "pip install 'geo-operator[simulate]' (or drop --plot)"
        )
    folder = path.parent if str(path.parent) else pathlib.Path(".")
    if not folder.is_dir():
        raise io.UsageError(f"--plot {path}: no directory {folder}")
    if path.is_dir():
        raise io.UsageError(
            f"--plot {path}: is a directory; give a file name, e.g. {path}/plot.png"
        )


def _queues(
    spec: models.GeoDeploymentSpec, queue: str
) -> list[tuple[models.GeoDeploymentSpec, str]]:
    """The spec's variants --queue asks for, each with its policy-name suffix."""
    unbounded = spec.model_copy(update={"triton": spec.triton.unbounded()})
    if queue == "unbounded":
        return [(unbounded, "")]
    if queue == "both":
        return [(spec, "/shed"), (unbounded, "/queue")]
    return [(spec, "")]


def _learned(geo: autoscalers.Geo, name: str = "geo") -> str:
    """GEO's correction at the end of the replay, in words."""
    learned = geo.learned()
    return (
        f"{name}: correction {geo.correction.factor:.2f} after {geo.correction.evidence} "
        f"ticks that taught it; target {geo.initial_target.value:g} -> {learned.value:g} "
        f"req/s per replica ({learned.source})"
    )


def _summary(
    result: engine.Result,
    scaler: object,
    target: capacity.Target,
    measured: _Capacity,
    warmup: int = 0,
) -> dict[str, float | int | str | None]:
    """One policy's JSON row: the replay's figures, the target it started from, and GEO's
    correction."""
    from geo_operator.simulation import autoscalers

    row: dict[str, float | int | str | None] = {
        **result.summary(),
        "effectiveTargetQpsPerReplica": target.value,
        "targetSource": target.source,
        "measuredCapacity": round(measured.value, 1),
        "capacitySource": measured.origin,
    }
    if warmup > 0:
        violations, replica_seconds = result.scored(warmup)
        row["afterWarmupSeconds"] = warmup
        row["sloViolationSecondsAfterWarmup"] = violations
        row["replicaSecondsAfterWarmup"] = round(replica_seconds, 1)
    if isinstance(scaler, autoscalers.Geo):
        row["correction"] = round(scaler.correction.factor, 4)
        row["correctionEvidence"] = scaler.correction.evidence
        row["learnedTargetQpsPerReplica"] = scaler.learned().value
    return row


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


def _profile(args: argparse.Namespace) -> replica.Profile:
    from geo_operator.simulation import replica

    try:
        return replica.Profile.load(args.profile) if args.profile else replica.Profile.load()
    except ValueError as error:
        raise io.UsageError(str(error)) from error


def _measured(
    args: argparse.Namespace, spec: models.GeoDeploymentSpec, profile: replica.Profile
) -> _Capacity:
    """--capacity, else --status's tuning result, else the profile's, tuned in simulation."""
    from geo_operator.simulation import replay

    if args.capacity is not None:
        return _Capacity(args.capacity, "--capacity")
    if args.status is not None:
        return _status_capacity(args.status)
    try:
        value = replay.measured(spec, profile)
    except ValueError as error:
        raise io.UsageError(str(error)) from error
    return _Capacity(value, "the replica profile, tuned in simulation")


def _status_capacity(path: str) -> _Capacity:
    """The served artifact's tuned throughput in a GeoDeployment status file."""
    import yaml

    from geo_operator.scaling import capacity

    try:
        with open(path, encoding="utf-8") as stream:
            body = yaml.safe_load(stream)
    except OSError as error:
        raise io.UsageError(f"cannot read {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise io.UsageError(f"{path} is not valid YAML or JSON: {error}") from error
    if isinstance(body, dict) and body.get("kind") == models.KIND:
        body = body.get("status")
    try:
        status = models.parse_status(body)
    except ValueError as error:
        raise io.UsageError(f"{path}: not a GeoDeployment status: {error}") from error
    tuned = [t for t in status.tuning or () if t.result is not None and t.result.throughput > 0]
    if status.selected_artifact is not None:
        value = capacity.measured_capacity(status)
        served = status.selected_artifact.name
    elif len(tuned) == 1:
        value, served = tuned[0].result.throughput if tuned[0].result else None, tuned[0].artifact
    else:
        value, served = None, "?"
    if value is None:
        names = ", ".join(t.artifact for t in tuned) or "none"
        raise io.UsageError(
            f"{path}: no tuning result for the served artifact "
            f"(status.selectedArtifact {served!r}; artifacts with a result: {names})"
        )
    return _Capacity(value, f"status.tuning[{served}].result.throughput in {path}")


def _trace(args: argparse.Namespace, target: float) -> Trace:
    """The trace, cut to --duration and scaled to --peak-replicas at ``target``."""
    from geo_operator.simulation import trace as traces

    if (args.trace is None) == (args.synthetic is None):
        raise io.UsageError("give exactly one of --trace FILE.csv or --synthetic SHAPE")
    try:
        if args.trace is not None:
            trace = traces.from_csv(args.trace, args.rate_resolution)
        else:
            trace = traces.synthetic(args.synthetic, duration=args.duration or 1800, seed=args.seed)
    except ValueError as error:
        raise io.UsageError(str(error)) from error
    if args.duration:
        trace = dataclasses.replace(trace, rate=trace.rate[: args.duration])
    if args.peak_replicas > 0:
        trace = traces.scale_to_peak(trace, args.peak_replicas, target)
    return trace


def _header(
    args: argparse.Namespace,
    spec: models.GeoDeploymentSpec,
    trace: Trace,
    profile: replica.Profile,
    target: capacity.Target,
    measured: _Capacity,
) -> str:
    """The line on stderr that says what is replayed, at which target, through which model."""
    from geo_operator.simulation import replay

    peak = trace.peak(10)
    batch = replay.batching(spec, profile)
    error = (
        f"; production replicas at {args.capacity_error:g} of the lab's capacity"
        if args.capacity_error != 1.0
        else ""
    )
    return (
        f"[simulate] {trace.name}: {trace.duration} s, peak {peak:.0f} req/s over 10 s "
        f"(= {peak / (target.value or math.inf):.1f} replicas at the target); "
        f"effective target {target.value:g} req/s per replica ({target.source}: "
        f"{target.reason}; capacity from {measured.origin}); "
        f"replica model a={profile.service_a_ms} ms + b={profile.service_b_ms} ms/item, "
        f"capacity {profile.capacity(batch.max_batch_size, batch.instances):.0f} req/s "
        f"at full batches{error}; start-up {args.startup_seconds:g} s, metrics lag "
        f"{args.metrics_lag_seconds} s, seed {args.seed}, {args.start} start"
    )


def _replay_one(
    spec: models.GeoDeploymentSpec, trace: Trace, name: str, replay_options: replay.Options
) -> tuple[engine.Result, object]:
    """One policy's replay; its progress on stderr while it runs (on a terminal), and one
    line when it is done."""
    import time

    from geo_operator.simulation import replay

    def progress(second: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r[simulate] {name}: {second}/{total} s", end="", file=sys.stderr)

    started = time.monotonic()
    result, scaler = replay.replay(spec, trace, name, replay_options, progress)
    print(
        f"\r[simulate] {name}: {result.duration} s of trace replayed in "
        f"{time.monotonic() - started:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    return result, scaler


def _simulate_generative(args: argparse.Namespace, spec: models.GeoDeploymentSpec) -> int:
    """A generative spec's replay: token replicas, TTFT and inter-token windows."""
    import time

    import numpy as np

    from geo_operator.simulation import token_autoscalers, token_engine, token_replica, token_trace
    from geo_operator.simulation import trace as traces

    if args.synthetic is not None:
        raise io.UsageError(
            f"{args.file}: model.kind is generative; --synthetic {args.synthetic} is a "
            "request-rate shape, and the token-level simulator replays requests with their "
            "prompt and output lengths: give --trace (TIMESTAMP,ContextTokens,"
            "GeneratedTokens) or --mix " + "|".join(MIXES)
        )
    if args.plot:
        raise io.UsageError("--plot is not drawn for a generative replay yet; drop --plot")
    if (args.trace is None) == (args.mix is None):
        raise io.UsageError("a generative spec: give exactly one of --trace FILE.csv or --mix")
    names = list(GENERATIVE_POLICIES) if args.policy == "all" else args.policy.split(",")
    unknown = [n for n in names if n not in GENERATIVE_POLICIES]
    if unknown:
        raise io.UsageError(
            f"unknown policy {', '.join(unknown)} for a generative spec: "
            f"choose from {', '.join(GENERATIVE_POLICIES)} or all"
        )
    try:
        token_autoscalers.objectives(spec)
        profile = (
            token_replica.TokenProfile.load(args.profile)
            if args.profile
            else token_replica.TokenProfile.load()
        )
        if args.trace is not None:
            requests = traces.load_token_csv(args.trace)
            traces.check_span(args.trace, requests.arrivals)
            if args.rate_factor != 1.0:
                requests = token_trace.rescale(requests, args.rate_factor, args.seed)
        else:
            rate = args.rate_factor if args.rate_factor != 1.0 else 2.0
            requests = token_trace.synthetic(
                args.mix, duration=args.duration or 1800, rate=rate, seed=args.seed
            )
    except ValueError as error:
        raise io.UsageError(str(error)) from error
    if args.duration:
        keep = requests.arrivals < args.duration
        requests = dataclasses.replace(
            requests,
            arrivals=requests.arrivals[keep],
            context_tokens=requests.context_tokens[keep],
            generated_tokens=requests.generated_tokens[keep],
        )
    if len(requests.arrivals) < 2:
        raise io.UsageError(f"{requests.name}: fewer than 2 requests to replay")
    replay_options = token_engine.Options(
        startup_seconds=args.startup_seconds,
        metrics_lag_seconds=args.metrics_lag_seconds,
        seed=args.seed,
        profile=profile,
    )
    serving = token_engine.serving(spec, profile)
    ttft, itl = token_autoscalers.objectives(spec)
    print(
        f"[simulate] {requests.name}: {len(requests.arrivals)} requests over "
        f"{requests.arrivals[-1]:.0f} s, prompts median {np.median(requests.context_tokens):.0f} "
        f"tokens, outputs median {np.median(requests.generated_tokens):.0f}; replica: "
        f"{serving.slots} slots x {serving.context_length} tokens, prefill "
        f"{profile.prefill_ms_per_token:g} ms/token, decode step {profile.step_base_ms:g} + "
        f"{profile.decode_ms_per_sequence:g} ms x sequences ({profile.measured}); objectives "
        f"TTFT p99 {ttft:g} ms, inter-token p99 {itl:g} ms; start-up "
        f"{args.startup_seconds:g} s, metrics lag {args.metrics_lag_seconds} s, seed {args.seed}",
        file=sys.stderr,
    )
    results = []
    for name in names:
        started = time.monotonic()
        result = token_engine.replay(spec, requests, name, replay_options)
        print(
            f"[simulate] {name}: replayed in {time.monotonic() - started:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        results.append(result)
    if args.output != "text":
        rows = [r.summary() for r in results]
        io.emit(rows[0] if len(rows) == 1 else rows, args.output)
        return 0
    columns = ("policy", "sloViolationSeconds", "replicaSeconds", "scalingActions",
               "worstTtftP99Ms", "worstItlP99Ms", "refusedRequests", "queuedRequests")  # fmt: skip
    print("  ".join(f"{c:>20}" for c in columns))
    for r in results:
        row = r.summary()
        print("  ".join(f"{row[c]!s:>20}" for c in columns))
    return 0
