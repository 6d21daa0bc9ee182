"""The CRD generated from the models: drift, structure, and what `kubectl` shows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml
from tests.support.paths import ROOT

from geo_operator.api import crd, models, reference

CHECKED_IN = ROOT / "crds" / "geodeployments.geo.ai.yaml"
REFERENCE = ROOT / "docs" / "reference" / "api.md"


def _version() -> dict[str, Any]:
    return dict(crd.crd()["spec"]["versions"][0])


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for name, sub in node.get("properties", {}).items():
            yield from _walk(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            yield from _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_checked_in_crd_matches_geo_crd() -> None:
    assert CHECKED_IN.read_text() == crd.crd_yaml(), (
        "crds/ drifted from the models: run `geo crd > crds/geodeployments.geo.ai.yaml`"
    )


def test_checked_in_api_reference_matches_the_models() -> None:
    assert REFERENCE.read_text() == reference.reference(), (
        "docs/reference/api.md drifted from the models: run `make crd`"
    )


def test_the_reference_lists_every_field_with_its_type_and_every_rule() -> None:
    page = reference.reference()
    spec = _version()["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for path, node in _walk(spec, "spec"):
        for name in node.get("properties") or {}:
            assert f"| `{name}`" in page, f"{path}.{name} is missing from the reference"
        for rule in node.get("x-kubernetes-validations") or []:
            words = " ".join(str(rule.get("message") or rule["rule"]).split())
            assert words.replace("|", "\\|") in page, f"{path}: rule not in words: {words}"
    assert "| `replicas` | integer | `1` | >= 0; <= 1000 |" in page  # type, default and bounds


def test_names_are_the_fixed_ones() -> None:
    spec = crd.crd()["spec"]
    assert spec["group"] == "geo.ai" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "GeoDeployment"
    assert spec["names"]["plural"] == "geodeployments"
    assert spec["names"]["shortNames"] == ["geod"]
    assert _version()["name"] == "v1alpha1"


def test_scale_and_status_subresources() -> None:
    sub = _version()["subresources"]
    assert sub["status"] == {}
    assert sub["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_every_spec_field_is_described() -> None:
    schema = _version()["schema"]["openAPIV3Schema"]["properties"]["spec"]
    missing = [
        path
        for path, node in _walk(schema, "spec")
        if not path.endswith(("[]", "{}")) and not node.get("description")
    ]
    assert missing == []


def test_schema_is_structural() -> None:
    schema = _version()["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
        assert node.get("additionalProperties") is not False, path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path


def test_defaults_reach_nested_objects() -> None:
    spec = _version()["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["autoscaling"]["default"]["minReplicas"] == 1  # full: CEL checks defaults
    assert spec["autoscaling"]["properties"]["targetUtilization"]["default"] == 0.7
    assert (
        spec["autoscaling"]["properties"]["metrics"]["properties"]["source"]["default"] == "direct"
    )
    assert spec["model"]["properties"]["selection"]["properties"]["policy"]["enum"] == [
        "best-score",
        "smallest",
        "fastest",
        "pinned",
        "min-cost",
    ]
    artifacts = spec["model"]["properties"]["artifacts"]
    assert artifacts["x-kubernetes-list-type"] == "map"
    assert artifacts["x-kubernetes-list-map-keys"] == ["name"]
    assert artifacts["minItems"] == 1


def test_printer_columns() -> None:
    columns = {c["name"]: c["jsonPath"] for c in _version()["additionalPrinterColumns"]}
    assert columns["Artifact"] == ".status.selectedArtifact.name"
    assert columns["Ready"] == ".status.readyReplicas"
    assert columns["Decision"] == ".status.lastDecision.action"
    assert columns["Rollout"] == ".status.rollout.phase"
    assert columns["Age"] == ".metadata.creationTimestamp"


def test_resources_accept_int_or_string() -> None:
    triton = _version()["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["triton"]
    quantity = triton["properties"]["resources"]["additionalProperties"]["additionalProperties"]
    assert quantity == {"x-kubernetes-int-or-string": True, "maxLength": 64}


def test_yaml_has_no_anchors() -> None:
    text = crd.crd_yaml()
    assert "&id" not in text and "*id" not in text
    assert yaml.safe_load(text)["kind"] == "CustomResourceDefinition"
    assert models.API_VERSION == "geo.ai/v1alpha1"
