"""Calibrate the simulator's replica model on the real Triton here: service time a + b·batch.

`geo simulate` models each Triton replica as one model instance behind the
dynamic batcher; a batch of k requests occupies the instance for ``a + b·k``
milliseconds, and every request pays a fixed ``overhead_ms`` outside the
instance (HTTP front end, queueing hand-off, response). This script measures
those three numbers for the example model on the real tritonserver from the
nvidia-pytriton wheel, CPU only:

1. lays out the example's model repository with the operator's own builders and
   starts tritonserver in explicit model-control mode;
2. for each batch size k it loads the model with ``max_batch_size`` 64 and
   dynamic batching off (so one request of k rows is one execution of batch k),
   sends ``--requests`` requests one after the other, and reads Triton's
   per-batch-size statistics (``batch_stats``: compute input + infer + output);
3. fits ``a + b·k`` by least squares on the mean execution time per k, and takes
   ``overhead_ms`` as the client's median latency at k = 1 minus the server's
   compute time at k = 1.

Writes the profile JSON (default: the one `geo simulate` ships with) and prints
the table. Run with ``.venv/bin/python e2e/calibrate_replica.py`` (about a
minute). The machine is shared: the figures move by tens of percent between
runs, so the profile records the spread it saw (per-k coefficient of variation).
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import platform
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np
import tritonclient.http as httpclient

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "e2e"))

from bench_tune import lay_out  # noqa: E402
from geo_operator.simulation import replica  # noqa: E402
from geo_operator.triton import local  # noqa: E402
from geo_operator.tuning import measure, search  # noqa: E402

BATCHES = (1, 2, 4, 8, 16, 32, 64)


def batch_times_ms(stats: dict[str, Any], model: str) -> dict[int, tuple[int, float]]:
    """{batch size: (executions, total compute ms)} from Triton's statistics."""
    for s in stats.get("model_stats", []):
        if s.get("name") != model:
            continue
        out = {}
        for b in s.get("batch_stats", []):
            ns = sum(
                int(b[part]["ns"]) for part in ("compute_input", "compute_infer", "compute_output")
            )
            out[int(b["batch_size"])] = (int(b["compute_infer"]["count"]), ns / 1e6)
        return out
    raise SystemExit(f"Triton's statistics have no model {model!r}")


def measure_batch(
    client: httpclient.InferenceServerClient, original: dict[str, Any], k: int, requests: int
) -> tuple[float, float, float]:
    """(mean execution ms, its coefficient of variation over 5 chunks, client median ms)."""
    cfg = measure.override(
        original, search.Config(max_batch_size=max(BATCHES), max_queue_delay_us=None)
    )
    client.load_model("digits", config=json.dumps(cfg))
    spec = original["input"][0]
    data = np.random.default_rng(k).standard_normal([k, *spec["dims"]]).astype(np.float32)
    tensor = httpclient.InferInput(spec["name"], list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    for _ in range(20):  # warm-up: first executions pay allocation and import costs
        client.infer("digits", [tensor])
    chunks, client_ms = [], []
    for _ in range(5):
        before = batch_times_ms(client.get_inference_statistics("digits"), "digits").get(
            k, (0, 0.0)
        )
        for _ in range(requests // 5):
            started = time.perf_counter()
            client.infer("digits", [tensor])
            client_ms.append((time.perf_counter() - started) * 1e3)
        after = batch_times_ms(client.get_inference_statistics("digits"), "digits")[k]
        chunks.append((after[1] - before[1]) / (after[0] - before[0]))
    mean = statistics.fmean(chunks)
    return mean, statistics.pstdev(chunks) / mean, statistics.median(client_ms)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", default="fp32", help="example artifact to serve (fp32, int8)")
    parser.add_argument("--requests", type=int, default=400, help="requests per batch size")
    parser.add_argument("--out", type=pathlib.Path, default=replica.DEFAULT_PROFILE_PATH)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="geo-calibrate-") as tmp:
        repo = pathlib.Path(tmp) / "repo"
        lay_out(args.artifact, repo)
        server = local.TritonServer(repo, model_control_mode="explicit", load_models=["digits"])
        with server:
            client = httpclient.InferenceServerClient(server.http_url)
            try:
                original = client.get_model_config("digits")
                for k in BATCHES:
                    mean, cv, median = measure_batch(client, original, k, args.requests)
                    rows.append((k, mean, cv, median))
                    print(
                        f"  batch {k:>3}: {mean:.3f} ms/execution (cv {cv:.0%}), "
                        f"client median {median:.3f} ms",
                        file=sys.stderr,
                    )
            finally:
                client.close()
            startup = server.startup_seconds

    ks = np.array([r[0] for r in rows], dtype=float)
    ms = np.array([r[1] for r in rows])
    b, a = np.polyfit(ks, ms, 1)
    overhead = max(0.0, rows[0][3] - rows[0][1])
    profile = replica.Profile(
        service_a_ms=round(float(a), 4),
        service_b_ms=round(float(b), 5),
        overhead_ms=round(overhead, 4),
        source=(
            f"e2e/calibrate_replica.py on {datetime.date.today().isoformat()}: example model "
            f"'{args.artifact}' (python backend, onnxruntime) on tritonserver from "
            f"nvidia-pytriton, CPU, {platform.processor() or platform.machine()}, "
            f"{args.requests} requests per batch size"
        ),
        measured={
            str(k): {
                "execution_ms": round(m, 4),
                "cv": round(cv, 3),
                "client_median_ms": round(c, 4),
            }
            for k, m, cv, c in rows
        },
        measured_startup_seconds=round(startup or 0.0, 2),
    )
    args.out.write_text(json.dumps(profile.to_json(), indent=2) + "\n")
    print(f"{'batch':>5} {'exec ms':>8} {'fit ms':>8} {'cv':>5} {'client ms':>9}")
    for k, m, cv, c in rows:
        print(f"{k:>5} {m:>8.3f} {a + b * k:>8.3f} {cv:>5.0%} {c:>9.3f}")
    print(
        f"a = {a:.4f} ms, b = {b:.5f} ms/item, overhead = {overhead:.4f} ms; "
        f"tritonserver ready in {startup:.1f} s; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
