"""Benchmark: 1,000 GeoDeployments on the real API server (issue 14's scale figures).

Run: `.venv/bin/python e2e/bench_scale.py [--count 1000] [--namespaces 10] [--steady 60]`
(about 10 min at 1,000; it brings the local cluster up if it is not, installs the chart,
runs `geo run` as the chart's ServiceAccount, and deletes its namespaces afterwards).

What it does, and what it prints:

1. applies COUNT GeoDeployments in one `kubectl apply` (spread over NAMESPACES
   restricted namespaces; autoscaling on with the direct source; every TUNED-th with
   `maxBatchSize: 0`, so a tuning Job too), and times until every one is `Ready=True`;
2. points every Triton pod's `geo.ai/metrics-url` at the **stand-in exposition
   server** below and lets the autoscaler scrape them;
3. then holds still for STEADY seconds, nothing changing, and counts what the
   operator does meanwhile.

Figures: the time to all Ready; the operator's peak and steady RSS and its CPU; its
API requests (the API server's audit log keeps the operator's ServiceAccount only: see
e2e/cluster/up.sh), in total, per verb and per reconcile (`geo_reconciles_total`);
the cluster's own `apiserver_request_total` before and after, for scale; the
autoscaler's tick (`geo_autoscaler_tick_seconds`) and step times; and the operator's
writes in the steady window (the aim is none).

STAND-IN, said plainly: the metrics of 1,000 deployments cannot come from 1,000 real
Tritons on two cores, so one small HTTP server here (`Exposition`) serves Triton's
exposition text for every pod: a load generator for the operator, not a model server.
It serves the counters a Triton under a steady 2 requests/s would (p99 4 ms). The real
Triton stories stay in e2e/test_closed_loop.py. kwok plays the nodes; no Triton runs.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import datetime as dt
import http.server
import json
import math
import os
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from e2e.harness import (
    Cluster,
    OperatorProcess,
    chart_as_installed,
    delete_namespaces,
    example,
    fresh_namespace,
    install_chart,
    up,
    wait_for,
)
from e2e.prometheus_local import Prometheus

from geo_operator.api import models, names

OPERATOR_USER = "system:serviceaccount:geo-system:geo-operator"
WRITES = {"create", "update", "patch", "delete", "deletecollection"}
PODS_PER_NODE = 250
QPS = 2.0  # what every stand-in pod reports serving
P99_US = 4000
PROMETHEUS_SCRAPE_SECONDS = 10.0  # 1,000 targets: 100 scrapes/s of the one stand-in


class _Server(http.server.ThreadingHTTPServer):
    """The stand-in's HTTP server. socketserver's listen backlog is 5: the autoscaler's
    eight concurrent scrapes overflowed it, a dropped SYN is retried after a second, and
    the scrape timed out (2 s) now and then: a MetricsMissing flap, two status writes, in
    what should be a steady state."""

    daemon_threads = True
    request_queue_size = 1024


class Exposition:
    """STAND-IN: one process serving Triton's /metrics text for every pod (`/p/NS/POD`),
    counters growing at QPS from the moment a pod is first asked for. A load generator
    for the operator, not a model server."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.scrapes = 0
        exposition = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                exposition.scrapes += 1
                body = exposition.text(self.path).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, namespace: str, pod: str) -> str:
        return f"http://127.0.0.1:{self.port}/p/{namespace}/{pod}"

    def text(self, path: str) -> str:
        now = time.monotonic()
        since = now - self.first.setdefault(path, now - 60)
        n = int(since * QPS)
        model = 'model="digits",version="1"'
        lines = [
            f"nv_inference_request_success{{{model}}} {n}",
            f'nv_inference_request_failure{{{model},reason="REJECTED"}} 0',
            f"nv_inference_count{{{model}}} {n}",
            f"nv_inference_exec_count{{{model}}} {n}",
            f"nv_inference_request_duration_us{{{model}}} {n * 2000}",
            f"nv_inference_queue_duration_us{{{model}}} {n * 100}",
            f"nv_inference_pending_request_count{{{model}}} 0",
            f"nv_inference_request_summary_us_count{{{model}}} {n}",
            f"nv_inference_request_summary_us_sum{{{model}}} {n * 2000}",
        ]
        for q, v in (("0.5", 2000), ("0.9", 3000), ("0.95", 3500), ("0.99", P99_US)):
            lines.append(f'nv_inference_request_summary_us{{{model},quantile="{q}"}} {v}')
        return "\n".join(lines) + "\n"

    def stop(self) -> None:
        self.server.shutdown()


