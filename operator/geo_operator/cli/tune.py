"""`geo tune`: measure batching configurations on a live Triton and leave it serving the best.

Run by hand, and by the batch-tuning Job the operator creates (builders.tuning
writes its args; its --result-file is the Job's termination message, which the
operator reads back). The measuring, searching and wording live in
geo_operator.tuning; this module holds the verb's options and the sequence.
tritonclient and numpy are imported in the body: the other verbs don't need them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

from geo_operator.api import models
from geo_operator.cli import io, options, tune_llm

if TYPE_CHECKING:
    from geo_operator.cli.options import Verbs
    from geo_operator.tuning import measure, search

DESCRIPTION = (
    "Load each configuration through Triton's model-repository API "
    "(Triton must run with --model-control-mode=explicit), drive load at rising "
    "concurrency and keep the best throughput whose p99 fits the budget. A hill-climbing "
    "search measures a few configurations; --full-sweep also measures them all. Triton is "
    "left serving the chosen configuration (the sweep's, with --full-sweep). "
    "Progress goes to stderr."
)


def register(verbs: Verbs) -> None:
    p = verbs.add_parser(
        "tune",
        help="measure max_batch_size and dynamic batching on a live Triton, pick the best",
        description=DESCRIPTION,
    )
    p.add_argument("--url", required=True, help="Triton HTTP endpoint, HOST:PORT")
    p.add_argument("--model", required=True, help="model name")
    p.add_argument(
        "--latency-budget-ms",
        type=options.positive_float,
        required=True,
        help="client p99 latency budget",
    )
    _add_search_options(p)
    p.add_argument(
        "--wait-seconds",
        type=options.non_negative_float,
        default=0.0,
        help="wait this long for the model to be ready first (default: don't wait)",
    )
    _add_evaluation_options(p)
    p.add_argument(
        "--result-file",
        help="also write the chosen config and its figures (or the error) as compact JSON "
        "here, e.g. /dev/termination-log in the tuning Job",
    )
    options.add_output(p)
    p.set_defaults(func=cmd_tune)
    tune_llm.register(verbs)  # its generative sibling


def _add_evaluation_options(p: argparse.ArgumentParser) -> None:
    """The held-out set scored on the chosen configuration (the accuracy, measured)."""
    p.add_argument(
        "--evaluate",
        metavar="HELDOUT.npz",
        help="after tuning, send this held-out set (one array per model input, named as "
        "the input, plus `labels`) through the chosen configuration and record the score",
    )
    p.add_argument(
        "--metric",
        choices=["accuracy", "agreement"],
        default="accuracy",
        help="accuracy: top-1 against `labels`; agreement: top-1 equal to --reference-model's "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--reference-model",
        help="agreement: the model in Triton's repository whose answers count as right "
        "(loaded for the scoring, unloaded after); unset: this model is the reference",
    )
    p.add_argument("--reference", help="agreement: the reference artifact's name, for the record")
    p.add_argument(
        "--scored-output",
        metavar="NAME",
        help="the model output scored (default: the first with more than one value per sample)",
    )


def _add_search_options(p: argparse.ArgumentParser) -> None:
    """The grid to search and how each configuration is measured."""
    p.add_argument(
        "--candidates",
        type=options.int_list(1),
        default="1,2,4,8,16,32",
        help="max_batch_size candidates (default: %(default)s)",
    )
    p.add_argument(
        "--delays",
        type=options.int_list_or_off(0),
        default="0,100,500,2000",
        help="max_queue_delay_microseconds candidates, 'off' = no dynamic batching "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--concurrency",
        type=options.int_list(1),
        default="1,4,16,32",
        help="in-flight requests per load level (default: %(default)s)",
    )
    p.add_argument(
        "--seconds",
        type=options.positive_float,
        default=3.0,
        help="duration of each load level (default: 3)",
    )
    p.add_argument(
        "--full-sweep", action="store_true", help="also measure the whole grid, side by side"
    )


def cmd_tune(args: argparse.Namespace) -> int:
    try:
        return _tune(args)
    except io.UsageError as error:
        io.write_result(args.result_file, json.dumps({"error": str(error)[:2000]}))
        raise


def _tune(args: argparse.Namespace) -> int:
    from geo_operator.tuning import measure

    if args.wait_seconds > 0:
        _wait_ready(args.url, args.model, args.wait_seconds)
    measurer = _measurer(args)
    # The quick search takes at most the grid; the sweep measures what it left, and the
    # quick search's repeats (its confirmation round) are at most a third of the grid.
    grid = len(set(args.candidates)) * len(set(args.delays))
    progress = _Progress(measurer, grid + grid // 3 if args.full_sweep else grid)
    try:
        outcomes = _search(args, progress)
        # With the sweep measured, its choice is the best within the budget of all.
        final = outcomes["sweep" if args.full_sweep else "quick"]
        # Leave Triton serving the chosen configuration (else the last one measured).
        if final.chosen is not None:
            measurer.load(final.chosen)
    except measure.MeasureError as error:
        raise io.UsageError(str(error)) from error
    finally:
        measurer.close()
    scored = _evaluate(args, final.chosen)
    io.write_result(args.result_file, _result_json(args, final, scored))
    _print_report(args, outcomes, final.chosen, progress.count)
    return 0 if final.chosen is not None else 1


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
            raise io.UsageError(f"{model} on {url} not ready after {seconds:g} s: {last}")
        time.sleep(1.0)


def _measurer(args: argparse.Namespace) -> measure.Measurer:
    from geo_operator.tuning import measure

    try:
        return measure.Measurer(
            args.url,
            args.model,
            args.latency_budget_ms,
            concurrency=args.concurrency,
            seconds=args.seconds,
        )
    except Exception as error:  # connection refused, unknown model: say so, no traceback
        raise io.UsageError(
            f"cannot read {args.model}'s config from {args.url}: {error}"
        ) from error


class _Progress:
    """Measures a configuration for the search; reports each on stderr with how many of
    the most it may take are done and the best within the budget so far."""

    def __init__(self, measurer: measure.Measurer, planned: int) -> None:
        self.measurer = measurer
        self.planned = planned  # the most measurements the search can take
        self.count = 0
        self.best: tuple[float, str] | None = None  # (req/s, config) within the budget

    def __call__(self, config: search.Config) -> measure.Result:
        self.count += 1
        started = time.monotonic()
        result = self.measurer.measure(config)
        best = result.best
        figures = (
            f"{best.throughput:.0f} req/s at {best.concurrency} in flight, "
            f"p99 {best.p99_ms:.2f} ms, avg batch {best.avg_batch:.2f}"
            if best
            else "over budget at every level"
        )
        if best and (self.best is None or best.throughput > self.best[0]):
            self.best = (best.throughput, config.describe())
        so_far = f"best so far {self.best[1]} {self.best[0]:.0f} req/s" if self.best else "none"
        print(
            f"[{self.count} of at most {self.planned}] {config.describe()}: {figures} "
            f"({time.monotonic() - started:.1f}s); {so_far}",
            file=sys.stderr,
            flush=True,
        )
        return result


def _search(
    args: argparse.Namespace, progress: _Progress
) -> dict[str, search.SearchResult[measure.Result]]:
    """The quick search's outcome, and with --full-sweep the whole grid's."""
    from geo_operator.tuning import search

    outcomes = {"quick": search.quick_search(progress, args.candidates, args.delays)}
    if args.full_sweep:
        # The sweep reuses the quick search's measurements: the same figures for a
        # configuration in both tables, and only the rest of the grid costs time.
        outcomes["sweep"] = search.full_sweep(
            progress, args.candidates, args.delays, prior=outcomes["quick"].measured
        )
    return outcomes


def _evaluate(
    args: argparse.Namespace, chosen: search.Config | None
) -> models.MeasuredAccuracy | None:
    """The held-out score at the chosen configuration (Triton serves it now), if asked."""
    from geo_operator.tuning import evaluate

    if args.evaluate is None or chosen is None:
        return None
    print(f"[evaluate] {args.evaluate} ({args.metric})", file=sys.stderr, flush=True)
    try:
        scored = evaluate.run(
            args.url,
            args.model,
            args.evaluate,
            models.EvaluationMetric(args.metric),
            reference_model=args.reference_model,
            reference=args.reference,
            output=args.scored_output,
            batch=chosen.max_batch_size,
        )
    except evaluate.EvaluationError as error:
        raise io.UsageError(f"held-out evaluation: {error}") from error
    except Exception as error:  # Triton refused a request: say so, no traceback
        raise io.UsageError(f"held-out evaluation failed on {args.url}: {error}") from error
    print(
        f"[evaluate] {scored.metric} {scored.value:.4f} on {scored.samples} samples",
        file=sys.stderr,
        flush=True,
    )
    return scored


def _result_json(
    args: argparse.Namespace,
    final: search.SearchResult[measure.Result],
    scored: models.MeasuredAccuracy | None = None,
) -> str:
    """What --result-file gets: the tuned batch and its figures, or why there is none."""
    from geo_operator.builders import tuning
    from geo_operator.tuning import report, search

    result = report.tuned(final, len(search.grid(args.candidates, args.delays)))
    if result is not None:
        if scored is not None:
            result = result.model_copy(update={"accuracy": scored})
        return tuning.result_json(result)
    return json.dumps(
        {
            "error": f"no configuration kept p99 within {args.latency_budget_ms:g} ms "
            f"({final.measurements} measured)"
        }
    )


def _print_report(
    args: argparse.Namespace,
    outcomes: dict[str, search.SearchResult[measure.Result]],
    chosen: search.Config | None,
    taken: int,
) -> None:
    from geo_operator.tuning import report

    if args.output == "text":
        print(report.as_text(taken=taken, loaded=chosen, outcomes=outcomes))
        return
    out = report.as_json(
        model=args.model,
        latency_budget_ms=args.latency_budget_ms,
        seconds=args.seconds,
        concurrency=args.concurrency,
        taken=taken,
        loaded=chosen,
        outcomes=outcomes,
    )
    io.emit(out, args.output)
