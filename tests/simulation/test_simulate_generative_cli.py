"""`geo simulate` on a generative spec: token replay per policy, and the traces it refuses."""

from __future__ import annotations

import json
import pathlib

import pytest
from tests.support.paths import ROOT

from geo_operator import cli

PYCODE = str(ROOT / "manifests/examples/simulate-pycode.yaml")
DIGITS = str(ROOT / "manifests/examples/digits-simulate.yaml")
TRACE = str(ROOT / "traces/azure-llm-2023-code.csv")
ALL = "geo,keda-waiting,aibrix-kpa,llmd-wva,dynamo-planner,hpa,oracle"


def test_every_generative_policy_prints_the_fields_of_record(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["simulate", "-f", PYCODE, "--trace", TRACE, "--policy", ALL, "--duration", "600"]
    assert cli.main([*argv, "-o", "json"]) == 0
    out = capsys.readouterr()
    rows = json.loads(out.out)
    assert [r["policy"] for r in rows] == ALL.split(",")
    for row in rows:
        assert isinstance(row["sloViolationSeconds"], int) and row["sloViolationSeconds"] >= 0
        assert row["replicaSeconds"] > 0 and "worstTtftP99Ms" in row
    assert "TTFT p99 1000 ms" in out.err


def test_a_trace_without_token_columns_is_refused_for_a_generative_spec(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.csv"
    path.write_text("TIMESTAMP\n2023-11-16 18:17:03\n2023-11-16 18:17:04\n")
    assert cli.main(["simulate", "-f", PYCODE, "--trace", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no ContextTokens, GeneratedTokens columns" in err and "Traceback" not in err


def test_a_request_shape_or_a_predictive_policy_is_refused_for_a_generative_spec(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["simulate", "-f", PYCODE, "--synthetic", "spike"]) == 2
    err = capsys.readouterr().err
    assert "model.kind is generative" in err and "token-level simulator" in err
    assert cli.main(["simulate", "-f", PYCODE, "--trace", TRACE, "--policy", "kpa"]) == 2
    assert "unknown policy kpa for a generative spec" in capsys.readouterr().err
    assert cli.main(["simulate", "-f", DIGITS, "--mix", "shift"]) == 2
    assert "--mix is a generative spec's" in capsys.readouterr().err


@pytest.mark.parametrize("spec", [PYCODE, DIGITS])
def test_a_trace_ten_years_long_is_refused_naming_its_span(
    spec: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "decade.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2013-11-16 18:17:03,100,10\n2023-11-16 18:17:04,100,10\n"
    )
    assert cli.main(["simulate", "-f", spec, "--trace", str(path), "--policy", "geo"]) == 2
    err = capsys.readouterr().err
    assert "spans 315532801 s (3652.0 days)" in err and "Traceback" not in err
    assert "at most 1209600 s (14 days)" in err


def test_a_synthetic_mix_replays(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", "-f", PYCODE, "--mix", "shift", "--duration", "300", "--policy", "geo"]
    assert cli.main([*argv, "-o", "json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["policy"] == "geo" and row["trace"] == "shift"
