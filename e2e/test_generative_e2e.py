"""A generative model on the local cluster (issue 27): the pycode example applied with
kubectl becomes Ready with a real llama.cpp Triton per pod (the kubelet runner serves
what the operator built: config.pbtxt, llama_model.py, the GGUF fetched and verified);
a client streams tokens through generate_stream and through gRPC, measures its time to
first token and the gaps between tokens, and finds them within what the engine exports
(vllm:* metrics). Two cores: the figures are asserted against each other, not against
an objective."""

from __future__ import annotations

import queue
import time
import urllib.request
from typing import Any

import numpy as np
import yaml
from e2e import llmclient
from e2e.harness import ROOT, OperatorProcess, wait_for
from e2e.harness.kubelet import KubeletRunner

NAME = "pycode"
EXAMPLE = ROOT / "manifests" / "examples" / "pycode.yaml"
PROMPT = "import os\n\n\ndef main("


def _metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and f'model="{NAME}"' in line
    )


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def test_the_generative_example_streams_through_generate_stream_and_grpc(
    operator: OperatorProcess, runner: KubeletRunner, namespace: str
) -> None:
    cluster = operator.cluster
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"]["namespace"] = namespace
    cluster.apply(body)

    def ready() -> dict[str, Any] | None:
        geod = cluster.get("geod", NAME, namespace) or {}
        conditions = {c["type"]: c for c in geod.get("status", {}).get("conditions", [])}
        return geod if conditions.get("Ready", {}).get("status") == "True" else None

    geod = wait_for(ready, "pycode Ready=True", timeout=120)
    status = geod["status"]
    assert status["selectedArtifact"]["name"] == "q4-k-m", status["selectedArtifact"]
    batch = {c["type"]: c for c in status["conditions"]}["BatchTuned"]
    assert batch["reason"] == "EngineBatches", batch
    info = runner.wait_until(
        lambda servers: next(
            (i for (ns, _), i in servers.items() if ns == namespace and i.ready), None
        ),
        timeout=60,
    )
    before = _scrape(info.metrics_url)

    # generate_stream over HTTP (server-sent events), timed by the client
    started = time.perf_counter()
    arrivals: list[float] = []
    text = []
    parameters = {"max_tokens": 48, "ignore_eos": True}
    for when, event in llmclient.stream(info.http, NAME, PROMPT, parameters=parameters):
        arrivals.append(when)
        text.append(event["text_output"])
    assert len(arrivals) == 48, len(arrivals)
    assert "".join(text).strip(), text
    ttft = arrivals[0] - started
    gaps = np.diff(arrivals)

    # the same through gRPC streaming, as a client of Triton's vLLM backend writes it
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(info.grpc)
    got: queue.Queue[Any] = queue.Queue()
    client.start_stream(callback=lambda result, error: got.put((result, error)))
    prompt = grpcclient.InferInput("text_input", [1], "BYTES")
    prompt.set_data_from_numpy(np.array([PROMPT.encode()], dtype=np.object_))
    stream = grpcclient.InferInput("stream", [1], "BOOL")
    stream.set_data_from_numpy(np.array([True]))
    client.async_stream_infer(
        NAME, [prompt, stream], parameters={"max_tokens": 16, "ignore_eos": True}
    )
    pieces = [got.get(timeout=60) for _ in range(16)]
    client.stop_stream()
    client.close()
    assert all(error is None for _, error in pieces), pieces
    assert all(result.as_numpy("text_output") is not None for result, _ in pieces)

    time.sleep(1.5)  # the engine's reporter pushes its figures every 0.5 s
    after = _scrape(info.metrics_url)

    def delta(name: str) -> float:
        return _metric(after, name) - _metric(before, name)

    assert delta("vllm:generation_tokens_total") == 48 + 16
    assert delta("vllm:time_to_first_token_seconds_count") == 2
    engine_ttft = delta("vllm:time_to_first_token_seconds_sum") / 2
    engine_gap = delta("vllm:time_per_output_token_seconds_sum") / delta(
        "vllm:time_per_output_token_seconds_count"
    )
    # the engine's times lie within the client's: it sees the request later and the token
    # earlier than the client does (HTTP and the python backend's IPC in between)
    assert 0 < engine_ttft <= max(ttft, 1e-3) * 2 + 0.05, (engine_ttft, ttft)
    assert 0 < engine_gap <= float(np.mean(gaps)) * 2 + 0.01, (engine_gap, float(np.mean(gaps)))
    print(
        f"client TTFT {ttft * 1000:.1f} ms, mean gap {np.mean(gaps) * 1000:.2f} ms; engine "
        f"TTFT {engine_ttft * 1000:.1f} ms, mean gap {engine_gap * 1000:.2f} ms"
    )
