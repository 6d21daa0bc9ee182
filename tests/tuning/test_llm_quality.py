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


def test_the_jobs_measure_from_held_out_text_gives_the_same_figures(pycode: pathlib.Path) -> None:
    """What the tuning Job's `geo tune-llm` runs: the text tokenized by the reference's
    vocabulary, 8 windows of 256, the candidate and the reference's own figures."""
    recorded = json.loads((pycode / "measurements.json").read_text())["artifacts"]
    text = (pycode / "heldout.txt").read_text()
    reference = str(pycode / "f16" / "model.gguf")
    bad = str(pycode / "q2_k-miscalibrated" / "model.gguf")
    got, ref = llm_quality.measure_text(bad, reference, text, context=256, max_windows=8)
    assert got.perplexity == pytest.approx(recorded["q2_k-miscalibrated"]["perplexity"], rel=1e-3)
    assert ref.perplexity == pytest.approx(recorded["f16"]["perplexity"], rel=1e-3)
    assert ref.agreement == 1.0 and ref.kl_divergence == 0.0 and got.scored_tokens == 8 * 128
    with pytest.raises(ValueError, match="shorter than one window of 256"):
        llm_quality.measure_text(bad, reference, "def f(): pass\n", context=256, max_windows=8)


def test_each_metric_is_a_score_in_0_to_1_that_the_reference_gets_1_on() -> None:
    from geo_operator.api import models

    ref = llm_quality.Quality(perplexity=20.0, kl_divergence=0.0, agreement=1.0, scored_tokens=9)
    worse = llm_quality.Quality(perplexity=40.0, kl_divergence=0.5, agreement=0.6, scored_tokens=9)
    better = llm_quality.Quality(perplexity=10.0, kl_divergence=0.1, agreement=0.9, scored_tokens=9)
    m = models.EvaluationMetric
    expected = {m.AGREEMENT: 0.6, m.PERPLEXITY: 0.5, m.KL_DIVERGENCE: round(np.exp(-0.5), 4)}
    for metric, value in expected.items():
        scored = llm_quality.as_score(worse, ref, metric, "f16")
        assert scored.value == value and scored.metric is metric and scored.samples == 9
        assert (scored.perplexity, scored.kl_divergence, scored.agreement) == (40.0, 0.5, 0.6)
        assert llm_quality.as_score(ref, ref, metric, None).value == 1.0
    assert llm_quality.as_score(better, ref, m.PERPLEXITY, "f16").value == 1.0  # at most 1
    with pytest.raises(ValueError, match="not accuracy"):
        llm_quality.as_score(worse, ref, m.ACCURACY, "f16")
