"""Shared fixtures: the example GeoDeployment, a fake `k8s` seam, kopf isolation."""

from __future__ import annotations

import copy
import importlib.util
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

from geo_operator.api import models
from geo_operator.builders import children, plan
from geo_operator.k8s import client as k8s
from geo_operator.triton import local, repository

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
ARTIFACTS = ROOT / "examples" / "digits" / "artifacts"


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


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies a status merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            merged.pop(k, None)
        else:
            merged[k] = merge_patch(merged.get(k), v)
    return merged


class FakeKube:
    """An in-memory `k8s.Kube`: stores applied objects, records every call.

    `apply` mimics server-side apply closely enough for the handlers: the stored
    object is replaced, its resourceVersion only moves when the content changed.
    """

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.applied: list[dict[str, Any]] = []
        self.status_patches: list[tuple[str, str, dict[str, Any]]] = []
        self.events: list[tuple[str, str, str]] = []
        self.scaled: list[tuple[str, str, int]] = []
        self.deleted: list[tuple[str, str, str]] = []
        # Server-side apply's field ownership of the GeoDeployment status, per manager.
        self.owners: dict[str, tuple[set[str], set[str]]] = {}
        self.refuse: dict[str, str] = {}  # kind -> the API server's message, to refuse applies

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        if obj["kind"] in self.refuse:
            raise k8s.Refused(obj, self.refuse[obj["kind"]])
        self.applied.append(copy.deepcopy(obj))
        key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        old = self.objects.get(key)
        stored = copy.deepcopy(obj)
        if old is not None:
            stored["status"] = old.get("status", {})
            same = {k: v for k, v in old.items() if k != "status"} == {
                **obj,
                "metadata": {
                    **obj["metadata"],
                    "resourceVersion": old["metadata"]["resourceVersion"],
                },
            }
            version = int(old["metadata"]["resourceVersion"]) + (0 if same else 1)
        else:
            version = 1
        stored["metadata"]["resourceVersion"] = str(version)
        self.objects[key] = stored
        return copy.deepcopy(stored)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        wanted = dict(part.split("=", 1) for part in label_selector.split(",") if part)
        return [
            copy.deepcopy(obj)
            for (k, ns, _), obj in sorted(self.objects.items())
            if k == kind
            and ns == namespace
            and all(obj["metadata"].get("labels", {}).get(a) == b for a, b in wanted.items())
        ]

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.deleted.append((kind, namespace, name))
        self.objects.pop((kind, namespace, name), None)

    def apply_status(self, namespace: str, name: str, manager: str, status: dict[str, Any]) -> None:
        """Server-side apply as the API server does it for our status: a manager's
        fields left out since its last apply go; conditions merge by type."""
        self.status_patches.append((namespace, name, copy.deepcopy(status)))
        stored = self.objects.get((models.KIND, namespace, name))
        if stored is None:
            return
        current = dict(stored.get("status") or {})
        fields, types = self.owners.get(manager, (set(), set()))
        for field in fields - set(status):
            current.pop(field, None)
        applied = copy.deepcopy(status.get("conditions") or [])
        mine = types | {c["type"] for c in applied}
        conds = [c for c in current.get("conditions") or [] if c["type"] not in mine]
        conds += applied
        current.update({k: copy.deepcopy(v) for k, v in status.items() if k != "conditions"})
        current["conditions"] = conds
        if not conds:
            current.pop("conditions")
        self.owners[manager] = (set(status) - {"conditions"}, {c["type"] for c in applied})
        stored["status"] = current
        stored["metadata"]["resourceVersion"] = str(
            int(stored["metadata"].get("resourceVersion", "0")) + 1
        )

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        self.scaled.append((namespace, name, replicas))
        deployment = self.objects.get(("Deployment", namespace, name))
        if deployment is not None:
            deployment["spec"]["replicas"] = replicas

    def annotate(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        annotations: dict[str, str | None],
    ) -> None:
        found = self.objects.get((kind, namespace, name))
        if found is None:
            return
        current = found["metadata"].setdefault("annotations", {})
        for key, value in annotations.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value

    def event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


# What the reconcile has written once it deployed something: the autoscaler acts only then.
SELECTED = {
    "name": "int8",
    "precision": "int8",
    "format": "python",
    "uri": "http://x/y",
    "reason": "r",
}


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


