"""Build the "digits-family" example: one model, seven artifacts with real trade-offs.

Run by hand, by ``make artifacts`` or by the tests' fixture as::

    python examples/digits-family/make_artifacts.py [--out DIR] [--base-uri URI] [--yaml [PATH]]
        [--runs N] [--no-triton] [--triton-seconds S] [--triton-rounds N]
    python examples/digits-family/make_artifacts.py --manifest-only [--out DIR] [--yaml PATH]

The manifest (``--yaml``) gives every artifact its file's ``sha256``, which the pod's
fetch verifies. ``--manifest-only`` builds and measures nothing: it rewrites the
manifest (default the checked-in one) with the figures it already declares and
each file's sha256 from ``<out>``, refusing a file whose size is not the declared
``sizeBytes`` (another build).

Everything comes from scikit-learn's bundled digits dataset (8x8 images, pixels
0..16; no download), split 70/30 stratified with a fixed seed. All artifacts take
the same ONNX interface as ``examples/digits``: ``input`` float32 [N, 64] (raw
pixels, the scaler is inside the graph) -> ``label`` int64 [N] and
``probabilities`` float32 [N, 10]. The artifacts (``<out>/<name>/model.onnx``):

``teacher``
    fp32 MLP 64-2048-2048-10 (scikit-learn, Adam), the reference. Wide enough
    that its compute dominates at batch 32 on a CPU: about 275 MFLOP, some 3 ms
    with onnxruntime on one thread, against about 0.8 ms of Triton's round trip
    for a 32-image request (the student's latency through Triton, whose compute
    is 0.02 ms). ``measurements.json`` has both figures for every artifact.
``fp16``
    the teacher's weights in float16 (onnxconverter-common, fp32 I/O kept).
``int8-dynamic``
    the teacher through ``onnxruntime.quantization.quantize_dynamic`` (int8
    weights, activations quantized on the fly per batch).
``int8-static``
    the teacher through ``quantize_static`` (QDQ on the MatMuls: int8 weights and
    uint8 activations with fixed ranges, MinMax-calibrated on 512 training images
    through a ``CalibrationDataReader``).
``pruned``
    the teacher with half the weights of each layer zeroed by magnitude, then
    fine-tuned a few epochs with the mask re-applied after every step. Stored
    dense, as onnxruntime runs it: the same bytes and speed as the teacher (only
    the zeros compress: see ``gzipBytes``), which is all unstructured sparsity
    buys on a dense CPU kernel.
``student``
    a 64-32-10 MLP distilled from the teacher: regressed on the teacher's
    temperature-softened logits (T = 4) over the training images and their
    one-pixel shifts, the temperature folded back into its last layer; softmax
    and argmax at inference.
``int8-miscalibrated``
    THE TESTS' BAD ARTIFACT: ``quantize_static`` like int8-static but calibrated on
    the wrong data (the same images with pixels x32, i.e. on the wrong scale), so
    every activation range is far too wide and most activations round to zero.
    Its real accuracy is about chance; the manifest declares the teacher's
    accuracy for it, so that measuring accuracy (issue 11 section 2) has something
    to catch. (Calibrating on 0..255 images, x16, still scores about 0.89;
    clipping alone, pixels /16, barely hurts.)

Each is measured with onnxruntime on CPU, one intra-op thread (as GEO's python
backend model runs it): held-out accuracy, file size (and gzip-compressed size),
median latency at batch 1 and 32, the artifacts interleaved round by round so
that a shared machine's drift hits them alike. Then, unless ``--no-triton``, on
the real tritonserver from the nvidia-pytriton wheel: every artifact laid out by
the operator's own builders (format ``python``, max_batch_size 32, queue delay
100 us) as its own model in one repository, one server; per artifact the median
latency of a 32-image request (Triton's labels checked against onnxruntime's),
and closed-loop throughput of 1-item requests at concurrency 1 and 16 with
`geo_operator.tuning.measure`, 1 s per level, in 2 interleaved rounds (mean and
both runs recorded). About 30 s of training and export, and 50 s on Triton, on
the 2-core machine it was written on.

It writes:

* ``<out>/<name>/model.onnx``
* ``<out>/measurements.json``: per artifact its figures (and the bad one's
  declared accuracy), the run's versions and timings;
* ``<out>/heldout.npz``: the held-out set in the format issue 11 section 2 asks for,
  one array per model input named like the input plus the labels:
  ``input`` float32 [540, 64] (raw pixels 0..16) and ``labels`` int64 [540]
  (0..9). Made with ``np.savez_compressed(path, input=x, labels=y)``;
* with ``--yaml [PATH]`` only: the GeoDeployment (default
  ``manifests/examples/digits-family.yaml``), artifacts served from
  ``<base-uri>/<name>/model.onnx``, with the measured accuracy, size and batch-1
  latency as declared figures, except the bad artifact's accuracy (the teacher's).

Training and export are deterministic (fixed seeds); latencies and throughputs
vary from run to run. Nothing in the operator imports this module.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import gzip
import hashlib
import json
import logging
import re
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import sklearn  # type: ignore[import-untyped]
import yaml
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from sklearn.datasets import load_digits  # type: ignore[import-untyped]
from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]
from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]
from sklearn.neural_network import MLPClassifier, MLPRegressor  # type: ignore[import-untyped]
from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
sys.path.insert(0, str(REPO_ROOT / "operator"))

DEFAULT_OUT = HERE / "artifacts"
DEFAULT_YAML = REPO_ROOT / "manifests" / "examples" / "digits-family.yaml"
DEFAULT_BASE_URI = "http://models.geo.local/digits-family"
MODEL_NAME = "digits-family"

SEED = 0
INPUT_NAME = "input"
N_FEATURES = 64
N_CLASSES = 10
OPSET = 17

TEACHER_HIDDEN = (2048, 2048)
STUDENT_HIDDEN = (32,)
TEMPERATURE = 4.0
PRUNE_FRACTION = 0.5
FINETUNE_EPOCHS = 4
FINETUNE_BATCH = 200
CALIBRATION_SAMPLES = 512
BAD_CALIBRATION_SCALE = 32.0  # calibrated on pixels x32: the wrong scale

TEACHER = "teacher"
BAD = "int8-miscalibrated"
# Manifest order: the reference first, the bad artifact last.
ORDER = (TEACHER, "fp16", "int8-dynamic", "int8-static", "pruned", "student", BAD)
PRECISION = {
    TEACHER: "fp32",
    "fp16": "fp16",
    "int8-dynamic": "int8",
    "int8-static": "int8",
    "pruned": "fp32",
    "student": "fp32",
    BAD: "int8",
}

# Triton load: concurrency levels (in-flight 1-item requests) and seconds per level.
TRITON_CONCURRENCY = (1, 16)
TRITON_SECONDS = 1.0
TRITON_ROUNDS = 2
TRITON_DELAY_US = 100  # the manifest's dynamicBatching.maxQueueDelayMicroseconds
TRITON_MAX_BATCH = 32

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass
class Mlp:
    """A ReLU MLP with its input scaler, as plain arrays (what the ONNX graph holds)."""

    mean: FloatArray
    scale: FloatArray
    weights: list[FloatArray]
    biases: list[FloatArray]


@dataclass
class Measurement:
    """What we know about one artifact; serialised into measurements.json."""

    name: str
    precision: str
    technique: str
    path: str
    sizeBytes: int
    gzipBytes: int
    sha256: str
    accuracy: float
    declaredAccuracy: float
    latencyMsBatch1: float = 0.0
    latencyMsBatch32: float = 0.0
    triton: dict[str, Any] = field(default_factory=dict)
    bad: bool = False


# --- training -----------------------------------------------------------------------


def _as_mlp(scaler: StandardScaler, net: Any) -> Mlp:
    return Mlp(
        mean=np.asarray(scaler.mean_, dtype=np.float32),
        scale=np.asarray(scaler.scale_, dtype=np.float32),
        weights=[np.asarray(w, dtype=np.float32) for w in net.coefs_],
        biases=[np.asarray(b, dtype=np.float32) for b in net.intercepts_],
    )


def train_teacher(xs_train: FloatArray, y_train: IntArray) -> MLPClassifier:
    net = MLPClassifier(hidden_layer_sizes=TEACHER_HIDDEN, max_iter=60, random_state=SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        net.fit(xs_train, y_train)
    return net


def prune(teacher: MLPClassifier, xs_train: FloatArray, y_train: IntArray) -> MLPClassifier:
    """Zero the smallest-magnitude ``PRUNE_FRACTION`` of each layer's weights, fine-tune.

    Fine-tuning continues the teacher's Adam optimizer on minibatches (one
    ``partial_fit`` per step) and re-applies the mask after each step, so the
    pruned weights stay exactly zero.
    """
    net = copy.deepcopy(teacher)
    masks = []
    for w in net.coefs_:
        k = round(w.size * PRUNE_FRACTION)
        order = np.argsort(np.abs(w), axis=None, kind="stable")
        mask = np.ones(w.size, dtype=bool)
        mask[order[:k]] = False
        masks.append(mask.reshape(w.shape))
    rng = np.random.default_rng(SEED)

    def apply() -> None:
        for w, mask in zip(net.coefs_, masks, strict=True):
            w[~mask] = 0.0

    apply()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(FINETUNE_EPOCHS):
            order = rng.permutation(len(y_train))
            for start in range(0, len(order), FINETUNE_BATCH):
                idx = order[start : start + FINETUNE_BATCH]
                net.partial_fit(xs_train[idx], y_train[idx])
                apply()
    return net


def shifted_copies(x: FloatArray) -> FloatArray:
    """The images moved by one pixel in each of the four directions (for distillation)."""
    images = x.reshape(-1, 8, 8)
    out = []
    for axis, step in ((1, 1), (1, -1), (2, 1), (2, -1)):
        moved = np.roll(images, step, axis=axis)
        edge = 0 if step == 1 else -1
        if axis == 1:
            moved[:, edge, :] = 0
        else:
            moved[:, :, edge] = 0
        out.append(moved.reshape(-1, N_FEATURES))
    return np.concatenate(out).astype(np.float32)


def logits(mlp: Mlp, x: FloatArray) -> FloatArray:
    h = (x - mlp.mean) / mlp.scale
    for i, (w, b) in enumerate(zip(mlp.weights, mlp.biases, strict=True)):
        h = h @ w + b
        if i < len(mlp.weights) - 1:
            h = np.maximum(h, 0)
    return np.asarray(h, dtype=np.float32)


def distill(teacher: Mlp, scaler: StandardScaler, x_train: FloatArray) -> Mlp:
    """A small MLP regressed on the teacher's logits / T (row-centred; softmax ignores shifts).

    The temperature is folded back into the last layer, so the exported student's
    softmax gives the teacher-like (T = 1) distribution and its argmax the label.
    """
    x = np.concatenate([x_train, shifted_copies(x_train)])
    z = logits(teacher, x)
    target = (z - z.mean(axis=1, keepdims=True)) / TEMPERATURE
    net = MLPRegressor(
        hidden_layer_sizes=STUDENT_HIDDEN, max_iter=300, random_state=SEED, alpha=1e-3
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        net.fit(scaler.transform(x), target)
    student = _as_mlp(scaler, net)
    student.weights[-1] = student.weights[-1] * TEMPERATURE
    student.biases[-1] = student.biases[-1] * TEMPERATURE
    return student


# --- ONNX ---------------------------------------------------------------------------


def to_onnx(mlp: Mlp, doc: str) -> onnx.ModelProto:
    """input -> (x-mean)/scale -> [MatMul, Add, Relu]* -> MatMul, Add -> Softmax / ArgMax."""
    inits = [
        numpy_helper.from_array(mlp.mean, "mean"),
        numpy_helper.from_array(mlp.scale, "scale"),
    ]
    nodes = [
        helper.make_node("Sub", [INPUT_NAME, "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "scale"], ["h0"]),
    ]
    last = len(mlp.weights) - 1
    for i, (w, b) in enumerate(zip(mlp.weights, mlp.biases, strict=True)):
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
        out = "logits" if i == last else f"h{i + 1}"
        nodes += [
            helper.make_node("MatMul", [f"h{i}", f"W{i}"], [f"mm{i}"]),
            helper.make_node("Add", [f"mm{i}", f"B{i}"], [f"pre{i}" if i < last else out]),
        ]
        if i < last:
            nodes.append(helper.make_node("Relu", [f"pre{i}"], [out]))
    nodes += [
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        MODEL_NAME,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", N_FEATURES])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", N_CLASSES]),
        ],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="geo examples/digits-family",
        doc_string=doc,
    )
    model.ir_version = 8  # onnxruntime >= 1.10 reads it
    onnx.checker.check_model(model, full_check=True)
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_session(path: Path) -> ort.InferenceSession:
    """CPU session with one intra-op thread: the same settings the Triton python model uses."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def predict(sess: ort.InferenceSession, x: FloatArray) -> IntArray:
    label = sess.run(["label"], {INPUT_NAME: x})[0]
    return np.asarray(label, dtype=np.int64).reshape(-1)


