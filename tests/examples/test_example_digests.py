"""The digits examples' manifests carry the sha256 of every artifact their script builds.

`examples/digits/make_artifacts.py` and `examples/digits-family/make_artifacts.py` write
each artifact's `sha256` into the manifest (the pod's fetch refuses any other bytes);
`--manifest-only` rewrites a manifest from its own figures and the files' digests. Here:
the checked-in manifests name the files this checkout builds, and the scripts write
them back unchanged.
"""

from __future__ import annotations

import hashlib
import pathlib
import subprocess
import sys

import pytest
import yaml

from geo_operator.api import models

ROOT = pathlib.Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests" / "examples"


def _artifacts(manifest: pathlib.Path) -> list[models.Artifact]:
    return models.parse_spec(yaml.safe_load(manifest.read_text())["spec"]).model.artifacts


def _digest(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("example", "fixture"), [("digits", "artifacts"), ("digits-family", "family")]
)
def test_every_artifact_carries_its_files_sha256(
    example: str, fixture: str, request: pytest.FixtureRequest
) -> None:
    built: pathlib.Path = request.getfixturevalue(fixture)
    artifacts = _artifacts(MANIFESTS / f"{example}.yaml")
    assert artifacts
    for a in artifacts:
        assert a.uri == f"http://models.geo.local/{example}/{a.name}/model.onnx"
        assert a.sha256 == _digest(built / a.name / "model.onnx"), a.name


@pytest.mark.parametrize(
    "variant", ["digits-autoscaling", "digits-simulate", "digits-simulate-derived"]
)
def test_the_hand_written_digits_variants_carry_the_same_digests(
    variant: str, artifacts: pathlib.Path
) -> None:
    generated = {a.name: a.sha256 for a in _artifacts(MANIFESTS / "digits.yaml")}
    for a in _artifacts(MANIFESTS / f"{variant}.yaml"):
        assert a.uri == f"http://models.geo.local/digits/{a.name}/model.onnx"
        assert a.sha256 == generated[a.name] == _digest(artifacts / a.name / "model.onnx")


@pytest.mark.parametrize(
    ("example", "fixture"), [("digits", "artifacts"), ("digits-family", "family")]
)
def test_manifest_only_writes_the_checked_in_manifest_and_refuses_another_build(
    example: str, fixture: str, request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> None:
    built: pathlib.Path = request.getfixturevalue(fixture)
    script = ROOT / "examples" / example / "make_artifacts.py"
    checked_in = MANIFESTS / f"{example}.yaml"
    copy = tmp_path / f"{example}.yaml"
    # Without the digests: the script puts them back, and nothing else changes.
    copy.write_text(
        "".join(line for line in checked_in.read_text().splitlines(True) if "sha256:" not in line)
    )

    def manifest_only(out: pathlib.Path) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, str(script), "--manifest-only", "--out", str(out)]
        return subprocess.run(
            [*argv, "--yaml", str(copy)], capture_output=True, text=True, cwd=ROOT, timeout=120
        )

    done = manifest_only(built)
    assert done.returncode == 0, done.stderr
    assert copy.read_text() == checked_in.read_text()
    # A file that is not the one measured (same size, other bytes) is refused, nothing written.
    other = tmp_path / "out"
    other.mkdir()
    (other / "measurements.json").symlink_to(built / "measurements.json")
    first = _artifacts(checked_in)[0].name
    model = other / first / "model.onnx"
    model.parent.mkdir()
    data = bytearray((built / first / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    before = copy.read_text()
    refused = manifest_only(other)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert f"{model} is not the file" in refused.stderr
    assert copy.read_text() == before