# --census / --tracemalloc: a sitecustomize the operator's interpreter loads (a bench
# tool, not the operator's). On SIGUSR2 it writes where the memory is: glibc's heap in use
# and free-but-kept (mallinfo2), pymalloc's arenas, the live objects by type (count and
# shallow size), cheap enough for 1,000 objects; with --tracemalloc also the biggest live
# allocations by file and traceback (that slows the operator several times over).
MEMORY_HOOK = """
import asyncio, collections, ctypes, enum, gc, os, pathlib, signal, sys, tempfile, threading
TRACE = os.environ.get("GEO_BENCH_TRACEMALLOC") == "1"
if TRACE:
    import tracemalloc
    tracemalloc.start(10)

class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

def _heap():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        m = libc.mallinfo2()
    except (OSError, AttributeError):
        return ["glibc mallinfo2: not available"]
    mib = lambda n: f"{n / 2**20:.1f} MiB"
    return [
        f"glibc heap: main arena + others {mib(m.arena)}, mmapped {mib(m.hblkhd)}; "
        f"in use {mib(m.uordblks)}, free but kept {mib(m.fordblks)}",
    ]

def _pymalloc():
    with tempfile.TemporaryFile("w+") as f:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(f.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read()
    keep = ("# arenas allocated current", "# arenas highwater", "Total",
            "bytes in allocated blocks", "bytes in available blocks", "unused pools")
    return ["pymalloc: " + line.strip() for line in text.splitlines()
            if any(k in line for k in keep)]

def _census():
    gc.collect()
    count, size = collections.Counter(), collections.Counter()
    for o in gc.get_objects():
        t = type(o)
        name = f"{t.__module__}.{t.__qualname__}"
        count[name] += 1
        try:
            size[name] += sys.getsizeof(o)
        except TypeError:
            pass
    lines = [f"live gc-tracked objects: {sum(count.values())}, threads {threading.active_count()}",
             "--- by type, shallow size (str, int, float, bytes are not gc-tracked)"]
    for name, n in size.most_common(25):
        lines.append(f"{n / 2**20:8.1f} MiB {count[name]:9d} {name}")
    models = [o for o in gc.get_objects()
              if isinstance(o, type) and type(o).__name__ == "ModelMetaclass"]
    modules = collections.Counter(str(o.__module__) for o in models)
    lines.append(f"--- pydantic model classes: {len(models)}, by module")
    lines += [f"{n:9d} {name}" for name, n in modules.most_common(8)]
    named = collections.Counter(o.__qualname__ for o in models)
    lines.append("    most repeated: " + ", ".join(f"{k} x{n}" for k, n in named.most_common(5)))
    if os.environ.get("GEO_BENCH_MEMORY_WHO") == "1":  # slow: minutes at 1,000 objects
        lines += _holders(("dict", "set", "list")) + _chains()
    return lines + _deep()

# The structures that live as long as the operator, in the order their shared parts are
# attributed (an object reached from two is counted under the first).
ROOTS = (
    "geo_operator.controller.autoscaler.Autoscaler",
    "geo_operator.controller.context.Context",
    "geo_operator.controller.background.Jobs",
    "kopf._core.engines.indexing.Index",
    "kopf._core.reactor.inventory.ResourceMemories",
    "prometheus_client.registry.CollectorRegistry",
    "kubernetes.dynamic.client.DynamicClient",
    "kubernetes.client.api_client.ApiClient",
)

def _deep():
    # Deep sizes (strings and numbers included, classes, modules and code not).
    stop = (type, type(sys), type(_deep), type(_deep.__code__), type(print))
    seen = set()

    def size(todo):
        total, n = 0, 0
        while todo:
            o = todo.pop()
            if id(o) in seen or isinstance(o, stop):
                continue
            seen.add(id(o))
            try:
                total += sys.getsizeof(o)
            except TypeError:
                pass
            n += 1
            todo.extend(gc.get_referents(o))
        return total, n

    objects = gc.get_objects()
    roots = [(f"{type(o).__module__}.{type(o).__qualname__}", o) for o in objects
             if f"{type(o).__module__}.{type(o).__qualname__}" in ROOTS]
    del objects
    roots.sort(key=lambda r: ROOTS.index(r[0]))
    # GEO's own roots are split by attribute: each holds what the others can reach. A
    # running task is left to the end: it reaches the whole event loop, kopf's included.
    roots = [
        (f"{label}.{attr}", value)
        for label, root in roots
        for attr, value in (vars(root).items() if label.startswith("geo_operator") else [])
        if not isinstance(value, asyncio.Task)
    ] + [(label, root) for label, root in roots if not label.startswith("geo_operator")]
    lines = ["--- deep size of what lives as long as the operator (shared parts counted once)"]
    for label, root in roots:
        total, n = size([root])
        extra = f" ({len(root)} keys)" if label.endswith(".Index") else ""
        if total >= 2**19 or not label.startswith("geo_operator"):
            lines.append(f"{total / 2**20:8.1f} MiB {n:9d} objects  {label}{extra}")
    frames = list(sys._current_frames().values())
    for label, todo in (("the threads' running frames", frames),
                        ("everything else", gc.get_objects())):
        total, n = size(todo)
        lines.append(f"{total / 2**20:8.1f} MiB {n:9d} objects  {label}")
    return lines

def _chains(samples=3):
    # For the commonest instances of GEO's own classes: what keeps a few of them alive,
    # as the shortest chain of referrers up to a module, a class or a running frame.
    objects = gc.get_objects()
    mine = collections.Counter(
        type(o) for o in objects
        if str(getattr(type(o), "__module__", "")).startswith("geo_operator")
        and not isinstance(o, (enum.Enum, type)))
    lines = ["--- GEO's own instances, and what keeps them alive"]
    for cls, n in mine.most_common(6):
        lines.append(f"{n:9d} {cls.__module__}.{cls.__qualname__}")
        for o in [o for o in objects if type(o) is cls][:samples]:
            lines.append("          " + " <- ".join(_chain(o, objects)))
    del objects
    return lines

def _chain(target, objects, limit=300):
    def label(o):
        if isinstance(o, type(sys)):
            return f"module {o.__name__}"
        if isinstance(o, type):
            return f"class {o.__module__}.{o.__qualname__}"
        if type(o).__name__ == "frame":
            return f"frame {o.f_code.co_name} ({o.f_code.co_filename}:{o.f_lineno})"
        return f"{type(o).__module__}.{type(o).__qualname__}"
    parents = {id(target): None}
    queue, seen = [target], 0
    skip = {id(objects), id(queue), id(parents)}
    while queue and seen < limit:
        o = queue.pop(0)
        seen += 1
        if o is not target and (isinstance(o, (type, type(sys))) or type(o).__name__ == "frame"):
            path = []
            while o is not None:
                path.append(label(o))
                o = parents[id(o)]
            return list(reversed(path))
        for r in gc.get_referrers(o):
            if id(r) in parents or id(r) in skip or r is sys._getframe():
                continue
            parents[id(r)] = o
            queue.append(r)
    return [label(target), "... (no root within the search)"]

def _holders(kinds, sample=150):
    # Who holds a sample of the commonest containers: the referrer's type (for an
    # instance's __dict__, the instance's), two levels up.
    def name(o):
        return f"{type(o).__module__}.{type(o).__qualname__}"
    def up(o):
        mine = (objects, found, picked)
        refs = [r for r in gc.get_referrers(o)
                if not any(r is m for m in mine) and type(r).__name__ != "frame"]
        for r in refs:
            if isinstance(r, dict):
                owners = [x for x in gc.get_referrers(r) if getattr(x, "__dict__", None) is r]
                if owners:
                    return owners[0]
            return r
        return None
    import random
    objects = gc.get_objects()
    found, picked = [], []
    lines = []
    for kind in kinds:
        found = [o for o in objects
                 if type(o).__name__ == kind and type(o).__module__ == "builtins"]
        picked = random.Random(0).sample(found, min(sample, len(found)))
        chains = collections.Counter()
        for o in picked:
            a = up(o)
            b = up(a) if a is not None and not isinstance(a, type) else None
            names = [name(x) if x is not None else "-" for x in (a, b)]
            chains[" <- ".join(names)] += 1
        lines.append(f"--- who holds {kind}s (a sample of {len(picked)} of {len(found)}):"
                     " holder <- its holder")
        lines += [f"{n:9d} {chain}" for chain, n in chains.most_common(10)]
    del objects
    return lines

def _dump(*_):
    lines = _heap() + _pymalloc() + _census()
    if TRACE:
        snapshot = tracemalloc.take_snapshot()
        lines.append(f"traced live total {tracemalloc.get_traced_memory()[0] / 2**20:.1f} MiB")
        for kind in ("filename", "traceback"):
            lines.append(f"--- by {kind}")
            for stat in snapshot.statistics(kind)[:20]:
                lines.append(f"{stat.size / 2**20:8.1f} MiB {stat.count:9d} blocks")
                lines += ["        " + line for line in stat.traceback.format()[-8:]]
    pathlib.Path(os.environ["GEO_BENCH_MEMORY_OUT"]).write_text("\\n".join(lines))
signal.signal(signal.SIGUSR2, _dump)
"""


