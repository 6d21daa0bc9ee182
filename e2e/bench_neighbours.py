"""Benchmark (issue 29): what busy neighbours cost the operator.

The operator (`geo run` as the chart's ServiceAccount) with a few GeoDeployments of its
own, measured in three phases, each on a fresh operator process that has settled for
``--settle`` seconds, then watched for ``--seconds``:

1. **alone**: GEO's objects only;
2. **neighbours**: the same, with ``--configmaps`` ConfigMaps, ``--pods`` pods (kwok
   runs them) and ``--jobs`` Jobs that are not GEO's in a namespace of their own, a part
   of them churning all the time (annotations rewritten, ``--churn`` objects a second);
3. **neighbours, no selectors**: as 2 with ``GEO_WATCH_SELECTORS=off``, i.e. the
   operator as it was before issue 29 (its watches filtered on the client).

Figures per phase: the operator's CPU seconds from its start to the window (its
initial lists: the neighbours' cost when they come through) and over the window (utime +
stime of its process), its RSS at the end and its peak (VmHWM), and the requests the API server
answered in the window (its ``apiserver_request_total``, all clients: the cluster's own
cost, for scale). Aim: phase 2 within 10 % of phase 1. Two shared cores: the API server,
kwok and the churn run on them too.

    .venv/bin/python e2e/bench_neighbours.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import sys
import tempfile
import threading
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))

from e2e.harness import (  # noqa: E402
    Cluster,
    OperatorProcess,
    chart_as_installed,
    delete_namespaces,
    example,
    fresh_namespace,
    install_chart,
    up,
)

NEIGHBOURS = "neighbours"
OURS = "geo-bench-own"


def _proc(pid: int) -> tuple[float, int, int]:
    """CPU seconds (user + system), RSS and peak RSS in bytes of one process."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) * 1024  # type: ignore[union-attr]
    peak = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) * 1024  # type: ignore[union-attr]
    return cpu, rss, peak


def _apiserver_requests(cluster: Cluster) -> float:
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    return sum(
        float(m.group(1))
        for m in re.finditer(r"^apiserver_request_total\{[^}]*\}\s+(\S+)$", text, re.MULTILINE)
    )


def _neighbours(cluster: Cluster, configmaps: int, pods: int, jobs: int) -> None:
    cluster.kubectl("create", "namespace", NEIGHBOURS, check=False)
    docs: list[dict[str, Any]] = []
    for i in range(configmaps):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"cm-{i}", "labels": {"app": "neighbour"}},
                "data": {"key": "x" * 200},
            }
        )
    for i in range(pods):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"pod-{i}", "labels": {"app": "neighbour"}},
                "spec": {
                    "containers": [{"name": "c", "image": "registry.local/neighbour:1"}],
                    "tolerations": [{"operator": "Exists"}],
                },
            }
        )
    for i in range(jobs):
        docs.append(
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": f"job-{i}", "labels": {"app": "neighbour"}},
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "c", "image": "registry.local/job:1"}],
                            "tolerations": [{"operator": "Exists"}],
                        }
                    }
                },
            }
        )
    for start in range(0, len(docs), 500):
        batch = {"apiVersion": "v1", "kind": "List", "items": docs[start : start + 500]}
        cluster.kubectl("apply", "-n", NEIGHBOURS, "-f", "-", input=json.dumps(batch))


class Churn:
    """Rewrites an annotation on ``rate`` neighbour objects a second, round robin."""

    def __init__(self, cluster: Cluster, names: list[str], rate: int) -> None:
        self.cluster, self.names, self.rate = cluster, names, rate
        self.stop = threading.Event()
        self.done = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            started = time.monotonic()
            batch = [self.names[(i + k) % len(self.names)] for k in range(self.rate)]
            i += self.rate
            self.cluster.kubectl(
                "annotate",
                "-n",
                NEIGHBOURS,
                "--overwrite",
                *batch,
                f"bench/tick={i}",
                check=False,
            )
            self.done += len(batch)
            self.stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))

    def __enter__(self) -> Churn:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def _watch_events(operator: OperatorProcess) -> dict[str, int]:
    """`geo_watch_events_total` summed by owner (geo, other) off the operator's /metrics."""
    import urllib.request

    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    totals = {"geo": 0, "other": 0}
    for m in re.finditer(r"^geo_watch_events_total\{([^}]*)\}\s+(\S+)$", text, re.MULTILINE):
        owner = re.search(r'owner="([^"]+)"', m.group(1))
        if owner:
            totals[owner.group(1)] = totals.get(owner.group(1), 0) + int(float(m.group(2)))
    return totals


