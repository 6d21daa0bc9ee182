"""`geo tune` against the real tritonserver, in explicit model-control mode.

The server serves the example's repository exactly as the `server` fixture of
conftest.py lays it out (max_batch_size 32, queue delay 20 ms), but starts with
``--model-control-mode=explicit`` so the tuner can load config overrides. A
small grid (3 batch sizes × 2 delays, 1 s per load level) keeps it under a
minute; the checks are on consistency, not on figures (the machine is shared).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
import tritonclient.http as httpclient
from tests.support.examples import example_repository

from geo_operator import cli
from geo_operator.api import models
from geo_operator.builders import tuning
from geo_operator.triton import local

pytestmark = pytest.mark.triton

BUDGET_MS = 100.0  # generous: the point is the mechanics, not this machine's latency


@pytest.fixture(scope="module")
def explicit_server(
    artifacts: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[local.TritonServer]:
    repo = example_repository(artifacts, tmp_path_factory.mktemp("tune-repository"))
    with local.TritonServer(
        repo,
        model_control_mode="explicit",
        load_models=["digits"],
        log_path=repo.parent / "triton-tune.log",
    ) as triton:
        yield triton


def _config(server: local.TritonServer) -> dict[str, Any]:
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        return dict(client.get_model_config("digits"))
    finally:
        client.close()


def test_tune_loads_configurations_and_reports_consistent_figures(
    explicit_server: local.TritonServer, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _config(explicit_server)
    assert before["max_batch_size"] == 32
    assert int(before["dynamic_batching"]["max_queue_delay_microseconds"]) == 20000

    code = cli.main(
        [
            "tune",
            "--url",
            explicit_server.http_url,
            "--model",
            "digits",
            "--latency-budget-ms",
            str(BUDGET_MS),
            "--candidates",
            "1,4,16",
            "--delays",
            "0,500",
            "--concurrency",
            "1,8",
            "--seconds",
            "1",
            "--full-sweep",
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = json.loads(captured.out)
    quick, sweep = out["quick"], out["sweep"]

    # One progress line per measurement actually taken; the sweep reused the quick ones.
    progress = [line for line in captured.err.splitlines() if line.startswith("[")]
    assert len(progress) == out["measurementsTaken"] == sweep["measurements"] == 6
    assert quick["measurements"] <= 6

    rows = {(r["maxBatchSize"], r["maxQueueDelayMicroseconds"]): r for r in sweep["results"]}
    assert set(rows) == {(b, d) for b in (1, 4, 16) for d in (0, 500)}
    for row in quick["results"]:
        # The same measurement in both tables (only the "chosen" mark may differ: the
        # quick search can stop at a point the sweep beats).
        same = rows[(row["maxBatchSize"], row["maxQueueDelayMicroseconds"])]
        assert {**same, "chosen": None} == {**row, "chosen": None}

    for row in sweep["results"]:
        for level in row["levels"]:
            assert level["requests"] > 0
            assert level["throughput"] == pytest.approx(level["requests"] / level["seconds"])
            assert level["p50_ms"] <= level["p99_ms"]
            assert level["within_budget"] == (level["p99_ms"] <= BUDGET_MS)
            # Triton never forms a batch above max_batch_size, nor below one item.
            assert 1.0 <= level["avg_batch"] <= row["maxBatchSize"], row
        if row["maxBatchSize"] == 1:
            assert all(level["avg_batch"] == 1.0 for level in row["levels"]), row
        fitting = [lv for lv in row["levels"] if lv["within_budget"]]
        if row["runs"] > 1:  # a confirmed config: mean of its runs, the last run's levels
            continue
        assert row["withinBudget"] == bool(fitting)
        if fitting:
            assert row["throughput"] == pytest.approx(
                max(lv["throughput"] for lv in fitting), abs=0.1
            )

    # The chosen configuration is the best within the budget in the sweep's table...
    fitting_rows = [r for r in sweep["results"] if r["withinBudget"]]
    best = max(fitting_rows, key=lambda r: r["throughput"])
    assert sweep["chosen"] == {
        "maxBatchSize": best["maxBatchSize"],
        "maxQueueDelayMicroseconds": best["maxQueueDelayMicroseconds"],
    }
    # ...Triton serves it now: the loaded config really changed...
    chosen = out["loaded"]
    assert chosen == sweep["chosen"]
    after = _config(explicit_server)
    assert after["max_batch_size"] == chosen["maxBatchSize"] != 32
    delay = int(after["dynamic_batching"]["max_queue_delay_microseconds"])
    assert delay == chosen["maxQueueDelayMicroseconds"]
    # ...the quick search's choice is one it measured, within the budget...
    assert quick["chosen"] is not None
    quick_pick = rows[
        (quick["chosen"]["maxBatchSize"], quick["chosen"]["maxQueueDelayMicroseconds"])
    ]
    assert quick_pick["withinBudget"]
    # ...and the rest of the configuration is untouched.
    assert after["input"] == before["input"] and after["backend"] == "python"


def test_tune_text_output_and_dynamic_batching_off(
    explicit_server: local.TritonServer,
    capsys: pytest.CaptureFixture[str],
    tmp_path: pathlib.Path,
) -> None:
    result_file = tmp_path / "termination-log"
    code = cli.main(
        [
            "tune",
            "--result-file",
            str(result_file),
            "--wait-seconds",
            "5",
            "--url",
            explicit_server.http_url,
            "--model",
            "digits",
            "--latency-budget-ms",
            "1000",  # this test is about the output, not the budget: never over it
            "--candidates",
            "2",
            "--delays",
            "off",
            "--concurrency",
            "4",
            "--seconds",
            "0.5",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "mbs=2 delay=off" in captured.out and "<- chosen" in captured.out
    assert "measurements taken: 1" in captured.out
    # What the tuning Job's operator reads from the termination message.
    result = tuning.parse_result(result_file.read_text())
    assert isinstance(result, models.TunedBatch), result
    assert (result.max_batch_size, result.max_queue_delay_microseconds) == (2, None)
    assert (result.measurements, result.grid_size) == (1, 1) and result.throughput > 0
    after = _config(explicit_server)
    assert after["max_batch_size"] == 2
    assert "dynamic_batching" not in after or not after["dynamic_batching"]


def test_tune_refuses_an_unreachable_server(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    port = local.free_ports(1)[0]
    code = cli.main(
        ["tune", "--url", f"127.0.0.1:{port}", "--model", "digits", "--latency-budget-ms", "5"]
    )
    assert code == 2
    assert "cannot read digits's config" in capsys.readouterr().err
    # With --wait-seconds it waits, then says so, also in the result file.
    result_file = tmp_path / "termination-log"
    code = cli.main(
        [
            "tune",
            "--url",
            f"127.0.0.1:{port}",
            "--model",
            "digits",
            "--latency-budget-ms",
            "5",
            "--wait-seconds",
            "1",
            "--result-file",
            str(result_file),
        ]
    )
    assert code == 2
    error = tuning.parse_result(result_file.read_text())
    assert isinstance(error, str) and "not ready after 1 s" in error
