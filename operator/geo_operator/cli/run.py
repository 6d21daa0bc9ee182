"""`geo run`: run the operator (kopf) against the current kubeconfig.

What the operator's image runs (the Dockerfile's CMD, the Helm chart's
Deployment) and what the e2e tests start as ``python -m geo_operator.cli run``.
kopf and the handlers are imported in the body: the other verbs must not pay
for them, and importing `geo_operator.handlers` is what registers the handlers.
"""

from __future__ import annotations

import argparse
import ctypes
import http.server
import logging
import os
import secrets
import socket
import threading
import urllib.parse
from typing import TYPE_CHECKING

from geo_operator.api import names
from geo_operator.cli import options

if TYPE_CHECKING:
    from geo_operator.cli.options import Verbs
    from geo_operator.controller import leader


# `geo run`'s exit status when it lost the Lease while leading (kubelet restarts it).
LOST_LEASE_EXIT = 3

# glibc gives each thread that allocates an arena of its own, up to eight per core, and
# each keeps what it freed: kopf's handler pool (24 threads) settling 1,000 objects left
# 323 MiB steady RSS, two arenas 242-269 MiB (e2e/bench_scale.py, docs/reliability-and-
# security.md). What MALLOC_ARENA_MAX=2 does; that variable, where set, wins.
MALLOC_ARENAS = 2
M_ARENA_MAX = -8  # glibc's <malloc.h>


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
    election = p.add_argument_group(
        "high availability",
        "Run two or more replicas with --leader-elect: one holds the Lease and acts, the "
        "others stand by (no watches) and take over when it stops renewing.",
    )
    election.add_argument(
        "--leader-elect",
        action="store_true",
        help="act only while holding the Lease (default: act at once, the only replica)",
    )
    election.add_argument(
        "--leader-elect-namespace",
        default=os.environ.get("POD_NAMESPACE", "default"),
        help="namespace of the Lease (default: $POD_NAMESPACE, else %(default)s)",
    )
    election.add_argument(
        "--leader-elect-name",
        default="geo-operator",
        help="the Lease's name (default: %(default)s)",
    )
    election.add_argument(
        "--lease-duration",
        type=options.int_in(2, 3600),
        default=15,
        help="seconds a standby waits after the last renewal before taking over "
        "(default: %(default)s)",
    )
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    import kopf  # imported here: the other verbs must not pay for it

    from geo_operator import handlers  # registers the handlers

    limit_malloc_arenas()
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    namespaces = args.namespace or ()
    if args.metrics_port:
        _serve_metrics(args.metrics_address, args.metrics_port)
    elector = _elect(args) if args.leader_elect else None
    try:
        kopf.run(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=args.liveness,
            memo=handlers.memo(tuner_image=args.tuner_image),
        )
    finally:
        if elector is not None:
            elector.release()
    return 0


def limit_malloc_arenas() -> bool:
    """Cap glibc's malloc arenas at MALLOC_ARENAS, before kopf starts its threads; False
    where MALLOC_ARENA_MAX is set (glibc has read it) or the C library is not glibc."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the running process's C library
    except (OSError, AttributeError):
        return False  # no mallopt (macOS): its allocator has no arenas to cap
    return bool(mallopt(M_ARENA_MAX, MALLOC_ARENAS))


def _elect(args: argparse.Namespace) -> leader.Elector:
    """Wait for the Lease (a standby waits here), then keep it renewed; a leader that
    loses it exits at once, so that it never acts beside the new one (its pod restarts
    as a standby)."""
    from geo_operator.controller import leader
    from geo_operator.k8s import client as k8s
    from geo_operator.k8s import lease

    k8s.load_config()
    identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}_{secrets.token_hex(3)}"
    elector = leader.Elector(
        lease.LeaseClient(),
        args.leader_elect_namespace,
        args.leader_elect_name,
        identity,
        leader.Timing.for_lease(args.lease_duration),
    )
    health = _standby_health(args.liveness)
    try:
        elector.acquire()
    except lease.Forbidden as refused:  # the operator's RBAC, not a crash: one line
        logging.getLogger(__name__).error("%s", refused)
        raise SystemExit(2) from None
    finally:
        health.shutdown()
        health.server_close()  # kopf's liveness endpoint takes the port from here

    def lost(reason: str) -> None:
        logging.getLogger(__name__).error("%s: exiting, a standby takes over", reason)
        logging.shutdown()
        os._exit(LOST_LEASE_EXIT)

    elector.keep(lost)
    return elector


def _serve_metrics(address: str, port: int) -> None:
    """The operator's own Prometheus metrics (scaling.telemetry's), on http://address:port."""
    import prometheus_client

    prometheus_client.start_http_server(port, addr=address)
    logging.getLogger(__name__).info("operator metrics on http://%s:%d/metrics", address, port)


def _standby_health(url: str) -> http.server.ThreadingHTTPServer:
    """The liveness endpoint while standing by (kopf serves it once leading): a standby
    is alive, and the kubelet must not restart it for waiting."""
    parsed = urllib.parse.urlsplit(url)
    path = parsed.path or "/"

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path.split("?")[0] == path
            body = b'{"standby": true}' if found else b""
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        (parsed.hostname or "0.0.0.0", parsed.port or 80), Health
    )
    threading.Thread(target=server.serve_forever, name="standby-health", daemon=True).start()
    return server
