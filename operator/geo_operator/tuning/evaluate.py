"""Accuracy measured, not declared: a held-out set sent through a live Triton, scored.

The held-out file is an ``.npz`` a user makes from numpy in one line::

    numpy.savez("heldout.npz", input=x, labels=y)

one array per model input, named as the input (``spec.model.inputs[].name``),
shaped ``[N, *dims]`` with the input's data type, and ``labels`` (``[N]`` or
``[N, 1]``, integers) for the ``accuracy`` metric. The ``agreement`` metric needs no
labels: it scores the fraction of answers equal to a reference artifact's.
`load` checks all of that and names what is wrong (`EvaluationError`); `predict`
sends the set through Triton in batches; `accuracy` and `agreement` score the answers.

`run` is what the tuning Job does after tuning (``geo tune --evaluate``): the model's
tensors from Triton's own config, the set through the candidate at its tuned
max_batch_size, and for ``agreement`` the same set through the reference artifact,
loaded next to it in the pod's repository, loaded and unloaded by name. The score is
recorded in the candidate's ``status.tuning[].result.accuracy``.
"""

from __future__ import annotations

import dataclasses
import pathlib
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tritonclient.http as httpclient

from geo_operator.api import models
from geo_operator.tuning import measure

LABELS = "labels"
DTYPES = measure.DTYPES  # the held-out arrays' dtypes are the tuner's request dtypes


class EvaluationError(ValueError):
    """The held-out file can't be used as it is; the message says what is wrong."""


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """A checked held-out set: one array per model input, and labels when it has them."""

    inputs: Mapping[str, np.ndarray[Any, Any]]
    labels: np.ndarray[Any, Any] | None
    samples: int


@dataclasses.dataclass(frozen=True)
class Score:
    metric: str  # accuracy | agreement
    value: float
    samples: int


