"""The `geo` command: run the operator, and look at what it would do.

    geo run                       run the operator against the current kubeconfig
    geo crd                       print the CRD generated from the API models
    geo render -f gd.yaml         print the ConfigMap, Deployment and Service it would create
    geo select -f gd.yaml         which artifact it would serve, and why
    geo decide -f gd.yaml ...     one autoscaling decision, as JSON
    geo tune --url H:P --model M --latency-budget-ms B
                                  measure batching configurations on a live Triton
    geo tune-llm --url H:P --model M [--evaluate heldout.txt]
                                  a generative model's token speed and held-out quality
    geo simulate -f gd.yaml --trace T.csv --policy geo|hpa|keda|kpa|oracle|all
                                  replay a traffic trace through simulated replicas
    geo rollout status|promote|abort|pause|resume NAME [-n NS]
                                  a GeoDeployment's canary rollout, and its history

The console script `geo` (pyproject.toml) calls `main`; so does
``python -m geo_operator.cli``. One module per verb group (run, inspect: crd,
render and select, decide, tune, simulate, rollout) holds its options beside its body
and adds its subparser in ``register``; options.py has the flags they share and
the range types, io.py reading GeoDeployment files and UsageError.

Every verb that reads a GeoDeployment validates it exactly as the operator
does and exits 2 with the offending field named when it is invalid; an option
out of range exits 2 too, with argparse's usage and the flag named.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from geo_operator.cli import decide, inspect, io, options, rollout, run, simulate, tune

VERB_MODULES = (run, inspect, decide, tune, simulate, rollout)


def parser() -> argparse.ArgumentParser:
    top = options.GeoParser(
        prog="geo",
        description=(
            "GEO serves models with NVIDIA Triton on Kubernetes: it picks the quantized "
            "artifact that meets the accuracy floor on your hardware, renders the Triton "
            "model repository, deploys it and keeps it scaled."
        ),
        epilog="Try: geo select -f manifests/examples/digits.yaml; geo render -f ...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in VERB_MODULES:
        module.register(verbs)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except io.UsageError as error:
        print(f"geo {args.verb}: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `geo ... | head`: the reader left, not an error
        sys.stderr.close()
        return 0
