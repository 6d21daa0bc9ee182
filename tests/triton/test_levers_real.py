"""Triton's levers (README "Triton's levers") on the real tritonserver, on CPU.

Each server serves a repository laid out from the operator's own ConfigMap data for
`manifests/examples/digits-levers.yaml` (or a variant of its `triton` section), with
the server flags the Deployment gives the pod (`children.server_flags`), the way the
e2e kubelet runner starts it. What is shown here:

- the response cache: a repeated input is answered from it (the hit counter moves)
  and faster than new inputs;
- warmup: the samples ran on every instance before the server reported ready;
- priorities: under overload, requests at level 1 keep a far lower p99 than the rest;
- a bounded queue refuses at once (milliseconds, HTTP 503), and a queue timeout's
  refusals are counted as REJECTED, which the autoscaler's reading adds to demand.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
import statistics
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import yaml
from e2e.prometheus_local import Prometheus
from tests.support.examples import planned
from tests.support.paths import ROOT
from tritonclient.utils import InferenceServerException

from geo_operator.api import models
from geo_operator.builders import children
from geo_operator.scaling import policy
from geo_operator.triton import local, metrics, prometheus, repository

pytestmark = pytest.mark.triton

EXAMPLE = ROOT / "manifests" / "examples" / "digits-levers.yaml"
MIRRORS = {"http://models.geo.local/digits/": f"file://{ROOT}/examples/digits/artifacts/"}


def _target(triton: dict[str, Any] | None = None) -> children.Target:
    body = yaml.safe_load(EXAMPLE.read_text())
    if triton is not None:
        body["spec"]["triton"] = triton
    return planned(body["spec"], "digits-levers")


def _serve(target: children.Target, where: pathlib.Path) -> local.TritonServer:
    repository.materialize(
        children.config_map_data(target),
        model_name=target.spec.model.name,
        artifact_format=target.artifact.format,
        uri=target.artifact.uri,
        repository=where / "models",
        mirrors=MIRRORS,
    )
    return local.TritonServer(
        where / "models",
        log_path=where / "triton.log",
        extra_args=children.server_flags(target.spec.triton),
    )


def _scrape(server: local.TritonServer, at: float = 0.0) -> metrics.Scrape:
    with urllib.request.urlopen(server.metrics_url, timeout=5) as answer:
        return metrics.parse(answer.read().decode(), "digits", at)


def _input(x: np.ndarray) -> httpclient.InferInput:
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


@pytest.fixture(scope="module")
def example(
    artifacts: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[local.TritonServer]:
    """The example as it is: priorities, bounded queues, 2 instances, cache, warmup."""
    with _serve(_target(), tmp_path_factory.mktemp("levers")) as server:
        yield server


def test_warmup_ran_on_every_instance_before_the_server_was_ready(
    example: local.TritonServer,
) -> None:
    # Read before any request was sent (this test runs first on the module's server).
    scrape = _scrape(example)
    (sample,) = _target().spec.triton.warmup or []
    runs = 2 * sample.count  # two instances, each runs the sample `count` times
    assert scrape.executions == runs
    assert scrape.inferences == runs * sample.batch_size


def test_a_repeated_input_is_answered_from_the_cache_and_faster(
    example: local.TritonServer,
) -> None:
    client = httpclient.InferenceServerClient(example.http_url)
    rng = np.random.default_rng(0)
    before = _scrape(example)

    def timed(x: np.ndarray) -> float:
        started = time.perf_counter()
        client.infer("digits", [_input(x)])
        return time.perf_counter() - started

    fresh = [timed(rng.random((1, 64), dtype=np.float32)) for _ in range(40)]
    same = rng.random((1, 64), dtype=np.float32)
    repeated = [timed(same) for _ in range(40)]
    after = _scrape(example)
    assert before.cache_hits is not None and after.cache_hits is not None
    assert after.cache_hits - before.cache_hits == 39  # all but the first repeat
    assert after.cache_misses is not None and before.cache_misses is not None
    assert after.cache_misses - before.cache_misses == 41
    # With the cache on Triton drops the request summary; the p99 still reads.
    assert after.p99_us is not None and after.p99_us > 0
    print(
        f"cache: median {statistics.median(fresh) * 1000:.2f} ms new, "
        f"{statistics.median(repeated) * 1000:.2f} ms repeated"
    )
    assert statistics.median(repeated) < statistics.median(fresh)
    # The direct source's reading: hits per lookup between the two scrapes.
    rates = metrics.rates(before, dataclasses.replace(after, time=before.time + 10))
    assert rates is not None and rates.cache_hit_ratio == pytest.approx(39 / 80)
    assert metrics.aggregate([rates]).cache_hit_ratio == pytest.approx(39 / 80)
    client.close()


def test_prometheus_reads_the_cache_and_the_p99_without_a_request_summary(
    example: local.TritonServer, tmp_path: pathlib.Path
) -> None:
    file_sd = tmp_path / "targets.json"
    labels = {"namespace": "ml", "geodeployment": "digits-levers", "pod": "p-0"}
    file_sd.write_text(
        json.dumps([{"targets": [f"127.0.0.1:{example.metrics_port}"], "labels": labels}])
    )
    client = httpclient.InferenceServerClient(example.http_url)
    same = np.ones((1, 64), dtype=np.float32)
    with Prometheus(tmp_path / "prom", file_sd) as prom:
        started = time.monotonic()
        load: prometheus.Load | None = None
        while time.monotonic() - started < 45:
            for _ in range(20):  # one input over and over: hits after the first
                client.infer("digits", [_input(same)])
            time.sleep(0.2)
            load = prometheus.query_all(prom.url, window_seconds=10).get(("ml", "digits-levers"))
            if load and load.cache_hit_ratio and load.p99_ms:
                break
    client.close()
    assert load is not None and load.pods_up == 1
    assert load.cache_hit_ratio is not None and load.cache_hit_ratio > 0.9
    # No nv_inference_request_summary_us with the cache on: the stages' sum answers.
    assert load.p99_ms is not None and 0 < load.p99_ms < 1000


async def _closed_loop(
    url: str,
    seconds: float,
    lanes: dict[int, int],
    x: np.ndarray,
    *,
    at_least: int = 0,
    pause: dict[int, float] | None = None,
) -> dict[int, list[float]]:
    """``lanes`` {priority: in-flight requests}, each lane a closed loop (with ``pause``
    seconds between a priority's answer and its next request) for ``seconds`` and on
    until every priority has ``at_least`` answers (never past 10× ``seconds``):
    the latencies of each priority's answered requests. On a loaded machine the starved
    lane answers slowly, so a fixed duration alone would leave it too few for a p99.
    Each priority has its own connection: on a shared one the high lane's bytes would
    wait behind the low lanes' megabytes in HTTP/2 flow control, before Triton's queue."""
    own = [("grpc.use_local_subchannel_pool", 1)]
    clients = {p: grpcaio.InferenceServerClient(url, channel_args=own) for p in lanes}
    out: dict[int, list[float]] = {p: [] for p in lanes}
    start = time.monotonic()

    def running() -> bool:
        elapsed = time.monotonic() - start
        if elapsed < seconds:
            return True
        return elapsed < 10 * seconds and any(len(v) < at_least for v in out.values())

    tensor = grpcaio.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)

    async def lane(priority: int) -> None:
        while running():
            started = time.perf_counter()
            await clients[priority].infer("digits", [tensor], priority=priority)
            out[priority].append(time.perf_counter() - started)
            await asyncio.sleep((pause or {}).get(priority, 0.0))

    await asyncio.gather(*(lane(p) for p, n in lanes.items() for _ in range(n)))
    for client in clients.values():
        await client.close()
    return out


def test_under_overload_the_high_priority_keeps_a_lower_p99(
    artifacts: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    # One instance, no batching to hide behind, no cache; 2 requests of level 1 and 16 of
    # level 2 in flight, each priority on its own connection. The starved level 2 runs on
    # until it has 60 answers (a loaded CI machine once gave it 32 in the first 4 s).
    triton = {
        "maxBatchSize": 1,
        "dynamicBatching": {"maxQueueDelayMicroseconds": 0, "priorityLevels": 2},
    }
    with _serve(_target(triton), tmp_path) as server:
        x = np.random.default_rng(1).random((1, 64), dtype=np.float32)
        latencies = asyncio.run(_closed_loop(server.grpc_url, 4.0, {1: 2, 2: 16}, x, at_least=60))
    high, low = (sorted(latencies[p]) for p in (1, 2))
    assert len(high) > 50 and len(low) > 50

    def p99(values: list[float]) -> float:
        return values[min(len(values) - 1, int(0.99 * len(values)))]

    print(
        f"priority: p99 {p99(high) * 1000:.1f} ms at level 1 ({len(high)} requests), "
        f"{p99(low) * 1000:.1f} ms at level 2 ({len(low)})"
    )
    assert p99(high) < 0.5 * p99(low), (p99(high), p99(low))


def test_a_full_queue_refuses_at_once(artifacts: pathlib.Path, tmp_path: pathlib.Path) -> None:
    triton = {
        "maxBatchSize": 1,
        "dynamicBatching": {
            "maxQueueDelayMicroseconds": 0,
            "defaultQueuePolicy": {"maxQueueSize": 2},
        },
    }
    target = _target(triton)
    assert target.spec.triton.queue_bound() == 2
    with _serve(target, tmp_path) as server:
        refused: list[float] = []
        served = 0

        async def burst() -> None:
            nonlocal served
            client = grpcaio.InferenceServerClient(server.grpc_url)
            tensor = grpcaio.InferInput("input", [1, 64], "FP32")
            tensor.set_data_from_numpy(np.zeros((1, 64), dtype=np.float32))

            async def one() -> None:
                nonlocal served
                started = time.perf_counter()
                try:
                    await client.infer("digits", [tensor])
                    served += 1
                except InferenceServerException as error:
                    assert "Exceeds maximum queue size" in str(error)
                    refused.append(time.perf_counter() - started)

            await asyncio.gather(*(one() for _ in range(200)))
            await client.close()

        asyncio.run(burst())
        after = _scrape(server)
    assert served > 0 and len(refused) > 50
    print(
        f"full queue: {len(refused)} of 200 refused, "
        f"median {statistics.median(refused) * 1000:.1f} ms"
    )
    # Refused in milliseconds, not after a client timeout.
    assert statistics.median(refused) < 0.5
    # And counted by no Triton metric (2.51): why the policy reads full queues instead.
    assert after.failure == 0 and after.rejected == 0


def test_refusals_after_the_queue_timeout_are_counted_and_read_as_demand(
    artifacts: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    triton = {
        "maxBatchSize": 1,
        "dynamicBatching": {
            "maxQueueDelayMicroseconds": 0,
            "defaultQueuePolicy": {"defaultTimeoutMicroseconds": 2000},
        },
    }
    with _serve(_target(triton), tmp_path) as server:
        first = _scrape(server, time.monotonic())
        x = np.random.default_rng(2).random((1, 64), dtype=np.float32)

        async def overload() -> int:
            client = grpcaio.InferenceServerClient(server.grpc_url)
            tensor = grpcaio.InferInput("input", [1, 64], "FP32")
            tensor.set_data_from_numpy(x)
            results = await asyncio.gather(
                *(client.infer("digits", [tensor]) for _ in range(400)), return_exceptions=True
            )
            await client.close()
            errors = [r for r in results if isinstance(r, Exception)]
            assert all("Request timeout expired" in str(e) for e in errors)
            return len(errors)

        timed_out = asyncio.run(overload())
        second = _scrape(server, time.monotonic())
    print(f"queue timeout: {timed_out} of 400 refused")
    assert timed_out > 50
    assert second.rejected is not None and first.rejected is not None
    assert second.rejected - first.rejected == timed_out
    # The autoscaler's reading: served and refused requests are both demand.
    rates = metrics.rates(first, second)
    assert rates is not None and rates.rejected_qps > 0
    total = metrics.aggregate([rates])
    spec = models.Autoscaling(target_qps_per_replica=max(1.0, total.qps))
    observation = policy.observation(
        second.time, 1, 1, total.qps, 10.0, 0.0, rejected_qps=total.rejected_qps
    )
    decision, _ = policy.decide(spec, observation)
    assert decision.rejected_qps == pytest.approx(total.rejected_qps)
    assert decision.action == "scale_out"


def test_warmup_from_a_file_runs_and_a_wrong_size_fails_the_load(
    artifacts: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    sample = tmp_path / "sample.bin"
    np.ones(64, dtype=np.float32).tofile(sample)  # one sample of dims [64], no batch
    triton = {
        "maxBatchSize": 8,
        "warmup": [{"count": 3, "data": "file", "files": {"input": sample.as_uri()}}],
    }
    with _serve(_target(triton), tmp_path / "good") as server:
        scrape = _scrape(server)
    assert scrape.executions == 3 and scrape.inferences == 3
    (tmp_path / "short.bin").write_bytes(b"\0" * 100)
    triton["warmup"] = [{"data": "file", "files": {"input": (tmp_path / "short.bin").as_uri()}}]
    with pytest.raises(local.TritonServerError, match="failed to load all models"):
        _serve(_target(triton), tmp_path / "bad").start()
    log = (tmp_path / "bad" / "triton.log").read_text()
    assert "warmup setting expects 256 bytes" in log