def _trace_memory(workdir: pathlib.Path, allocations: bool) -> pathlib.Path:
    """The operator started after this writes where its memory is on SIGUSR2 (with
    ``allocations``, tracemalloc's biggest too); returns the file it writes."""
    site = workdir / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(MEMORY_HOOK)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p
    )
    out = workdir / "memory.txt"
    os.environ["GEO_BENCH_MEMORY_OUT"] = str(out)
    os.environ["GEO_BENCH_TRACEMALLOC"] = "1" if allocations else "0"
    return out


class Sampler:
    """The operator process's RSS and CPU seconds, every half second, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float, float]] = []  # (time, rss MiB, cpu s)
        self.running = True
        self.tick = 100.0  # clock ticks per second (os.sysconf('SC_CLK_TCK') on Linux)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while self.running:
            try:
                status = pathlib.Path(f"/proc/{self.pid}/status").read_text()
                stat = pathlib.Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1]
            except OSError:
                return
            rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
            fields = stat.split()
            cpu = (int(fields[11]) + int(fields[12])) / self.tick
            self.samples.append((time.monotonic(), rss, cpu))
            time.sleep(0.5)

    def peak_rss(self) -> float:
        status = pathlib.Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]

    def between(self, start: float, end: float) -> tuple[float, float]:
        """(mean RSS MiB, CPU share of one core) over [start, end]."""
        window = [s for s in self.samples if start <= s[0] <= end]
        if len(window) < 2:
            return math.nan, math.nan
        cpu = (window[-1][2] - window[0][2]) / (window[-1][0] - window[0][0])
        return statistics.fmean(s[1] for s in window), cpu


class Audit:
    """The operator's requests, from the API server's audit log (its ServiceAccount only)."""

    def __init__(self, cluster: Cluster) -> None:
        self.path = cluster.kubeconfig.parent / "logs" / "audit.log"
        if not self.path.exists():
            raise SystemExit(
                f"no audit log at {self.path}: the cluster predates e2e/cluster/up.sh's audit "
                "flags; run e2e/cluster/down.sh and try again"
            )

    def offset(self) -> tuple[int, int]:
        """Where the log is now: its file (inode) and size."""
        stat = self.path.stat()
        return stat.st_ino, stat.st_size

    def since(self, offset: tuple[int, int]) -> list[dict[str, Any]]:
        """The operator's requests logged after ``offset``. The API server rotates the log
        at 100 MB (`--audit-log-maxsize`, one backup kept): the rest of the rotated file is
        read first, then the new one from its start."""
        inode, size = offset
        parts: list[tuple[pathlib.Path, int]] = []
        if self.path.stat().st_ino != inode:
            rotated = [f for f in self.path.parent.glob("audit-*.log") if f.stat().st_ino == inode]
            parts += [(f, size) for f in rotated]
            size = 0
        parts.append((self.path, size))
        events: list[dict[str, Any]] = []
        for path, start in parts:
            with path.open("rb") as stream:
                stream.seek(start)
                events += [json.loads(line) for line in stream if line.strip()]
        return [e for e in events if e.get("user", {}).get("username") == OPERATOR_USER]


def _metric(text: str, name: str) -> float:
    return sum(
        float(m.group(2))
        for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})?\s+(\S+)$", text, re.MULTILINE)
    )


def _causes(text: str) -> dict[str, int]:
    """`geo_reconcile_causes_total` by cause (coalesced: asked while one ran)."""
    return {
        m.group(1): int(float(m.group(2)))
        for m in re.finditer(
            r'^geo_reconcile_causes_total\{cause="([^"]+)"\}\s+(\S+)$', text, re.MULTILINE
        )
    }


def _operator_metrics(operator: OperatorProcess) -> str:
    import urllib.request

    with urllib.request.urlopen(
        f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=10
    ) as response:
        return str(response.read().decode())


def _apiserver_requests(cluster: Cluster) -> float:
    return _metric(cluster.kubectl("get", "--raw", "/metrics").stdout, "apiserver_request_total")


def _nodes(cluster: Cluster, count: int) -> None:
    """Enough kwok nodes for COUNT pods and the tuning pods (kwok's stages apply)."""
    wanted = math.ceil(count * 1.3 / PODS_PER_NODE)
    docs = []
    for i in range(wanted):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": f"kwok-bench-{i}",
                    "labels": {"type": "kwok", "kubernetes.io/hostname": f"kwok-bench-{i}"},
                    "annotations": {"kwok.x-k8s.io/node": "fake"},
                },
                "status": {
                    "allocatable": {"cpu": "512", "memory": "4Ti", "pods": str(PODS_PER_NODE)},
                    "capacity": {"cpu": "512", "memory": "4Ti", "pods": str(PODS_PER_NODE)},
                },
            }
        )
    cluster.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))