def convert_fp16(src: onnx.ModelProto, dst: Path) -> str:
    from onnxconverter_common import float16  # type: ignore[import-untyped]

    with warnings.catch_warnings():
        # One warning per weight below fp16's smallest normal (they become +-1e-7).
        warnings.filterwarnings("ignore", "the float32 number", UserWarning)
        model16 = float16.convert_float_to_float16(src, keep_io_types=True)
    save(model16, dst)
    return "onnxconverter_common.float16.convert_float_to_float16 keep_io_types=True"


def quantize_int8_dynamic(src: Path, dst: Path) -> str:
    dst.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    return "onnxruntime.quantization.quantize_dynamic weight_type=QInt8"


class _NoPreprocessingHint(logging.Filter):
    """Drop onnxruntime.quantization's advice to run quant_pre_process: these graphs have
    static shapes and nothing for its optimizer to fold."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage() and (
            "run pre-processing" not in record.getMessage()
        )


logging.getLogger().addFilter(_NoPreprocessingHint())


class _Batches(CalibrationDataReader):  # type: ignore[misc]
    """Feeds calibration images to quantize_static, 64 at a time."""

    def __init__(self, x: FloatArray) -> None:
        self._batches: Iterator[FloatArray] = iter(np.array_split(x, max(1, len(x) // 64)))

    def get_next(self) -> dict[str, FloatArray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch)}


def quantize_int8_static(src: Path, dst: Path, calibration: FloatArray, what: str) -> str:
    dst.parent.mkdir(parents=True, exist_ok=True)
    quantize_static(
        str(src),
        str(dst),
        _Batches(calibration),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=False,
    )
    return (
        "onnxruntime.quantization.quantize_static QDQ MatMul, weights QInt8, "
        f"activations QUInt8 MinMax-calibrated on {len(calibration)} {what}"
    )


# --- measuring ----------------------------------------------------------------------


def file_figures(path: Path) -> tuple[int, int, str]:
    data = path.read_bytes()
    return len(data), len(gzip.compress(data, 6, mtime=0)), hashlib.sha256(data).hexdigest()


def interleaved_latency_ms(
    runs: dict[str, Callable[[], object]], samples: int, rounds: int = 10, warmup: int = 10
) -> dict[str, float]:
    """Median latency of each callable, measured in ``rounds`` interleaved rounds."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    per_round = max(1, samples // rounds)
    for _ in range(rounds):
        for name, run in runs.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                run()
                times[name].append((time.perf_counter() - t0) * 1000.0)
    return {name: statistics.median(t) for name, t in times.items()}


