"""`geo rollout status`'s words: the state, the last analysis' gates, the history."""

from __future__ import annotations

import pytest

from geo_operator import cli
from geo_operator.api import models
from geo_operator.cli import rollout


def _status() -> models.RolloutStatus:
    return models.RolloutStatus.model_validate(
        {
            "phase": "Progressing",
            "step": 0,
            "weight": 50,
            "canaryHash": "c" * 16,
            "stableHash": "s" * 16,
            "canary": {"requests": 60, "errors": 0, "p99Ms": 5.5},
            "stable": {"requests": 180, "errors": 1, "p99Ms": 4.0},
            "verdict": {
                "outcome": "pass",
                "gates": [{"gate": "traffic", "outcome": "pass", "message": "60 requests"}],
            },
            "lastAnalysisTime": "2026-12-01T12:00:00Z",
            "reason": "passed at 50 %",
            "history": [
                {
                    "artifact": "int8",
                    "uri": "http://x/int8.onnx",
                    "configHash": "s" * 16,
                    "maxBatchSize": 32,
                    "reason": "rolled to every pod",
                    "time": "2026-12-01T11:00:00Z",
                }
            ],
        }
    )


def test_status_in_words() -> None:
    text = rollout.describe("ml", "digits", _status())
    lines = text.splitlines()
    assert lines[0] == "geodeployment ml/digits: rollout Progressing"
    assert "step:     1, canary weight 50 %" in text
    assert "canary  60 requests, 0 failed, p99 5.5 ms" in text
    assert "stable  180 requests, 1 failed, p99 4.0 ms" in text
    assert any(line.split()[:2] == ["traffic", "pass"] for line in lines)
    revision = next(line for line in lines if line.strip().startswith("1 "))
    assert "ssssssssssssssss" in revision and "int8" in revision and "32" in revision


def test_a_generative_canarys_token_latencies_in_words() -> None:
    status = _status().model_copy(
        update={
            "canary": models.TrackFigures.model_validate(
                {
                    "requests": 40,
                    "errors": 0,
                    "p99Ms": 900.0,
                    "firstTokens": 40,
                    "ttftP99Ms": 31.5,
                    "tokens": 1240,
                    "itlP99Ms": 4.2,
                }
            )
        }
    )
    text = rollout.describe("ml", "pycode", status)
    assert (
        "canary  40 requests, 0 failed, p99 900.0 ms, TTFT p99 31.5 ms, "
        "inter-token p99 4.2 ms over 1240 tokens"
    ) in text


def test_no_history_yet() -> None:
    text = rollout.describe("ml", "digits", models.RolloutStatus())
    assert "rollout Idle" in text and "(none yet)" in text


def test_action_and_name_are_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["rollout", "promote"])
    assert exited.value.code == 2
    assert "name" in capsys.readouterr().err