def load(
    path: str | pathlib.Path, inputs: Sequence[models.TensorSpec], *, need_labels: bool
) -> HeldOut:
    """Read and check ``path`` against the model's inputs."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise EvaluationError(f"{path}: not a readable .npz file ({error})") from None
    checked = {spec.name: _input(path, arrays, spec) for spec in inputs}
    labels = _labels(path, arrays) if need_labels or LABELS in arrays else None
    counts = {name: len(a) for name, a in checked.items()}
    if labels is not None:
        counts[LABELS] = len(labels)
    if len(set(counts.values())) != 1:
        raise EvaluationError(f"{path}: arrays differ in length: {counts}")
    samples = next(iter(counts.values()))
    if samples == 0:
        raise EvaluationError(f"{path}: the held-out set is empty")
    return HeldOut(checked, labels, samples)


def _input(
    path: str | pathlib.Path, arrays: Mapping[str, np.ndarray[Any, Any]], spec: models.TensorSpec
) -> np.ndarray[Any, Any]:
    if spec.name not in arrays:
        found = ", ".join(sorted(arrays)) or "none"
        raise EvaluationError(f"{path}: no array {spec.name!r} for input {spec.name} (has {found})")
    array = arrays[spec.name]
    wanted = DTYPES.get(spec.data_type)
    if wanted is None:
        raise EvaluationError(f"input {spec.name}: {spec.data_type} is not supported")
    if array.dtype != wanted[1]:
        raise EvaluationError(
            f"{path}: array {spec.name!r} is {array.dtype}, input {spec.name} wants "
            f"{np.dtype(wanted[1]).name} ({spec.data_type})"
        )
    dims = list(spec.dims)
    shape = list(array.shape[1:])
    if array.ndim != len(dims) + 1 or any(
        d not in (-1, s) for d, s in zip(dims, shape, strict=True)
    ):
        raise EvaluationError(
            f"{path}: array {spec.name!r} has shape {list(array.shape)}, input {spec.name} "
            f"wants [N, {', '.join(str(d) for d in dims)}]"
        )
    return array


def _labels(
    path: str | pathlib.Path, arrays: Mapping[str, np.ndarray[Any, Any]]
) -> np.ndarray[Any, Any]:
    if LABELS not in arrays:
        raise EvaluationError(f"{path}: no array {LABELS!r} (the accuracy metric needs labels)")
    labels = arrays[LABELS]
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels.reshape(-1)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise EvaluationError(
            f"{path}: {LABELS!r} must be integers shaped [N] or [N, 1], "
            f"got {labels.dtype} {list(labels.shape)}"
        )
    return labels


def predict(
    url: str,
    model: str,
    heldout: HeldOut,
    inputs: Sequence[models.TensorSpec],
    output: str,
    batch: int = 32,
) -> np.ndarray[Any, Any]:
    """The model's answers (``output``, flattened to one per sample) from the Triton at
    ``url``, in batches of at most ``batch`` (keep it within max_batch_size)."""
    client = httpclient.InferenceServerClient(url)
    try:
        answers = []
        for start in range(0, heldout.samples, batch):
            request = []
            for spec in inputs:
                part = np.ascontiguousarray(heldout.inputs[spec.name][start : start + batch])
                tensor = httpclient.InferInput(
                    spec.name, list(part.shape), DTYPES[spec.data_type][0]
                )
                tensor.set_data_from_numpy(part)
                request.append(tensor)
            result = client.infer(model, request, outputs=[httpclient.InferRequestedOutput(output)])
            answers.append(top1(np.asarray(result.as_numpy(output)).reshape(len(part), -1)))
        return np.concatenate(answers)
    finally:
        client.close()


def top1(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """One answer per row: the class with the highest score, or the row's one value (a
    class index output)."""
    return values.argmax(axis=1) if values.shape[1] > 1 else values[:, 0]


def tensors(config: Mapping[str, Any], kind: str) -> list[models.TensorSpec]:
    """The model's inputs (``kind`` "input") or outputs ("output") from Triton's JSON config."""
    return [
        models.TensorSpec(
            name=t["name"], data_type=t["data_type"], dims=[int(d) for d in t["dims"]]
        )
        for t in config.get(kind) or ()
    ]


def scored_output(outputs: Sequence[models.TensorSpec], wanted: str | None = None) -> str:
    """The output scored: ``wanted``, else the first with more than one value per sample (class
    scores), else the first."""
    names = [o.name for o in outputs]
    if wanted is not None:
        if wanted not in names:
            raise EvaluationError(f"no output {wanted!r} to score (the model has {names})")
        return wanted
    if not outputs:
        raise EvaluationError("the model has no output to score")
    wide = [o.name for o in outputs if int(np.prod([max(d, 1) for d in o.dims])) > 1]
    return wide[0] if wide else outputs[0].name


def _prepared(
    url: str,
    model: str,
    path: str | pathlib.Path,
    output: str | None,
    batch: int,
    need_labels: bool,
) -> tuple[HeldOut, list[models.TensorSpec], str, int]:
    """The held-out set checked against the live model's config, the output scored and the
    batch size to send (within its max_batch_size)."""
    client = httpclient.InferenceServerClient(url)
    try:
        config = client.get_model_config(model)
    finally:
        client.close()
    inputs, outputs = tensors(config, "input"), tensors(config, "output")
    heldout = load(path, inputs, need_labels=need_labels)
    size = max(1, min(batch, int(config.get("max_batch_size") or 1)))
    return heldout, inputs, scored_output(outputs, output), size


def run(
    url: str,
    model: str,
    path: str | pathlib.Path,
    metric: models.EvaluationMetric,
    *,
    reference_model: str | None = None,
    reference: str | None = None,
    output: str | None = None,
    batch: int = 32,
) -> models.MeasuredAccuracy:
    """Score ``model`` (loaded on the Triton at ``url``) on the held-out file at ``path``.

    agreement: against ``reference_model`` (a model in the same repository, loaded for this
    and unloaded after); without one, ``model`` is the reference itself and agrees fully.
    ``reference`` is the reference artifact's name, for the record.
    """
    agreement_ = metric is models.EvaluationMetric.AGREEMENT
    heldout, inputs, name, size = _prepared(url, model, path, output, batch, not agreement_)
    predicted = predict(url, model, heldout, inputs, name, size)
    if not agreement_:
        assert heldout.labels is not None
        score = accuracy(predicted, heldout.labels)
    elif reference_model is None:
        score = agreement(predicted, predicted)
    else:
        score = agreement(predicted, _reference_answers(url, reference_model, heldout, name, batch))
    return models.MeasuredAccuracy(
        metric=metric,
        value=round(score.value, 4),
        samples=score.samples,
        reference=reference if agreement_ else None,
    )


def against(
    url: str,
    reference_url: str,
    model: str,
    path: str | pathlib.Path,
    *,
    output: str | None = None,
    batch: int = 32,
) -> models.MeasuredAccuracy:
    """Agreement of ``model`` on the Triton at ``url`` with the same model on another Triton
    (``reference_url``: what serves now), on the held-out file at ``path``: a rollout's
    canary against its stable, where the reference artifact is not loaded beside it."""
    heldout, inputs, name, size = _prepared(url, model, path, output, batch, False)
    score = agreement(
        predict(url, model, heldout, inputs, name, size),
        predict(reference_url, model, heldout, inputs, name, size),
    )
    return models.MeasuredAccuracy(
        metric=models.EvaluationMetric.AGREEMENT,
        value=round(score.value, 4),
        samples=score.samples,
        reference="stable",
    )


def _reference_answers(
    url: str, model: str, heldout: HeldOut, output: str, batch: int
) -> np.ndarray[Any, Any]:
    """The reference's answers: loaded from the repository, asked, unloaded (its memory back
    before anything else runs)."""
    client = httpclient.InferenceServerClient(url)
    try:
        try:
            client.load_model(model)
        except Exception as error:  # InferenceServerException: Triton says why
            raise EvaluationError(f"the reference model {model} did not load: {error}") from None
        config = client.get_model_config(model)
        size = max(1, min(batch, int(config.get("max_batch_size") or 1)))
        try:
            return predict(url, model, heldout, tensors(config, "input"), output, size)
        finally:
            client.unload_model(model)
    finally:
        client.close()


def accuracy(predicted: np.ndarray[Any, Any], labels: np.ndarray[Any, Any]) -> Score:
    """Top-1 accuracy: the fraction of answers equal to the label."""
    _same_length(predicted, labels)
    return Score("accuracy", float(np.mean(predicted == labels)), len(labels))


def agreement(predicted: np.ndarray[Any, Any], reference: np.ndarray[Any, Any]) -> Score:
    """The fraction of answers equal to the reference artifact's (no labels needed)."""
    _same_length(predicted, reference)
    return Score("agreement", float(np.mean(predicted == reference)), len(reference))


def _same_length(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> None:
    if len(a) != len(b) or len(a) == 0:
        raise EvaluationError(f"cannot score {len(a)} answers against {len(b)}")