def measure_onnxruntime(
    measurements: dict[str, Measurement], paths: dict[str, Path], x_test: FloatArray, runs: int
) -> None:
    sessions = {name: make_session(paths[name]) for name in measurements}
    for batch, attr in ((1, "latencyMsBatch1"), (32, "latencyMsBatch32")):
        xb = np.ascontiguousarray(x_test[:batch])
        calls = {
            name: (lambda s=s, xb=xb: s.run(None, {INPUT_NAME: xb}))  # type: ignore[misc]
            for name, s in sessions.items()
        }
        for name, ms in interleaved_latency_ms(calls, runs).items():
            setattr(measurements[name], attr, round(ms, 4))


def triton_artifacts_doc(measurements: Sequence[Measurement], base_uri: str) -> dict[str, Any]:
    """The GeoDeployment as a dict (also what ``--yaml`` writes)."""
    artifacts = [
        {
            "name": m.name,
            "precision": m.precision,
            "format": "python",
            "uri": f"{base_uri.rstrip('/')}/{m.name}/model.onnx",
            "sha256": m.sha256,
            "accuracy": m.declaredAccuracy,
            "sizeBytes": m.sizeBytes,
            "latencyMs": round(m.latencyMsBatch1, 3),
        }
        for m in measurements
    ]
    return {
        "apiVersion": "geo.ai/v1alpha1",
        "kind": "GeoDeployment",
        "metadata": {"name": MODEL_NAME},
        "spec": {
            "model": {
                "name": MODEL_NAME,
                "inputs": [_Flow(name=INPUT_NAME, dataType="TYPE_FP32", dims=[N_FEATURES])],
                "outputs": [
                    _Flow(name="label", dataType="TYPE_INT64", dims=[1]),
                    _Flow(name="probabilities", dataType="TYPE_FP32", dims=[N_CLASSES]),
                ],
                "artifacts": artifacts,
                "selection": {"policy": "best-score", "minAccuracyRatio": 0.95},
                # Measured, not declared: each candidate's tuning Job scores this set.
                "evaluation": {
                    "uri": f"{base_uri.rstrip('/')}/heldout.npz",
                    "metric": "accuracy",
                },
            },
            "triton": {
                "maxBatchSize": TRITON_MAX_BATCH,
                "dynamicBatching": _Flow(maxQueueDelayMicroseconds=TRITON_DELAY_US),
            },
            "replicas": 1,
            "autoscaling": {"enabled": False},
        },
    }


