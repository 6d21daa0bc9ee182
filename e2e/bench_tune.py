"""Benchmark: `geo tune`'s search on the example model, fp32 and int8, against the full sweep.

For each artifact (python backend, examples/digits/artifacts) it starts the real
tritonserver in explicit model-control mode, measures the whole grid
(max_batch_size × queue delay, "off" = no dynamic batching) with
`tuning.measure`, then replays the quick search over those measurements (so
both choices are judged on the same figures, and the quick search's count is
what it would have measured). Prints the sweep table side by side, the choices,
measurements used, and the tuned throughput's gain over max_batch_size 1 and
over dynamic batching off. Run with `.venv/bin/python e2e/bench_tune.py`
(about 6 minutes on 2 cores; figures from a shared machine are noisy).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

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


def sweep(
    artifact: str, args: argparse.Namespace, workdir: pathlib.Path
) -> search.SearchResult[measure.Result]:
    t = target(artifact)
    repo = workdir / artifact
    repository.materialize(
        children.config_map_data(t),
        model_name=t.spec.model.name,
        artifact_format=t.artifact.format,
        uri=t.artifact.uri,
        repository=repo,
        mirrors={"http://models.geo.local/digits/": f"file://{ARTIFACTS}/"},
    )
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
            return search.full_sweep(progress, args.batches, args.delays)
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
        sweeps = {p: sweep(p, args, pathlib.Path(tmp)) for p in precisions}
    quick = {
        p: search.quick_search(lambda c, s=s: s.result(c), args.batches, args.delays)
        for p, s in sweeps.items()
    }

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
        s, q = sweeps[p], quick[p]
        if s.chosen is None or q.chosen is None:
            print(f"{p}: nothing within the budget")
            continue
        tuned = s.result(q.chosen).throughput
        best = s.result(s.chosen).throughput
        mbs1 = max(s.result(c).throughput for c, _ in s.measured if c.max_batch_size == 1)
        off = max(s.result(c).throughput for c, _ in s.measured if c.max_queue_delay_us is None)
        print(
            f"{p}: tuned {q.chosen.describe()} {tuned:.0f} req/s in {q.measurements} measurements; "
            f"sweep best {s.chosen.describe()} {best:.0f} req/s in {s.measurements} "
            f"(tuned = {tuned / best:.0%} of it)"
        )
        print(
            f"      gain over max_batch_size 1 ({mbs1:.0f} req/s): x{tuned / mbs1:.2f}; "
            f"over dynamic batching off ({off:.0f} req/s): x{tuned / off:.2f}"
        )
    print(
        f"\n(wall time {time.monotonic() - started:.0f} s; a shared 2-core machine: noisy figures)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
