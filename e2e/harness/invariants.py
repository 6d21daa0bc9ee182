"""What must hold in a namespace once GEO has settled, after any fault (issue 14).

`violations(cluster, namespace)` reads the namespace once and returns every broken
invariant as a sentence (an empty list: all hold):

* each GeoDeployment has at most its stable Deployment and, during a rollout, its
  canary: no other Deployment is its;
* every object GEO made (the managed-by label) has a controller that exists: a
  GeoDeployment for Deployments, Services, ConfigMaps and Jobs; a ReplicaSet or
  Job for pods — nothing orphaned;
* each GeoDeployment is reconciled to its latest generation, with a Ready condition
  that has a reason;
* its status agrees with its children: a GeoDeployment Ready=True serves its
  status.configHash from its stable Deployment, with the ready replicas its
  Deployments have (the stable's and, while a rollout runs, the canary's: both serve);
* no Event about a GeoDeployment was posted twice (the same reason and message
  as two Events), but for those that tell of a change which may recur (`RECURRING`);
* no pod was refused (FailedCreate: the restricted Pod Security Standard).

`bystanders` are `kind/name` -> resourceVersion of objects that are not GEO's:
they must be as they were, and have no owner.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

from e2e.harness.cluster import Cluster, wait_for

from geo_operator.api import names
from geo_operator.builders import children

MANAGED = f"{names.MANAGED_BY_LABEL}={names.MANAGER}"
OWNED_KINDS = ("deployments", "services", "configmaps", "jobs")
# Events that tell of one change each, which may come again with the same words (a spec
# edited 32 -> 16 -> 32 rolls twice, "max_batch_size 32" both times): not duplicates.
RECURRING = {"Rolling", "ScaledOut", "ScaledIn", "TuningStarted", "CanaryStarted"}


def _ready(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    conditions = (body.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), None)


def violations(
    cluster: Cluster, namespace: str, bystanders: Mapping[str, str] | None = None
) -> list[str]:
    found: list[str] = []
    geods = {g["metadata"]["name"]: g for g in _items(cluster, "geod", namespace)}
    uids = {g["metadata"]["uid"]: name for name, g in geods.items()}
    owned: dict[str, list[dict[str, Any]]] = {}
    for kind in OWNED_KINDS:
        owned[kind] = _items(cluster, kind, namespace, MANAGED)
        for item in owned[kind]:
            controller = _controller(item)
            if controller is None or controller.get("uid") not in uids:
                found.append(f"{kind}/{item['metadata']['name']} is no GeoDeployment's (orphaned)")
    sets = {r["metadata"]["uid"] for r in _items(cluster, "replicasets", namespace, MANAGED)}
    jobs = {j["metadata"]["uid"] for j in owned["jobs"]}
    for pod in _items(cluster, "pods", namespace, MANAGED):
        controller = _controller(pod)
        if controller is None or controller.get("uid") not in sets | jobs:
            found.append(f"pod/{pod['metadata']['name']} has no ReplicaSet or Job (orphaned)")
    for name, body in geods.items():
        found += _one(name, body, [d for d in owned["deployments"] if _owner(d) == name])
    for ref, version in (bystanders or {}).items():
        kind, name = ref.split("/")
        now = cluster.get(kind, name, namespace)
        if now is None or now["metadata"]["resourceVersion"] != version:
            found.append(f"{ref} is not GEO's and was changed or deleted")
        elif now["metadata"].get("ownerReferences"):
            found.append(f"{ref} is not GEO's and was given an owner")
    events = _items(cluster, "events", namespace)
    posted = collections.Counter(
        (e["involvedObject"]["name"], e["reason"], e["message"])
        for e in events
        if e["involvedObject"]["kind"] == "GeoDeployment"
    )
    found += [
        f"Event posted {n} times: {key}"
        for key, n in posted.items()
        if n > 1 and key[1] not in RECURRING
    ]
    found += [f"a pod was refused: {e['message']}" for e in events if e["reason"] == "FailedCreate"]
    return found


def _one(name: str, body: Mapping[str, Any], deployments: list[dict[str, Any]]) -> list[str]:
    found = []
    allowed = {name, children.canary_name(name)}
    extra = sorted(d["metadata"]["name"] for d in deployments) if deployments else []
    if set(extra) - allowed:
        found.append(f"{name} has Deployments {extra}: only {sorted(allowed)} may be its")
    status = body.get("status") or {}
    generation = body["metadata"].get("generation")
    if status.get("observedGeneration") != generation:
        seen = status.get("observedGeneration")
        found.append(f"{name}: observedGeneration {seen} != generation {generation}")
    ready = _ready(body)
    if ready is None or not ready.get("reason"):
        found.append(f"{name}: no Ready condition with a reason")
        return found
    stable = next((d for d in deployments if d["metadata"]["name"] == name), None)
    if ready["status"] == "True":
        if stable is None:
            return [*found, f"{name}: Ready=True with no Deployment"]
        serving = children.template_hash(stable)
        said = status.get("configHash")
        if serving != said:
            found.append(f"{name}: status.configHash {said} but its Deployment serves {serving}")
        # Both tracks serve behind the Service while a canary runs: status counts both.
        live = [d for d in deployments if not d["metadata"].get("deletionTimestamp")]
        have = sum(int((d.get("status") or {}).get("readyReplicas") or 0) for d in live)
        if int(status.get("readyReplicas") or 0) != have:
            tracks = "+".join(sorted(d["metadata"]["name"] for d in live))
            found.append(
                f"{name}: status.readyReplicas {status.get('readyReplicas')} != {have} ({tracks})"
            )
    return found


def _items(
    cluster: Cluster, kind: str, namespace: str, selector: str | None = None
) -> list[dict[str, Any]]:
    args = ["get", kind, "-n", namespace] + (["-l", selector] if selector else [])
    return list(cluster.json(*args)["items"])


def _controller(item: Mapping[str, Any]) -> Mapping[str, Any] | None:
    owners = item["metadata"].get("ownerReferences") or []
    return next((o for o in owners if o.get("controller")), None)


def _owner(item: Mapping[str, Any]) -> str | None:
    controller = _controller(item)
    return None if controller is None else str(controller.get("name"))


def wait_held(
    cluster: Cluster, namespace: str, after: str = "the fault", timeout: float = 60
) -> None:
    """Wait until `violations` finds nothing in `namespace`; else fail with what it found
    last, `after` naming what came before."""
    found: list[list[str]] = [[]]

    def hold() -> bool:
        found.append(violations(cluster, namespace))
        return not found[-1]

    try:
        wait_for(hold, f"the invariants after {after}", timeout=timeout, every=2)
    except AssertionError:
        raise AssertionError(f"invariants broken after {after}: {found[-1]}") from None
