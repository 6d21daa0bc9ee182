"""`geo run`: run the operator (kopf) against the current kubeconfig.

What the operator's image runs (the Dockerfile's CMD, the Helm chart's
Deployment) and what the e2e tests start as ``python -m geo_operator.cli run``.
kopf and the handlers are imported in the body: the other verbs must not pay
for them, and importing `geo_operator.handlers` is what registers the handlers.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING

from geo_operator.api import names
from geo_operator.cli import options

if TYPE_CHECKING:
    from geo_operator.cli.options import Verbs


def register(verbs: Verbs) -> None:
    p = verbs.add_parser("run", help="run the operator against the current kubeconfig")
    p.add_argument(
        "-n",
        "--namespace",
        action="append",
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    p.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        help="kopf liveness endpoint (default: %(default)s)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    p.add_argument(
        "--metrics-port",
        type=options.int_in(0, 65535),
        default=9090,
        help="port of the operator's own Prometheus metrics, 0 to turn off (default: %(default)s)",
    )
    p.add_argument("--metrics-address", default="0.0.0.0", help="address to serve metrics on")
    p.add_argument(
        "--tuner-image",
        default=os.environ.get("GEO_TUNER_IMAGE", names.DEFAULT_TUNER_IMAGE),
        help="image the batch-tuning Jobs run `geo tune` in: the operator's own "
        "(default: $GEO_TUNER_IMAGE, else %(default)s)",
    )
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    import kopf  # imported here: the other verbs must not pay for it

    from geo_operator import handlers  # registers the handlers

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    namespaces = args.namespace or ()
    if args.metrics_port:
        _serve_metrics(args.metrics_address, args.metrics_port)
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness,
        memo=handlers.memo(tuner_image=args.tuner_image),
    )
    return 0


def _serve_metrics(address: str, port: int) -> None:
    """The operator's own Prometheus metrics (scaling.telemetry's), on http://address:port."""
    import prometheus_client

    prometheus_client.start_http_server(port, addr=address)
    logging.getLogger(__name__).info("operator metrics on http://%s:%d/metrics", address, port)