def _documents(
    count: int, namespaces: list[str], tuned_every: int, metrics: dict[str, Any] | None = None
) -> Iterator[dict[str, Any]]:
    for i in range(count):
        body = example(namespaces[i % len(namespaces)])
        body["metadata"]["name"] = f"gd-{i:04d}"
        body["spec"]["autoscaling"] = {"enabled": True, "minReplicas": 1, "maxReplicas": 3}
        if metrics is not None:
            body["spec"]["autoscaling"]["metrics"] = metrics
        body["spec"]["objectives"] = {"p99LatencyMs": 50}
        if tuned_every and i % tuned_every == 0:
            body["spec"]["triton"]["maxBatchSize"] = 0
        yield body


def _ready_count(cluster: Cluster, namespaces: list[str]) -> int:
    items = cluster.json("get", "geod", "-A")["items"]
    ready = 0
    for body in items:
        if body["metadata"]["namespace"] not in namespaces:
            continue
        for c in (body.get("status") or {}).get("conditions", []):
            if c["type"] == "Ready" and c["status"] == "True":
                ready += 1
    return ready


def _stamp(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


def _creation_to_ready(
    cluster: Cluster, namespaces: list[str]
) -> tuple[list[float], list[tuple[float, float, str, bool]]]:
    """Each object's seconds from its creationTimestamp to its Ready=True transition (the
    API server's one-second resolution); and the slowest 1 % (at least 5): their seconds,
    when each was created (seconds after the first), name, and whether it tunes."""
    rows = []
    for body in cluster.json("get", "geod", "-A")["items"]:
        if body["metadata"]["namespace"] not in namespaces:
            continue
        for c in (body.get("status") or {}).get("conditions", []):
            if c["type"] == "Ready" and c["status"] == "True":
                created = _stamp(body["metadata"]["creationTimestamp"])
                # tuned: see _documents
                tunes = (body["spec"].get("triton") or {}).get("maxBatchSize") == 0
                rows.append((_stamp(c["lastTransitionTime"]) - created, created, body, tunes))
    first = min((r[1] for r in rows), default=0.0)
    slowest = sorted(rows, key=lambda r: -r[0])[: max(5, len(rows) // 100)]
    return [r[0] for r in rows], [
        (seconds, created - first, f"{b['metadata']['namespace']}/{b['metadata']['name']}", t)
        for seconds, created, b, t in slowest
    ]


def _phases_to_ready(cluster: Cluster, namespaces: list[str]) -> dict[str, list[float]]:
    """Where each object's time to Ready went, from the timestamps the API server keeps:
    the operator's first reconcile (GeoDeployment created -> its Deployment created), the
    cluster's part (-> the Deployment Available: controllers, scheduler, kwok, all on the
    same two cores) and the operator's noticing (-> Ready)."""
    deployments = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d
        for d in cluster.json("get", "deployments", "-A")["items"]
    }
    phases: dict[str, list[float]] = {"operator: create": [], "cluster": [], "operator: Ready": []}
    for body in cluster.json("get", "geod", "-A")["items"]:
        meta = body["metadata"]
        found = deployments.get((meta["namespace"], meta["name"]))
        if meta["namespace"] not in namespaces or found is None:
            continue
        ready = _transition(body, "Ready")
        available = _transition(found, "Available")
        if ready is None or available is None:
            continue
        created = _stamp(meta["creationTimestamp"])
        child = _stamp(found["metadata"]["creationTimestamp"])
        phases["operator: create"].append(child - created)
        phases["cluster"].append(available - child)
        phases["operator: Ready"].append(ready - available)
    return phases


def _transition(body: dict[str, Any], type_: str) -> float | None:
    for c in (body.get("status") or {}).get("conditions", []):
        if c["type"] == type_ and c["status"] == "True":
            return _stamp(c["lastTransitionTime"])
    return None


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


def _control_plane_pid(cluster: Cluster, name: str) -> int | None:
    try:
        return int((cluster.directory / "pids" / f"{name}.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _triton_pods(cluster: Cluster, namespaces: list[str]) -> list[tuple[str, str, str]]:
    """(namespace, pod, geodeployment) of every serving Triton pod."""
    found = []
    for namespace in namespaces:
        pods = cluster.json("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/name=triton")
        found += [
            (namespace, pod["metadata"]["name"], pod["metadata"]["labels"][names.OWNER_LABEL])
            for pod in pods["items"]
        ]
    return found


def _scrape_targets(
    cluster: Cluster, namespaces: list[str], exposition: Exposition, file_sd: pathlib.Path
) -> int:
    """Prometheus' file-based discovery -> every Triton pod's stand-in path, with the
    labels GEO's queries group by (the bench writes nothing to the cluster for this)."""
    groups = [
        {
            "targets": [f"127.0.0.1:{exposition.port}"],
            "labels": {
                "__metrics_path__": f"/p/{namespace}/{pod}",
                "namespace": namespace,
                "pod": pod,
                "geodeployment": owner,
            },
        }
        for namespace, pod, owner in _triton_pods(cluster, namespaces)
    ]
    file_sd.write_text(json.dumps(groups))
    return len(groups)


def _annotate_pods(cluster: Cluster, namespaces: list[str], exposition: Exposition) -> int:
    """Every Triton pod's metrics URL -> the stand-in (the bench's writes, before the
    steady window)."""
    todo = [(namespace, pod) for namespace, pod, _ in _triton_pods(cluster, namespaces)]

    def annotate(where: tuple[str, str]) -> None:
        namespace, name = where
        url = exposition.url(namespace, name)
        patch = {"metadata": {"annotations": {names.METRICS_URL_ANNOTATION: url}}}
        cluster.kubectl(
            "patch", "pod", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch)
        )

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(annotate, todo))
    return len(todo)


def _by(events: list[dict[str, Any]], *keys: str) -> dict[str, int]:
    counted: dict[str, int] = collections.Counter()
    for event in events:
        ref = event.get("objectRef") or {}
        parts = [event.get("verb", "?") if k == "verb" else ref.get(k, "-") for k in keys]
        counted["/".join(str(p) for p in parts)] += 1
    return dict(counted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--tuned-every", type=int, default=10, help="every Nth tunes (0: none)")
    parser.add_argument("--steady", type=float, default=60, help="seconds held still")
    parser.add_argument(
        "--log-level", default="info", help="the operator's (the chart's default: info)"
    )
    parser.add_argument(
        "--source",
        choices=[k.value for k in models.MetricsSourceKind],
        default="direct",
        help="the autoscaler's metrics source; prometheus: a local Prometheus scrapes the "
        f"stand-in every {PROMETHEUS_SCRAPE_SECONDS:g} s",
    )
    parser.add_argument(
        "--census",
        action="store_true",
        help="print at the end where the operator's memory is: glibc's heap in use and "
        "kept free, pymalloc's arenas, live objects by type (cheap)",
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="--census and the biggest allocations by traceback (slows the operator "
        "several times over: use a small --count)",
    )
    parser.add_argument("--keep", action="store_true", help="leave the namespaces")
    args = parser.parse_args(argv)
    # A stopped bench (kill, timeout) stops its operator too: the `finally` below runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    cluster = up()
    audit = Audit(cluster)
    if not chart_as_installed(cluster):
        install_chart(cluster)
    _nodes(cluster, args.count)
    namespaces = [fresh_namespace(cluster, f"bench-scale-{i}") for i in range(args.namespaces)]
    exposition = Exposition()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-scale-"))
    file_sd = workdir / "file_sd.json"
    file_sd.write_text("[]")
    prom: Prometheus | None = None
    metrics: dict[str, Any] | None = None
    if args.source == models.MetricsSourceKind.PROMETHEUS:
        prom = Prometheus(workdir / "prometheus", file_sd, scrape_seconds=PROMETHEUS_SCRAPE_SECONDS)
        prom.start()
        metrics = {"source": "prometheus", "prometheusUrl": prom.url, "rateWindowSeconds": 60}
    traced = _trace_memory(workdir, args.tracemalloc) if args.census or args.tracemalloc else None
    operator = OperatorProcess(cluster, workdir, log_level=args.log_level)
    operator.start()
    assert operator.process is not None
    sampler = Sampler(operator.process.pid)
    # What the control plane itself costs on these cores, so the operator's share shows.
    plane = {
        name: Sampler(pid)
        for name in ("kube-apiserver", "etcd")
        if (pid := _control_plane_pid(cluster, name)) is not None
    }
    try:
        time.sleep(3)
        idle_rss = sampler.samples[-1][1]
        api_before = _apiserver_requests(cluster)
        start_offset = audit.offset()
        manifest = workdir / "all.yaml"
        manifest.write_text(
            "\n---\n".join(
                json.dumps(d) for d in _documents(args.count, namespaces, args.tuned_every, metrics)
            )
        )
        t0 = time.monotonic()
        out = subprocess.run(
            [cluster.kubectl_bin, "apply", "--server-side", "-f", str(manifest)],
            capture_output=True,
            text=True,
            env=cluster.env(),
            timeout=900,
            check=True,
        )
        applied = time.monotonic() - t0
        print(f"[bench] applied {len(out.stdout.splitlines())} in {applied:.1f} s", flush=True)
        last = [0]

        def all_ready() -> bool:
            last[0] = _ready_count(cluster, namespaces)
            print(f"[bench] {time.monotonic() - t0:6.1f} s: {last[0]} Ready", flush=True)
            return bool(last[0] >= args.count)

        wait_for(all_ready, f"{args.count} Ready", timeout=1200, every=10)
        to_ready = time.monotonic() - t0
        per_object, slowest = _creation_to_ready(cluster, namespaces)
        phases = _phases_to_ready(cluster, namespaces)
        settle_events = audit.since(start_offset)
        settle_metrics = _operator_metrics(operator)
        reconciles = _metric(settle_metrics, "geo_reconciles_total")
        causes = _causes(settle_metrics)
        ticked = _metric(_operator_metrics(operator), "geo_autoscaler_tick_seconds_count")
        if prom is None:
            annotated = _annotate_pods(cluster, namespaces, exposition)
            time.sleep(30)  # the autoscaler scrapes them: its decisions and status settle
        else:
            annotated = _scrape_targets(cluster, namespaces, exposition, file_sd)
            # two scrapes for a rate, then the decisions and status settle
            time.sleep(30 + 2 * PROMETHEUS_SCRAPE_SECONDS)
        # Steady means every object had its first decisions: three ticks ended since the
        # scrape targets were there (the first may have begun before), so two whole ticks
        # saw each object's pods (a rate needs two scrapes). At 1,000 objects a tick is
        # about 45 s, longer than the fixed wait above.
        wait_for(
            lambda: (
                _metric(_operator_metrics(operator), "geo_autoscaler_tick_seconds_count")
                >= ticked + 3
            ),
            "three autoscaler ticks after the scrape targets",
            timeout=600,
            every=2,
        )
        time.sleep(5)  # the last tick's status writes land
        metrics_before = _operator_metrics(operator)
        steady_offset = audit.offset()
        steady_start = time.monotonic()
        api_mid = _apiserver_requests(cluster)
        time.sleep(args.steady)
        steady_end = time.monotonic()
        metrics_after = _operator_metrics(operator)
        api_after = _apiserver_requests(cluster)
        steady_events = audit.since(steady_offset)
        steady_rss, steady_cpu = sampler.between(steady_start, steady_end)
        _, settle_cpu = sampler.between(t0, t0 + to_ready)
        _, apply_cpu = sampler.between(t0, t0 + applied)
        plane_cpu = {
            name: (
                plane_sampler.between(t0, t0 + applied)[1],
                plane_sampler.between(t0, t0 + to_ready)[1],
                plane_sampler.between(steady_start, steady_end)[1],
            )
            for name, plane_sampler in plane.items()
        }
        ticks = [
            _metric(m, "geo_autoscaler_tick_seconds_" + k)
            for m in (metrics_before, metrics_after)
            for k in ("sum", "count")
        ]
        steps = [
            _metric(m, "geo_autoscaler_step_seconds_" + k)
            for m in (metrics_before, metrics_after)
            for k in ("sum", "count")
        ]
        tick_mean = (ticks[2] - ticks[0]) / max(1.0, ticks[3] - ticks[1])
        step_mean = (steps[2] - steps[0]) / max(1.0, steps[3] - steps[1])
        writes = [e for e in steady_events if e.get("verb") in WRITES]
        written = _by(writes, "verb", "resource", "subresource")
        rows = [
            (
                "GeoDeployments",
                f"{args.count} in {args.namespaces} namespaces, {args.source} metrics",
            ),
            ("kubectl apply of all", f"{applied:.1f} s"),
            ("all Ready after the apply", f"{to_ready:.1f} s"),
            ("all Ready after the last object was applied", f"{to_ready - applied:.1f} s"),
            (
                "each object, creation -> Ready: p50 / p99 / max",
                f"{_quantile(per_object, 0.5):.0f} / {_quantile(per_object, 0.99):.0f} / "
                f"{max(per_object, default=math.nan):.0f} s ({len(per_object)} objects)",
            ),
            (
                "  of which (p50 / p99): " + ", ".join(phases),
                ", ".join(
                    f"{_quantile(v, 0.5):.0f} / {_quantile(v, 0.99):.0f} s" for v in phases.values()
                ),
            ),
            (
                "  the slowest: seconds (created at +s, tunes)",
                ", ".join(
                    f"{sec:.0f} ({at:+.0f}{', tunes' if t else ''})" for sec, at, _, t in slowest
                ),
            ),
            (
                "operator RSS: idle / peak / steady",
                f"{idle_rss:.0f} / {sampler.peak_rss():.0f} / {steady_rss:.0f} MiB",
            ),
            (
                "operator CPU: during the apply / settling / steady",
                f"{apply_cpu:.2f} / {settle_cpu:.2f} / {steady_cpu:.2f} cores",
            ),
            *(
                (
                    f"{name} CPU: during the apply / settling / steady",
                    " / ".join(f"{v:.2f}" for v in cpu) + " cores",
                )
                for name, cpu in plane_cpu.items()
            ),
            ("operator API requests until all Ready", f"{len(settle_events)}"),
            (
                "  per reconcile",
                f"{len(settle_events) / max(1.0, reconciles):.1f} ({reconciles:.0f} reconciles)",
            ),
            ("  by verb", json.dumps(_by(settle_events, "verb"), sort_keys=True)),
            ("reconciles asked for, by cause", json.dumps(causes, sort_keys=True)),
            (
                "cluster apiserver_request_total: apply..steady / steady window",
                f"{api_mid - api_before:.0f} / {api_after - api_mid:.0f}",
            ),
            (
                "pods pointed at the stand-in",
                f"{annotated} ({exposition.scrapes} scrapes"
                + (", by Prometheus)" if prom is not None else ", by the operator)"),
            ),
            (
                "autoscaler tick, mean over the steady window",
                f"{tick_mean * 1000:.0f} ms ({ticks[3] - ticks[1]:.0f} ticks)",
            ),
            (
                "autoscaler step, mean",
                f"{step_mean * 1000:.1f} ms ({steps[3] - steps[1]:.0f} steps)",
            ),
            (
                f"operator requests in {args.steady:.0f} s steady",
                f"{len(steady_events)}: {json.dumps(_by(steady_events, 'verb'), sort_keys=True)}",
            ),
            (
                "operator writes in the steady window",
                f"{len(writes)}: {json.dumps(written, sort_keys=True)}",
            ),
        ]
        width = max(len(k) for k, _ in rows)
        print()
        for key, value in rows:
            print(f"{key:<{width}}  {value}")
        if traced is not None:
            os.kill(operator.process.pid, signal.SIGUSR2)
            wait_for(traced.exists, "the allocation trace", timeout=300, every=2)
            time.sleep(2)
            print("\n" + traced.read_text())
        return 0
    finally:
        sampler.running = False
        for plane_sampler in plane.values():
            plane_sampler.running = False
        if not args.keep:  # while the operator runs: the GeoDeployments' finalizers
            took = delete_namespaces(cluster, namespaces, timeout=900)
            said = "not deleted within 900 s" if took is None else f"deleted in {took:.0f} s"
            print(f"[bench] namespaces {said}", flush=True)
        operator.stop()
        exposition.stop()
        if prom is not None:
            prom.stop()


if __name__ == "__main__":
    sys.exit(main())
