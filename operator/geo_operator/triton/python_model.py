"""Generic Triton python-backend model that serves an ONNX file with onnxruntime (CPU).

The operator copies this file verbatim to ``<repo>/<model>/<version>/model.py``
next to the fetched ``model.onnx``; Triton's python backend stub imports it and
calls ``TritonPythonModel.initialize/execute/finalize``. It must therefore stay
self-contained: stdlib, numpy, onnxruntime and ``triton_python_backend_utils``
only -- never ``geo_operator``. Unit tests import it directly, so the Triton
module is optional at import time.

All requests handed to one ``execute`` call (i.e. one dynamic batch) go through a
single onnxruntime run: inputs are concatenated along dim 0 and outputs split
back per request. Without that, dynamic batching would only queue requests and
still run them one by one.

Optional ``parameters`` in config.pbtxt (string values):
``onnx_file`` (default ``model.onnx``), ``intra_op_thread_count`` (default 1),
``inter_op_thread_count`` (default 1).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # outside Triton (unit tests, linters)
    pb_utils = None

Array = npt.NDArray[Any]

# Triton config data_type -> numpy dtype. Kept local (pb_utils has one) so the
# pure helpers below work without Triton.
TRITON_TO_NUMPY: dict[str, type[Any]] = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}

# onnxruntime NodeArg.type -> numpy dtype, used to feed the graph what it declares
# (e.g. an fp16 model exported without keep_io_types wants float16 inputs).
ONNX_TO_NUMPY: dict[str, type[Any]] = {
    "tensor(bool)": np.bool_,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(float16)": np.float16,
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(string)": np.object_,
}


@dataclass(frozen=True)
class TensorSpec:
    """One input/output as declared in config.pbtxt (dims exclude the batch dim when batching)."""

    name: str
    dtype: type[Any]
    dims: tuple[int, ...]


class RequestError(ValueError):
    """A problem with one request; reported to that request's client only."""


def parse_specs(entries: Sequence[Mapping[str, Any]]) -> list[TensorSpec]:
    """Turn the JSON model_config ``input``/``output`` lists into TensorSpecs."""
    specs = []
    for entry in entries:
        data_type = str(entry["data_type"])
        if data_type not in TRITON_TO_NUMPY:
            raise ValueError(f"tensor {entry['name']!r}: unsupported data_type {data_type}")
        # Triton's JSON has dims as strings or ints depending on the version.
        dims = tuple(int(d) for d in entry.get("dims", []))
        specs.append(
            TensorSpec(name=str(entry["name"]), dtype=TRITON_TO_NUMPY[data_type], dims=dims)
        )
    return specs


def _shape_matches(shape: Sequence[int], expected: Sequence[int]) -> bool:
    return len(shape) == len(expected) and all(
        e == -1 or s == e for s, e in zip(shape, expected, strict=True)
    )


def validate_request(
    inputs: Mapping[str, Array], specs: Sequence[TensorSpec], batched: bool
) -> int:
    """Check one request's inputs against the config; return its batch size (1 when not batching).

    Done per request before concatenation so one malformed request fails alone
    instead of poisoning the whole dynamic batch.
    """
    batch: int | None = None
    for spec in specs:
        if spec.name not in inputs:
            raise RequestError(f"missing input {spec.name!r}")
        shape = inputs[spec.name].shape
        per_item = shape[1:] if batched else shape
        if batched and len(shape) == 0:
            raise RequestError(f"input {spec.name!r} has no batch dimension")
        if not _shape_matches(per_item, spec.dims):
            expected = f"[batch] + {list(spec.dims)}" if batched else str(list(spec.dims))
            raise RequestError(f"input {spec.name!r} has shape {list(shape)}, expected {expected}")
        if batched:
            if batch is None:
                batch = shape[0]
            elif shape[0] != batch:
                raise RequestError(
                    f"inputs disagree on batch size ({batch} vs {shape[0]} for {spec.name!r})"
                )
    return batch if batch is not None else 1


def concat_requests(
    per_request: Sequence[Mapping[str, Array]], input_dtypes: Mapping[str, type[Any]]
) -> tuple[dict[str, Array], list[int]]:
    """Concatenate every request's inputs along dim 0.

    Returns the onnxruntime feed and each request's batch size (for splitting back).
    """
    if not per_request:
        raise ValueError("no requests to batch")
    sizes = [int(next(iter(r.values())).shape[0]) if r else 0 for r in per_request]
    feed = {
        name: np.concatenate([np.asarray(r[name], dtype=dtype) for r in per_request], axis=0)
        for name, dtype in input_dtypes.items()
    }
    return feed, sizes


def shape_output(value: Array, spec: TensorSpec, batch: int | None) -> Array:
    """Cast to the config dtype and reshape to ``[batch] + dims`` (or ``dims`` when not batching).

    ONNX graphs often disagree with the config on trivial dims, e.g. a classifier's
    label is ``[N]`` while the config says ``dims: [1]``; Triton rejects a response
    whose shape doesn't match the config, so we fix it here.
    """
    out = np.asarray(value).astype(spec.dtype, copy=False)
    target = (batch, *spec.dims) if batch is not None else spec.dims
    if sum(1 for d in target if d == -1) > 1:
        return out  # numpy can't infer more than one free dim; leave ORT's shape
    try:
        return out.reshape(target)
    except ValueError as exc:
        raise ValueError(
            f"output {spec.name!r} of shape {list(out.shape)} can't be viewed as {list(target)}"
        ) from exc


