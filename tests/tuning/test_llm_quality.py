"""tuning/llm_quality: perplexity, KL divergence and top-1 agreement, pure on made-up
logits and for real with llama.cpp, where they give the family's recorded figures."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from geo_operator.tuning import llm_quality


def test_windows_start_with_bos_and_drop_a_short_tail() -> None:
    assert llm_quality.windows(list(range(10)), 4, bos=1) == [
        [1, 0, 1, 2],
        [1, 3, 4, 5],
        [1, 6, 7, 8],
    ]


def test_a_model_that_knows_the_text_scores_perplexity_1_and_itself_agrees() -> None:
    window = [1, 5, 6, 7, 8, 9]
    sure = np.full((6, 12), -50.0)
    for position, token in enumerate(window[1:]):
        sure[position, token] = 50.0  # certain of the next token
    flat = np.zeros((6, 12))
    assert llm_quality.score([sure], [sure], [window]) == llm_quality.Quality(1.0, 0.0, 1.0, 3)
    uniform = llm_quality.score([flat], [sure], [window])
    assert uniform.perplexity == pytest.approx(12.0)  # no idea: one in twelve
    assert uniform.kl_divergence == pytest.approx(np.log(12), rel=1e-4)
    with pytest.raises(ValueError, match="shorter than one context"):
        llm_quality.score([], [], [])


def test_llama_cpp_gives_the_familys_recorded_figures(pycode: pathlib.Path) -> None:
    import sys

    sys.path.insert(0, str(pycode.parent))
    import make_artifacts  # the family's own tokenizer settings

    recorded = json.loads((pycode / "measurements.json").read_text())["artifacts"]
    text = (pycode / "heldout.txt").read_text()
    tokens = make_artifacts.tokenize(pycode / "f16" / "model.gguf", text)
    held = tokens[: make_artifacts.HELD_OUT_TOKENS - make_artifacts.HELD_OUT_TOKENS // 256]
    batch = llm_quality.windows(held, 256, bos=1)
    for name in ("q4_k_m", "q2_k-miscalibrated"):
        got = llm_quality.measure(
            str(pycode / name / "model.gguf"), str(pycode / "f16" / "model.gguf"), batch
        )
        assert got.perplexity == pytest.approx(recorded[name]["perplexity"], rel=1e-3), name
        assert got.agreement == pytest.approx(recorded[name]["agreement"], abs=2e-3), name
        assert got.kl_divergence == pytest.approx(recorded[name]["klDivergence"], rel=1e-2), name
