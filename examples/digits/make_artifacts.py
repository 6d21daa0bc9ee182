"""Build the "digits" example model, its quantized variants and a GeoDeployment for them.

Run by hand (or by e2e set-up scripts) as::

    python examples/digits/make_artifacts.py [--out DIR] [--base-uri URI] [--yaml PATH]
    python examples/digits/make_artifacts.py --manifest-only [--out DIR] [--yaml PATH]

It trains a small MLP on scikit-learn's bundled digits dataset (no download),
exports it to ONNX (fp32), derives an int8 (dynamic quantization) and an fp16
variant, measures every variant with onnxruntime on CPU (held-out accuracy, file
size, median latency for batch 1 and 32) and writes:

* ``<out>/<variant>/model.onnx``
* ``<out>/measurements.json``
* ``<out>/heldout.npz`` (the held-out pixels/labels, so e2e checks can send real digits)
* with ``--yaml [PATH]`` only: a GeoDeployment manifest (default
  ``manifests/examples/digits.yaml``) whose artifact list carries the measured
  numbers the operator's selection policy uses. Without it the checked-in
  example keeps the figures it was committed with, so a fresh checkout selects
  the same artifact every time (latencies vary from run to run). Every artifact
  carries its file's ``sha256``, which the pod's fetch verifies.

``--manifest-only`` builds and measures nothing: it rewrites the manifest (``--yaml``'s
path, default the checked-in one) with the figures it already declares and each
file's sha256 from ``<out>``, refusing a file whose size is not the declared
``sizeBytes`` (another build). Training is deterministic, so the files a fresh
checkout builds are the bytes those sha256s name.

Training and export are deterministic (fixed random_state); latencies naturally vary.
Nothing in the operator imports this module.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import sklearn  # type: ignore[import-untyped]
import yaml
from onnxruntime.quantization import QuantType, quantize_dynamic
from skl2onnx import to_onnx  # type: ignore[import-untyped]
from skl2onnx.common.data_types import FloatTensorType  # type: ignore[import-untyped]
from sklearn.datasets import load_digits  # type: ignore[import-untyped]
from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]
from sklearn.neural_network import MLPClassifier  # type: ignore[import-untyped]
from sklearn.pipeline import Pipeline  # type: ignore[import-untyped]
from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
DEFAULT_OUT = HERE / "artifacts"
DEFAULT_YAML = REPO_ROOT / "manifests" / "examples" / "digits.yaml"
DEFAULT_BASE_URI = "http://models.geo.local/digits"

SEED = 0
INPUT_NAME = "input"
N_FEATURES = 64
N_CLASSES = 10
# Order in which variants appear in the manifest: reference first.
VARIANT_ORDER = ("fp32", "fp16", "int8")

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass
class Measurement:
    """What we know about one exported variant; serialised into measurements.json."""

    variant: str
    precision: str
    path: str
    sizeBytes: int
    sha256: str
    accuracy: float
    latencyMsBatch1: float
    latencyMsBatch32: float
    note: str = ""


def train(x_train: FloatArray, y_train: IntArray) -> Pipeline:
    """Fit scaler+MLP as one pipeline so the ONNX graph takes raw pixels (0..16)."""
    pipe = Pipeline(
        [
            ("scale", StandardScaler()),
            (
                "mlp",
                MLPClassifier(
                    hidden_layer_sizes=(256, 128),
                    max_iter=500,
                    random_state=SEED,
                ),
            ),
        ]
    )
    pipe.fit(x_train, y_train)
    return pipe


def _drop_noop_casts(model: onnx.ModelProto) -> None:
    """Remove float32->float32 Cast nodes (skl2onnx emits one after the scaler).

    They are no-ops for onnxruntime, but onnxconverter_common's fp16 pass retypes
    their output to float16 while leaving ``to=FLOAT``, producing a model ORT refuses
    to load.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    elem_type = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    graph_outputs = {o.name for o in model.graph.output}
    for node in list(model.graph.node):
        to = [a.i for a in node.attribute if a.name == "to"]
        if (
            node.op_type == "Cast"
            and to == [onnx.TensorProto.FLOAT]
            and elem_type.get(node.input[0]) == onnx.TensorProto.FLOAT
            and node.output[0] not in graph_outputs
        ):
            src, dst = node.input[0], node.output[0]
            model.graph.node.remove(node)
            for other in model.graph.node:
                for i, name in enumerate(other.input):
                    if name == dst:
                        other.input[i] = src


