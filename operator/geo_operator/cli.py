"""The `geo` command: run the operator, and look at what it would do.

    geo run                       run the operator against the current kubeconfig
    geo crd                       print the CRD generated from the API models
    geo render -f gd.yaml         print the ConfigMap, Deployment and Service it would create
    geo select -f gd.yaml         which artifact it would serve, and why
    geo decide -f gd.yaml ...     one autoscaling decision, as JSON
    geo tune --url H:P --model M --latency-budget-ms B
                                  measure batching configurations on a live Triton
    geo simulate -f gd.yaml --trace T.csv --policy geo|hpa|keda|kpa|oracle|all
                                  replay a traffic trace through simulated replicas

Every verb that reads a GeoDeployment validates it exactly as the operator
does and exits 2 with the offending field named when it is invalid.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import pathlib
import sys
import time
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


def _int_list(text: str, what: str, *, off: bool = False) -> list[int | None]:
    values: list[int | None] = []
    for part in text.split(","):
        part = part.strip()
        if off and part == "off":
            values.append(None)
            continue
        try:
            values.append(int(part))
        except ValueError:
            raise UsageError(f"{what}: {part!r} is not an integer") from None
    return values


def _write_result(path: str | None, text: str) -> None:
    """The tuning Job's result channel: compact JSON in the termination-message file."""
    if not path:
        return
    try:
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(text)
    except OSError as error:
        print(f"geo tune: cannot write {path}: {error.strerror}", file=sys.stderr)


def _wait_ready(url: str, model: str, seconds: float) -> None:
    """Wait up to ``seconds`` for Triton to report ``model`` ready (a sidecar may be starting)."""
    import tritonclient.http as httpclient

    deadline = time.monotonic() + seconds
    last = "no answer yet"
    while True:
        try:
            client = httpclient.InferenceServerClient(url)
            try:
                if client.is_model_ready(model):
                    return
                last = f"{model} not ready"
            finally:
                client.close()
        except Exception as error:  # connection refused while Triton starts
            last = str(error)
        if time.monotonic() >= deadline:
            raise UsageError(f"{model} on {url} not ready after {seconds:g} s: {last}")
        time.sleep(1.0)


def cmd_tune(args: argparse.Namespace) -> int:
    try:
        return _tune(args)
    except UsageError as error:
        _write_result(args.result_file, json.dumps({"error": str(error)[:2000]}))
        raise


def _tune(args: argparse.Namespace) -> int:
    # Imported here: tritonclient and numpy are not needed by the other verbs.
    from geo_operator.builders import tuning
    from geo_operator.tuning import measure, report, search

    candidates = [c for c in _int_list(args.candidates, "--candidates") if c is not None]
    delays = _int_list(args.delays, "--delays", off=True)
    concurrency = [c for c in _int_list(args.concurrency, "--concurrency") if c is not None]
    if not candidates or min(candidates) < 1:
        raise UsageError("--candidates must be positive batch sizes")
    if any(d is not None and d < 0 for d in delays):
        raise UsageError("--delays must be >= 0 (or off)")
    if not concurrency or min(concurrency) < 1:
        raise UsageError("--concurrency must be positive")
    if args.latency_budget_ms <= 0 or args.seconds <= 0:
        raise UsageError("--latency-budget-ms and --seconds must be positive")
    if args.wait_seconds > 0:
        _wait_ready(args.url, args.model, args.wait_seconds)
    try:
        measurer = measure.Measurer(
            args.url,
            args.model,
            args.latency_budget_ms,
            concurrency=concurrency,
            seconds=args.seconds,
        )
    except Exception as error:  # connection refused, unknown model: say so, no traceback
        raise UsageError(f"cannot read {args.model}'s config from {args.url}: {error}") from error

    count = 0

    def progress(config: search.Config) -> measure.Result:
        nonlocal count
        count += 1
        result = measurer.measure(config)
        best = result.best
        figures = (
            f"{best.throughput:.0f} req/s at {best.concurrency} in flight, "
            f"p99 {best.p99_ms:.2f} ms, avg batch {best.avg_batch:.2f}"
            if best
            else "over budget at every level"
        )
        print(f"[{count}] {config.describe()}: {figures}", file=sys.stderr, flush=True)
        return result

    try:
        outcomes = {"quick": search.quick_search(progress, candidates, delays)}
        if args.full_sweep:
            # The sweep reuses the quick search's measurements: the same figures for a
            # configuration in both tables, and only the rest of the grid costs time.
            outcomes["sweep"] = search.full_sweep(
                progress, candidates, delays, prior=outcomes["quick"].measured
            )
        # With the sweep measured, its choice is the best within the budget of all.
        chosen = outcomes["sweep" if args.full_sweep else "quick"].chosen
        # Leave Triton serving the chosen configuration (else the last one measured).
        if chosen is not None:
            measurer.load(chosen)
    except measure.MeasureError as error:
        raise UsageError(str(error)) from error
    finally:
        measurer.close()

    final = outcomes["sweep" if args.full_sweep else "quick"]
    result = report.tuned(final, len(search.grid(candidates, delays)))
    if result is not None:
        _write_result(args.result_file, tuning.result_json(result))
    else:
        _write_result(
            args.result_file,
            json.dumps(
                {
                    "error": f"no configuration kept p99 within {args.latency_budget_ms:g} ms "
                    f"({final.measurements} measured)"
                }
            ),
        )
    if args.json:
        out = report.as_json(
            model=args.model,
            latency_budget_ms=args.latency_budget_ms,
            seconds=args.seconds,
            concurrency=concurrency,
            taken=count,
            loaded=chosen,
            outcomes=outcomes,
        )
        print(json.dumps(out, indent=2))
    else:
        print(report.as_text(taken=count, loaded=chosen, outcomes=outcomes))
    return 0 if chosen is not None else 1


