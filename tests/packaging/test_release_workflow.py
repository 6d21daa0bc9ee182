"""The release workflow (.github/workflows/release.yml) can't run here (no GitHub): what can be
checked is that it parses, fires on version tags only, checks the tag against the version the
project and the chart carry, and publishes both descriptions of the image."""

from __future__ import annotations

import re
import subprocess
import tomllib

import yaml
from tests.support.paths import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"


def _workflow() -> dict[object, object]:
    loaded = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_it_fires_on_version_tags_only_with_the_least_permissions() -> None:
    flow = _workflow()
    on = flow.get("on", flow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert on == {"push": {"tags": ["v*"]}}
    assert flow["permissions"] == {"contents": "write", "packages": "write"}


def _steps(job: str) -> list[dict[str, object]]:
    jobs = _workflow()["jobs"]
    assert isinstance(jobs, dict)
    steps = jobs[job]["steps"]
    assert isinstance(steps, list)
    return steps


def test_the_tag_check_accepts_this_version_and_refuses_another() -> None:
    (check,) = [s for s in _steps("check") if s.get("id") == "version"]
    script = str(check["run"])
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

    def run(tag: str) -> int:
        env = {"GITHUB_REF_NAME": tag, "GITHUB_OUTPUT": "/dev/null", "PATH": "/usr/bin:/bin"}
        done = subprocess.run(["bash", "-ec", script], cwd=ROOT, env=env, capture_output=True)
        return done.returncode

    assert run(f"v{version}") == 0  # also: the chart's appVersion is this version
    assert run("v9.9.9") != 0


def test_both_descriptions_of_the_image_are_published() -> None:
    pushed = [s for s in _steps("image") if str(s.get("uses", "")).startswith("docker/build")]
    assert len(pushed) == 1 and pushed[0]["with"]["push"] is True  # type: ignore[index]
    assert re.search(r"ghcr\.io/.+/geo-operator:", str(pushed[0]["with"]["tags"]))  # type: ignore[index]
    runs = " ".join(str(s.get("run", "")) for s in _steps("archive"))
    assert "make image" in runs and "geo-operator-$v.tar.sha256" in runs
