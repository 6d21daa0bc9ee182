"""Benchmark: GEO's autoscaling policy against HPA, KEDA, Knative KPA and an oracle, by replay.

Replays every trace under every policy with `geo_operator.simulation` (the same
code `geo simulate` runs) and the GeoDeployment
manifests/examples/digits-simulate.yaml, the replica model calibrated on the
real Triton here (operator/geo_operator/simulation/digits-cpu.json). Traces:
every CSV in traces/ (or --traces); the synthetic step, ramp, spike and
diurnal shapes (1800 s); and stationary noisy load at three noise levels
(steady-low|mid|high: 10-second windows with a coefficient of variation of 0.1,
0.25, 0.4 around a constant mean, an hour each). Each is scaled so its busiest
10 s need --peak-replicas replicas at the target.

Every trace is replayed twice per policy:

- **fair start**: every policy starts with the replicas the trace's first minute
  needs (a running system is not cold at the trace's first second);
- **cold start**: with those of the first 10 s only, as before; that run is
  also scored **after a warm-up** (--warmup-seconds, default 300: from then on
  only), so no policy is judged on its start.

Prints the fair-start table (trace × policy: SLO-violation seconds,
replica-seconds, actions, direction changes, worst p99), then per trace and
scoring whether GEO met the aims: violation seconds at most half the best
anchor's (zero where the best anchor has zero), replica-seconds at most the
anchors' median and within 1.2× the oracle's. Writes one PNG per trace (fair
start) to out/simulate/. Run with ``.venv/bin/python e2e/bench_simulate.py``
(about 13 minutes on two cores with --jobs 2; simulated time is deterministic
for a seed, only the wall time depends on the machine). ``--quick`` replays the
first 900 s of every trace; ``--variants`` adds each CSV trace smoothed (its rate
counted per 120 s) and at two other phases (shifted by 20 and 40 minutes).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import pathlib
import statistics
import sys
import time

import numpy as np
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))

from geo_operator.api import models  # noqa: E402
from geo_operator.simulation import autoscalers, engine, replay, report  # noqa: E402
from geo_operator.simulation import trace as traces  # noqa: E402

EXAMPLE = ROOT / "manifests" / "examples" / "digits-simulate.yaml"
ANCHORS = ("hpa", "keda", "kpa")
ORACLE_RATIO = 1.2
SHAPE_SECONDS = 1800
STEADY_SECONDS = 3600


@dataclasses.dataclass(frozen=True)
class Score:
    violation_seconds: int
    replica_seconds: float


def scores(results: dict[str, engine.Result], warmup: int | None) -> dict[str, Score]:
    if warmup is None:
        return {n: Score(r.violation_seconds, r.replica_seconds) for n, r in results.items()}
    return {n: Score(*r.scored(warmup)) for n, r in results.items()}


@dataclasses.dataclass(frozen=True)
class Aims:
    """GEO against the anchors and the oracle under one scoring: the figures and checks."""

    geo: Score
    oracle: Score
    best: int  # the best anchor's violation seconds
    median: float  # the anchors' median replica-seconds

    @classmethod
    def of(cls, s: dict[str, Score]) -> Aims:
        best = min(s[a].violation_seconds for a in ANCHORS)
        median = statistics.median(s[a].replica_seconds for a in ANCHORS)
        return cls(s["geo"], s["oracle"], best, median)

    @property
    def ratio(self) -> float:
        oracle = self.oracle.replica_seconds
        return self.geo.replica_seconds / oracle if oracle else float("inf")

    def checks(self) -> list[tuple[str, bool]]:
        geo = self.geo
        return [
            (f"violations {geo.violation_seconds} <= half the best anchor's {self.best}",
             geo.violation_seconds <= self.best / 2),
            (f"replica-s {geo.replica_seconds:.0f} <= anchors' median {self.median:.0f}",
             geo.replica_seconds <= self.median),
            (f"{self.ratio:.2f} x the oracle's {self.oracle.replica_seconds:.0f} <= "
             f"{ORACLE_RATIO}", self.ratio <= ORACLE_RATIO),
        ]  # fmt: skip

    @property
    def met(self) -> bool:
        return all(ok for _, ok in self.checks())

    def text(self) -> str:
        """The aims, each MET or MISSED with its figures."""
        return "; ".join(f"{'MET' if ok else 'MISSED'}: {t}" for t, ok in self.checks())


def _replay(
    job: tuple[models.GeoDeploymentSpec, traces.Trace, str, replay.Options],
) -> tuple[str, str, str, engine.Result, float]:
    spec, trace, name, options = job
    started = time.monotonic()
    result, _ = replay.replay(spec, trace, name, options)
    return trace.name, options.start, name, result, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=pathlib.Path, default=ROOT / "traces")
    parser.add_argument("--peak-replicas", type=float, default=8)
    parser.add_argument("--startup-seconds", type=float, default=30)
    parser.add_argument("--warmup-seconds", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="replays run side by side")
    parser.add_argument("--quick", action="store_true", help="the first 900 s of every trace")
    parser.add_argument("--only", help="comma-separated trace names to replay (default: all)")
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also each CSV trace with its rate counted per 120 s (smoothed) and shifted "
        "by 20 and 40 minutes (other phases): traces nothing was tuned on",
    )
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "out" / "simulate")
    parser.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    args = parser.parse_args()

    body = yaml.safe_load(EXAMPLE.read_text())
    spec = models.parse_spec(body["spec"])
    target = spec.autoscaling.target_qps_per_replica
    assert target is not None
    csvs = sorted(args.traces.glob("*.csv"))
    raw = [traces.from_csv(p) for p in csvs]
    if args.variants:
        for path, trace in zip(csvs, list(raw), strict=True):
            smooth = traces.from_csv(path, resolution=120)
            raw.append(dataclasses.replace(smooth, name=f"{trace.name}-smoothed"))
            raw += [traces.Trace(f"{trace.name}-phase{k}", np.roll(trace.rate, k))
                    for k in (1200, 2400)]  # fmt: skip
    raw += [traces.synthetic(s, duration=SHAPE_SECONDS, seed=args.seed) for s in traces.SHAPES
            if s not in traces.STEADY_NOISE]  # fmt: skip
    raw += [traces.synthetic(s, duration=STEADY_SECONDS, seed=args.seed)
            for s in traces.STEADY_NOISE]  # fmt: skip
    if args.only:
        raw = [t for t in raw if t.name in args.only.split(",")]
    if args.quick:
        raw = [dataclasses.replace(t, rate=t.rate[:900]) for t in raw]
    runs = [traces.scale_to_peak(t, args.peak_replicas, target) for t in raw]
    policies = autoscalers.POLICIES + autoscalers.REFERENCES
    jobs = [
        (spec, trace, name, replay.Options(startup_seconds=args.startup_seconds,
                                           seed=args.seed, start=start))
        for trace in runs for start in replay.STARTS for name in policies
    ]  # fmt: skip

    started = time.monotonic()
    done: dict[tuple[str, str], dict[str, engine.Result]] = {}
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for trace_name, start, name, result, seconds in pool.map(_replay, jobs):
            done.setdefault((trace_name, start), {})[name] = result
            print(f"  {trace_name} {start} {name}: {result.requests / 1e6:.0f}M requests in "
                  f"{seconds:.1f} s", file=sys.stderr, flush=True)  # fmt: skip

    fair = [r for t in runs for r in done[(t.name, "fair")].values()]
    for trace in runs:
        report.plot(
            list(done[(trace.name, "fair")].values()),
            target,
            spec.autoscaling.target_p99_latency_ms,
            args.out / f"{trace.name}.png",
        )
    print(
        f"GeoDeployment {EXAMPLE.relative_to(ROOT)}: target {target:g} req/s per replica, "
        f"p99 {spec.autoscaling.target_p99_latency_ms:g} ms; peak = {args.peak_replicas:g} "
        f"replicas; start-up {args.startup_seconds:g} s; metrics lag "
        f"{replay.Options().metrics_lag_seconds} s; seed {args.seed}; fair start"
    )
    print(report.markdown(fair) if args.markdown else report.table(fair))
    print()
    scorings = (("fair start", "fair", None), ("cold start", "cold", None),
                (f"cold, after {args.warmup_seconds} s", "cold", args.warmup_seconds))  # fmt: skip
    if args.markdown:
        print("| trace | scoring | GEO SLO-s / replica-s | best anchor SLO-s | anchors' median "
              "replica-s | oracle replica-s | GEO / oracle | aims |")  # fmt: skip
        print("|---|---|---:|---:|---:|---:|---:|---|")
    met = 0
    for trace in runs:
        for label, start, warmup in scorings:
            aims = Aims.of(scores(done[(trace.name, start)], warmup))
            met += aims.met
            if args.markdown:
                geo = aims.geo
                print(f"| {trace.name} | {label} | {geo.violation_seconds} / "
                      f"{geo.replica_seconds:.0f} | {aims.best} | {aims.median:.0f} | "
                      f"{aims.oracle.replica_seconds:.0f} | {aims.ratio:.2f} | "
                      f"{'met' if aims.met else 'missed'} |")  # fmt: skip
            else:
                print(f"{trace.name} ({label}): {aims.text()}")
    print(f"all aims met on {met} of {len(runs) * len(scorings)} (trace, scoring) pairs")
    print(f"plots in {args.out}; {time.monotonic() - started:.0f} s wall time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
