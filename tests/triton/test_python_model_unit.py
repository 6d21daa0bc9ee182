"""Unit tests of the python-backend model (geo_operator/triton/python_model.py) without Triton.

The batching/splitting helpers are pure functions; OnnxRunner and
TritonPythonModel run against a tiny ONNX graph built here, with a fake
``triton_python_backend_utils``. The real-Triton check lives in the tests
marked ``triton``.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from geo_operator.triton import python_model as pm

N_FEATURES = 4
N_CLASSES = 3

CONFIG: dict[str, Any] = {
    "name": "tiny",
    "backend": "python",
    "max_batch_size": 8,
    "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": ["4"]}],
    "output": [
        {"name": "label", "data_type": "TYPE_INT64", "dims": ["1"]},
        {"name": "probabilities", "data_type": "TYPE_FP32", "dims": ["3"]},
    ],
}


def tiny_classifier(path: Path) -> Path:
    """input [N,4] -> probabilities = softmax(x @ W) [N,3], label = argmax [N] (like skl2onnx)."""
    weights = np.arange(N_FEATURES * N_CLASSES, dtype=np.float32).reshape(N_FEATURES, N_CLASSES)
    weights = (weights % 5) - 2.0
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, N_FEATURES])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, N_CLASSES]),
        ],
        initializer=[helper.make_tensor("W", TensorProto.FLOAT, weights.shape, weights.ravel())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # old enough for any onnxruntime we support
    onnx.save(model, str(path))
    return path


@pytest.fixture
def onnx_path(tmp_path: Path) -> Path:
    (tmp_path / "1").mkdir()
    return tiny_classifier(tmp_path / "1" / "model.onnx")


def rows(n: int, seed: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.random.default_rng(seed).normal(size=(n, N_FEATURES)).astype(np.float32)


# --- pure helpers ---------------------------------------------------------------------


def test_module_is_self_contained() -> None:
    """The builders copy the file verbatim into model repositories: no geo_operator imports."""
    tree = ast.parse(Path(pm.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports break when copied as model.py"
            imported.add((node.module or "").split(".")[0])
    allowed = {"__future__", "json", "os", "collections", "dataclasses", "typing"}
    allowed |= {"numpy", "onnxruntime", "triton_python_backend_utils"}
    assert imported <= allowed, imported - allowed


def test_parse_specs_accepts_string_dims() -> None:
    specs = pm.parse_specs(CONFIG["output"])
    assert specs == [
        pm.TensorSpec("label", np.int64, (1,)),
        pm.TensorSpec("probabilities", np.float32, (3,)),
    ]


def test_parse_specs_rejects_unknown_type() -> None:
    with pytest.raises(ValueError, match="TYPE_BF17"):
        pm.parse_specs([{"name": "x", "data_type": "TYPE_BF17", "dims": [1]}])


def test_concat_then_split_round_trips_per_request() -> None:
    requests = [{"input": rows(n, seed=n)} for n in (2, 1, 3)]
    feed, sizes = pm.concat_requests(requests, {"input": np.float32})
    assert sizes == [2, 1, 3]
    assert feed["input"].shape == (6, N_FEATURES)

    # Fake model outputs shaped like skl2onnx's: label [N], probabilities [N, 3] in float64.
    label = np.arange(6)
    probs = np.arange(18, dtype=np.float64).reshape(6, 3)
    specs = pm.parse_specs(CONFIG["output"])
    split = pm.split_outputs({"label": label, "probabilities": probs}, sizes, specs)

    assert [s["label"].tolist() for s in split] == [[[0], [1]], [[2]], [[3], [4], [5]]]
    assert [s["probabilities"].shape for s in split] == [(2, 3), (1, 3), (3, 3)]
    assert all(s["probabilities"].dtype == np.float32 for s in split)
    assert all(s["label"].dtype == np.int64 for s in split)
    np.testing.assert_array_equal(split[2]["probabilities"], probs[3:].astype(np.float32))


def test_split_rejects_output_without_batch_dim() -> None:
    specs = [pm.TensorSpec("y", np.float32, (1,))]
    with pytest.raises(ValueError, match="leading dim 3"):
        pm.split_outputs({"y": np.zeros((2, 1))}, [1, 2], specs)


def test_shape_output_free_dim_and_unbatched() -> None:
    spec = pm.TensorSpec("y", np.float32, (-1,))
    assert pm.shape_output(np.zeros((2, 5)), spec, 2).shape == (2, 5)
    spec = pm.TensorSpec("y", np.int32, (2, 2))
    out = pm.shape_output(np.arange(4), spec, None)
    assert out.shape == (2, 2) and out.dtype == np.int32


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, "missing input 'input'"),
        ({"input": np.zeros((2, 5), np.float32)}, r"expected \[batch\] \+ \[4\]"),
        ({"input": np.zeros(4, np.float32)}, r"expected \[batch\] \+ \[4\]"),
    ],
)
def test_validate_request_errors(inputs: dict[str, Any], message: str) -> None:
    specs = pm.parse_specs(CONFIG["input"])
    with pytest.raises(pm.RequestError, match=message):
        pm.validate_request(inputs, specs, batched=True)


def test_validate_request_batch_size_and_wildcards() -> None:
    specs = [pm.TensorSpec("a", np.float32, (-1,)), pm.TensorSpec("b", np.float32, (2,))]
    ok = {"a": np.zeros((3, 7)), "b": np.zeros((3, 2))}
    assert pm.validate_request(ok, specs, batched=True) == 3
    with pytest.raises(pm.RequestError, match="disagree on batch size"):
        pm.validate_request({"a": np.zeros((3, 7)), "b": np.zeros((2, 2))}, specs, batched=True)


# --- OnnxRunner against a real onnxruntime session ------------------------------------


class CountingSession:
    """Wraps an InferenceSession to count run() calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[int] = []

    def run(self, names: list[str], feed: dict[str, Any]) -> Any:
        self.calls.append(len(next(iter(feed.values()))))
        return self.inner.run(names, feed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_runner_batches_all_valid_requests_into_one_run(onnx_path: Path) -> None:
    runner = pm.OnnxRunner(str(onnx_path), CONFIG)
    session = CountingSession(runner.session)
    runner.session = session

    good = [rows(2, 1), rows(1, 2), rows(3, 3)]
    # float64 input: the runner must cast to what the graph declares (float32).
    requests: list[dict[str, Any]] = [
        {"input": good[0]},
        {"input": np.zeros((1, 5), np.float32)},  # wrong dims: fails alone
        {"input": good[1].astype(np.float64)},
        {"input": good[2]},
    ]
    results = runner.run_batch(requests)

    assert session.calls == [6], "one onnxruntime run for all valid requests"
    assert isinstance(results[1], pm.RequestError)
    for result, x in zip([results[0], results[2], results[3]], good, strict=True):
        assert isinstance(result, dict)
        alone = runner.session.inner.run(None, {"input": x})
        assert result["label"].shape == (len(x), 1)
        np.testing.assert_array_equal(result["label"].ravel(), alone[0])
        np.testing.assert_allclose(result["probabilities"], alone[1], rtol=1e-6)


def test_runner_reports_run_failure_to_every_request(onnx_path: Path) -> None:
    runner = pm.OnnxRunner(str(onnx_path), CONFIG)

    class Broken:
        def run(self, names: list[str], feed: dict[str, Any]) -> Any:
            raise RuntimeError("ORT exploded")

    runner.session = Broken()
    results = runner.run_batch([{"input": rows(1, 0)}, {"input": rows(2, 1)}])
    assert [str(r) for r in results] == ["ORT exploded", "ORT exploded"]


def test_runner_without_batching_runs_each_request(onnx_path: Path) -> None:
    config = {**CONFIG, "max_batch_size": 0}
    config["input"] = [{"name": "input", "data_type": "TYPE_FP32", "dims": [1, 4]}]
    config["output"] = [
        {"name": "label", "data_type": "TYPE_INT64", "dims": [1]},
        {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [1, 3]},
    ]
    runner = pm.OnnxRunner(str(onnx_path), config)
    results = runner.run_batch([{"input": rows(1, 0)}, {"input": rows(1, 1)}])
    assert all(isinstance(r, dict) and r["label"].shape == (1,) for r in results)


def test_runner_rejects_config_that_does_not_match_graph(onnx_path: Path) -> None:
    config = {**CONFIG, "output": [{"name": "scores", "data_type": "TYPE_FP32", "dims": [3]}]}
    with pytest.raises(ValueError, match=r"config outputs not in graph \['scores'\]"):
        pm.OnnxRunner(str(onnx_path), config)


# --- TritonPythonModel glue with a fake pb_utils --------------------------------------


class FakeTensor:
    def __init__(self, name: str, value: Any) -> None:
        self.name, self.value = name, value

    def as_numpy(self) -> Any:
        return self.value


class FakeResponse:
    def __init__(self, output_tensors: list[FakeTensor], error: Exception | None = None) -> None:
        self.outputs = {t.name: t.value for t in output_tensors}
        self.error = error


@pytest.fixture
def fake_pb_utils(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def get_input_tensor_by_name(request: dict[str, Any], name: str) -> FakeTensor | None:
        return FakeTensor(name, request[name]) if name in request else None

    fake = SimpleNamespace(
        get_input_tensor_by_name=get_input_tensor_by_name,
        Tensor=FakeTensor,
        InferenceResponse=FakeResponse,
        TritonError=RuntimeError,
    )
    monkeypatch.setattr(pm, "pb_utils", fake)
    yield


@pytest.mark.usefixtures("fake_pb_utils")
def test_triton_model_initialize_and_execute(onnx_path: Path) -> None:
    model = pm.TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(CONFIG),
            "model_repository": str(onnx_path.parent.parent),
            "model_version": "1",
        }
    )
    responses = model.execute([{"input": rows(2, 0)}, {}, {"input": rows(1, 1)}])

    assert [r.error is None for r in responses] == [True, False, True]
    assert "missing input 'input'" in str(responses[1].error)
    assert responses[0].outputs["label"].shape == (2, 1)
    assert responses[2].outputs["probabilities"].shape == (1, 3)
    model.finalize()


@pytest.mark.usefixtures("fake_pb_utils")
def test_a_batch_that_fails_whole_raises_so_triton_counts_the_failures(onnx_path: Path) -> None:
    """Triton counts errors returned inside responses as successes (server#7713); a batch
    whose every request failed raises instead, which Triton counts as failures."""
    model = pm.TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(CONFIG),
            "model_repository": str(onnx_path.parent.parent),
            "model_version": "1",
        }
    )
    with pytest.raises(pm.RequestError, match="missing input 'input'"):
        model.execute([{}, {}])
    model.finalize()
