"""Benchmark: GEO's derived target (no targetQpsPerReplica) against a sweep of hand-picked ones.

Issue 11 §3's claim, by replay: a target derived from the measured capacity
(what the tuning Job measures: one replica's best throughput within the p99
objective, × targetUtilization, corrected online) does as well as the best
target a user could find by sweeping, with no sweep. On every trace
(traces/*.csv, or --traces, and the synthetic step, ramp, spike and
diurnal shapes, each scaled so its busiest 10 s need --peak-replicas replicas
at the derived target: the same load for every run) it replays GEO's policy:

- **derived**: manifests/examples/digits-simulate-derived.yaml as it is (no
  targetQpsPerReplica; capacity from `simulation.tuned`, as `geo simulate`),
  learning its correction as the operator does; **derived, fixed**: the same
  target without the correction;
- **hand**: the same with targetQpsPerReplica set to each of --sweep values
  from 0.3x to 1.1x the within-SLO capacity.

The best hand-picked target is the one with the fewest replica-seconds among
those with no more SLO-violation seconds than the derived run; when none is
that good, the one with the fewest violations (then replica-seconds). The aim:
derived replica-seconds within 10 % of the best hand-picked, with no more
violations. Then, per trace, production replicas 30 % slower than the lab
measured (--capacity-error 0.7): GEO with its online correction against GEO
keeping the lab's target (no correction).

Prints tables, not a test. ``.venv/bin/python e2e/bench_target.py --quick``
(600 s of every trace, about 4 minutes on 2 cores); without --quick the whole
hour of the CSV trace and 1800 s synthetic shapes (about 9 minutes).
Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time

import numpy as np
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))

from geo_operator.api import models  # noqa: E402
from geo_operator.scaling import capacity  # noqa: E402
from geo_operator.simulation import autoscalers, engine, replay, replica  # noqa: E402
from geo_operator.simulation import trace as traces  # noqa: E402

EXAMPLE = ROOT / "manifests" / "examples" / "digits-simulate-derived.yaml"


@dataclasses.dataclass(frozen=True)
class Run:
    label: str
    target: float | None
    result: engine.Result
    factor: float | None = None


def declared(spec: models.GeoDeploymentSpec, target: float) -> models.GeoDeploymentSpec:
    scaling = spec.autoscaling.model_copy(update={"target_qps_per_replica": target})
    return spec.model_copy(update={"autoscaling": scaling})


def best_hand(derived: Run, hand: list[Run]) -> Run:
    """Fewest replica-s among those with no more violations than derived; else fewest violations."""
    good = [r for r in hand if r.result.violation_seconds <= derived.result.violation_seconds]
    if good:
        return min(good, key=lambda r: r.result.replica_seconds)
    return min(hand, key=lambda r: (r.result.violation_seconds, r.result.replica_seconds))


def verdict(derived: Run, best: Run) -> str:
    """The aim: replica-s within 10 % of the best hand-picked target's, no more violations."""
    d, b = derived.result, best.result
    ratio = d.replica_seconds / b.replica_seconds
    met = ratio <= 1.10 and d.violation_seconds <= b.violation_seconds
    return (
        f"{'MET' if met else 'MISSED'}: {derived.label} {derived.target:.0f} req/s "
        f"({d.violation_seconds} SLO-s, {d.replica_seconds:.0f} replica-s) vs best hand-picked "
        f"{best.target:.0f} ({best.label}: {b.violation_seconds} SLO-s, "
        f"{b.replica_seconds:.0f} replica-s): replica-s ratio {ratio:.2f}"
    )


def geo(
    spec: models.GeoDeploymentSpec, trace: traces.Trace, options: replay.Options, label: str
) -> Run:
    result, scaler = replay.replay(spec, trace, "geo", options)
    assert isinstance(scaler, autoscalers.Geo)
    # A declared target ignores the correction: show it only where it acts.
    factor = scaler.correction.factor if scaler.initial_target.source != "declared" else None
    return Run(label, scaler.initial_target.value, result, factor)


def row(trace: str, run: Run) -> str:
    target = f"{run.target:.0f}" if run.target is not None else "-"
    factor = f"{run.factor:.2f}" if run.factor is not None else ""
    r = run.result
    return (
        f"{trace[:22]:<22} {run.label:<18} {target:>8} {r.violation_seconds:>6} "
        f"{r.replica_seconds:>9.0f} {r.actions:>7} {factor:>10}"
    )


HEADER = (
    f"{'trace':<22} {'run':<18} {'target':>8} {'SLO-s':>6} {'replica-s':>9} "
    f"{'actions':>7} {'correction':>10}"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=pathlib.Path, default=ROOT / "traces")
    parser.add_argument("--quick", action="store_true", help="600 s of every trace")
    parser.add_argument("--peak-replicas", type=float, default=8)
    parser.add_argument("--sweep", type=int, default=10, help="hand-picked targets")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    spec = models.parse_spec(yaml.safe_load(EXAMPLE.read_text())["spec"])
    profile = replica.Profile.load()
    lab = replay.measured(spec, profile)
    derived_target = capacity.target(spec, lab)
    assert derived_target.value is not None
    duration = 600 if args.quick else 1800
    raw = [traces.from_csv(p) for p in sorted(args.traces.glob("*.csv"))]
    if args.quick:
        raw = [dataclasses.replace(t, rate=t.rate[:duration]) for t in raw]
    raw += [traces.synthetic(s, duration=duration, seed=args.seed) for s in traces.SHAPES]
    options = replay.Options(seed=args.seed, capacity=lab)
    sweep = [float(f"{x:.3g}") for x in np.linspace(0.3, 1.1, args.sweep) * lab]

    started = time.monotonic()
    lines, verdicts, errors = [HEADER], [], [HEADER]
    for base in raw:
        trace = traces.scale_to_peak(base, args.peak_replicas, derived_target.value)
        derived = geo(spec, trace, options, "derived")
        fixed = geo(spec, trace, dataclasses.replace(options, learn=False), "derived, fixed")
        hand = [geo(declared(spec, t), trace, options, f"hand {t / lab:.2f}x") for t in sweep]
        best = best_hand(derived, hand)
        lines += [row(trace.name, r) for r in [derived, fixed, *hand]]
        verdicts.append(f"{trace.name}: {verdict(derived, best)}")
        verdicts.append(f"{trace.name}: {verdict(fixed, best_hand(fixed, hand))}")
        slow = dataclasses.replace(options, capacity_error=0.7)
        unlearned = dataclasses.replace(slow, learn=False)
        errors += [
            row(trace.name, geo(spec, trace, unlearned, "0.7x, no correction")),
            row(trace.name, geo(spec, trace, slow, "0.7x, learned")),
        ]
        print(f"  {trace.name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)

    print(
        f"GeoDeployment {EXAMPLE.relative_to(ROOT)}: p99 objective {spec.target_p99_ms():g} ms; "
        f"measured capacity {lab:.0f} req/s per replica within it (simulated tuning of the "
        f"calibrated profile; {replica.Profile.load().capacity(8):.0f} at full batches); "
        f"derived target {derived_target.value:g} ({derived_target.reason}); peak = "
        f"{args.peak_replicas:g} replicas at the derived target; "
        f"{'quick: ' if args.quick else ''}seed {args.seed}"
    )
    print("\n".join(lines))
    print()
    print("\n".join(verdicts))
    print()
    print("production replicas at 0.7x the lab's capacity (the derived target, learned or not):")
    print("\n".join(errors))
    print(f"{time.monotonic() - started:.0f} s wall time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
