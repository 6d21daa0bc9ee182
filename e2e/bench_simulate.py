"""Benchmark: GEO's autoscaling policy against HPA, KEDA, Knative KPA and an oracle, by replay.

Replays every trace under every policy with `geo_operator.simulation` (the same
code `geo simulate` runs) and the GeoDeployment
manifests/examples/digits-simulate.yaml, the replica model calibrated on the
real Triton here (operator/geo_operator/simulation/digits-cpu.json). Traces:
every CSV in ../shared/traces (or --traces), and the synthetic step, ramp,
spike and diurnal shapes; each scaled so its busiest 10 s need --peak-replicas
replicas at the target.

Prints one table (trace × policy: SLO-violation seconds, replica-seconds,
actions, direction changes, worst p99), then per trace whether GEO met the
issue's aims: violation seconds at most half the best anchor's, replica-seconds
no higher than the anchors' median and within 1.3× the oracle's. Writes one PNG
per trace to out/simulate/. Run with ``.venv/bin/python e2e/bench_simulate.py``
(about 2-3 minutes; simulated time is deterministic for a seed, only the wall
time depends on the machine).
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))

from geo_operator.api import models  # noqa: E402
from geo_operator.simulation import autoscalers, engine, replay, report  # noqa: E402
from geo_operator.simulation import trace as traces  # noqa: E402

EXAMPLE = ROOT / "manifests" / "examples" / "digits-simulate.yaml"
ANCHORS = ("hpa", "keda", "kpa")


def verdict(results: dict[str, engine.Result]) -> str:
    geo, oracle, instant = results["geo"], results["oracle"], results["instant"]
    best = min(results[a].violation_seconds for a in ANCHORS)
    median = statistics.median(results[a].replica_seconds for a in ANCHORS)
    checks = [
        (f"violations {geo.violation_seconds} <= half the best anchor's {best}",
         geo.violation_seconds <= best / 2),
        (f"replica-s {geo.replica_seconds:.0f} <= anchors' median {median:.0f}",
         geo.replica_seconds <= median),
        (f"replica-s <= 1.3 x oracle's {oracle.replica_seconds:.0f} "
         f"(ratio {geo.replica_seconds / oracle.replica_seconds:.2f})",
         geo.replica_seconds <= 1.3 * oracle.replica_seconds),
    ]  # fmt: skip
    verdicts = "; ".join(f"{'MET' if ok else 'MISSED'}: {text}" for text, ok in checks)
    return (
        f"{verdicts}. instant (exact sizing, a start-up late): {instant.violation_seconds} s "
        f"over SLO, "
        f"{instant.replica_seconds:.0f} replica-s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=pathlib.Path, default=ROOT.parent / "shared" / "traces")
    parser.add_argument("--peak-replicas", type=float, default=8)
    parser.add_argument("--startup-seconds", type=float, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "out" / "simulate")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = parser.parse_args()

    body = yaml.safe_load(EXAMPLE.read_text())
    spec = models.parse_spec(body["spec"])
    target = spec.autoscaling.target_qps_per_replica
    runs = [traces.from_csv(p) for p in sorted(args.traces.glob("*.csv"))]
    runs += [traces.synthetic(shape, seed=args.seed) for shape in traces.SHAPES]
    options = replay.Options(startup_seconds=args.startup_seconds, seed=args.seed)

    everything: list[engine.Result] = []
    verdicts = []
    started = time.monotonic()
    for raw in runs:
        trace = traces.scale_to_peak(raw, args.peak_replicas, target)
        results = {}
        for name in autoscalers.POLICIES + autoscalers.REFERENCES:
            t0 = time.monotonic()
            result, _ = replay.replay(spec, trace, name, options)
            results[name] = result
            print(
                f"  {trace.name} {name}: {result.requests / 1e6:.0f}M requests in "
                f"{time.monotonic() - t0:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        everything += results.values()
        report.plot(
            list(results.values()),
            target,
            spec.autoscaling.target_p99_latency_ms,
            args.out / f"{trace.name}.png",
        )
        verdicts.append(f"{trace.name}: {verdict(results)}")

    print(
        f"GeoDeployment {EXAMPLE.relative_to(ROOT)}: target {target:g} req/s per replica, "
        f"p99 {spec.autoscaling.target_p99_latency_ms:g} ms; peak = {args.peak_replicas:g} "
        f"replicas; start-up {args.startup_seconds:g} s; metrics lag "
        f"{options.metrics_lag_seconds} s; seed {args.seed}"
    )
    print(report.markdown(everything) if args.markdown else report.table(everything))
    print()
    print("\n".join(verdicts))
    print(f"plots in {args.out}; {time.monotonic() - started:.0f} s wall time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