def export_fp32(pipe: Pipeline) -> onnx.ModelProto:
    """skl2onnx export with plain tensor outputs (zipmap off).

    Outputs: ``label`` int64 [N] and ``probabilities`` float32 [N, 10].
    """
    model = to_onnx(
        pipe,
        initial_types=[(INPUT_NAME, FloatTensorType([None, N_FEATURES]))],
        # "div" makes the scaler plain Sub/Div instead of the ai.onnx.ml Scaler op, which
        # the fp16 converter can't type (it has no float16 kernel and no shape inference).
        options={id(pipe.steps[-1][1]): {"zipmap": False}, id(pipe.steps[0][1]): {"div": "div"}},
    )
    assert isinstance(model, onnx.ModelProto)
    _drop_noop_casts(model)
    onnx.checker.check_model(model)
    names = [o.name for o in model.graph.output]
    if names != ["label", "probabilities"]:
        raise RuntimeError(
            f"unexpected ONNX output names {names}; the manifest assumes label/probabilities"
        )
    return model


def make_session(path: Path) -> ort.InferenceSession:
    """CPU session with one intra-op thread: the same settings the Triton python model uses."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def predict(sess: ort.InferenceSession, x: FloatArray) -> IntArray:
    label = sess.run(["label"], {INPUT_NAME: x})[0]
    return np.asarray(label, dtype=np.int64).reshape(-1)


def median_latency_ms(run: Callable[[], object], runs: int, warmup: int = 20) -> float:
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run()
        samples.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(samples)


def quantize_int8(src: Path, dst: Path, x_probe: FloatArray) -> str:
    """Dynamic int8 quantization of the MatMul weights.

    Signed weights first; unsigned if this CPU/ORT build can't run the signed model.
    """
    errors: list[str] = []
    for weight_type in (QuantType.QInt8, QuantType.QUInt8):
        quantize_dynamic(str(src), str(dst), weight_type=weight_type)
        try:
            predict(make_session(dst), x_probe)
        except Exception as exc:
            errors.append(f"{weight_type.name}: {exc}")
            continue
        return f"onnxruntime.quantization.quantize_dynamic weight_type={weight_type.name}"
    raise RuntimeError("int8 quantization produced no runnable model: " + "; ".join(errors))


def convert_fp16(src: onnx.ModelProto, dst: Path, x_probe: FloatArray) -> str | None:
    """fp16 weights, fp32 I/O; None (variant dropped) if CPU onnxruntime can't run it."""
    try:
        from onnxconverter_common import float16  # type: ignore[import-untyped]
    except ImportError:
        print("fp16 skipped: onnxconverter-common is not installed", file=sys.stderr)
        return None
    model16 = float16.convert_float_to_float16(src, keep_io_types=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model16, str(dst))
    try:
        predict(make_session(dst), x_probe)
    except Exception as exc:
        print(f"fp16 skipped: onnxruntime CPU cannot run it: {exc}", file=sys.stderr)
        dst.unlink()
        dst.parent.rmdir()
        return None
    return "onnxconverter_common.float16.convert_float_to_float16 keep_io_types=True"


def measure(
    variant: str, path: Path, x_test: FloatArray, y_test: IntArray, runs: int, note: str
) -> Measurement:
    sess = make_session(path)
    accuracy = float(np.mean(predict(sess, x_test) == y_test))
    x1 = x_test[:1]
    x32 = x_test[:32]
    lat1 = median_latency_ms(lambda: sess.run(None, {INPUT_NAME: x1}), runs)
    lat32 = median_latency_ms(lambda: sess.run(None, {INPUT_NAME: x32}), runs)
    data = path.read_bytes()
    return Measurement(
        variant=variant,
        precision=variant,
        path=f"{variant}/model.onnx",
        sizeBytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        accuracy=round(accuracy, 4),
        latencyMsBatch1=round(lat1, 3),
        latencyMsBatch32=round(lat32, 3),
        note=note,
    )


