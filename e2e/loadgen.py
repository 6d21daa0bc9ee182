"""Open-loop load against the ready Triton servers, at a scheduled rate.

Used by the closed-loop e2e test and the demo. Requests start on a fixed
schedule (open loop: a slow server does not slow the sender down, as real
clients don't wait for each other), round-robin over the servers that the
kubelet runner lists as ready in its pods.json, through tritonclient's asyncio
HTTP client. Every second it records the offered and completed rate, errors and
the client-side p99, for the test's assertions and the demo's plot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
import time
from collections.abc import Callable, Sequence

import numpy as np
import tritonclient.http.aio as aiohttpclient


@dataclasses.dataclass(frozen=True)
class Phase:
    seconds: float
    qps: float


@dataclasses.dataclass
class Second:
    t: float
    offered: int = 0
    completed: int = 0
    errors: int = 0
    latencies_ms: list[float] = dataclasses.field(default_factory=list)
    error_ms: list[float] = dataclasses.field(default_factory=list)  # how fast each failed
    by_server: dict[str, int] = dataclasses.field(default_factory=dict)  # completed, per URL

    @property
    def p99_ms(self) -> float | None:
        if not self.latencies_ms:
            return None
        return float(np.percentile(self.latencies_ms, 99))


def ready_servers(pods_json: pathlib.Path, geodeployment: str) -> list[str]:
    """HTTP endpoints (host:port) of the ready servers of one GeoDeployment."""
    try:
        pods = json.loads(pods_json.read_text())
    except (OSError, ValueError):
        return []
    return sorted(
        p["http"] for p in pods if p.get("ready") and p.get("geodeployment") == geodeployment
    )


async def _run(
    phases: Sequence[Phase],
    servers: Callable[[], list[str]],
    inputs: np.ndarray,
    model: str,
    on_second: Callable[[Second], None] | None,
) -> list[Second]:
    clients: dict[str, aiohttpclient.InferenceServerClient] = {}
    seconds: list[Second] = []
    start = time.monotonic()
    pending: set[asyncio.Task[None]] = set()

    def bucket(now: float) -> Second:
        index = int(now - start)
        while len(seconds) <= index:
            if seconds and on_second is not None:
                on_second(seconds[-1])
            seconds.append(Second(t=float(len(seconds))))
        return seconds[index]

    async def one(url: str, row: np.ndarray) -> None:
        client = clients.get(url)
        if client is None:
            client = clients[url] = aiohttpclient.InferenceServerClient(url, conn_limit=64)
        tensor = aiohttpclient.InferInput("input", [1, row.shape[0]], "FP32")
        tensor.set_data_from_numpy(row.reshape(1, -1))
        sent = time.monotonic()
        try:
            await client.infer(model, [tensor])
        except Exception:  # a server going away mid-request is part of the story
            failed = bucket(time.monotonic())
            failed.errors += 1
            failed.error_ms.append((time.monotonic() - sent) * 1000)
            return
        done = time.monotonic()
        b = bucket(done)
        b.completed += 1
        b.latencies_ms.append((done - sent) * 1000)
        b.by_server[url] = b.by_server.get(url, 0) + 1

    n = 0
    phase_start = start
    for phase in phases:
        interval = 1.0 / phase.qps if phase.qps > 0 else None
        next_at = phase_start
        end = phase_start + phase.seconds
        targets: list[str] = []
        refreshed = 0.0
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if now - refreshed > 0.5:
                targets, refreshed = servers(), now
            if interval is None or not targets:
                bucket(now)
                await asyncio.sleep(min(0.1, max(0.0, end - now)))
                next_at = time.monotonic()
                continue
            if now < next_at:
                await asyncio.sleep(next_at - now)
                continue
            bucket(now).offered += 1
            task = asyncio.create_task(one(targets[n % len(targets)], inputs[n % len(inputs)]))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
            next_at += interval
        phase_start = end
    if pending:
        await asyncio.wait(pending, timeout=10)
    for client in clients.values():
        await client.close()
    return seconds


def run(
    phases: Sequence[Phase],
    servers: Callable[[], list[str]],
    inputs: np.ndarray,
    model: str = "digits",
    on_second: Callable[[Second], None] | None = None,
) -> list[Second]:
    """Drive the schedule to its end; the per-second record."""
    return asyncio.run(_run(phases, servers, inputs, model, on_second))
