"""`geo select` offline with measurements: --status (a GeoDeployment's status), --measured
figures, --expected-qps and --current-qps; min-cost's comparison in text and JSON."""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any

import pytest
import yaml
from tests.support.paths import FIXTURES

from geo_operator import cli
from geo_operator.api import models
from geo_operator.artifacts import selection
from geo_operator.builders import plan, tuning
from geo_operator.cli import inspect, io


def _body() -> dict[str, Any]:
    """The digits fixture as min-cost with tuning: fp32 costs 1, int8 1.5 (fp16 2); the
    replica 0.5 CPU + 0.5 GiB: 0.5 × 0.04 + 0.5 × 0.005 = $0.0225/h."""
    body: dict[str, Any] = yaml.safe_load((FIXTURES / "digits.yaml").read_text())
    spec = body["spec"]
    spec["model"]["selection"] = {"policy": "min-cost"}
    for a in spec["model"]["artifacts"]:
        a["relativeCost"] = {"fp32": 1.0, "fp16": 2.0, "int8": 1.5}.get(a["name"], 1.0)
    spec["triton"]["maxBatchSize"] = 0
    spec["triton"]["resources"] = {"requests": {"cpu": "500m", "memory": "512Mi"}}
    spec["autoscaling"] = {"enabled": True, "maxReplicas": 4}
    return body


def _run(body: dict[str, Any] | None, tmp_path: pathlib.Path, *argv: str) -> tuple[int, str]:
    path = tmp_path / "gd.yaml"
    path.write_text(yaml.safe_dump(body or _body()))
    return cli.main(["select", "-f", str(path), *argv]), str(path)


def _result(keys: dict[str, str], name: str, qps: float, batch: int) -> dict[str, Any]:
    return {
        "artifact": name,
        "key": keys.get(name, "0000000000"),
        "result": {
            "maxBatchSize": batch,
            "throughput": qps,
            "p99Ms": 40.0,
            "measurements": 5,
            "gridSize": 7,
        },
    }


def _status_file(tmp_path: pathlib.Path, keys: dict[str, str], **status: Any) -> str:
    # fp32 900 req/s at b16 (630 a replica at 0.7), fp16 1000 at b8 (700), int8 2600 at b32
    # (1820); the whole object, as kubectl prints it.
    runs = [
        _result(keys, "fp32", 900.0, 16),
        _result(keys, "fp16", 1000.0, 8),
        _result(keys, "int8", 2600.0, 32),
    ]
    whole = {
        "apiVersion": models.API_VERSION,
        "kind": models.KIND,
        "metadata": {"name": "digits"},
        "status": {"tuning": runs, **status},
    }
    path = tmp_path / "status.yaml"
    path.write_text(yaml.safe_dump(whole))
    return str(path)


def _keys() -> dict[str, str]:
    spec = models.parse_spec(_body()["spec"])
    return tuning.keys(spec, selection.hardware_of(spec.triton))


def test_measured_figures_parse() -> None:
    assert inspect.measured_figures("fp32=900") == inspect.Figures("fp32", 900.0)
    assert inspect.measured_figures("int8=2600,accuracy=0.97,batch=32,p99=41.5,samples=500") == (
        inspect.Figures("int8", 2600.0, accuracy=0.97, batch=32, p99_ms=41.5, samples=500)
    )
    wrong = {
        "fp32": "is not NAME=QPS",
        "=900": "is not NAME=QPS",
        "fp32=": "is not NAME=QPS",
        "fp32=0": "fp32: throughput must be greater than 0",
        "fp32=fast": "fp32: throughput 'fast' is not a number",
        "fp32=9,batch=0": "fp32: batch must be at least 1, got 0",
        "fp32=9,accuracy=1.2": "fp32: accuracy must be at most 1, got 1.2",
        "fp32=9,batch=2,batch=4": "batch given twice",
        "fp32=9,acc=0.9": "key one of accuracy, batch, p99, samples",
        "fp32=9,batch": "key one of accuracy, batch, p99, samples",
    }
    for text, words in wrong.items():
        with pytest.raises(argparse.ArgumentTypeError, match=words):
            inspect.measured_figures(text)