# --- YAML rendering -----------------------------------------------------------------


class _Flow(dict[str, Any]):
    """A mapping that must be written in flow style ({a: 1}), as in the hand-written manifests."""


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        # PyYAML puts "- item" flush with the parent key by default; indent it like
        # the hand-written manifests.
        super().increase_indent(flow, False)


def _represent_flow(dumper: yaml.SafeDumper, data: _Flow) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True)


_Dumper.add_representer(_Flow, _represent_flow)

# Inline comments PyYAML can't emit; appended after dumping, keyed by the line's content.
_LINE_COMMENTS = (
    (
        re.compile(r"^(\s*)format: python$"),
        "# Triton python backend runs the ONNX file with onnxruntime",
    ),
    (re.compile(r"^(\s*)latencyMs: \S+$"), "# measured median, batch 1, onnxruntime CPU"),
)


def render_manifest(measurements: list[Measurement], base_uri: str, header: str) -> str:
    artifacts = [
        {
            "name": m.variant,
            "precision": m.precision,
            "format": "python",
            "uri": f"{base_uri.rstrip('/')}/{m.variant}/model.onnx",
            "sha256": m.sha256,
            "accuracy": m.accuracy,
            "sizeBytes": m.sizeBytes,
            "latencyMs": m.latencyMsBatch1,
        }
        for m in measurements
    ]
    doc = {
        "apiVersion": "geo.ai/v1alpha1",
        "kind": "GeoDeployment",
        "metadata": {"name": "digits"},
        "spec": {
            "model": {
                "name": "digits",
                "inputs": [_Flow(name=INPUT_NAME, dataType="TYPE_FP32", dims=[N_FEATURES])],
                "outputs": [
                    _Flow(name="label", dataType="TYPE_INT64", dims=[1]),
                    _Flow(name="probabilities", dataType="TYPE_FP32", dims=[N_CLASSES]),
                ],
                "artifacts": artifacts,
                "selection": {"policy": "best-score", "minAccuracyRatio": 0.95},
            },
            "triton": {
                "maxBatchSize": 32,
                "dynamicBatching": _Flow(maxQueueDelayMicroseconds=100),
            },
            "replicas": 1,
            "autoscaling": {"enabled": False},
        },
    }
    body = yaml.dump(
        doc,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=120,
    )
    lines = []
    for line in body.splitlines():
        for pattern, comment in _LINE_COMMENTS:
            if pattern.match(line):
                line = f"{line}    {comment}"
        lines.append(line)
    return header + "\n" + "\n".join(lines) + "\n"


def header(measurements: list[Measurement], date: str, held_out: int) -> str:
    summary = ", ".join(
        f"{m.variant} acc {m.accuracy:.4f} {m.latencyMsBatch1:g}ms" for m in measurements
    )
    return (
        f"# Generated by examples/digits/make_artifacts.py — measured on {date}: "
        f"sklearn digits MLP(256,128), {held_out} held-out; {summary}"
    )


def declared(manifest: Path, out: Path) -> tuple[str, list[Measurement]]:
    """The manifest's header line and its artifacts' declared figures, each with the sha256
    of its file in ``out``; SystemExit when a file is missing or not the declared size."""
    lines = manifest.read_text().splitlines()
    body = yaml.safe_load("\n".join(lines))
    report = out / "measurements.json"
    if not report.exists():
        raise SystemExit(f"{report} does not exist: build the artifacts first (no flag)")
    recorded = {v["variant"]: v for v in json.loads(report.read_text())["variants"]}
    measurements = []
    for a in body["spec"]["model"]["artifacts"]:
        path = out / a["name"] / "model.onnx"
        if not path.exists():
            raise SystemExit(f"{path} does not exist: build the artifacts first (no flag)")
        data = path.read_bytes()
        if len(data) != a["sizeBytes"]:
            raise SystemExit(
                f"{path} has {len(data)} bytes, {manifest} declares {a['sizeBytes']}: another "
                "build; rebuild with --yaml to measure it"
            )
        digest = hashlib.sha256(data).hexdigest()
        if recorded.get(a["name"], {}).get("sha256") != digest:
            raise SystemExit(f"{path} is not the file {report} measured: rebuild it")
        measurements.append(
            Measurement(
                variant=a["name"],
                precision=a["precision"],
                path=f"{a['name']}/model.onnx",
                sizeBytes=len(data),
                sha256=digest,
                accuracy=a["accuracy"],
                latencyMsBatch1=a["latencyMs"],
                latencyMsBatch32=0.0,
            )
        )
    return lines[0], measurements