EXAMPLE = ROOT / "manifests" / "examples" / "digits.yaml"


def example_target() -> children.Target:
    body = yaml.safe_load(EXAMPLE.read_text())
    # A queue delay long enough that concurrent requests from one client on two
    # busy cores reliably meet in the batcher.
    body["spec"]["triton"]["dynamicBatching"]["maxQueueDelayMicroseconds"] = 20000
    return planned(body["spec"], "digits")


def planned(spec: dict[str, Any], name: str) -> children.Target:
    """What the operator would deploy for a fresh GeoDeployment with this spec."""
    decided = plan.plan(
        name=name,
        namespace="default",
        uid="u",
        spec=models.parse_spec(spec),
        status=models.GeoDeploymentStatus(),
        current_replicas=None,
    )
    assert decided.target is not None, decided.choice.reason
    return decided.target


def example_repository(artifacts: pathlib.Path, repo: pathlib.Path) -> pathlib.Path:
    """Lay out the example's model repository from the operator's own ConfigMap data."""
    target = example_target()
    repository.materialize(
        children.config_map_data(target),
        model_name=target.spec.model.name,
        artifact_format=target.artifact.format,
        uri=target.artifact.uri,
        repository=repo,
        mirrors={"http://models.geo.local/digits/": f"file://{artifacts}/"},
    )
    return repo


@pytest.fixture(scope="session")
def server(
    artifacts: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[local.TritonServer]:
    """The real tritonserver serving the example, laid out by the operator's builders."""
    repo = example_repository(artifacts, tmp_path_factory.mktemp("model-repository"))
    with local.TritonServer(repo, log_path=repo.parent / "triton.log") as triton:
        yield triton


# ---- the digits-family example (examples/digits-family): built by its script when absent

FAMILY = ROOT / "examples" / "digits-family"
FAMILY_SCRIPT = FAMILY / "make_artifacts.py"
FAMILY_ARTIFACTS = FAMILY / "artifacts"
FAMILY_MANIFEST = ROOT / "manifests" / "examples" / "digits-family.yaml"
FAMILY_PREFIX = "http://models.geo.local/digits-family/"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("digits_family_make_artifacts", FAMILY_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def script() -> ModuleType:
    return _load_script()


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


def exported_series() -> set[str]:
    """Every series name a GEO rule or panel may read: the operator's own metrics
    (controller.telemetry), Triton's (its exposition in tests/fixtures) and the alerts'
    recording rules. A renamed metric leaves a query that never has data: catch it."""
    import re

    from prometheus_client.metrics import MetricWrapperBase

    from geo_operator.builders import alerts
    from geo_operator.controller import telemetry

    names = {
        family.name + suffix
        for metric in vars(telemetry).values()
        if isinstance(metric, MetricWrapperBase)
        for family in metric.describe()
        for suffix in (("", "_total") if family.type == "counter" else ("",))
    }
    for fixture in (ROOT / "tests" / "fixtures").glob("triton_metrics*.txt"):
        names |= set(re.findall(r"^(nv_\w+)", fixture.read_text(), re.M))
    # GPU-only (Triton publishes it on a GPU; no GPU here: its panel falls back to CPU).
    names.add("nv_gpu_utilization")
    return names | {alerts.P99_RECORD, alerts.ERROR_RATIO_RECORD, "up"}


def series_read(expr: str) -> set[str]:
    """The series names a PromQL expression reads (ours, Triton's, recording rules, up)."""
    import re

    return set(re.findall(r"\b((?:geo|nv)_\w+|geodeployment:\w+:\w+|up)\b(?=\s*[{\[ )]|$)", expr))


# ---- the pycode example (examples/pycode): a small llama model and its GGUF family

PYCODE = ROOT / "examples" / "pycode"
PYCODE_ARTIFACTS = PYCODE / "artifacts"


@pytest.fixture(scope="session")
def pycode() -> pathlib.Path:
    """The GGUF family, made (or copied from the cache) by its script when absent."""
    if not (PYCODE_ARTIFACTS / "measurements.json").exists():
        subprocess.run([sys.executable, str(PYCODE / "make_artifacts.py")], check=True, cwd=ROOT)
    return PYCODE_ARTIFACTS