def _phase(
    label: str,
    cluster: Cluster,
    operator: OperatorProcess,
    args: argparse.Namespace,
    churn: list[str] | None,
) -> dict[str, Any]:
    operator.restart()
    assert operator.process is not None
    time.sleep(args.settle)
    pid = operator.process.pid
    cpu0, _, _ = _proc(pid)
    events0 = _watch_events(operator)
    requests0 = _apiserver_requests(cluster)
    if churn:
        with Churn(cluster, churn, args.churn) as c:
            time.sleep(args.seconds)
        churned = c.done
    else:
        time.sleep(args.seconds)
        churned = 0
    cpu1, rss, peak = _proc(pid)
    events1 = _watch_events(operator)
    row = {
        "phase": label,
        "startup_cpu_seconds": round(cpu0, 2),
        "cpu_seconds": round(cpu1 - cpu0, 2),
        "rss_mib": round(rss / 2**20, 1),
        "peak_rss_mib": round(peak / 2**20, 1),
        "apiserver_requests": int(_apiserver_requests(cluster) - requests0),
        "churned": churned,
        # Watch events the operator received: since its start (the initial lists) and in
        # the window, GEO's own and the neighbours' (the aim: none of theirs).
        "startup_events": events0,
        "events": {k: events1.get(k, 0) - events0.get(k, 0) for k in events1},
    }
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configmaps", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--own", type=int, default=3, help="GeoDeployments of GEO's own")
    parser.add_argument("--seconds", type=float, default=600, help="window per phase")
    parser.add_argument("--settle", type=float, default=20)
    parser.add_argument("--churn", type=int, default=20, help="neighbour objects rewritten/s")
    parser.add_argument("--quick", action="store_true", help="45 s windows after 15 s")
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)
    if args.quick:  # the short run CI could afford; the counts stay what was asked
        args.seconds, args.settle = 45, 15
    cluster = up()
    if not chart_as_installed(cluster):  # a re-install would void running operators' tokens
        install_chart(cluster)
    fresh_namespace(cluster, OURS)
    for i in range(args.own):
        body = example(OURS)
        body["metadata"]["name"] = f"digits-{i}"
        cluster.apply(body)
    operator = OperatorProcess(cluster, pathlib.Path(tempfile.mkdtemp(prefix="geo-neighbours-")))
    operator.log_level = "info"
    rows = []
    try:
        operator.start()
        rows.append(_phase("alone", cluster, operator, args, None))
        started = time.monotonic()
        _neighbours(cluster, args.configmaps, args.pods, args.jobs)
        print(f"[bench] neighbours created in {time.monotonic() - started:.0f} s", flush=True)
        churn = [f"configmap/cm-{i}" for i in range(args.configmaps)]
        churn += [f"pod/pod-{i}" for i in range(args.pods)]
        rows.append(_phase("neighbours", cluster, operator, args, churn))
        os.environ["GEO_WATCH_SELECTORS"] = "off"
        rows.append(_phase("neighbours, no selectors", cluster, operator, args, churn))
    finally:
        os.environ.pop("GEO_WATCH_SELECTORS", None)
        cluster.kubectl("delete", "namespace", NEIGHBOURS, "--wait=false", check=False)
        delete_namespaces(cluster, [OURS], timeout=120)  # while the operator runs
        operator.stop()
    print(
        f"\n{'phase':28s}{'start CPU s':>12s}{'CPU s':>8s}{'RSS MiB':>9s}{'peak MiB':>9s}"
        f"{'API reqs':>10s}{'churned':>9s}{'events: start':>16s}{'window':>16s}"
    )
    for r in rows:
        start, window = r["startup_events"], r["events"]
        print(
            f"{r['phase']:28s}{r['startup_cpu_seconds']:>12.2f}{r['cpu_seconds']:>8.2f}"
            f"{r['rss_mib']:>9.1f}"
            f"{r['peak_rss_mib']:>9.1f}{r['apiserver_requests']:>10d}{r['churned']:>9d}"
            f"{start['geo']:>8d}/{start['other']:<7d}{window['geo']:>8d}/{window['other']:<7d}"
        )
    print("(events: GEO's / the neighbours', as the operator received them)")
    print(
        f"({args.configmaps} ConfigMaps, {args.pods} pods, {args.jobs} Jobs beside "
        f"{args.own} GeoDeployments; {args.seconds:g} s windows after {args.settle:g} s)"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
