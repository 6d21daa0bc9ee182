"""Render the GeoDeployment CustomResourceDefinition from the pydantic models.

`geo crd` prints it; `crds/`, the Helm chart and `manifests/` hold copies that a
test compares with this function's output. The conversion turns pydantic's JSON
Schema (draft 2020-12, with `$defs`) into a Kubernetes structural schema
(OpenAPI v3 subset): references inlined, `Optional` collapsed, exclusive bounds
rewritten, int-or-string marked, titles dropped, and `default: {}` on nested
objects so the API server applies their inner defaults.
"""

from __future__ import annotations

from typing import Any

from geo_operator.api import models, yamlio

# Structural schemas have no propertyNames: a CEL rule says what keys a map takes.
_DROP = {"title", "propertyNames"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline `$ref`s and normalise one schema node, recursively."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is not None:
        target = dict(defs[ref.rsplit("/", 1)[-1]])
        target.update(node)  # a sibling description wins over the class docstring
        node = target
    any_of = node.pop("anyOf", None)
    if any_of is not None:
        kinds = [s for s in any_of if s.get("type") != "null"]
        if {s.get("type") for s in kinds} == {"string", "integer"}:
            node["x-kubernetes-int-or-string"] = True
            for kind in kinds:  # a string's bound holds for int-or-string (CEL cost needs it)
                if "maxLength" in kind:
                    node["maxLength"] = kind["maxLength"]
        elif len(kinds) == 1:
            merged = dict(kinds[0])
            merged.update(node)
            node = merged
        else:  # pragma: no cover - the models don't have such unions
            raise ValueError(f"cannot express anyOf {any_of} in a structural schema")
        if node.get("default", 0) is None:
            del node["default"]
            node[_OPTIONAL] = True  # absent means None: no object default (see below)
        return _resolve(node, defs)
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in node and not isinstance(node[key], bool):
            node["minimum" if key == "exclusiveMinimum" else "maximum"] = node[key]
            node[key] = True
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "additionalProperties" and value is False:
            continue  # structural schemas forbid it; the API server prunes unknown fields
        if key == "properties":
            out[key] = {name: _resolve(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _resolve(value, defs)
        else:
            out[key] = value
    for sub in out.get("properties", {}).values():
        if sub.pop(_OPTIONAL, False):
            continue  # e.g. a queue policy: defaulting it would switch it on
        if sub.get("type") == "object" and "properties" in sub and not sub.get("required"):
            sub.setdefault("default", _defaults_of(sub))
    return out


# Marks, while resolving, a property whose pydantic default is None.
_OPTIONAL = "x-geo-optional"


def _defaults_of(node: dict[str, Any]) -> dict[str, Any]:
    """The fully defaulted value of an object schema.

    The API server checks a default against the object's CEL rules without
    applying the nested defaults first, so `default: {}` would fail them.
    """
    return {
        name: sub["default"] for name, sub in node.get("properties", {}).items() if "default" in sub
    }


def openapi_schema(model: type[models._Model]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return dict(_resolve(raw, defs))


def _drop_defaults(node: Any) -> Any:
    """Status is written by the operator only: defaults there would be noise."""
    if isinstance(node, dict):
        return {k: _drop_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_drop_defaults(v) for v in node]
    return node


def _status_schema() -> dict[str, Any]:
    return dict(_drop_defaults(openapi_schema(models.GeoDeploymentStatus)))


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {
        "name": "Artifact",
        "type": "string",
        "jsonPath": ".status.selectedArtifact.name",
        "description": "The artifact being served.",
    },
    {
        "name": "Replicas",
        "type": "integer",
        "jsonPath": ".status.replicas",
        "description": "Triton pods asked, both tracks (stable and canary).",
    },
    {
        "name": "Ready",
        "type": "integer",
        "jsonPath": ".status.readyReplicas",
        "description": "Triton pods ready, both tracks (stable and canary).",
    },
    {
        "name": "Status",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "description": "Reason of the Ready condition.",
    },
    {
        "name": "Decision",
        "type": "string",
        "jsonPath": ".status.lastDecision.action",
        "description": "The latest autoscaling decision.",
    },
    {
        "name": "Rollout",
        "type": "string",
        "jsonPath": ".status.rollout.phase",
        "description": "The current or latest rollout: Progressing, Promoted, RolledBack, ...",
    },
    {
        "name": "Weight",
        "type": "integer",
        "jsonPath": ".status.rollout.weight",
        "priority": 1,
        "description": "The canary's share of the replicas, percent.",
    },
    {
        "name": "Batch",
        "type": "integer",
        "jsonPath": ".status.maxBatchSize",
        "priority": 1,
        "description": "max_batch_size in use.",
    },
    {
        "name": "Target",
        "type": "number",
        "jsonPath": ".status.autoscaling.effectiveTargetQpsPerReplica",
        "priority": 1,
        "description": "The autoscaler's effective target QPS per replica.",
    },
    {
        "name": "Source",
        "type": "string",
        "jsonPath": ".status.autoscaling.source",
        "priority": 1,
        "description": "Where the target came from: declared, measured, learned or unknown.",
    },
    {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
    },
]


# The name becomes the Service's name (a DNS-1035 label) and a label value (63
# characters): refused at admission, so no child is ever half-created under it. The rule
# sits on metadata.name itself (a CRD may restrict name and generateName), so the API
# server's error starts "metadata.name: Invalid value" (from the root it said "<nil>").
NAME_RULE = {
    "rule": "self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self) <= 63",
    "message": "metadata.name must be a DNS-1035 label of at most 63 characters "
    "(lower-case letters, digits and '-', starting with a letter, ending with a letter or "
    "digit): it names the Triton Service and is a label value",
}


def crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition as a dict."""
    spec_schema = openapi_schema(models.GeoDeploymentSpec)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{models.PLURAL}.{models.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "geo"},
        },
        "spec": {
            "group": models.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": models.KIND,
                "listKind": f"{models.KIND}List",
                "plural": models.PLURAL,
                "singular": models.SINGULAR,
                "shortNames": [models.SHORT_NAME],
                "categories": ["all", "geo"],
            },
            "versions": [
                {
                    "name": models.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (
                                "GeoDeployment serves one model with NVIDIA Triton: the operator "
                                "picks the quantized artifact, tunes batching and autoscales "
                                "on QPS and p99 latency."
                            ),
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {
                                    "type": "object",
                                    "properties": {
                                        "name": {
                                            "type": "string",
                                            "x-kubernetes-validations": [NAME_RULE],
                                        }
                                    },
                                },
                                "spec": spec_schema,
                                "status": _status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    """The CRD as YAML text, exactly as checked in under `crds/`."""
    header = "# Generated by `geo crd` from operator/geo_operator/api/models.py. Do not edit.\n"
    return header + yamlio.dump(crd())


def helm_template() -> str:
    """The chart's templates/crd.yaml: the same CRD, gated by `crds.enabled`,
    with the chart's labels and, when `crds.keep`, helm's keep policy."""
    body = yamlio.dump(crd())
    head, rest = body.split("spec:\n", 1)
    head = head.replace(
        "  labels:\n    app.kubernetes.io/part-of: geo\n",
        "  labels:\n"
        '    {{- include "geo-operator.labels" . | nindent 4 }}\n'
        "  {{- if .Values.crds.keep }}\n"
        "  annotations:\n"
        "    helm.sh/resource-policy: keep\n"
        "  {{- end }}\n",
    )
    return (
        "# Generated by `geo crd --chart` from operator/geo_operator/api/models.py. Do not edit.\n"
        "{{- if .Values.crds.enabled }}\n" + head + "spec:\n" + rest + "{{- end }}\n"
    )
