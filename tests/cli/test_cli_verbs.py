"""The `geo` verbs as a whole: every one has help, shared flags read the same everywhere,
the heavy imports stay out of the verbs that don't need them, and the operator's own
`geo tune` arguments parse."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

import pytest
import yaml
from tests.support.paths import ROOT

from geo_operator import cli
from geo_operator.api import models
from geo_operator.builders import plan, tuning
from geo_operator.cli import decide

VERBS = (
    "run",
    "crd",
    "alerts",
    "dashboard",
    "render",
    "select",
    "decide",
    "tune",
    "tune-llm",
    "simulate",
    "rollout",
)
SHARED = {
    "--file": {"render", "select", "decide", "simulate"},
    "--json": {"select", "tune", "tune-llm", "simulate", "decide", "rollout"},
    "--gpu-arch": {"render", "select"},
}


def _verbs() -> dict[str, argparse.ArgumentParser]:
    (subparsers,) = (a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subparsers.choices)


def test_the_verbs() -> None:
    assert tuple(_verbs()) == VERBS


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([verb, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: geo {verb} ")


def test_shared_flags_have_one_help_text() -> None:
    for flag, expected in SHARED.items():
        helps: dict[str, Any] = {}
        for verb, p in _verbs().items():
            for action in p._actions:
                if flag in action.option_strings:
                    helps[verb] = (tuple(action.option_strings), action.help, action.required)
        assert set(helps) == expected, flag
        assert len(set(helps.values())) == 1, helps


def test_every_verb_with_structured_output_has_kubectls_flag() -> None:
    for verb in SHARED["--json"]:
        (action,) = (a for a in _verbs()[verb]._actions if "--output" in a.option_strings)
        assert action.option_strings == ["-o", "--output"], verb
        assert {"json", "yaml"} <= set(action.choices or ()), verb


def test_yaml_and_json_say_the_same(tmp_path: Any) -> None:
    argv = ["decide", "-f", str(ROOT / "manifests/examples/digits.yaml"), "--replicas", "2"]
    argv += ["--qps", "30", "--p99-ms", "20"]
    outs = {}
    for output in ("json", "yaml"):
        done = subprocess.run(
            [sys.executable, "-m", "geo_operator.cli", *argv, "-o", output],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        outs[output] = done.stdout
    assert json.loads(outs["json"]) == yaml.safe_load(outs["yaml"])
    assert not outs["yaml"].lstrip().startswith("{")


def test_file_is_required_and_takes_stdin() -> None:
    for verb in SHARED["--file"]:
        (action,) = (a for a in _verbs()[verb]._actions if "--file" in a.option_strings)
        assert action.option_strings == ["-f", "--file"] and action.required
        assert action.help is not None and "'-' = stdin" in action.help


def test_light_verbs_import_neither_kopf_nor_the_heavy_parts() -> None:
    # `geo crd` (what `make crd` runs) builds every verb's parser: none may import kopf,
    # the handlers, the tuner's measuring or the simulation at that point.
    heavy = (
        "kopf",
        "geo_operator.handlers",
        "geo_operator.tuning.measure",
        "geo_operator.simulation.replay",
        "matplotlib",
    )
    code = (
        "import sys, contextlib, io\n"
        "from geo_operator import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert cli.main(['crd']) == 0\n"
        f"print([m for m in {heavy!r} if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "[]", out.stderr


def test_the_operators_tuner_args_parse_at_the_models_bounds(
    spec: models.GeoDeploymentSpec,
) -> None:
    # What builders.tuning puts in the Job's `tune` container must pass geo tune's types,
    # up to the limits the GeoDeployment schema allows.
    raw = spec.model_dump(by_alias=True, mode="json")
    raw["triton"]["maxBatchSize"] = 0
    raw["batchTuning"] = {
        "candidates": [1, 4096],
        "queueDelaysMicroseconds": [0, 1_000_000],
        "concurrency": [1, 1024],
        "latencyBudgetMs": 1e-7,
        "secondsPerLevel": 300,
        "timeoutSeconds": 30,
    }
    args = cli.parser().parse_args(tuning.tuner_args(models.parse_spec(raw)))
    assert (args.verb, args.func.__module__) == ("tune", "geo_operator.cli.tune")
    assert args.candidates == [1, 4096] and args.delays == [0, 1_000_000]
    assert args.concurrency == [1, 1024]
    assert (args.latency_budget_ms, args.seconds, args.wait_seconds) == (1e-7, 300.0, 30.0)
    raw["triton"]["dynamicBatching"]["enabled"] = False
    args = cli.parser().parse_args(tuning.tuner_args(models.parse_spec(raw)))
    assert args.delays == [None]


def test_the_generative_tuner_args_parse_at_the_models_bounds() -> None:
    """What builders.tuning puts in a generative candidate's Job must pass geo tune-llm's."""
    raw: dict[str, Any] = {
        "model": {
            "name": "m",
            "kind": "generative",
            "artifacts": [
                {"name": "a", "precision": "int4", "format": "gguf", "uri": "http://h/a"},
                {"name": "b", "precision": "fp16", "format": "gguf", "uri": "http://h/b"},
            ],
            "evaluation": {"uri": "http://h/t.txt", "metric": "kl-divergence"},
        },
        "triton": {
            "engine": {"slots": 64, "contextLength": 131072, "maxTokensCap": 1, "threads": 256}
        },
        "batchTuning": {"timeoutSeconds": 30},
    }
    spec = models.parse_spec(raw)
    decided = plan.plan(
        name="m",
        namespace="ns",
        uid="u",
        spec=spec,
        status=models.GeoDeploymentStatus(),
        current_replicas=None,
    )
    assert decided.target is not None
    job = tuning.tuning_job(decided.target, key_="k" * 10, attempt=1, image="geo:test")
    argv = job["spec"]["template"]["spec"]["containers"][0]["args"]
    args = cli.parser().parse_args(argv)
    assert (args.verb, args.func.__module__) == ("tune-llm", "geo_operator.cli.tune_llm")
    assert (args.slots, args.context, args.threads, args.max_tokens) == (64, 131072, 256, 1)
    assert (args.metric, args.wait_seconds, args.repository) == ("kl-divergence", 30.0, "/models")


def test_observation_from_args_names_what_is_missing() -> None:
    def observe(*argv: str) -> Any:
        return decide.observation_from_args(cli.parser().parse_args(["decide", "-f", "x", *argv]))

    blind = observe("--replicas", "3")
    assert (blind.replicas, blind.ready_replicas) == (3, 3)
    assert blind.missing == "--qps and --p99-ms not given"
    assert observe("--replicas", "3", "--qps", "5").missing == "--p99-ms not given"
    seen = observe("--replicas", "3", "--ready", "2", "--qps", "5", "--p99-ms", "40")
    assert (seen.ready_replicas, seen.qps, seen.p99_ms, seen.missing) == (2, 5.0, 40.0, None)


def test_decide_refuses_more_ready_than_replicas(capsys: Any) -> None:
    digits = str(ROOT / "manifests/examples/digits.yaml")
    assert cli.main(["decide", "-f", digits, "--replicas", "2", "--ready", "5"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "geo decide: --ready 5 is more than --replicas 2: ready replicas are among the replicas\n"
    )
    # Refused before the file is read: the flags' fault is named even with no such file.
    assert cli.main(["decide", "-f", "/nonexistent.yaml", "--replicas", "0", "--ready", "1"]) == 2
    assert "--ready 1 is more than --replicas 0" in capsys.readouterr().err
    assert cli.main(["decide", "-f", digits, "--replicas", "2", "--ready", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["inputs"]["readyReplicas"] == 2


def _simulate_without_matplotlib(*args: str) -> subprocess.CompletedProcess[str]:
    """`geo simulate` in a Python where matplotlib can't be imported (as if not installed)."""
    code = (
        "import sys\n"
        "sys.modules['matplotlib'] = None  # import matplotlib now fails, as when absent\n"
        "from geo_operator import cli\n"
        f"sys.exit(cli.main({list(args)!r}))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


SHORT_SIMULATE = (
    "simulate",
    "-f",
    "manifests/examples/digits-simulate.yaml",
    "--synthetic",
    "step",
    "--duration",
    "60",
    "--policy",
    "geo",
    "--capacity",
    "100",
)


def test_plot_without_matplotlib_is_one_line_before_any_replay(tmp_path: Any) -> None:
    out = _simulate_without_matplotlib(*SHORT_SIMULATE, "--plot", str(tmp_path / "p.png"))
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert "pip install 'geo-operator[simulate]'" in out.stderr
    assert out.stdout == ""  # refused before the replay: nothing ran, nothing lost
    assert not (tmp_path / "p.png").exists()


def test_plot_into_a_missing_directory_is_refused_before_the_replay(tmp_path: Any) -> None:
    code = cli.main([*SHORT_SIMULATE, "--plot", str(tmp_path / "no" / "p.png")])
    assert code == 2


def test_simulate_prints_the_table_and_writes_the_plot(tmp_path: Any) -> None:
    plot = tmp_path / "p.png"
    out = subprocess.run(
        [sys.executable, "-m", "geo_operator.cli", *SHORT_SIMULATE, "--plot", str(plot)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "geo" in out.stdout.lower() and plot.stat().st_size > 1000
    assert f"plot written to {plot}" in out.stderr
