"""The fake `k8s` seam: an in-memory API server the handlers, the reconcile and the
autoscaler run against, and what the reconcile has written once it deployed."""

from __future__ import annotations

import copy
from typing import Any

from geo_operator.api import models, names
from geo_operator.k8s import client as k8s


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


def _replica_owners(deployment: dict[str, Any]) -> list[str]:
    return [
        entry["manager"]
        for entry in (deployment.get("metadata") or {}).get("managedFields") or ()
        if "f:replicas" in (entry.get("fieldsV1") or {}).get("f:spec", {})
    ]


def _set_replica_owners(deployment: dict[str, Any], owners: set[str]) -> None:
    deployment.setdefault("metadata", {})["managedFields"] = [
        {
            "manager": owner,
            "operation": "Apply",
            **({"subresource": "scale"} if owner == names.REPLICAS_MANAGER else {}),
            "fieldsV1": {"f:spec": {"f:replicas": {}}},
        }
        for owner in sorted(owners)
    ]


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
        if obj["kind"] == "Deployment":
            self._apply_replicas(stored, old)
        if old is not None:
            stored["status"] = old.get("status", {})
            same = {k: v for k, v in old.items() if k != "status"} == {
                **stored,
                "metadata": {
                    **stored["metadata"],
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

    def _apply_replicas(self, stored: dict[str, Any], old: dict[str, Any] | None) -> None:
        """spec.replicas as server-side apply keeps it: a forced apply that sets it takes
        it over; one that leaves it out gives up its share, and the field falls back to 1
        when nobody else owns it (or when nothing was stored); the owners are in
        metadata.managedFields, as the API server writes them."""
        owners = set(_replica_owners(old)) if old is not None else set()
        spec = stored["spec"]
        if "replicas" in spec:
            owners = {names.CHILDREN_MANAGER}
        else:
            owners.discard(names.CHILDREN_MANAGER)
            kept = old is not None and owners and "replicas" in old["spec"]
            spec["replicas"] = old["spec"]["replicas"] if kept and old else 1
        _set_replica_owners(stored, owners)

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        """Server-side apply of the scale subresource as `names.REPLICAS_MANAGER` (forced:
        a new count takes the field from every other owner, the same count shares it)."""
        self.scaled.append((namespace, name, replicas))
        deployment = self.objects.get(("Deployment", namespace, name))
        if deployment is None:
            return
        owners = set(_replica_owners(deployment))
        if deployment["spec"].get("replicas") != replicas:
            owners = set()
        _set_replica_owners(deployment, owners | {names.REPLICAS_MANAGER})
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
