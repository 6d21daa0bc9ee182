"""The `geo` command under generated user mistakes (issue 14): every flag of every verb
with values of any shape, and input files of any content. Whatever comes, `geo` ends
with exit 0, 1 or 2 and a message, never an exception (a traceback to the user).

The verbs that need no cluster nor a live Triton (crd, alerts, dashboard, render,
select, decide, simulate) run in-process; run, tune and rollout are parsed only (the
parse is where their flags are checked). A few hostile files (an alias bomb, nesting
thousands deep, bytes that are not UTF-8) run in a child process under a 1 GiB
address-space limit: the answer is an error, not a runaway.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest
import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from tests.support.paths import FIXTURES, ROOT

from geo_operator import cli

EXAMPLE = FIXTURES / "digits.yaml"
RUN = ("crd", "alerts", "dashboard", "render", "select", "decide")
PARSE_ONLY = ("run", "tune", "rollout", "simulate")  # a cluster, a Triton, a long replay
EXAMPLES = int(os.environ.get("GEO_CLI_FUZZ_EXAMPLES", "150"))  # a soak: more, other seeds
SEED = int(os.environ.get("GEO_CLI_FUZZ_SEED", "2026"))


def _verbs() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


VERBS = _verbs()


def _flags(verb: str) -> list[argparse.Action]:
    return [a for a in VERBS[verb]._actions if a.option_strings and a.dest != "help"]


VALUES = st.one_of(
    st.sampled_from(
        ["0", "-1", "1", "3", "1e309", "nan", "inf", "-0", "", " ", "9" * 40, "0x10", "1,2,,3"]
    ),
    st.sampled_from(["json", "yaml", "text", "wide", "all", "geo", "hopper", "off", "-"]),
    st.text(max_size=20),
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


@contextlib.contextmanager
def _files() -> Iterator[dict[str, str]]:
    """Input files of every shape, for -f and --trace."""
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        body = yaml.safe_load(EXAMPLE.read_text())
        made = {
            "example": EXAMPLE.read_text(),
            "empty": "",
            "list": "- 1\n- 2\n",
            "two": EXAMPLE.read_text() + "\n---\n" + EXAMPLE.read_text(),
            "no-spec": yaml.safe_dump({**body, "spec": None}),
            "spec-string": yaml.safe_dump({**body, "spec": "text"}),
            "bad-yaml": "a: [1, 2\n",
            "tabs": "\tkind: x\n",
            "trace-garbage": "timestamp,requests\nabc,def\n1,2,3\n",
            "trace-negative": "second,count\n0,-5\n1,1e400\n",
        }
        paths = {}
        for name, text in made.items():
            path = root / name
            path.write_text(text)
            paths[name] = str(path)
        (root / "latin1").write_bytes("kind: GeoDeployment\nname: caf\xe9\n".encode("latin-1"))
        paths["latin1"] = str(root / "latin1")
        paths["directory"] = tmp
        paths["missing"] = str(root / "missing.yaml")
        yield paths


@st.composite
def _argv(draw: st.DrawFn, files: dict[str, str]) -> list[str]:
    verb = draw(st.sampled_from(RUN + PARSE_ONLY))
    argv = [verb]
    if verb == "rollout":
        argv.append(draw(st.sampled_from(["status", "promote", "abort", "pause", "x"])))
    flags = _flags(verb) if verb != "rollout" else []
    for action in draw(st.lists(st.sampled_from(flags), max_size=6)) if flags else []:
        argv.append(draw(st.sampled_from(action.option_strings)))
        if action.nargs == 0:
            continue
        if action.dest in ("file", "trace", "status"):
            argv.append(files[draw(st.sampled_from(sorted(files)))])
        elif action.choices and draw(st.booleans()):
            argv.append(str(draw(st.sampled_from(list(action.choices)))))
        else:
            argv.append(draw(VALUES))
    if draw(st.booleans()):
        argv.append(draw(st.sampled_from(["--no-such-flag", "extra", "-x", "--"])))
    return argv


def _geo(argv: list[str]) -> tuple[int, str]:
    """`geo ARGV` in this process: (exit code, stderr). An exception propagates."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        if argv[0] in PARSE_ONLY:
            try:
                cli.parser().parse_args(argv)
            except SystemExit as stop:
                return int(stop.code or 0), err.getvalue()
            return 0, ""
        try:
            return cli.main(argv), err.getvalue()
        except SystemExit as stop:
            return int(stop.code or 0), err.getvalue()


def test_generated_flags_and_files_end_in_a_message_never_a_traceback() -> None:
    outcomes: dict[int, int] = {}
    with _files() as files:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @seed(SEED)
        @given(_argv(files))
        def one(argv: list[str]) -> None:
            code, err = _geo(argv)
            assert code in (0, 1, 2), (argv, code, err)
            assert "Traceback" not in err, (argv, err)
            if code == 2:
                assert err.strip(), (argv, "exit 2 with no message")
            outcomes[code] = outcomes.get(code, 0) + 1

        one()
    assert outcomes.get(2, 0) > EXAMPLES // 3  # most generated calls are mistakes
    print(f"\n[cli-fuzz] {EXAMPLES} calls: exit codes {dict(sorted(outcomes.items()))}")


# The billion laughs: i is 9^9 x's once its aliases are expanded.
BOMB = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
)


def _hostile(tmp_path: pathlib.Path) -> dict[str, pathlib.Path]:
    body = yaml.safe_load(EXAMPLE.read_text())
    bomb = tmp_path / "bomb.yaml"
    # 9^9 strings if expanded: the spec's fields reference the alias.
    bomb.write_text(
        BOMB
        + "\n"
        + yaml.safe_dump({**body, "spec": {**body["spec"], "model": "PLACEHOLDER"}}).replace(
            "PLACEHOLDER", "*i"
        )
    )
    deep = tmp_path / "deep.yaml"
    deep.write_text(yaml.safe_dump({**body, "spec": "X"}).replace("X", "[" * 5000 + "]" * 5000))
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00kind: GeoDeployment\n" + os.urandom(2048))
    return {"bomb": bomb, "deep": deep, "binary": binary}


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


@pytest.mark.parametrize("verb", ["render", "select"])
def test_hostile_files_are_refused_within_a_gigabyte(tmp_path: pathlib.Path, verb: str) -> None:
    for name, path in _hostile(tmp_path).items():
        out = subprocess.run(
            [sys.executable, "-m", "geo_operator.cli", verb, "-f", str(path)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
            timeout=60,
            preexec_fn=_limited,
            env={"PYTHONPATH": str(ROOT / "operator"), "PATH": "/usr/bin:/bin"},
        )
        assert out.returncode == 2, (name, out.returncode, out.stderr[-2000:])
        assert "Traceback" not in out.stderr and out.stderr.startswith(f"geo {verb}: "), name
        assert len(out.stderr) < 10_000, (name, len(out.stderr))  # a message, not a dump