def cmd_run(args: argparse.Namespace) -> int:
    import kopf  # imported here: the other verbs must not pay for it

    from geo_operator import handlers  # registers the handlers

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
        memo=handlers.memo(tuner_image=args.tuner_image),
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
    run.add_argument(
        "--tuner-image",
        default=os.environ.get("GEO_TUNER_IMAGE", "ghcr.io/geo-ai/geo-operator:0.1.0"),
        help="image the batch-tuning Jobs run `geo tune` in: the operator's own "
        "(default: $GEO_TUNER_IMAGE, else %(default)s)",
    )
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

    tune = verbs.add_parser(
        "tune",
        help="measure max_batch_size and dynamic batching on a live Triton, pick the best",
        description="Load each configuration through Triton's model-repository API "
        "(Triton must run with --model-control-mode=explicit), drive load at rising "
        "concurrency and keep the best throughput whose p99 fits the budget. A hill-climbing "
        "search measures a few configurations; --full-sweep also measures them all. Triton is "
        "left serving the chosen configuration (the sweep's, with --full-sweep). "
        "Progress goes to stderr.",
    )
    tune.add_argument("--url", required=True, help="Triton HTTP endpoint, HOST:PORT")
    tune.add_argument("--model", required=True, help="model name")
    tune.add_argument(
        "--latency-budget-ms", type=float, required=True, help="client p99 latency budget"
    )
    tune.add_argument(
        "--candidates",
        default="1,2,4,8,16,32",
        help="max_batch_size candidates (default: %(default)s)",
    )
    tune.add_argument(
        "--delays",
        default="0,100,500,2000",
        help="max_queue_delay_microseconds candidates, 'off' = no dynamic batching "
        "(default: %(default)s)",
    )
    tune.add_argument(
        "--concurrency",
        default="1,4,16,32",
        help="in-flight requests per load level (default: %(default)s)",
    )
    tune.add_argument(
        "--seconds", type=float, default=3.0, help="duration of each load level (default: 3)"
    )
    tune.add_argument(
        "--full-sweep", action="store_true", help="also measure the whole grid, side by side"
    )
    tune.add_argument(
        "--wait-seconds",
        type=float,
        default=0.0,
        help="wait this long for the model to be ready first (default: don't wait)",
    )
    tune.add_argument(
        "--result-file",
        help="also write the chosen config and its figures (or the error) as compact JSON "
        "here, e.g. /dev/termination-log in the tuning Job",
    )
    tune.add_argument("--json", action="store_true", help="print JSON")
    tune.set_defaults(func=cmd_tune)

    simulate = verbs.add_parser(
        "simulate",
        help="replay a traffic trace through simulated Triton replicas under an autoscaler",
        description="Replay a request trace (Azure LLM trace CSV: a TIMESTAMP column, one row "
        "per request) through a model of Triton replicas (dynamic batcher, batch service time "
        "a + b*batch calibrated on the real Triton by e2e/calibrate_replica.py, pod start-up "
        "delay, metric lag) under GEO's policy or an anchor: Kubernetes HPA, KEDA, Knative KPA, "
        "or an oracle that knows the future. Prints SLO-violation seconds (10-second windows "
        "whose p99 exceeds targetP99LatencyMs), replica-seconds, scaling actions, direction "
        "changes and the worst p99. Every policy gets the GeoDeployment's targets. "
        "Deterministic for a seed.",
        epilog="example: geo simulate -f manifests/examples/digits-simulate.yaml "
        "--trace ../shared/traces/azure-llm-2023-code.csv --policy all --plot out/azure.png",
    )
    simulate.add_argument("-f", "--file", required=True, help="GeoDeployment YAML ('-' = stdin)")
    simulate.add_argument("--trace", help="trace CSV with a TIMESTAMP column")
    simulate.add_argument(
        "--synthetic",
        choices=["step", "ramp", "spike", "diurnal"],
        help="a synthetic trace instead of --trace",
    )
    simulate.add_argument(
        "--policy",
        default="geo",
        help="geo, hpa, keda, kpa, oracle, a comma-separated list, or all; also instant: the "
        "oracle without foresight: exact sizing, a start-up late (default: %(default)s)",
    )
    simulate.add_argument(
        "--peak-replicas",
        type=float,
        default=8,
        help="scale the rate so the busiest 10 s need this many replicas at "
        "targetQpsPerReplica; 0 = replay the rate as recorded (default: %(default)s)",
    )
    simulate.add_argument(
        "--rate-resolution",
        type=int,
        default=10,
        metavar="SECONDS",
        help="the trace's rate is counted per this many seconds; arrivals within are "
        "Poisson (default: %(default)s)",
    )
    simulate.add_argument(
        "--duration",
        type=int,
        help="replay only the first SECONDS, at least 60 (synthetic: length, default 1800)",
    )
    simulate.add_argument(
        "--startup-seconds",
        type=float,
        default=30.0,
        help="from a pod's order to ready: scheduling, model load (default: %(default)s)",
    )
    simulate.add_argument(
        "--metrics-lag-seconds",
        type=int,
        default=5,
        help="age of the metrics every autoscaler sees (default: %(default)s)",
    )
    simulate.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    simulate.add_argument("--profile", help="replica profile JSON (default: the calibrated one)")
    simulate.add_argument("--plot", type=pathlib.Path, help="write a PNG of replicas and p99")
    simulate.add_argument("--json", action="store_true", help="print JSON")
    simulate.set_defaults(func=cmd_simulate)
    return top


