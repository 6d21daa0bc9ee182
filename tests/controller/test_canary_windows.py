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


def _engine_metrics(success: int, ttft: dict[str, int], tpot: dict[str, int]) -> str:
    """Triton's counters and the engine's histograms under vLLM's names, as the pycode
    engine exports them (cumulative buckets, seconds)."""
    lines = [
        "# TYPE nv_inference_request_success counter",
        f'nv_inference_request_success{{model="pycode",version="1"}} {success}',
        "# TYPE nv_inference_request_failure counter",
        'nv_inference_request_failure{model="pycode",reason="BACKEND",version="1"} 0',
    ]
    for counter in ("count", "exec_count", "request_duration_us", "queue_duration_us"):
        lines.append(f"# TYPE nv_inference_{counter} counter")
        lines.append(f'nv_inference_{counter}{{model="pycode",version="1"}} {success}')
    for name, buckets in (
        ("vllm:time_to_first_token_seconds", ttft),
        ("vllm:time_per_output_token_seconds", tpot),
    ):
        lines.append(f"# TYPE {name} histogram")
        for le, count in buckets.items():
            lines.append(f'{name}_bucket{{model="pycode",le="{le}"}} {count}')
        lines.append(f'{name}_count{{model="pycode"}} {buckets["+Inf"]}')
        lines.append(f'{name}_sum{{model="pycode"}} 1.0')
    return "\n".join(lines) + "\n"


def _pod(name: str, track: str) -> dict[str, object]:
    return {
        "metadata": {
            "name": name,
            "labels": {names.TRACK_LABEL: track},
            "annotations": {names.METRICS_URL_ANNOTATION: f"http://{name}/metrics"},
        },
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def test_a_generative_tracks_token_latencies_are_the_windows_histogram_increase() -> None:
    # The stable had served 100 first tokens before the window; in it, 100 more, of which
    # 98 within 50 ms and 2 within 100 ms: p99 (rank 99 of 100) halfway into (0.05, 0.1].
    # Its 2,000 gaps in the window: 1,990 within 10 ms, 10 more within 25 ms.
    before = {
        "http://stable-0/metrics": _engine_metrics(
            100, {"0.05": 100, "0.1": 100, "+Inf": 100}, {"0.01": 3000, "0.025": 3000, "+Inf": 3000}
        ),
        "http://canary-0/metrics": _engine_metrics(
            0, {"0.05": 0, "0.1": 0, "+Inf": 0}, {"0.01": 0, "0.025": 0, "+Inf": 0}
        ),
    }
    after = {
        "http://stable-0/metrics": _engine_metrics(
            200, {"0.05": 198, "0.1": 200, "+Inf": 200}, {"0.01": 4990, "0.025": 5000, "+Inf": 5000}
        ),
        # the canary: 50 requests, all first tokens within 50 ms; 40 gaps only
        "http://canary-0/metrics": _engine_metrics(
            50, {"0.05": 50, "0.1": 50, "+Inf": 50}, {"0.01": 40, "0.025": 40, "+Inf": 40}
        ),
    }
    served = before
    windows = canary.Windows(lambda url: served[url])
    pods = [_pod("stable-0", names.STABLE_TRACK), _pod("canary-0", names.CANARY_TRACK)]
    key = ("ml", "pycode")
    windows.open(key, 0.0, pods, "pycode", generative=True)
    served = after
    got = windows.figures(key, 0.0, pods, "pycode", 60.0, generative=True)
    assert got is not None
    mine, stable = got
    assert (stable.requests, stable.first_tokens, stable.tokens) == (100, 100, 2000)
    assert stable.ttft_p99_ms == pytest.approx(75.0)  # 50 + 50 x (99 - 98) / 2
    assert stable.itl_p99_ms == pytest.approx(10.0 * 1980 / 1990)  # rank 1,980 in (0, 10 ms]
    assert (mine.requests, mine.first_tokens, mine.tokens) == (50, 50, 40)
    assert mine.ttft_p99_ms == pytest.approx(49.5)  # within (0, 0.05]: rank 49.5 of 50
    # A model that is not generative has no engine figures, whatever the pods export.
    plain = windows.figures(key, 0.0, pods, "pycode", 61.0)
    assert plain is not None and plain[1].first_tokens is None and plain[1].itl_p99_ms is None
