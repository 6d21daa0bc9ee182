"""`geo tune-llm`: measure a generative artifact on a live Triton, as its tuning Job does.

Two measurements, each where it can be honest:

* **token speed** through Triton's ``generate_stream`` (the engine this pod serves): one
  stream alone, then ``--slots`` at once (`tuning.llm_speed`): tokens/s, client-side time
  to first token and inter-token p99;
* **quality** on held-out text (``--evaluate``) the way llama.cpp judges its own
  quantizations (`tuning.llm_quality`): the candidate's GGUF and the reference's, read
  from the pod's model repository (``--repository``), scored in windows of ``--context``
  tokens: perplexity, KL divergence from and top-1 agreement with the reference. Triton
  returns no logits, so this part runs llama.cpp in the tuner itself (llama-cpp-python:
  the tuner's image needs it, as the Triton image serving the GGUF does).

The result (``--result-file``, the Job's termination message) is a tuned batch the
operator reads like the classifiers': max_batch_size = the slots, throughput = tokens/s
at the slots, p99 = the inter-token p99 there, accuracy = the score of ``--metric`` in
0..1 with every figure beside it.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import TYPE_CHECKING

from geo_operator.api import models, names
from geo_operator.cli import io, options
from geo_operator.triton import model_config

if TYPE_CHECKING:
    from geo_operator.cli.options import Verbs
    from geo_operator.tuning import llm_speed

DESCRIPTION = (
    "Measure a generative model served by Triton: its token speed through generate_stream "
    "(one stream, then --slots at once), and with --evaluate its quality on held-out text "
    "against the reference artifact (perplexity, KL divergence, top-1 agreement; llama.cpp "
    "on the GGUFs in --repository). Progress goes to stderr."
)
GENERATIVE_METRICS = [
    str(m) for m in models.EvaluationMetric if m is not models.EvaluationMetric.ACCURACY
]


def register(verbs: Verbs) -> None:
    p = verbs.add_parser(
        "tune-llm",
        help="measure a generative model on a live Triton: token speed, held-out quality",
        description=DESCRIPTION,
    )
    p.add_argument("--url", required=True, help="Triton HTTP endpoint, HOST:PORT")
    p.add_argument("--model", required=True, help="model name")
    p.add_argument(
        "--slots", type=options.positive_int, default=4, help="streams at once (default: 4)"
    )
    p.add_argument(
        "--slot-candidates",
        type=options.int_list(1),
        help="measure these slot counts instead (each reloaded through Triton's repository "
        "API: explicit model control), each with that many streams at once, and keep the "
        "highest token throughput within --ttft-budget-ms and --itl-budget-ms",
    )
    p.add_argument(
        "--ttft-budget-ms",
        type=options.positive_float,
        help="the time to first token p99 a kept slot count stays within (default: any)",
    )
    p.add_argument(
        "--itl-budget-ms",
        type=options.positive_float,
        help="the inter-token p99 a kept slot count stays within (default: any)",
    )
    p.add_argument(
        "--max-tokens",
        type=options.positive_int,
        default=64,
        help="tokens each measuring stream asks for (default: %(default)s)",
    )
    p.add_argument(
        "--rounds",
        type=options.positive_int,
        default=2,
        help="rounds of streams per concurrency (default: %(default)s)",
    )
    p.add_argument(
        "--wait-seconds",
        type=options.non_negative_float,
        default=0.0,
        help="wait this long for the model to be ready first (default: don't wait)",
    )
    p.add_argument(
        "--evaluate",
        metavar="HELDOUT.txt",
        help="score the model on this held-out text (UTF-8) against --reference-model",
    )
    p.add_argument(
        "--metric",
        choices=GENERATIVE_METRICS,
        default="agreement",
        help="the score the accuracy floor applies to (default: %(default)s)",
    )
    p.add_argument(
        "--repository",
        default=names.MODEL_REPOSITORY,
        help="the model repository holding the GGUFs (default: %(default)s)",
    )
    p.add_argument(
        "--reference-model",
        help="the reference's folder in --repository; unset: this model is the reference",
    )
    p.add_argument("--reference", help="the reference artifact's name, for the record")
    p.add_argument(
        "--context",
        type=options.positive_int,
        default=256,
        help="tokens per scored window (default: %(default)s)",
    )
    p.add_argument(
        "--windows",
        type=options.positive_int,
        default=8,
        help="at most this many windows of the text (default: %(default)s)",
    )
    p.add_argument(
        "--threads", type=options.positive_int, default=2, help="llama.cpp's threads (default: 2)"
    )
    p.add_argument(
        "--result-file",
        help="also write the figures (or the error) as compact JSON here, e.g. "
        "/dev/termination-log in the tuning Job",
    )
    options.add_output(p)
    p.set_defaults(func=cmd_tune_llm)


def cmd_tune_llm(args: argparse.Namespace) -> int:
    try:
        return _tune(args)
    except io.UsageError as error:
        io.write_result(args.result_file, json.dumps({"error": str(error)[:2000]}))
        raise


def _gguf(repository: str, model: str) -> str:
    path = pathlib.Path(repository) / model / "1" / model_config.GGUF_FILENAME
    if not path.is_file():
        raise io.UsageError(f"no {model_config.GGUF_FILENAME} for {model} in {repository}")
    return str(path)


def _prompt(args: argparse.Namespace) -> str:
    """The measuring streams' prompt: the held-out text's start, else a line of code."""
    if args.evaluate:
        return _text(args.evaluate)[:160]  # about 45 tokens: room for the answer
    return "def fibonacci(n):\n    "


def _text(path: str) -> str:
    try:
        return pathlib.Path(path).read_bytes().decode("utf-8")
    except OSError as error:
        raise io.UsageError(f"cannot read the held-out text {path}: {error}") from error
    except UnicodeDecodeError as error:
        raise io.UsageError(f"the held-out text {path} is not UTF-8: {error}") from error


def _measure(args: argparse.Namespace, concurrency: int, label: str = "") -> llm_speed.Speed:
    from geo_operator.tuning import llm_speed

    try:
        speed = llm_speed.measure(
            args.url,
            args.model,
            _prompt(args),
            max_tokens=args.max_tokens,
            concurrency=concurrency,
            rounds=args.rounds,
        )
    except Exception as error:  # refused, reset, no tokens: say so, no traceback
        raise io.UsageError(f"streaming from {args.model} on {args.url}: {error}") from error
    print(
        f"[speed]{label} {concurrency} at once: {speed.tokens_per_second:g} tokens/s, first "
        f"token p99 {speed.ttft_p99_ms:g} ms, between tokens p99 {speed.inter_token_p99_ms:g} ms",
        file=sys.stderr,
        flush=True,
    )
    return speed


def _speeds(args: argparse.Namespace) -> tuple[int, list[llm_speed.Speed]]:
    """The slots to record and the figures measured: one stream, then the slots full; with
    --slot-candidates, the search's (`llm_speed.search_slots`), Triton left serving the
    chosen slots."""
    from geo_operator.tuning import llm_speed

    if not args.slot_candidates:
        return args.slots, [_measure(args, c) for c in sorted({1, args.slots})]

    def at(slots: int) -> llm_speed.Speed:
        try:
            llm_speed.load_slots(args.url, args.model, slots)
        except Exception as error:
            raise io.UsageError(f"reloading {args.model} with {slots} slots: {error}") from error
        return _measure(args, slots, f" slots {slots}:")

    found = llm_speed.search_slots(
        at, args.slot_candidates, args.ttft_budget_ms, args.itl_budget_ms
    )
    if found.chosen is None or found.speed is None:
        tried = ", ".join(
            f"{c} slots: first token p99 {s.ttft_p99_ms:g} ms, between tokens "
            f"{s.inter_token_p99_ms:g} ms"
            for c, s in found.measured
        )
        raise io.UsageError(
            f"no slot count kept the time to first token p99 within "
            f"{args.ttft_budget_ms or 'any'} ms and between tokens within "
            f"{args.itl_budget_ms or 'any'} ms ({tried})"
        )
    if found.measured[-1][0] != found.chosen:  # the confirmation missed: the next best
        at(found.chosen)
    else:
        llm_speed.load_slots(args.url, args.model, found.chosen)  # leave it serving
    return found.chosen, [s for _, s in found.measured]


def _prefill(args: argparse.Namespace) -> float:
    """Prompt tokens/s of one request alone, on a prompt of about half a slot's context
    (--context tokens at 1.5 characters a token: the held-out text's, else code)."""
    from geo_operator.tuning import llm_speed

    chars = args.context * 3 // 4
    text = _text(args.evaluate) if args.evaluate else _CODE * (chars // len(_CODE) + 1)
    try:
        speed = llm_speed.prefill(args.url, args.model, text[:chars])
    except Exception as error:  # refused (a prompt over the context?), reset: say so
        raise io.UsageError(f"prefill on {args.model} at {args.url}: {error}") from error
    print(f"[speed] prefill: {speed:g} prompt tokens/s, one request alone", file=sys.stderr)
    return speed


_CODE = "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1)\n"


def _quality(args: argparse.Namespace) -> models.MeasuredAccuracy | None:
    from geo_operator.tuning import llm_quality

    if args.evaluate is None:
        return None
    try:
        import llama_cpp  # noqa: F401
    except ImportError as error:
        raise io.UsageError(
            "the held-out evaluation of a GGUF runs llama.cpp in the tuner, and this image has "
            "no llama-cpp-python: install geo-operator[llm] in it (the Triton image serving "
            f"the GGUF needs it too): {error}"
        ) from error
    candidate = _gguf(args.repository, args.model)
    reference = _gguf(args.repository, args.reference_model or args.model)
    text = _text(args.evaluate)
    print(f"[evaluate] {args.evaluate} ({args.metric})", file=sys.stderr, flush=True)
    try:
        got, ref = llm_quality.measure_text(
            candidate, reference, text, args.context, args.windows, args.threads
        )
    except ValueError as error:
        raise io.UsageError(f"held-out evaluation: {error}") from error
    scored = llm_quality.as_score(got, ref, models.EvaluationMetric(args.metric), args.reference)
    print(
        f"[evaluate] {scored.metric} {scored.value:.4f} on {scored.samples} tokens: perplexity "
        f"{got.perplexity:g} (reference {ref.perplexity:g}), KL divergence "
        f"{got.kl_divergence:g}, agreement {got.agreement:g}",
        file=sys.stderr,
        flush=True,
    )
    return scored


def _tune(args: argparse.Namespace) -> int:
    from geo_operator.builders import tuning
    from geo_operator.cli import tune

    if args.wait_seconds > 0:
        tune._wait_ready(args.url, args.model, args.wait_seconds)
    slots, speeds = _speeds(args)
    prefill = _prefill(args)
    scored = _quality(args)
    at_slots = next(s for s in reversed(speeds) if s.concurrency == slots)
    result = models.TunedBatch(
        max_batch_size=slots,
        throughput=at_slots.tokens_per_second,
        p99_ms=at_slots.inter_token_p99_ms,
        concurrency=at_slots.concurrency,
        measurements=len(speeds),
        grid_size=len(set(args.slot_candidates or [args.slots])),
        prefill_tokens_per_second=prefill,
        accuracy=scored,
    )
    io.write_result(args.result_file, tuning.result_json(result))
    if args.output == "text":
        print(f"prefill: {prefill:g} prompt tokens/s, one request alone")
        for s in speeds:
            print(
                f"{s.concurrency} at once: {s.tokens_per_second:g} tokens/s, first token p99 "
                f"{s.ttft_p99_ms:g} ms, between tokens p99 {s.inter_token_p99_ms:g} ms "
                f"(mean {s.inter_token_mean_ms:g} ms), {s.streams} streams"
            )
        if scored is not None:
            print(
                f"quality: {scored.metric} {scored.value:.4f} on {scored.samples} tokens "
                f"(perplexity {scored.perplexity:g}, KL divergence {scored.kl_divergence:g}, "
                f"agreement {scored.agreement:g})"
            )
    else:
        out = {
            "model": args.model,
            "speed": [s.__dict__ for s in speeds],
            "result": result.model_dump(mode="json", by_alias=True, exclude_none=True),
        }
        io.emit(out, args.output)
    return 0