def write_manifest(path: Path, measurements: list[Measurement], base_uri: str, top: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_manifest(measurements, base_uri, top))


# --- main ---------------------------------------------------------------------------


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
        "--runs", type=int, default=300, help="timed onnxruntime runs per batch size"
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    if args.manifest_only:
        yaml_path = args.yaml or DEFAULT_YAML
        top, measurements = declared(yaml_path, out)
        write_manifest(yaml_path, measurements, args.base_uri, top)
        print(f"wrote {yaml_path}: its figures, the sha256 of {out}/<variant>/model.onnx")
        return 0

    digits = load_digits()
    x = np.asarray(digits.data, dtype=np.float32)
    y = np.asarray(digits.target, dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, stratify=y, random_state=SEED
    )

    pipe = train(x_train, y_train)
    model32 = export_fp32(pipe)

    paths = {v: out / v / "model.onnx" for v in VARIANT_ORDER}
    paths["fp32"].parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model32, str(paths["fp32"]))
    notes: dict[str, str] = {
        "fp32": "skl2onnx export of StandardScaler(div)+MLPClassifier(256,128), zipmap=False"
    }

    paths["int8"].parent.mkdir(parents=True, exist_ok=True)
    notes["int8"] = quantize_int8(paths["fp32"], paths["int8"], x_test[:4])
    fp16_note = convert_fp16(model32, paths["fp16"], x_test[:4])
    if fp16_note is not None:
        notes["fp16"] = fp16_note

    measurements = [
        measure(v, paths[v], x_test, y_test, args.runs, notes[v])
        for v in VARIANT_ORDER
        if v in notes
    ]
    np.savez_compressed(out / "heldout.npz", x=x_test, y=y_test)

    today = dt.date.today().isoformat()
    report = {
        "generatedBy": "examples/digits/make_artifacts.py",
        "date": today,
        "dataset": {"name": "sklearn digits", "train": len(y_train), "heldOut": len(y_test)},
        "onnxOutputs": [o.name for o in model32.graph.output],
        "versions": {
            "python": sys.version.split()[0],
            "scikit-learn": sklearn.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
        },
        "latency": {
            "provider": "CPUExecutionProvider",
            "intraOpThreads": 1,
            "runs": args.runs,
            "stat": "median",
        },
        "variants": [asdict(m) for m in measurements],
    }
    (out / "measurements.json").write_text(json.dumps(report, indent=2) + "\n")

    yaml_path: Path | None = args.yaml
    if yaml_path is not None:
        top = header(measurements, today, len(y_test))
        write_manifest(yaml_path, measurements, args.base_uri, top)

    print(f"{'variant':8} {'bytes':>9} {'accuracy':>8} {'b1 ms':>7} {'b32 ms':>7}")
    for m in measurements:
        print(
            f"{m.variant:8} {m.sizeBytes:9d} {m.accuracy:8.4f} "
            f"{m.latencyMsBatch1:7.3f} {m.latencyMsBatch32:7.3f}"
        )
    written = f", {yaml_path}" if yaml_path is not None else ""
    print(f"wrote {out}/<variant>/model.onnx, {out / 'measurements.json'}{written}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/
    import _reproducible  # the same bytes on any x86-64 machine: see its docstring

    _reproducible.pin_arithmetic()
    raise SystemExit(main())
