"""The canary analysis' scrape: an unreadable pod is said once per outage (issue 31.8)."""

from __future__ import annotations

import logging

import pytest

from geo_operator.api import names
from geo_operator.controller import canary

METRICS = (
    "# TYPE nv_inference_request_success counter\n"
    'nv_inference_request_success{model="digits",version="1"} 5\n'
    "# TYPE nv_inference_request_failure counter\n"
    'nv_inference_request_failure{model="digits",reason="BACKEND",version="1"} 0\n'
    "# TYPE nv_inference_count counter\n"
    'nv_inference_count{model="digits",version="1"} 5\n'
    "# TYPE nv_inference_exec_count counter\n"
    'nv_inference_exec_count{model="digits",version="1"} 5\n'
    "# TYPE nv_inference_request_duration_us counter\n"
    'nv_inference_request_duration_us{model="digits",version="1"} 5000\n'
    "# TYPE nv_inference_queue_duration_us counter\n"
    'nv_inference_queue_duration_us{model="digits",version="1"} 50\n'
)


def test_metrics_unreadable_is_logged_once_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    answers: list[str | None] = [None] * 5 + [METRICS] * 2 + [None] * 3

    def fetch(url: str) -> str:
        answer = answers.pop(0)
        if answer is None:
            raise OSError("connection refused")
        return answer

    pod = {
        "metadata": {
            "name": "digits-canary-0",
            "labels": {names.TRACK_LABEL: names.CANARY_TRACK},
            "annotations": {names.METRICS_URL_ANNOTATION: "http://pod/metrics"},
        },
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    windows = canary.Windows(fetch)
    caplog.set_level(logging.INFO, logger=canary.__name__)
    got = [windows.figures(("ml", "digits"), 0.0, [pod], "digits", 10.0 + i) for i in range(10)]
    assert [g is None for g in got] == [True] * 5 + [False] * 2 + [True] * 3
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert said == [
        "pod digits-canary-0: metrics unreadable for the canary analysis: connection refused",
        "pod digits-canary-0: metrics readable again for the canary analysis",
        "pod digits-canary-0: metrics unreadable for the canary analysis: connection refused",
    ]