def test_status_results_are_the_measurements_and_its_last_decision_the_load(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 2 replicas × 700 = 1400 req/s: fp32 needs 3 × 0.0225 × 1 = $0.0675/h; int8 1 × 0.0225 ×
    # 1.5 = $0.03375/h; fp16 2 × 0.0225 × 2 = $0.09/h.
    decision = {"action": "maintain", "from": 2, "to": 2, "qpsPerReplica": 700.0}
    status = _status_file(
        tmp_path,
        _keys(),
        readyReplicas=2,
        lastDecision={**decision, "reason": "steady", "time": "2026-01-01T00:00:00Z"},
    )
    code, _ = _run(None, tmp_path, "--status", status)
    out = capsys.readouterr().out
    assert code == 0
    assert "artifact: int8" in out
    assert "min-cost for 1400 req/s (the load the autoscaler last saw, in --status)" in out
    assert "at $0.0225/replica-h (0.5 CPU, 0.5 GiB)" in out
    assert "int8 acc 0.9778 cap 1820 req/s b32 → 1 replica ×1.5 $0.03375/h <- chosen" in out
    assert "fp32 acc 0.9759 cap 630 req/s b16 → 3 replicas ×1 $0.0675/h" in out
    table = [line.split() for line in out.splitlines() if line.startswith("  ")]
    assert table == [
        ["candidate", "accuracy", "capacity", "batch", "replicas", "cost/h"],
        ["int8", "0.9778", "1820", "req/s", "32", "1", "$0.03375", "<-", "chosen"],
        ["fp32", "0.9759", "630", "req/s", "16", "3", "$0.0675"],
        ["fp16", "0.9759", "700", "req/s", "8", "2", "$0.09"],
    ]
    assert "note:" not in out  # the keys are this spec's


def test_expected_qps_flips_the_choice(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = _status_file(tmp_path, _keys())

    def choose(*argv: str) -> dict[str, Any]:
        assert _run(None, tmp_path, "--status", status, "--json", *argv)[0] == 0
        result: dict[str, Any] = json.loads(capsys.readouterr().out)
        return result

    # 500 req/s: one replica each, fp32's relative cost 1 the cheapest.
    low = choose("--expected-qps", "500")
    assert low["artifact"] == "fp32"
    assert low["demand"]["source"] == "--expected-qps" and low["demand"]["expectedQps"] == 500
    assert [(c["name"], c["replicas"], c["costPerHour"]) for c in low["candidates"]] == [
        ("fp32", 1, pytest.approx(0.0225)),
        ("int8", 1, pytest.approx(0.03375)),
        ("fp16", 1, pytest.approx(0.045)),
    ]
    assert [c["chosen"] for c in low["candidates"]] == [True, False, False]
    # 1400 req/s: int8 (one replica) beats fp32 (three).
    assert choose("--expected-qps", "1400")["artifact"] == "int8"
    # 3000 req/s within maxReplicas 4: fp32 needs 5 and fp16 5: over; int8 2.
    high = choose("--expected-qps", "3000")
    assert high["artifact"] == "int8"
    assert {c["name"]: (c["replicas"], c["overMaxReplicas"]) for c in high["candidates"]} == {
        "int8": (2, False),
        "fp32": (5, True),
        "fp16": (5, True),
    }


def test_current_qps_sizes_unless_the_spec_expects_a_load(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = _status_file(tmp_path, _keys())
    _run(None, tmp_path, "--status", status, "--json", "--current-qps", "1400")
    seen = json.loads(capsys.readouterr().out)
    assert (seen["artifact"], seen["demand"]["source"]) == ("int8", "--current-qps")
    body = _body()
    body["spec"]["objectives"] = {"expectedQps": 500}
    _run(body, tmp_path, "--status", status, "--json", "--current-qps", "1400")
    expected = json.loads(capsys.readouterr().out)
    assert (expected["artifact"], expected["demand"]["source"]) == (
        "fp32",
        "objectives.expectedQps",
    )


def test_results_for_another_spec_are_ignored_as_the_operator_ignores_them(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Just .status, as JSON, its keys another spec's and one artifact the spec doesn't have.
    runs = [
        _result({}, "fp32", 900.0, 16),
        _result({}, "fp16", 1000.0, 8),
        _result({}, "int8", 2600.0, 32),
        _result({}, "retired", 9000.0, 64),
    ]
    path = tmp_path / "status.json"
    path.write_text(json.dumps({"tuning": runs}))
    code, _ = _run(None, tmp_path, "--status", str(path), "--json", "--expected-qps", "1400")
    result = json.loads(capsys.readouterr().out)
    keys = _keys()
    assert result["notes"] == [
        "status.tuning has retired, not an artifact of the spec: ignored",
        f"fp32: its tuning result is for another spec (key 0000000000; this spec's is "
        f"{keys['fp32']}): ignored, as the operator ignores it",
        f"fp16: its tuning result is for another spec (key 0000000000; this spec's is "
        f"{keys['fp16']}): ignored, as the operator ignores it",
        f"int8: its tuning result is for another spec (key 0000000000; this spec's is "
        f"{keys['int8']}): ignored, as the operator ignores it",
    ]
    # Nothing measured for this spec: the declared latencies size the replicas, as the
    # operator's plan does with the same status (int8's 2600 req/s would have won).
    assert "capacity = 1000 / declared latencyMs" in result["reason"]
    assert all(c["maxBatchSize"] is None for c in result["candidates"])
    assert code == 0 and result["artifact"] == "fp32"
    body = _body()
    body["spec"]["objectives"] = {"expectedQps": 1400}
    status = models.parse_status({"tuning": runs})
    decided = plan.plan(
        name="digits",
        namespace="default",
        uid="u",
        spec=models.parse_spec(body["spec"]),
        status=status,
        current_replicas=None,
    )
    assert decided.choice.artifact is not None and decided.choice.artifact.name == "fp32"


def test_a_spec_that_does_not_tune_ignores_every_tuning_result(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = _body()
    body["spec"]["triton"]["maxBatchSize"] = 16
    status = _status_file(tmp_path, _keys())
    code, _ = _run(body, tmp_path, "--status", status, "--json", "--expected-qps", "1400")
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["artifact"] == "fp32"
    assert result["notes"] == [
        "status.tuning's results are ignored, as the operator ignores them: "
        "spec.triton.maxBatchSize is 16, not 0 (tune)"
    ]
    assert "capacity = 1000 / declared latencyMs" in result["reason"]


def test_measured_figures_on_the_command_line(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = ["--measured", "fp32=900,batch=16", "--measured", "fp16=1000,batch=8"]
    figures += ["--measured", "int8=2600,batch=32,accuracy=0.9,samples=400"]
    code, _ = _run(None, tmp_path, "--json", "--expected-qps", "1400", *figures)
    result = json.loads(capsys.readouterr().out)
    # int8's measured 0.9 is under the floor 0.95 × 0.9759: out, fp32 (3 replicas, $0.0675)
    # beats fp16 (2 replicas × 2, $0.09).
    assert code == 0 and result["artifact"] == "fp32"
    assert [c["name"] for c in result["candidates"]] == ["fp32", "fp16"]
    why = {r["name"]: r["why"] for r in result["rejected"]}
    assert why["int8"].startswith("accuracy 0.9000 measured on 400 samples < floor 0.9271")
    # A figure given overrides the status's, field by field.
    status = _status_file(tmp_path, _keys())
    _run(None, tmp_path, "--status", status, "--json", "--measured", "int8=100")
    slow = json.loads(capsys.readouterr().out)
    int8 = next(c for c in slow["candidates"] if c["name"] == "int8")
    assert (int8["capacity"], int8["maxBatchSize"]) == (pytest.approx(70.0), 32)


def test_without_measurements_min_cost_says_its_basis(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = _run(None, tmp_path)
    out = capsys.readouterr().out
    assert code == 0
    assert "min-cost for minReplicas' worth (1; no load known yet)" in out
    assert "capacity = 1000 / declared latencyMs (batch 1, no throughput measured)" in out
    # Every replica count is 1: fp32, relative cost 1, wins; no batch was measured.
    assert "  fp32       0.9759    3500 req/s  -      1         $0.0225   <- chosen" in out


def test_bad_input_is_one_line_and_exit_2(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = _run(None, tmp_path, "--measured", "nope=300")
    err = capsys.readouterr().err
    assert code == 2
    assert (
        err
        == "geo select: --measured nope: no such artifact (the spec has fp32, fp16, int8, fp8)\n"
    )
    with pytest.raises(SystemExit) as exited:
        _run(None, tmp_path, "--measured", "fp32=fast")
    assert exited.value.code == 2
    assert "argument --measured: fp32: throughput 'fast' is not a number" in capsys.readouterr().err
    for text, words in {
        "- 1\n- 2\n": "must hold a GeoDeployment or its status, a mapping; it holds a YAML "
        "list of 2 items",
        "": "a mapping; it holds nothing (the file is empty)",
        "just words\n": "a mapping; it holds a YAML string ('just words')",
        "kind: List\nitems: []\n": "is a List: give one GeoDeployment",
        "readyReplicas: many\n": "status.readyReplicas: Input should be a valid integer",
        "a: [unclosed": "is not valid YAML or JSON",
    }.items():
        bad = tmp_path / "bad-status.yaml"
        bad.write_text(text)
        code, _ = _run(None, tmp_path, "--status", str(bad))
        err = capsys.readouterr().err
        assert code == 2 and words in err and "Traceback" not in err, err
    code, _ = _run(None, tmp_path, "--status", str(tmp_path / "missing.yaml"))
    assert code == 2 and "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("served", [None, "int8", "fp16"])
def test_select_names_the_artifact_the_operators_plan_serves(
    served: str | None, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # int8 costs 1.1 here: at 500 req/s (1 replica × 500 last seen) fp32 is the cheapest,
    # $0.0225/h, int8 $0.02475/h within the 15 % switch margin (kept while it serves), fp16
    # $0.045/h beyond it (replaced).
    body = _body()
    for a in body["spec"]["model"]["artifacts"]:
        if a["name"] == "int8":
            a["relativeCost"] = 1.1
    spec = models.parse_spec(body["spec"])
    keys = tuning.keys(spec, selection.hardware_of(spec.triton))
    decision = {"action": "maintain", "from": 1, "to": 1, "qpsPerReplica": 500.0}
    extra: dict[str, Any] = {
        "lastDecision": {**decision, "reason": "steady", "time": "2026-01-01T00:00:00Z"}
    }
    if served is not None:
        artifact = next(a for a in spec.model.artifacts if a.name == served)
        extra["selectedArtifact"] = {
            "name": served,
            "precision": artifact.precision.value,
            "format": artifact.format.value,
            "uri": artifact.uri,
            "reason": "chosen earlier",
        }
    status_path = _status_file(tmp_path, keys, **extra)
    status = io.load_status(status_path)
    decided = plan.plan(
        name="digits",
        namespace="default",
        uid="u",
        spec=spec,
        status=status,
        current_replicas=1,
    )
    assert decided.choice.artifact is not None
    code, _ = _run(body, tmp_path, "--status", status_path, "--json")
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["artifact"] == decided.choice.artifact.name
    # The same words, the load's source said as where geo select read it.
    assert "(the load the autoscaler last saw, in --status)" in result["reason"]
    assert result["reason"].replace(", in --status", "") == decided.choice.reason
    assert result["demand"]["served"] == served
    assert result["artifact"] == ("int8" if served == "int8" else "fp32")
