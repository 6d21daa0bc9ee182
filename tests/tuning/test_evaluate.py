"""The held-out evaluator: its file format and errors, its scores, and the real Triton."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from tests.support.examples import example_target

from geo_operator.api import models
from geo_operator.triton import local
from geo_operator.tuning import evaluate

INPUTS = [models.TensorSpec(name="input", data_type="TYPE_FP32", dims=[64])]


def _npz(tmp_path: pathlib.Path, **arrays: np.ndarray) -> pathlib.Path:
    path = tmp_path / "heldout.npz"
    np.savez(path, **arrays)  # the one line a user writes
    return path


def _x(n: int = 5) -> np.ndarray:
    return np.zeros((n, 64), dtype=np.float32)


def test_a_good_file_loads(tmp_path: pathlib.Path) -> None:
    held = evaluate.load(_npz(tmp_path, input=_x(), labels=np.arange(5)), INPUTS, need_labels=True)
    assert held.samples == 5 and held.inputs["input"].shape == (5, 64)
    assert held.labels is not None and list(held.labels) == [0, 1, 2, 3, 4]
    column = evaluate.load(
        _npz(tmp_path, input=_x(), labels=np.arange(5).reshape(5, 1)), INPUTS, need_labels=True
    )
    assert column.labels is not None and column.labels.shape == (5,)  # [N, 1] is fine too
    unlabeled = evaluate.load(_npz(tmp_path, input=_x()), INPUTS, need_labels=False)
    assert unlabeled.labels is None  # agreement needs none


@pytest.mark.parametrize(
    ("arrays", "words"),
    [
        ({"x": _x(), "labels": np.arange(5)}, "no array 'input' for input input (has labels, x)"),
        (
            {"input": _x().astype(np.float64), "labels": np.arange(5)},
            "array 'input' is float64, input input wants float32 (TYPE_FP32)",
        ),
        (
            {"input": np.zeros((5, 63), np.float32), "labels": np.arange(5)},
            "array 'input' has shape [5, 63], input input wants [N, 64]",
        ),
        ({"input": _x()}, "no array 'labels' (the accuracy metric needs labels)"),
        (
            {"input": _x(), "labels": np.zeros(5, np.float32)},
            "'labels' must be integers shaped [N] or [N, 1], got float32 [5]",
        ),
        ({"input": _x(4), "labels": np.arange(5)}, "arrays differ in length"),
        ({"input": _x(0), "labels": np.arange(0)}, "the held-out set is empty"),
    ],
)
def test_a_bad_file_says_what_is_wrong(
    tmp_path: pathlib.Path, arrays: dict[str, np.ndarray], words: str
) -> None:
    with pytest.raises(evaluate.EvaluationError) as error:
        evaluate.load(_npz(tmp_path, **arrays), INPUTS, need_labels=True)
    assert words in str(error.value)


def test_not_an_npz_says_so(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "heldout.npz"
    path.write_text("input,labels\n")
    with pytest.raises(evaluate.EvaluationError, match=r"not a readable \.npz file"):
        evaluate.load(path, INPUTS, need_labels=True)


def test_scores_on_hand_worked_answers() -> None:
    predicted = np.array([1, 2, 3, 4])
    assert evaluate.accuracy(predicted, np.array([1, 2, 0, 4])) == evaluate.Score(
        "accuracy", 0.75, 4
    )
    assert evaluate.agreement(predicted, np.array([9, 2, 3, 9])).value == 0.5
    with pytest.raises(evaluate.EvaluationError, match="cannot score 4 answers against 3"):
        evaluate.accuracy(predicted, np.array([1, 2, 3]))


@pytest.mark.triton
def test_accuracy_through_the_real_triton_is_the_measured_one(
    server: local.TritonServer, artifacts: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """The example's held-out digits, in the documented format, through the real Triton
    serving the example's artifact: the score is the accuracy its script measured."""
    old = np.load(artifacts / "heldout.npz")
    path = _npz(tmp_path, input=old["x"], labels=old["y"])
    target = example_target()
    held = evaluate.load(path, target.spec.model.inputs, need_labels=True)
    answers = evaluate.predict(
        server.http_url, "digits", held, target.spec.model.inputs, "label", batch=32
    )
    assert held.labels is not None
    score = evaluate.accuracy(answers, held.labels)
    assert score.samples == 540
    assert abs(score.value - target.artifact.accuracy) < 0.002
    assert evaluate.agreement(answers, answers).value == 1.0
