"""The pycode family (examples/pycode/make_artifacts.py): what it measured is graded as
quantization grades a model, and every file is the one its figures describe."""

from __future__ import annotations

import hashlib
import json
import pathlib

QUANTS = ("q8_0", "q5_k_m", "q4_k_m", "q3_k_m", "q2_k")


def _report(pycode: pathlib.Path) -> dict[str, dict[str, float]]:
    return dict(json.loads((pycode / "measurements.json").read_text())["artifacts"])


def test_every_file_is_the_one_its_figures_describe(pycode: pathlib.Path) -> None:
    for name, entry in _report(pycode).items():
        path = pycode / str(entry["file"])
        assert path.stat().st_size == entry["bytes"], name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], name
        assert path.read_bytes()[:4] == b"GGUF", name


def test_fewer_bits_lose_more_and_the_miscalibrated_member_is_far_off(
    pycode: pathlib.Path,
) -> None:
    report = _report(pycode)
    reference = report["f16"]
    assert reference["klDivergence"] == 0 and reference["agreement"] == 1
    kld = [report[q]["klDivergence"] for q in QUANTS]
    assert kld == sorted(kld) and kld[0] < 0.01 < kld[-1], kld  # 8 bits near, 2 bits far
    sizes = [report[q]["bytes"] for q in QUANTS]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] < reference["bytes"]
    assert report["q8_0"]["agreement"] > 0.95
    assert report["q8_0"]["perplexity"] < 1.01 * reference["perplexity"]
    bad = report["q2_k-miscalibrated"]
    assert bad["perplexity"] > 2 * reference["perplexity"], bad
    assert bad["klDivergence"] > 5 * report["q2_k"]["klDivergence"], bad
    student = report["student"]
    assert reference["perplexity"] < student["perplexity"] < bad["perplexity"]
    assert student["prefillTokensPerSecond"] > reference["prefillTokensPerSecond"]  # 1 layer
