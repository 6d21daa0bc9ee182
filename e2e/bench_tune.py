"""Benchmark: `geo tune`'s search on the example model, fp32 and int8, against the full sweep.

For each artifact (python backend, examples/digits/artifacts) it starts the real
tritonserver in explicit model-control mode, measures the whole grid
(max_batch_size × queue delay, "off" = no dynamic batching) with
`tuning.measure`, then replays the quick search over those measurements (so
both choices are judged on the same figures, and the quick search's count is
what it would have measured). Prints the sweep table side by side, the choices,
measurements used, and the tuned throughput's gain over max_batch_size 1 and
over dynamic batching off. Then, on the same server, the quick search runs live
(its confirmation re-measures for real), and the contenders (the sweep's best,
both quick choices, the best at max_batch_size 1 and with batching off) are
measured again in interleaved rounds: one configuration's throughput moves by
tens of percent between runs on a shared machine, so a single sweep's best is
partly luck, and only figures taken side by side compare. Last, size, accuracy,
tuned throughput and p99 per artifact. Run with `.venv/bin/python
e2e/bench_tune.py` (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import tempfile
import time
from typing import Any

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))

from geo_operator.api import models  # noqa: E402
from geo_operator.builders import children, plan  # noqa: E402
from geo_operator.triton import local, repository  # noqa: E402
from geo_operator.tuning import measure, search  # noqa: E402

ARTIFACTS = ROOT / "examples" / "digits" / "artifacts"
EXAMPLE = ROOT / "manifests" / "examples" / "digits.yaml"


def target(artifact: str) -> children.Target:
    body = yaml.safe_load(EXAMPLE.read_text())
    body["spec"]["model"]["selection"] = {"policy": "pinned", "pinned": artifact}
    decided = plan.plan(
        name="digits",
        namespace="default",
        uid="u",
        spec=models.parse_spec(body["spec"]),
        status=models.GeoDeploymentStatus(),
        current_replicas=None,
    )
    assert decided.target is not None, decided.choice.reason
    return decided.target


def lay_out(artifact: str, repo: pathlib.Path) -> children.Target:
    """The example's repository for ``artifact`` under ``repo``, from the operator's builders."""
    t = target(artifact)
    repository.materialize(
        children.config_map_data(t),
        model_name=t.spec.model.name,
        artifact_format=t.artifact.format,
        uri=t.artifact.uri,
        repository=repo,
        mirrors={"http://models.geo.local/digits/": f"file://{ARTIFACTS}/"},
    )
    return t


ROUNDS = 3  # head-to-head rounds: each contender measured once per round, interleaved


@dataclasses.dataclass
class Run:
    """One artifact's sweep, live quick search, and interleaved head-to-head figures."""

    sweep: search.SearchResult[measure.Result]
    live: search.SearchResult[measure.Result]
    replayed: search.SearchResult[measure.Result]
    contenders: dict[str, search.Config]
    rounds: dict[search.Config, list[float]]

    def mean(self, label: str) -> float:
        figures = self.rounds[self.contenders[label]]
        return sum(figures) / len(figures)


def _describe(config: search.Config | None) -> str:
    return config.describe() if config is not None else "none"


def _best_of(s: search.SearchResult[measure.Result], keep: Any) -> search.Config:
    return max((c for c, _ in s.measured if keep(c)), key=lambda c: s.result(c).throughput)


def sweep(artifact: str, args: argparse.Namespace, workdir: pathlib.Path) -> Run:
    """The full sweep; then, on the same server, the quick search measuring live; then the
    contenders (sweep best, both quick choices, best at max_batch_size 1, best with
    batching off) measured again in ``ROUNDS`` interleaved rounds, so that slow drifts of
    a shared machine hit them alike."""
    repo = workdir / artifact
    lay_out(artifact, repo)
    with local.TritonServer(repo, model_control_mode="explicit", load_models=["digits"]) as s:
        m = measure.Measurer(
            s.http_url, "digits", args.budget_ms, concurrency=args.concurrency, seconds=args.seconds
        )
        count = 0

        def progress(config: search.Config) -> measure.Result:
            nonlocal count
            count += 1
            r = m.measure(config)
            print(
                f"  {artifact} [{count}] {config.describe()}: {r.throughput:.0f} req/s",
                file=sys.stderr,
                flush=True,
            )
            return r

        try:
            full = search.full_sweep(progress, args.batches, args.delays)
            live = search.quick_search(progress, args.batches, args.delays)
            replayed = search.quick_search(full.result, args.batches, args.delays)
            assert full.chosen and live.chosen and replayed.chosen, "nothing within the budget"
            contenders = {
                "sweep best": full.chosen,
                "quick (live)": live.chosen,
                "quick (replayed)": replayed.chosen,
                "best mbs=1": _best_of(full, lambda c: c.max_batch_size == 1),
                "best batching off": _best_of(full, lambda c: c.max_queue_delay_us is None),
            }
            rounds: dict[search.Config, list[float]] = {c: [] for c in contenders.values()}
            for _ in range(ROUNDS):
                for config in rounds:
                    rounds[config].append(progress(config).throughput)
            return Run(full, live, replayed, contenders, rounds)
        finally:
            m.close()