def cmd_simulate(args: argparse.Namespace) -> int:
    from geo_operator.simulation import autoscalers, replay, replica, report
    from geo_operator.simulation import trace as traces

    spec = _spec(_load_geodeployment(args.file))
    scaling = spec.autoscaling
    names = list(autoscalers.POLICIES) if args.policy == "all" else args.policy.split(",")
    unknown = [n for n in names if n not in autoscalers.POLICIES + autoscalers.REFERENCES]
    if unknown:
        raise UsageError(
            f"unknown policy {', '.join(unknown)}: "
            f"choose from {', '.join(autoscalers.POLICIES)} or all"
        )
    if (args.trace is None) == (args.synthetic is None):
        raise UsageError("give exactly one of --trace FILE.csv or --synthetic SHAPE")
    for flag, value, low in (
        ("--startup-seconds", args.startup_seconds, 0),
        ("--metrics-lag-seconds", args.metrics_lag_seconds, 0),
        ("--peak-replicas", args.peak_replicas, 0),
        ("--rate-resolution", args.rate_resolution, 1),
        ("--duration", args.duration if args.duration is not None else 60, 60),
    ):
        if value < low:
            raise UsageError(f"{flag} must be at least {low:g}, got {value:g}")
    try:
        profile = replica.Profile.load(args.profile) if args.profile else replica.Profile.load()
        if args.trace is not None:
            trace = traces.from_csv(args.trace, args.rate_resolution)
        else:
            trace = traces.synthetic(args.synthetic, duration=args.duration or 1800, seed=args.seed)
    except ValueError as error:
        raise UsageError(str(error)) from error
    if args.duration:
        trace = dataclasses.replace(trace, rate=trace.rate[: args.duration])
    if args.peak_replicas > 0:
        trace = traces.scale_to_peak(trace, args.peak_replicas, scaling.target_qps_per_replica)
    options = replay.Options(
        startup_seconds=args.startup_seconds,
        metrics_lag_seconds=args.metrics_lag_seconds,
        seed=args.seed,
        profile=profile,
    )
    peak = trace.peak(10)
    batch = replay.batching(spec, profile)
    print(
        f"[simulate] {trace.name}: {trace.duration} s, peak {peak:.0f} req/s over 10 s "
        f"(= {peak / scaling.target_qps_per_replica:.1f} replicas at the target), replica model "
        f"a={profile.service_a_ms} ms + b={profile.service_b_ms} ms/item, "
        f"capacity {profile.capacity(batch.max_batch_size, batch.instances):.0f} req/s "
        f"at full batches; start-up {args.startup_seconds:g} s, metrics lag "
        f"{args.metrics_lag_seconds} s, seed {args.seed}",
        file=sys.stderr,
    )
    results = []
    for name in names:

        def progress(second: int, total: int, name: str = name) -> None:
            if sys.stderr.isatty():
                print(f"\r[simulate] {name}: {second}/{total} s", end="", file=sys.stderr)

        result, _ = replay.replay(spec, trace, name, options, progress)
        if sys.stderr.isatty():
            print("\r", end="", file=sys.stderr)
        results.append(result)
    if args.plot:
        report.plot(
            results, scaling.target_qps_per_replica, scaling.target_p99_latency_ms, args.plot
        )
    if args.json:
        summaries = [r.summary() for r in results]
        print(json.dumps(summaries[0] if len(summaries) == 1 else summaries, indent=2))
    else:
        print(report.table(results))
    return 0


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
