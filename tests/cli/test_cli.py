"""The `geo` command, run as a user runs it."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import yaml
from tests.support.paths import FIXTURES, ROOT

from geo_operator import cli

EXAMPLE = FIXTURES / "digits.yaml"


def geo(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "geo_operator.cli", *args],
        capture_output=True,
        text=True,
        input=stdin,
        cwd=ROOT,
        check=False,
        env={"PYTHONPATH": str(ROOT / "operator"), "PATH": "/usr/bin:/bin"},
    )


def test_help_teaches_every_verb() -> None:
    out = geo("--help")
    assert out.returncode == 0
    for verb in ("run", "crd", "render", "select"):
        assert verb in out.stdout


def test_crd_prints_the_checked_in_file() -> None:
    out = geo("crd")
    assert out.returncode == 0
    assert out.stdout == (ROOT / "crds" / "geodeployments.geo.ai.yaml").read_text()


def test_select_json() -> None:
    out = geo("select", "-f", str(EXAMPLE), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["artifact"] == "int8"
    assert result["rejected"][0]["name"] == "fp8"
    hopper = json.loads(geo("select", "-f", str(EXAMPLE), "--json", "--gpu-arch", "hopper").stdout)
    assert hopper["artifact"] == "fp8" and hopper["hardware"] == "GPU hopper"


def test_render_prints_three_objects() -> None:
    out = geo("render", "-f", str(EXAMPLE))
    assert out.returncode == 0, out.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(out.stdout)]
    assert kinds == ["ConfigMap", "Deployment", "Service"]


def test_bad_input_exits_2_and_names_the_field(tmp_path: pathlib.Path) -> None:
    body = yaml.safe_load(EXAMPLE.read_text())
    body["spec"]["autoscaling"] = {"minReplicas": 4, "maxReplicas": -1}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(body))
    out = geo("render", "-f", str(bad))
    assert out.returncode == 2
    assert "spec.autoscaling.maxReplicas" in out.stderr
    assert "Traceback" not in out.stderr
    assert geo("select", "-f", str(tmp_path / "missing.yaml")).returncode == 2
    (tmp_path / "junk.yaml").write_text("a: [unclosed")
    junk = geo("select", "-f", str(tmp_path / "junk.yaml"))
    assert junk.returncode == 2 and "not valid YAML" in junk.stderr


@pytest.mark.parametrize(
    ("text", "holds"),
    [
        ("- a: 1\n", "a YAML list of 1 item, not a mapping with kind: GeoDeployment"),
        ("- 1\n- 2\n", "a YAML list of 2 items, not a mapping with kind: GeoDeployment"),
        ("", "no YAML document (the file is empty)"),
        ("kind: Deployment\n", "a Deployment, not a mapping with kind: GeoDeployment"),
        ("a: 1\n", "a mapping without kind, not a mapping with kind: GeoDeployment"),
        ("hello\n", "a YAML string ('hello'), not a mapping with kind: GeoDeployment"),
        (
            "kind: Service\n---\n- x\n",
            "2 YAML documents (a Service; a YAML list of 1 item), none with kind: GeoDeployment",
        ),
        ("kind: GeoDeployment\n---\nkind: GeoDeployment\n", "2: give each its own file"),
    ],
)
def test_a_file_without_one_geodeployment_says_what_it_holds(
    text: str, holds: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gd.yaml"
    path.write_text(text)
    for verb in ("select", "render"):
        assert cli.main([verb, "-f", str(path)]) == 2
        assert capsys.readouterr().err == (
            f"geo {verb}: {path} must hold exactly one GeoDeployment; it holds {holds}\n"
        )


def test_simulate_refuses_a_generative_model_rather_than_model_it_as_requests() -> None:
    pycode = pathlib.Path(__file__).resolve().parents[2] / "manifests" / "examples" / "pycode.yaml"
    out = geo("simulate", "-f", str(pycode), "--synthetic", "spike", "--policy", "geo")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "model.kind is generative" in out.stderr and "token-level simulator" in out.stderr
    assert geo("select", "-f", str(pycode)).returncode == 0


ARENA_PROBE = """
import ctypes, sys, threading
from geo_operator.cli import run
print(run.limit_malloc_arenas() if sys.argv[1] == "limit" else None, flush=True)
barrier = threading.Barrier(16)
def work():
    barrier.wait()  # all 16 allocate at once: each would take an arena of its own
    keep = [bytearray(200) for _ in range(20000)]
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(16)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc = ctypes.CDLL(None)
libc.fflush(None)
libc.malloc_info(0, ctypes.c_void_p.in_dll(libc, "stdout"))
libc.fflush(None)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's arenas")
@pytest.mark.parametrize(
    ("how", "env", "limited", "most"),
    [("limit", {}, "True", 2), ("limit", {"MALLOC_ARENA_MAX": "3"}, "False", 3)],
)
def test_geo_run_caps_mallocs_arenas_unless_the_environment_chose(
    how: str, env: dict[str, str], limited: str, most: int
) -> None:
    def arenas(arg: str, extra: dict[str, str]) -> tuple[str, int]:
        out = subprocess.run(
            [sys.executable, "-c", ARENA_PROBE, arg],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **extra},
        ).stdout
        return out.splitlines()[0], out.count("<heap nr=")

    said, count = arenas(how, env)
    assert said == limited and 1 <= count <= most, (said, count)
    _, free = arenas("none", {})
    assert free > most, free  # without the cap the same threads take more