def cell(r: measure.Result) -> str:
    b = r.best
    if b is None:
        return f"{'-':>7} {'-':>4} {'-':>7} {'-':>6} {'no':>3}"
    return (
        f"{b.throughput:>7.0f} {b.concurrency:>4} {b.p99_ms:>7.2f} {b.avg_batch:>6.2f} {'yes':>3}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-ms", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=1.0, help="per concurrency level")
    args = parser.parse_args()
    args.batches = [1, 2, 4, 8, 16, 32]
    args.delays = [None, 0, 100, 500, 2000]
    args.concurrency = [1, 4, 16, 32]
    precisions = ["fp32", "int8"]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="geo-bench-tune-") as tmp:
        runs = {p: sweep(p, args, pathlib.Path(tmp)) for p in precisions}
    sweeps = {p: r.sweep for p, r in runs.items()}

    print(
        f"Full sweep, p99 budget {args.budget_ms:g} ms, closed loop at {args.concurrency} "
        f"in flight, {args.seconds:g} s per level; best level within budget per config"
    )
    head = f"{'req/s':>7} {'conc':>4} {'p99 ms':>7} {'batch':>6} {'fit':>3}"
    print(f"{'config':<20} | {'fp32':^31} | {'int8':^31}")
    print(f"{'':<20} | {head} | {head}")
    for config in search.grid(args.batches, args.delays):
        cells = " | ".join(cell(sweeps[p].result(config)) for p in precisions)
        print(f"{config.describe():<20} | {cells}")
    print()
    for p in precisions:
        r = runs[p]
        print(
            f"{p}: sweep best {_describe(r.sweep.chosen)} in {r.sweep.measurements} "
            f"measurements; quick search live {_describe(r.live.chosen)} in "
            f"{r.live.measurements}, replayed on the sweep's figures "
            f"{_describe(r.replayed.chosen)} in {r.replayed.measurements}"
        )
    print(
        f"\nHead to head: each contender measured again {ROUNDS} times, interleaved "
        f"(mean req/s; ratio to the sweep's best measured the same way)"
    )
    labels = list(runs[precisions[0]].contenders)
    print(f"{'':<18} | " + " | ".join(f"{p:^34}" for p in precisions))
    for label in labels:
        cells = []
        for p in precisions:
            r = runs[p]
            config = r.contenders[label]
            ratio = r.mean(label) / r.mean("sweep best")
            cells.append(f"{config.describe():<20} {r.mean(label):>6.0f} {ratio:>5.0%}")
        print(f"{label:<18} | " + " | ".join(cells))
    for p in precisions:
        r = runs[p]
        live = r.mean("quick (live)")
        print(
            f"{p}: quick search (live) = {live / r.mean('sweep best'):.0%} of the sweep's best "
            f"with {r.live.measurements} of {r.sweep.measurements} measurements; gain over "
            f"max_batch_size 1 x{live / r.mean('best mbs=1'):.2f}, over batching off "
            f"x{live / r.mean('best batching off'):.2f}"
        )
    print()
    print(f"{'artifact':<9} {'bytes':>8} {'accuracy':>8} {'tuned req/s':>11} {'p99 ms':>7}")
    variants = {
        v["variant"]: v
        for v in json.loads((ARTIFACTS / "measurements.json").read_text())["variants"]
    }
    for p in precisions:
        r = runs[p]
        v = variants[p]
        level = r.live.result(r.live.chosen).best if r.live.chosen is not None else None
        print(
            f"{p:<9} {v['sizeBytes']:>8} {v['accuracy']:>8.4f} "
            + (
                f"{r.mean('quick (live)'):>11.0f} {level.p99_ms:>7.2f}"
                if level is not None
                else f"{'-':>11} {'-':>7}"
            )
        )
    print(
        f"\n(wall time {time.monotonic() - started:.0f} s; a shared 2-core machine: noisy figures)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