def split_outputs(
    outputs: Mapping[str, Array], sizes: Sequence[int], specs: Sequence[TensorSpec]
) -> list[dict[str, Array]]:
    """Split batched model outputs back into one dict per request, shaped per the config."""
    total = sum(sizes)
    offsets = np.cumsum([0, *sizes])
    result: list[dict[str, Array]] = [{} for _ in sizes]
    for spec in specs:
        value = np.asarray(outputs[spec.name])
        if value.ndim == 0 or value.shape[0] != total:
            raise ValueError(
                f"output {spec.name!r} has shape {list(value.shape)}; expected leading dim {total}"
            )
        for i, size in enumerate(sizes):
            result[i][spec.name] = shape_output(value[offsets[i] : offsets[i + 1]], spec, size)
    return result


class OnnxRunner:
    """The Triton-independent part: an onnxruntime session bound to a model config."""

    def __init__(self, onnx_path: str, model_config: Mapping[str, Any]) -> None:
        self.batched = int(model_config.get("max_batch_size", 0)) > 0
        self.inputs = parse_specs(model_config.get("input", []))
        self.outputs = parse_specs(model_config.get("output", []))
        params = {
            k: str(v.get("string_value", ""))
            for k, v in (model_config.get("parameters") or {}).items()
        }

        opts = ort.SessionOptions()
        # One thread per instance by default: Triton scales with instance_group
        # count and pods with CPU limits; ORT's default (all cores) oversubscribes.
        opts.intra_op_num_threads = int(params.get("intra_op_thread_count") or 1)
        opts.inter_op_num_threads = int(params.get("inter_op_thread_count") or 1)
        self.session = ort.InferenceSession(
            onnx_path, sess_options=opts, providers=["CPUExecutionProvider"]
        )

        graph_inputs = {i.name: i for i in self.session.get_inputs()}
        graph_outputs = {o.name for o in self.session.get_outputs()}
        missing_in = [s.name for s in self.inputs if s.name not in graph_inputs]
        missing_out = [s.name for s in self.outputs if s.name not in graph_outputs]
        unfed = [n for n in graph_inputs if n not in {s.name for s in self.inputs}]
        if missing_in or missing_out or unfed:
            raise ValueError(
                f"config does not match {os.path.basename(onnx_path)}: "
                f"config inputs not in graph {missing_in}, "
                f"config outputs not in graph {missing_out}, "
                f"graph inputs not in config {unfed}; graph has inputs {sorted(graph_inputs)} "
                f"and outputs {sorted(graph_outputs)}"
            )
        self.feed_dtypes: dict[str, type[Any]] = {
            s.name: ONNX_TO_NUMPY.get(graph_inputs[s.name].type, s.dtype) for s in self.inputs
        }
        self.output_names = [s.name for s in self.outputs]

    def run_batch(
        self, per_request: Sequence[Mapping[str, Array]]
    ) -> list[dict[str, Array] | Exception]:
        """Run all valid requests in one ORT call.

        Returns, per request, its outputs or the exception to report to its client.
        """
        results: list[dict[str, Array] | Exception] = [RuntimeError("not run")] * len(per_request)
        valid: list[int] = []
        for i, inputs in enumerate(per_request):
            try:
                validate_request(inputs, self.inputs, self.batched)
                valid.append(i)
            except RequestError as exc:
                results[i] = exc
        if not valid:
            return results

        if not self.batched:
            # No batch dim to concatenate along: one run per request.
            for i in valid:
                try:
                    feed = {
                        n: np.asarray(per_request[i][n], dtype=d)
                        for n, d in self.feed_dtypes.items()
                    }
                    raw = dict(
                        zip(
                            self.output_names,
                            self.session.run(self.output_names, feed),
                            strict=True,
                        )
                    )
                    results[i] = {s.name: shape_output(raw[s.name], s, None) for s in self.outputs}
                except Exception as exc:
                    results[i] = exc
            return results

        try:
            feed, sizes = concat_requests([per_request[i] for i in valid], self.feed_dtypes)
            raw = dict(
                zip(self.output_names, self.session.run(self.output_names, feed), strict=True)
            )
            for i, out in zip(valid, split_outputs(raw, sizes, self.outputs), strict=True):
                results[i] = out
        except Exception as exc:
            for i in valid:
                results[i] = exc
        return results


class TritonPythonModel:
    """Entry point looked up by Triton's python backend stub."""

    runner: OnnxRunner

    def initialize(self, args: dict[str, str]) -> None:
        model_config = json.loads(args["model_config"])
        params = {
            k: str(v.get("string_value", ""))
            for k, v in (model_config.get("parameters") or {}).items()
        }
        onnx_file = params.get("onnx_file") or "model.onnx"
        # args["model_repository"] is this model's directory (<repo>/<model>), not the repo root.
        path = os.path.join(args["model_repository"], args["model_version"], onnx_file)
        self.runner = OnnxRunner(path, model_config)

    def execute(self, requests: Sequence[Any]) -> list[Any]:
        per_request: list[dict[str, Array]] = []
        for request in requests:
            inputs: dict[str, Array] = {}
            for spec in self.runner.inputs:
                tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
                if tensor is not None:
                    inputs[spec.name] = tensor.as_numpy()
            per_request.append(inputs)

        results = self.runner.run_batch(per_request)
        failed = [r for r in results if isinstance(r, Exception)]
        if results and len(failed) == len(results):
            # Every request of the batch failed: raise, so that Triton counts them in
            # nv_inference_request_failure. Errors returned inside responses are counted as
            # successes by Triton (triton-inference-server/server#7713), which would hide a
            # failing model from the canary analysis' error rate.
            raise failed[0]
        responses = []
        for result in results:
            if isinstance(result, Exception):
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[], error=pb_utils.TritonError(str(result))
                    )
                )
            else:
                tensors = [
                    pb_utils.Tensor(name, np.ascontiguousarray(value))
                    for name, value in result.items()
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        # Drop the session now rather than at interpreter teardown inside the stub.
        self.__dict__.pop("runner", None)
