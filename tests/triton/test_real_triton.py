"""The operator's model repository, served by the real tritonserver (nvidia-pytriton).

The repository is laid out from the ConfigMap data that the operator's own
builders produce for `manifests/examples/digits.yaml`, the way the pod's init
container does. Triton must load it, report the max_batch_size and dynamic
batching the spec asked for, answer a batched request with the classifier's
right answers, and merge concurrent requests into batches.
"""

from __future__ import annotations

import pathlib
import urllib.request

import numpy as np
import onnxruntime
import pytest
import tritonclient.http as httpclient
from tests.support.examples import example_target

from geo_operator.triton import local, metrics

pytestmark = pytest.mark.triton


def _infer(
    client: httpclient.InferenceServerClient, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("digits", [tensor])
    labels = np.asarray(result.as_numpy("label")).reshape(-1)
    return labels, np.asarray(result.as_numpy("probabilities"))


def test_triton_serves_the_configuration_the_spec_asked_for(server: local.TritonServer) -> None:
    spec = example_target().spec
    client = httpclient.InferenceServerClient(server.http_url)
    config = client.get_model_config("digits")
    assert config["max_batch_size"] == spec.triton.max_batch_size == 32
    delay = spec.triton.dynamic_batching.max_queue_delay_microseconds
    assert int(config["dynamic_batching"]["max_queue_delay_microseconds"]) == delay == 20000
    assert config["backend"] == "python"


def test_batched_inference_gives_the_classifiers_answers(
    server: local.TritonServer, artifacts: pathlib.Path
) -> None:
    held_out = np.load(artifacts / "heldout.npz")
    x, y = held_out["x"], held_out["y"]
    client = httpclient.InferenceServerClient(server.http_url)
    answers = [_infer(client, x[i : i + 32]) for i in range(0, len(x), 32)]
    labels = np.concatenate([a[0] for a in answers])
    probabilities = np.concatenate([a[1] for a in answers])
    artifact = example_target().artifact
    session = onnxruntime.InferenceSession(
        str(artifacts / artifact.name / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    # The same 32-row batches: int8 dynamic quantization scales activations per batch.
    outputs = [
        session.run(["label", "probabilities"], {"input": x[i : i + 32]})
        for i in range(0, len(x), 32)
    ]
    expected_labels = np.concatenate([o[0] for o in outputs])
    expected_probabilities = np.concatenate([o[1] for o in outputs])
    # Same numbers up to float rounding...
    np.testing.assert_allclose(probabilities, expected_probabilities, atol=1e-4)
    # ...so the same answers wherever the top two classes are not a near-tie.
    top2 = np.sort(expected_probabilities, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-3
    assert clear.sum() >= len(x) - 3
    assert (labels[clear] == expected_labels.reshape(-1)[clear]).all()
    assert abs(float((labels == y).mean()) - artifact.accuracy) < 0.002


def test_concurrent_requests_are_batched(
    server: local.TritonServer, artifacts: pathlib.Path
) -> None:
    x = np.load(artifacts / "heldout.npz")["x"]
    # tritonclient.http is gevent-based: concurrency comes from its own pool.
    client = httpclient.InferenceServerClient(server.http_url, concurrency=16)
    before = client.get_inference_statistics("digits")
    pending = []
    for i in range(256):
        tensor = httpclient.InferInput("input", [1, 64], "FP32")
        tensor.set_data_from_numpy(x[i : i + 1])
        pending.append(client.async_infer("digits", [tensor]))
    for request in pending:
        request.get_result()
    after = client.get_inference_statistics("digits")

    def counts(stats: dict) -> tuple[int, int]:  # type: ignore[type-arg]
        s = stats["model_stats"][0]
        return int(s["inference_count"]), int(s["execution_count"])

    inferences = counts(after)[0] - counts(before)[0]
    executions = counts(after)[1] - counts(before)[1]
    assert inferences == 256
    # The operator's metrics parser reads the same story from Triton's /metrics.
    with urllib.request.urlopen(server.metrics_url, timeout=5) as response:
        scrape = metrics.parse(response.read().decode(), "digits", time=0.0)
    assert scrape.success >= inferences and scrape.p99_us is not None and scrape.p99_us > 0
    assert scrape.executions < scrape.inferences
    # The dynamic batcher merged requests: far fewer executions than requests.
    assert executions <= inferences / 2, (executions, inferences)
