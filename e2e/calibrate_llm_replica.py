"""Calibrate the simulator's token-level replica model on the real llama.cpp engine here.

`geo simulate` models a generative replica (`simulation.token_replica`) as the engine
`triton/llama_model.Engine` runs: ``slots`` sequences, one ``llama_decode`` per step
holding a token of every decoding sequence and a chunk of every prompt still in
prefill. One step costs ``stepBaseMs + decodeMsPerSequence x decoding +
prefillMsPerToken x prompt tokens``. This script drives the real engine in-process (no
Triton: the engine is the cost, the python backend a constant) on an example GGUF and
measures:

1. the model load (``Engine(...)``: open the GGUF, build the context);
2. the prefill: one sequence at a time, prompts of rising length, ``max_tokens`` 1:
   the time to its first token, fitted as ``a + prefillMsPerToken x tokens``;
3. the decode step at 1..slots sequences decoding together (ignore_eos, short
   prompts): the median gap between a sequence's tokens, fitted as ``stepBaseMs +
   decodeMsPerSequence x n``.

Writes the profile JSON (default: ``simulation/pycode-cpu.json``, which `geo simulate`
reads for a generative spec) with the date, the command and the raw points, and prints
the table. ``--quick`` keeps it to well under a minute. The machine has two shared
cores: the figures move between runs; the profile records what this run saw.

    .venv/bin/python e2e/calibrate_llm_replica.py --quick
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import pathlib
import platform
import statistics
import sys
import threading
import time
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))

from geo_operator.simulation import token_replica  # noqa: E402
from geo_operator.triton import llama_model as lm  # noqa: E402

TEXT = "def parse(line):\n    key, _, value = line.partition('=')\n    return key.strip()\n"


def _prompt(engine: lm.Engine, tokens: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < tokens:
        ids += engine.tokenize(TEXT)
    return ids[:tokens]


def _run(engine: lm.Engine, prompts: list[list[int]], max_tokens: int) -> list[list[float]]:
    """Submit the prompts together; each sequence's token times (perf_counter), and its
    arrival first."""
    times: list[list[float]] = [[] for _ in prompts]
    done = threading.Event()
    left = [len(prompts)]

    def emitter(i: int) -> Any:
        def emit(seq: lm.Sequence, text: str, finish: str | None) -> bool:
            if finish is not None:
                left[0] -= 1
                if left[0] == 0:
                    done.set()
            return True

        return emit

    seqs = [
        lm.Sequence(
            prompt=p, sampling=lm.Sampling(max_tokens=max_tokens, ignore_eos=True), emit=emitter(i)
        )
        for i, p in enumerate(prompts)
    ]
    # Token times: _emit sets last_token_at before each emit; record them from there.
    original = engine._emit

    def record(seq: lm.Sequence, token: int, now: float) -> None:
        times[seqs.index(seq)].append(now)
        original(seq, token, now)

    engine._emit = record  # type: ignore[method-assign]
    try:
        for seq in seqs:
            engine.submit(seq)
        if not done.wait(300):
            raise RuntimeError("the engine did not finish in 300 s")
    finally:
        engine._emit = original  # type: ignore[method-assign]
    return [[s.arrived, *t] for s, t in zip(seqs, times, strict=True)]


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(intercept), float(slope)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--gguf",
        type=pathlib.Path,
        default=ROOT / "examples/pycode/artifacts/q4_k_m/model.gguf",
        help="the GGUF to measure (default: the pycode family's q4_k_m)",
    )
    parser.add_argument("--slots", type=int, default=8, help="most sequences decoded together")
    parser.add_argument("--context", type=int, default=2048, help="tokens per slot")
    parser.add_argument("--batch-tokens", type=int, default=512, help="n_batch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="fewer points and tokens")
    parser.add_argument(
        "-o",
        "--output",
        type=pathlib.Path,
        default=token_replica.DEFAULT_PROFILE,
        help="profile JSON to write (default: %(default)s)",
    )
    args = parser.parse_args()
    if not args.gguf.is_file():
        print(f"no {args.gguf}: run `make artifacts` first", file=sys.stderr)
        return 2
    started = time.perf_counter()
    engine = lm.Engine(
        str(args.gguf),
        slots=args.slots,
        context_length=args.context,
        n_batch=args.batch_tokens,
        n_threads=args.threads,
    )
    load_s = time.perf_counter() - started
    try:
        _run(engine, [_prompt(engine, 16)], 8)  # warm-up
        lengths = [32, 128, 512, 1024] if args.quick else [32, 64, 128, 256, 512, 1024, 1536]
        repeats = 3 if args.quick else 5
        prefill: list[tuple[int, float]] = []
        for n in lengths:
            ttft = [
                (lambda t: (t[0][1] - t[0][0]) * 1000)(_run(engine, [_prompt(engine, n)], 1))
                for _ in range(repeats)
            ]
            prefill.append((n, statistics.median(ttft)))
            print(f"prefill {n:5d} tokens: TTFT {prefill[-1][1]:8.3f} ms", flush=True)
        a, per_token = _fit([n for n, _ in prefill], [ms for _, ms in prefill])
        tokens = 48 if args.quick else 128
        counts = sorted(
            {1, 2, args.slots // 2, args.slots} if args.quick else range(1, args.slots + 1)
        )
        decode: list[tuple[int, float]] = []
        for n in counts:
            runs = _run(engine, [_prompt(engine, 8) for _ in range(n)], tokens)
            # steady state: the gaps after every sequence has its first token
            start = max(r[2] for r in runs)
            gaps = [
                (b - a_) * 1000 for r in runs for a_, b in itertools.pairwise(r[2:]) if a_ >= start
            ]
            decode.append((n, statistics.median(gaps)))
            print(f"decode  {n:5d} together: step {decode[-1][1]:8.3f} ms", flush=True)
        base, per_seq = _fit([n for n, _ in decode], [ms for _, ms in decode])
    finally:
        engine.stop()
    profile = token_replica.TokenProfile(
        prefill_ms_per_token=round(max(per_token, 1e-6), 6),
        step_base_ms=round(max(base, 0.0), 6),
        decode_ms_per_sequence=round(max(per_seq, 1e-6), 6),
        load_seconds=round(load_s, 3),
        source=(
            f"{args.gguf.relative_to(ROOT) if args.gguf.is_relative_to(ROOT) else args.gguf}, "
            f"llama.cpp via llama-cpp-python in-process (triton/llama_model.Engine), "
            f"{args.threads} threads, slots {args.slots}, context {args.context}, n_batch "
            f"{args.batch_tokens}, on {platform.machine()} with 2 shared cores"
        ),
        measured=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        command="e2e/calibrate_llm_replica.py" + (" --quick" if args.quick else ""),
        points={
            "prefill": [{"tokens": n, "ttftMs": round(ms, 4)} for n, ms in prefill],
            "prefillInterceptMs": round(a, 4),
            "decode": [{"sequences": n, "stepMs": round(ms, 4)} for n, ms in decode],
        },
    )
    args.output.write_text(json.dumps(profile.to_json(), indent=2) + "\n", encoding="utf-8")
    print(
        f"prefill {profile.prefill_ms_per_token:.5f} ms/token (+{a:.3f} ms); decode step "
        f"{profile.step_base_ms:.4f} + {profile.decode_ms_per_sequence:.4f} ms x sequences; "
        f"load {load_s:.2f} s; {time.perf_counter() - started:.0f} s in all -> {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
