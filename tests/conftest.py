"""Shared fixtures: the example GeoDeployment, a fake `k8s` seam, kopf isolation, the
examples' artifacts and a real Triton. The helpers they use, and that tests import,
are in tests/support."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import kopf
import pytest
import yaml
from tests.support import examples
from tests.support.kube import FakeKube
from tests.support.paths import (
    ARTIFACTS,
    FAMILY_ARTIFACTS,
    FAMILY_SCRIPT,
    FIXTURES,
    PYCODE,
    PYCODE_ARTIFACTS,
    ROOT,
)

from geo_operator.api import models
from geo_operator.triton import local


@pytest.fixture(autouse=True)
def kopf_registry() -> Any:
    """Each test gets an empty kopf registry, so handler registration can't leak."""
    old = kopf.get_default_registry()
    registry = kopf.OperatorRegistry()
    kopf.set_default_registry(registry)
    yield registry
    kopf.set_default_registry(old)


@pytest.fixture
def body() -> dict[str, Any]:
    """The test GeoDeployment as the API server would hand it to a handler."""
    raw = yaml.safe_load((FIXTURES / "digits.yaml").read_text())
    raw["metadata"].update({"uid": "uid-1234", "generation": 1, "resourceVersion": "1"})
    return dict(raw)


@pytest.fixture
def spec(body: dict[str, Any]) -> models.GeoDeploymentSpec:
    return models.parse_spec(body["spec"])


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


@pytest.fixture(scope="session")
def artifacts() -> pathlib.Path:
    """The example's artifacts, made by its script if this checkout has none yet."""
    if not (ARTIFACTS / "measurements.json").exists():
        subprocess.run(
            [sys.executable, str(ROOT / "examples" / "digits" / "make_artifacts.py")],
            check=True,
            cwd=ROOT,
        )
    return ARTIFACTS


@pytest.fixture(scope="session")
def server(
    artifacts: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[local.TritonServer]:
    """The real tritonserver serving the example, laid out by the operator's builders."""
    repo = examples.example_repository(artifacts, tmp_path_factory.mktemp("model-repository"))
    with local.TritonServer(repo, log_path=repo.parent / "triton.log") as triton:
        yield triton


@pytest.fixture(scope="session")
def script() -> ModuleType:
    return examples.load_family_script()


@pytest.fixture(scope="session")
def family(script: ModuleType) -> pathlib.Path:
    """The example's artifacts; made by its script unless this checkout has the current set."""
    report = FAMILY_ARTIFACTS / "measurements.json"
    if report.exists():
        names = [a["name"] for a in json.loads(report.read_text())["artifacts"]]
        if names == list(script.ORDER):
            return FAMILY_ARTIFACTS
    subprocess.run([sys.executable, str(FAMILY_SCRIPT)], check=True, cwd=ROOT)
    return FAMILY_ARTIFACTS


@pytest.fixture(scope="session")
def pycode() -> pathlib.Path:
    """The GGUF family, made (or copied from the cache) by its script when absent."""
    if not (PYCODE_ARTIFACTS / "measurements.json").exists():
        subprocess.run([sys.executable, str(PYCODE / "make_artifacts.py")], check=True, cwd=ROOT)
    return PYCODE_ARTIFACTS