def _triton_batch32(
    server_url: str, names: Sequence[str], x32: FloatArray, rounds: int, per_round: int
) -> tuple[dict[str, float], dict[str, IntArray]]:
    """Median latency of one 32-image request through Triton, per model (interleaved), and
    the labels Triton answered for those images."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server_url)
    try:

        def call(name: str) -> IntArray:
            tensor = httpclient.InferInput(INPUT_NAME, list(x32.shape), "FP32")
            tensor.set_data_from_numpy(x32)
            result = client.infer(name, [tensor])
            return np.asarray(result.as_numpy("label"), dtype=np.int64).reshape(-1)

        labels = {name: call(name) for name in names}  # also the warm-up
        runs = {name: (lambda name=name: call(name)) for name in names}
        latency = interleaved_latency_ms(runs, rounds * per_round, rounds=rounds, warmup=3)
    finally:
        client.close()
    return latency, labels


def measure_triton(
    measurements: Sequence[Measurement],
    out: Path,
    x32: FloatArray,
    seconds: float,
    concurrency: Sequence[int],
    rounds: int,
) -> tuple[float, dict[str, IntArray]]:
    """Every artifact on one real tritonserver; returns the server's start-up seconds and
    the labels it answered for ``x32``, per artifact.

    Each artifact becomes its own Triton model (named after it), laid out with the
    operator's builders from the manifest with that artifact pinned, so Triton
    serves exactly what the operator would build. Per artifact: the median latency
    of a 32-image request (client side, sequential; Triton's labels must equal
    onnxruntime's), then closed-loop throughput of 1-item requests with
    `geo_operator.tuning.measure` at each of ``concurrency``, ``rounds`` times,
    the artifacts interleaved round by round (each measurement reloads its model).
    """
    from geo_operator.api import models
    from geo_operator.builders import children, plan
    from geo_operator.triton import local, repository
    from geo_operator.tuning import measure, search

    doc = triton_artifacts_doc(measurements, DEFAULT_BASE_URI)
    mirrors = {DEFAULT_BASE_URI + "/": f"file://{out.resolve()}/"}
    names = [m.name for m in measurements]
    with tempfile.TemporaryDirectory(prefix="geo-digits-family-") as tmp:
        repo = Path(tmp) / "repository"
        for m in measurements:
            spec = copy.deepcopy(doc["spec"])
            spec["model"]["name"] = m.name
            spec["model"]["selection"] = {"policy": "pinned", "pinned": m.name}
            decided = plan.plan(
                name=MODEL_NAME,
                namespace="default",
                uid="u",
                spec=models.parse_spec(spec),
                status=models.GeoDeploymentStatus(),
                current_replicas=None,
            )
            if decided.target is None:
                reason = decided.choice.reason
                raise RuntimeError(f"{m.name}: the operator serves nothing: {reason}")
            target = decided.target
            repository.materialize(
                children.config_map_data(target),
                model_name=m.name,
                artifact_format=target.artifact.format,
                uri=target.artifact.uri,
                repository=repo,
                mirrors=mirrors,
            )
        config = search.Config(max_batch_size=TRITON_MAX_BATCH, max_queue_delay_us=TRITON_DELAY_US)
        with local.TritonServer(
            repo,
            model_control_mode="explicit",
            load_models=names,
            log_path=Path(tmp) / "tritonserver.log",
        ) as server:
            latency, labels = _triton_batch32(server.http_url, names, x32, rounds=5, per_round=10)
            levels: dict[str, list[measure.Level]] = {name: [] for name in names}
            measurers = {
                name: measure.Measurer(
                    server.http_url,
                    name,
                    latency_budget_ms=10_000.0,  # record every level; none is cut
                    concurrency=concurrency,
                    seconds=seconds,
                )
                for name in names
            }
            try:
                for _ in range(rounds):
                    for name, measurer in measurers.items():
                        levels[name] += measurer.measure(config).levels
            finally:
                for measurer in measurers.values():
                    measurer.close()
            startup = server.startup_seconds or 0.0
    for m in measurements:
        by_level = {c: [lv for lv in levels[m.name] if lv.concurrency == c] for c in concurrency}
        m.triton = {
            "latencyMsBatch32": round(latency[m.name], 3),
            "config": config.describe(),
            "levels": [
                {
                    "concurrency": c,
                    "throughput": round(statistics.mean(lv.throughput for lv in runs), 1),
                    "throughputRuns": [round(lv.throughput, 1) for lv in runs],
                    "p50Ms": round(statistics.median(lv.p50_ms for lv in runs), 3),
                    "p99Ms": round(statistics.median(lv.p99_ms for lv in runs), 3),
                    "avgBatch": round(statistics.mean(lv.avg_batch for lv in runs), 2),
                }
                for c, runs in by_level.items()
            ],
        }
    return startup, labels


# --- YAML rendering -----------------------------------------------------------------


class _Flow(dict[str, Any]):
    """A mapping that must be written in flow style ({a: 1}), as in the hand-written manifests."""


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_flow(dumper: yaml.SafeDumper, data: _Flow) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True)


_Dumper.add_representer(_Flow, _represent_flow)

_LINE_COMMENTS = (
    (
        re.compile(r"^(\s*)format: python$"),
        "# Triton python backend runs the ONNX file with onnxruntime",
    ),
    (re.compile(r"^(\s*)latencyMs: \S+$"), "# measured median, batch 1, onnxruntime CPU"),
)


def render_manifest(measurements: Sequence[Measurement], base_uri: str, header: str) -> str:
    body = yaml.dump(
        triton_artifacts_doc(measurements, base_uri),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=120,
    )
    bad = next(m for m in measurements if m.bad)
    lines = []
    for line in body.splitlines():
        for pattern, comment in _LINE_COMMENTS:
            if pattern.match(line):
                line = f"{line}    {comment}"
        if line.strip() == f"- name: {bad.name}":
            indent = line[: len(line) - len(line.lstrip())]
            lines.append(
                f"{indent}# The tests' bad artifact: declares the teacher's accuracy; "
                f"measured on the held-out set {bad.accuracy:.4f}."
            )
        lines.append(line)
    return header + "\n" + "\n".join(lines) + "\n"


# --- main ---------------------------------------------------------------------------


def declared(manifest: Path, out: Path) -> tuple[str, list[Measurement]]:
    """The manifest's header line and its artifacts' declared figures, each with the sha256
    of its file in ``out``; SystemExit when a file is missing or not the declared size."""
    lines = manifest.read_text().splitlines()
    body = yaml.safe_load("\n".join(lines))
    report = out / "measurements.json"
    if not report.exists():
        raise SystemExit(f"{report} does not exist: build the artifacts first (no flag)")
    recorded = {a["name"]: a for a in json.loads(report.read_text())["artifacts"]}
    measurements = []
    for a in body["spec"]["model"]["artifacts"]:
        path = out / a["name"] / "model.onnx"
        if not path.exists():
            raise SystemExit(f"{path} does not exist: build the artifacts first (no flag)")
        size, gz, digest = file_figures(path)
        if size != a["sizeBytes"]:
            raise SystemExit(
                f"{path} has {size} bytes, {manifest} declares {a['sizeBytes']}: another "
                "build; rebuild with --yaml to measure it"
            )
        if recorded.get(a["name"], {}).get("sha256") != digest:
            raise SystemExit(f"{path} is not the file {report} measured: rebuild it")
        measurements.append(
            Measurement(
                name=a["name"],
                precision=a["precision"],
                technique="",
                path=f"{a['name']}/model.onnx",
                sizeBytes=size,
                gzipBytes=gz,
                sha256=digest,
                accuracy=recorded[a["name"]]["accuracy"],  # measured: the bad one's comment
                declaredAccuracy=a["accuracy"],
                latencyMsBatch1=a["latencyMs"],
                bad=a["name"] == BAD,
            )
        )
    return lines[0], measurements


def table(measurements: Sequence[Measurement]) -> str:
    levels = sorted({lv["concurrency"] for m in measurements for lv in m.triton.get("levels", [])})
    head = (
        f"{'artifact':<19} {'precision':>9} {'bytes':>9} {'gzip':>9} {'accuracy':>8} "
        f"{'declared':>8} {'b1 ms':>7} {'b32 ms':>7}"
    )
    head += f" {'T b32 ms':>8}" + "".join(f" {f'req/s c={c}':>11}" for c in levels)
    rows = [head]
    for m in measurements:
        row = (
            f"{m.name:<19} {m.precision:>9} {m.sizeBytes:>9} {m.gzipBytes:>9} "
            f"{m.accuracy:>8.4f} {m.declaredAccuracy:>8.4f} "
            f"{m.latencyMsBatch1:>7.3f} {m.latencyMsBatch32:>7.3f}"
        )
        by_c = {lv["concurrency"]: lv for lv in m.triton.get("levels", [])}
        tb32 = m.triton.get("latencyMsBatch32")
        row += f" {tb32:>8.3f}" if tb32 is not None else f" {'-':>8}"
        row += "".join(
            f" {by_c[c]['throughput']:>11.0f}" if c in by_c else f" {'-':>11}" for c in levels
        )
        rows.append(row)
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="artifact directory (default: %(default)s)"
    )
    parser.add_argument(
        "--base-uri", default=DEFAULT_BASE_URI, help="URI prefix for the manifest's artifacts"
    )
    parser.add_argument(
        "--yaml",
        type=Path,
        nargs="?",
        const=DEFAULT_YAML,
        default=None,
        help="also write the GeoDeployment with the measured figures (default path "
        f"{DEFAULT_YAML.relative_to(REPO_ROOT)}); without it the checked-in example stays as is",
    )
    parser.add_argument(
        "--manifest-only",
        action="store_true",
        help="build nothing: rewrite the manifest (--yaml's path, default "
        f"{DEFAULT_YAML.relative_to(REPO_ROOT)}) with its own figures and the sha256 of "
        "--out's files",
    )
    parser.add_argument(
        "--runs", type=int, default=200, help="timed onnxruntime runs per artifact and batch size"
    )
    parser.add_argument(
        "--no-triton", action="store_true", help="skip the throughput measurement on Triton"
    )
    parser.add_argument(
        "--triton-seconds",
        type=float,
        default=TRITON_SECONDS,
        help="seconds of load per concurrency level on Triton (default: %(default)s)",
    )
    parser.add_argument(
        "--triton-rounds",
        type=int,
        default=TRITON_ROUNDS,
        help="interleaved rounds of the Triton load (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    if args.manifest_only:
        yaml_path = args.yaml or DEFAULT_YAML
        top, declared_figures = declared(yaml_path, out)
        yaml_path.write_text(render_manifest(declared_figures, args.base_uri, top))
        print(f"wrote {yaml_path}: its figures, the sha256 of {out}/<artifact>/model.onnx")
        return 0
    started = time.monotonic()
    timings: dict[str, float] = {}

    def lap(step: str, since: float) -> float:
        now = time.monotonic()
        timings[step] = round(now - since, 2)
        return now

    digits = load_digits()
    x = np.asarray(digits.data, dtype=np.float32)
    y = np.asarray(digits.target, dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, stratify=y, random_state=SEED
    )
    scaler = StandardScaler().fit(x_train)
    xs_train = np.asarray(scaler.transform(x_train), dtype=np.float32)

    t = time.monotonic()
    teacher_net = train_teacher(xs_train, y_train)
    teacher = _as_mlp(scaler, teacher_net)
    t = lap("trainTeacher", t)
    pruned = _as_mlp(scaler, prune(teacher_net, xs_train, y_train))
    t = lap("pruneFinetune", t)
    student = distill(teacher, scaler, x_train)
    t = lap("distillStudent", t)

    paths = {name: out / name / "model.onnx" for name in ORDER}
    teacher_onnx = to_onnx(teacher, f"teacher MLP 64-{'-'.join(map(str, TEACHER_HIDDEN))}-10")
    save(teacher_onnx, paths[TEACHER])
    save(to_onnx(pruned, f"teacher, {PRUNE_FRACTION:.0%} of each layer pruned"), paths["pruned"])
    save(to_onnx(student, "student distilled from the teacher"), paths["student"])
    rng = np.random.default_rng(SEED)
    calibration = x_train[rng.permutation(len(x_train))[:CALIBRATION_SAMPLES]]
    technique = {
        TEACHER: f"MLPClassifier{TEACHER_HIDDEN} (Adam, seed {SEED}), exported to ONNX fp32",
        "fp16": convert_fp16(teacher_onnx, paths["fp16"]),
        "int8-dynamic": quantize_int8_dynamic(paths[TEACHER], paths["int8-dynamic"]),
        "int8-static": quantize_int8_static(
            paths[TEACHER], paths["int8-static"], calibration, "training images"
        ),
        "pruned": (
            f"teacher with {PRUNE_FRACTION:.0%} of each layer's weights zeroed by magnitude, "
            f"fine-tuned {FINETUNE_EPOCHS} epochs (batch {FINETUNE_BATCH}) with the mask "
            "re-applied after every step; stored dense"
        ),
        "student": (
            f"MLPRegressor{STUDENT_HIDDEN} on the teacher's logits / T={TEMPERATURE:g} over the "
            "training images and their 1-pixel shifts; softmax/argmax at inference"
        ),
        BAD: "BAD ON PURPOSE: "
        + quantize_int8_static(
            paths[TEACHER],
            paths[BAD],
            calibration * BAD_CALIBRATION_SCALE,
            f"training images times {BAD_CALIBRATION_SCALE:g} (pixels on the wrong scale)",
        ),
    }
    t = lap("exportQuantize", t)

    measurements: dict[str, Measurement] = {}
    for name in ORDER:
        size, gz, digest = file_figures(paths[name])
        accuracy = float(np.mean(predict(make_session(paths[name]), x_test) == y_test))
        measurements[name] = Measurement(
            name=name,
            precision=PRECISION[name],
            technique=technique[name],
            path=f"{name}/model.onnx",
            sizeBytes=size,
            gzipBytes=gz,
            sha256=digest,
            accuracy=round(accuracy, 4),
            declaredAccuracy=round(accuracy, 4),
            bad=name == BAD,
        )
    measurements[BAD].declaredAccuracy = measurements[TEACHER].accuracy
    np.savez_compressed(out / "heldout.npz", input=x_test, labels=y_test)
    measure_onnxruntime(measurements, paths, x_test, args.runs)
    t = lap("measureOnnxruntime", t)
    ordered = [measurements[name] for name in ORDER]
    triton_startup = None
    if not args.no_triton:
        x32 = np.ascontiguousarray(x_test[:32])
        startup, answered = measure_triton(
            ordered, out, x32, args.triton_seconds, TRITON_CONCURRENCY, args.triton_rounds
        )
        triton_startup = round(startup, 2)
        for m in ordered:
            expected = predict(make_session(paths[m.name]), x32)
            m.triton["labelsMatchOnnxruntime"] = bool(np.array_equal(answered[m.name], expected))
        t = lap("measureTriton", t)
    timings["total"] = round(time.monotonic() - started, 2)

    today = dt.date.today().isoformat()
    report = {
        "generatedBy": "examples/digits-family/make_artifacts.py",
        "date": today,
        "dataset": {
            "name": "sklearn digits",
            "train": len(y_train),
            "heldOut": len(y_test),
            "split": f"train_test_split(test_size=0.3, stratify=y, random_state={SEED})",
        },
        "heldout": {
            "file": "heldout.npz",
            "arrays": {
                INPUT_NAME: {"dtype": "float32", "shape": [len(y_test), N_FEATURES]},
                "labels": {"dtype": "int64", "shape": [len(y_test)]},
            },
        },
        "onnx": {
            "inputs": [{"name": INPUT_NAME, "dtype": "float32", "shape": ["N", N_FEATURES]}],
            "outputs": [
                {"name": "label", "dtype": "int64", "shape": ["N"]},
                {"name": "probabilities", "dtype": "float32", "shape": ["N", N_CLASSES]},
            ],
        },
        "versions": {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "scikit-learn": sklearn.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
        },
        "latency": {
            "provider": "CPUExecutionProvider",
            "intraOpThreads": 1,
            "runs": args.runs,
            "stat": "median, artifacts interleaved in 10 rounds",
        },
        "triton": None
        if args.no_triton
        else {
            "format": "python",
            "startupSeconds": triton_startup,
            "maxBatchSize": TRITON_MAX_BATCH,
            "maxQueueDelayMicroseconds": TRITON_DELAY_US,
            "load": "closed loop, 1-item requests, tritonclient asyncio HTTP on the same host",
            "secondsPerLevel": args.triton_seconds,
            "rounds": args.triton_rounds,
            "concurrency": list(TRITON_CONCURRENCY),
            "latencyMsBatch32": "median of 50 sequential 32-image requests, client side",
        },
        "timingsSeconds": timings,
        "badArtifact": BAD,
        "artifacts": [asdict(m) for m in ordered],
    }
    (out / "measurements.json").write_text(json.dumps(report, indent=2) + "\n")

    summary = ", ".join(f"{m.name} {m.accuracy:.4f}" for m in ordered)
    header = (
        f"# Generated by examples/digits-family/make_artifacts.py — measured on {today}: "
        f"sklearn digits, {len(y_test)} held-out; accuracy {summary}"
    )
    yaml_path: Path | None = args.yaml
    if yaml_path is not None:
        yaml_path.parent.mkdir(parents=True, exist_ok=True)
        yaml_path.write_text(render_manifest(ordered, args.base_uri, header))

    print(table(ordered))
    written = f", {yaml_path}" if yaml_path is not None else ""
    print(f"wrote {out}/<artifact>/model.onnx, measurements.json, heldout.npz{written}")
    print("timings (s): " + ", ".join(f"{k} {v:g}" for k, v in timings.items()))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/
    import _reproducible  # the same bytes on any x86-64 machine: see its docstring

    _reproducible.pin_arithmetic()
    raise SystemExit(main())
