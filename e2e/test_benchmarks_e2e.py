"""Short runs of the shared-cluster benchmarks, so `make test` keeps them working; their
full runs (1,000 GeoDeployments, thousands of neighbours over ten-minute windows) are the
benchmarks' own flags (see docs/reliability-and-security.md). Each runs its own operator
process: the session's standalone operator is stopped meanwhile (`killable_operator`
restarts it), so no second operator acts on the benchmark's objects.

What is asserted is what holds at any size on two shared cores: every object Ready, each
one's creation -> Ready figure printed, and no write in the steady window (the aim the full
run has too); the neighbours' three phases measured, the churn running. Their timings and
RSS are printed, not asserted: at this size they are noise."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

from e2e.harness import OperatorProcess

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _run(cluster_env: dict[str, str], *argv: str, timeout: float) -> str:
    run = subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        env=cluster_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    print(run.stdout[-4000:])
    assert run.returncode == 0, f"{argv[0]} exited {run.returncode}:\n{run.stderr[-4000:]}"
    return run.stdout


def test_a_short_scale_run_settles_and_then_writes_nothing(
    killable_operator: OperatorProcess,
) -> None:
    killable_operator.stop()
    out = _run(
        killable_operator.cluster.env(),
        "e2e/bench_scale.py",
        "--count=8",
        "--namespaces=2",
        "--steady=15",
        timeout=600,
    )
    per_object = re.search(
        r"creation -> Ready: p50 / p99 / max\s+(\S+) / (\S+) / (\S+) s \((\d+)", out
    )
    assert per_object is not None, out
    assert int(per_object.group(4)) == 8  # every object Ready, each timed
    assert float(per_object.group(2)) >= 0
    writes = re.search(r"operator writes in the steady window\s+(\d+):", out)
    assert writes is not None and int(writes.group(1)) == 0, out
    # Each object's creation handled once (kopf's create handler ran twice for 467 of 1,000
    # objects when its watch lagged past its consistency wait), its Deployment's events
    # reconciled by cause.
    causes = re.search(r"reconciles asked for, by cause\s+(\{.*\})", out)
    assert causes is not None, out
    assert json.loads(causes.group(1)).get("change") == 8, out


def test_a_short_neighbours_run_measures_its_three_phases(
    killable_operator: OperatorProcess, tmp_path: pathlib.Path
) -> None:
    killable_operator.stop()
    rows_file = tmp_path / "rows.json"
    _run(
        killable_operator.cluster.env(),
        "e2e/bench_neighbours.py",
        "--configmaps=150",
        "--pods=15",
        "--jobs=5",
        "--own=2",
        "--seconds=8",
        "--settle=8",
        "--churn=5",
        f"--json={rows_file}",
        timeout=600,
    )
    rows = json.loads(rows_file.read_text())
    assert [r["phase"] for r in rows] == ["alone", "neighbours", "neighbours, no selectors"]
    assert all(r["rss_mib"] > 0 and r["startup_cpu_seconds"] > 0 for r in rows), rows
    assert rows[0]["churned"] == 0 and rows[1]["churned"] > 0 and rows[2]["churned"] > 0, rows
    # With the selectors no neighbour's event reaches the operator; without them the
    # initial lists alone bring the 150 ConfigMaps and 15 pods.
    for r in rows[:2]:
        assert r["startup_events"]["other"] == 0 and r["events"]["other"] == 0, rows
        assert r["startup_events"]["geo"] > 0, rows
    assert rows[2]["startup_events"]["other"] >= 150 + 15, rows
