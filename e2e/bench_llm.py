"""Benchmark: the pycode family on the real Triton (llama.cpp in the python backend).

Every artifact of examples/pycode/artifacts is a model of one tritonserver, laid out
as the operator lays it out (``children.config_map_data`` of the pycode example with
that artifact chosen: config.pbtxt, llama_model.py). For each, in interleaved rounds:
streams through ``generate_stream`` with a prompt of ``--prompt-tokens`` held-out tokens
and ``--max-tokens`` generated (ignore_eos), first one alone, then ``--slots`` at once;
the client measures time to first token and the gaps between tokens. Prints per
artifact: prefill tokens/s (prompt tokens / TTFT, one stream), decode tokens/s of one
stream and of N streams together (all generated tokens / wall time), TTFT p50 and the
gap p99 at N. Two shared cores: the client runs on them too; compare within a column.

    .venv/bin/python e2e/bench_llm.py [--rounds 2] [--slots 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import threading
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT))

from geo_operator.api import models  # noqa: E402
from geo_operator.builders import children, plan  # noqa: E402
from geo_operator.triton import generate as llmclient  # noqa: E402
from geo_operator.triton import local, repository  # noqa: E402

ARTIFACTS = ROOT / "examples" / "pycode" / "artifacts"
EXAMPLE = ROOT / "manifests" / "examples" / "pycode.yaml"
PREFIX = "http://models.geo.local/pycode/"


def _repository(repo: pathlib.Path, slots: int) -> list[str]:
    """One model per artifact (the miscalibrated one included), named by the artifact."""
    measured = json.loads((ARTIFACTS / "measurements.json").read_text())["artifacts"]
    body = yaml.safe_load(EXAMPLE.read_text())
    names = []
    for name, entry in measured.items():
        label = name.replace("_", "-")
        spec = body["spec"]
        spec["model"]["name"] = label
        spec["model"]["artifacts"] = [
            {
                "name": label,
                "precision": "int4",
                "format": "gguf",
                "uri": PREFIX + entry["file"],
                "accuracy": 1.0,
            }
        ]
        spec["triton"]["engine"]["slots"] = slots
        decided = plan.plan(
            name=label,
            namespace="bench",
            uid="u",
            spec=models.parse_spec(spec),
            status=models.GeoDeploymentStatus(),
            current_replicas=None,
        )
        assert decided.target is not None
        repository.materialize(
            children.config_map_data(decided.target),
            model_name=label,
            artifact_format=models.ArtifactFormat.GGUF,
            uri=decided.target.artifact.uri,
            repository=repo,
            mirrors={PREFIX: f"file://{ARTIFACTS}/"},
        )
        names.append(label)
    return names


def _stream(url: str, model: str, prompt: str, max_tokens: int) -> tuple[float, list[float]]:
    started = time.perf_counter()
    parameters = {"max_tokens": max_tokens, "ignore_eos": True}
    arrivals = [when for when, _ in llmclient.stream(url, model, prompt, parameters=parameters)]
    return started, arrivals


def _together(url: str, model: str, prompt: str, max_tokens: int, n: int) -> dict[str, float]:
    results: list[tuple[float, list[float]]] = []
    threads = [
        threading.Thread(target=lambda: results.append(_stream(url, model, prompt, max_tokens)))
        for _ in range(n)
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = max(a[-1] for _, a in results) - started
    gaps = sorted(g for _, a in results for g in (b - c for b, c in zip(a[1:], a, strict=False)))
    return {
        "tokens_per_second": sum(len(a) for _, a in results) / wall,
        "ttft_ms": statistics.median((a[0] - s) * 1000 for s, a in results),
        "gap_p99_ms": gaps[int(0.99 * (len(gaps) - 1))] * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=96)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)
    import llama_cpp

    vocab = llama_cpp.Llama(str(ARTIFACTS / "f16" / "model.gguf"), vocab_only=True, verbose=False)
    held = (ARTIFACTS / "heldout.txt").read_text()
    tokens = vocab.tokenize(held.encode(), add_bos=False)[: args.prompt_tokens]
    prompt = vocab.detokenize(tokens).decode(errors="ignore")
    with tempfile.TemporaryDirectory() as tmp:
        repo = pathlib.Path(tmp) / "repo"
        names = _repository(repo, args.slots)
        figures: dict[str, dict[str, list[float]]] = {n: {} for n in names}
        with local.TritonServer(repo, log_path=pathlib.Path(tmp) / "triton.log") as server:
            for name in names:  # warm each engine once
                _stream(server.http_url, name, prompt, 8)
            for round_ in range(args.rounds):
                for name in names if round_ % 2 == 0 else reversed(names):
                    one = _together(server.http_url, name, prompt, args.max_tokens, 1)
                    many = _together(server.http_url, name, prompt, args.max_tokens, args.slots)
                    row = figures[name]
                    row.setdefault("prefill", []).append(
                        len(tokens) / (one["ttft_ms"] / 1000) if one["ttft_ms"] else 0.0
                    )
                    row.setdefault("decode1", []).append(one["tokens_per_second"])
                    row.setdefault("decodeN", []).append(many["tokens_per_second"])
                    row.setdefault("ttftN", []).append(many["ttft_ms"])
                    row.setdefault("gapN", []).append(many["gap_p99_ms"])
    print(
        f"{'artifact':22s} {'prefill tok/s':>13s} {'decode 1':>9s} "
        f"{'decode ' + str(args.slots):>9s} {'TTFT@N ms':>10s} {'gap p99@N ms':>13s}"
    )
    table = {}
    for name, row in figures.items():
        med = {k: statistics.median(v) for k, v in row.items()}
        table[name] = med
        print(
            f"{name:22s} {med['prefill']:13,.0f} {med['decode1']:9,.0f} {med['decodeN']:9,.0f} "
            f"{med['ttftN']:10.1f} {med['gapN']:13.2f}"
        )
    print(
        f"({args.rounds} interleaved rounds, medians; prompt {len(tokens)} tokens, "
        f"{args.max_tokens} generated per stream; {args.slots} slots of the example's "
        f"context; client and server on the same cores)"
    )
    if args.json:
        args.json.write_text(json.dumps(table, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
