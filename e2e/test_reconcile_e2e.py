"""The reconcile on a real API server: drift repaired, refusals reported once, one writer
per status field (server-side apply field managers), bad names refused at admission.

kwok plays the nodes, so Triton pods go Running and Ready without running Triton.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import yaml
from e2e.harness import Cluster, OperatorProcess, example, wait_for

from geo_operator.api import names


def _condition(body: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((body or {}).get("status") or {}).get("conditions", []):
        if c["type"] == type_:
            return dict(c)
    return None


def _available(cluster: Cluster, namespace: str) -> dict[str, Any] | None:
    body = cluster.get("geod", "digits", namespace)
    ready = _condition(body, "Ready")
    if not (body and ready and (ready["status"], ready["reason"]) == ("True", "Available")):
        return None
    settled = body["status"].get("observedGeneration") == body["metadata"]["generation"]
    return body if settled else None


def _warnings(cluster: Cluster, namespace: str, reason: str) -> list[str]:
    items = cluster.json("get", "events", "-n", namespace)["items"]
    return [e["message"] for e in items if e["type"] == "Warning" and e["reason"] == reason]


def test_a_deleted_child_comes_back(operator: OperatorProcess, namespace: str) -> None:
    cluster = operator.cluster
    cluster.apply(example(namespace))
    wait_for(lambda: _available(cluster, namespace), "digits Ready=True", timeout=90)
    old = {
        kind: cluster.get(kind, name, namespace)["metadata"]["uid"]  # type: ignore[index]
        for kind, name in (("deployment", "digits"), ("service", "digits"))
    }
    cluster.kubectl("delete", "deployment", "digits", "-n", namespace, "--wait=true")
    cluster.kubectl("delete", "service", "digits", "-n", namespace, "--wait=true")
    for kind in old:

        def back(kind: str = kind) -> bool:
            child = cluster.get(kind, "digits", namespace)
            return child is not None and child["metadata"]["uid"] != old[kind]

        wait_for(back, f"the {kind} recreated by the operator", timeout=60)
    wait_for(lambda: _available(cluster, namespace), "digits Ready=True again", timeout=90)


def test_a_refused_child_is_reported_once(operator: OperatorProcess, namespace: str) -> None:
    cluster = operator.cluster
    cluster.apply(example(namespace))
    wait_for(lambda: _available(cluster, namespace), "digits Ready=True", timeout=90)
    bad = example(namespace)
    # Valid quantities (admission checks those) that no pod can have: requests > limits.
    bad["spec"]["triton"]["resources"] = {"limits": {"cpu": "1"}, "requests": {"cpu": "2"}}
    cluster.apply(bad)

    def refused() -> dict[str, Any] | None:
        body = cluster.get("geod", "digits", namespace)
        ready = _condition(body, "Ready")
        if ready and ready["reason"] == "ChildRefused":
            return body
        return None

    body = wait_for(refused, "Ready=False ChildRefused", timeout=60)
    ready = _condition(body, "Ready")
    assert ready is not None and ready["status"] == "False"
    assert "must be less than or equal to cpu limit" in ready["message"]
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    assert body["status"]["readyReplicas"] == 1  # the old pods still serve
    wait_for(lambda: _warnings(cluster, namespace, "ChildRefused"), "a ChildRefused Warning")
    # Later causes of a reconcile (an annotation, the Deployment's events) add nothing.
    cluster.kubectl("annotate", "geod", "digits", "-n", namespace, "touch=1")
    cluster.kubectl("rollout", "restart", "deployment/digits", "-n", namespace)
    wait_for(lambda: _available_pods(cluster, namespace), "the restarted pod ready")
    assert len(_warnings(cluster, namespace, "ChildRefused")) == 1
    # The operator logged the refusal once, in one line with the API server's words.
    lines = [
        line
        for line in operator.logs().splitlines()
        if namespace in line and "less than or equal to cpu limit" in line and " DEBUG " not in line
    ]
    assert len(lines) == 1 and " WARNING " in lines[0], lines

    cluster.apply(example(namespace))  # fixed: serving the spec again
    wait_for(lambda: _available(cluster, namespace), "digits Ready=True after the fix", timeout=90)


def _available_pods(cluster: Cluster, namespace: str) -> bool:
    deployment = cluster.get("deployment", "digits", namespace) or {}
    status = deployment.get("status") or {}
    return bool(status.get("updatedReplicas") == status.get("readyReplicas") == 1)


def test_each_writer_owns_its_status_fields(operator: OperatorProcess, namespace: str) -> None:
    cluster = operator.cluster
    body = example(namespace)
    body["spec"]["autoscaling"] = {"enabled": True, "minReplicas": 1, "maxReplicas": 2}
    cluster.apply(body)
    wait_for(lambda: _available(cluster, namespace), "digits Ready=True", timeout=90)

    def managers() -> dict[str, Any] | None:
        stored = cluster.json("get", "geod", "digits", "-n", namespace, "--show-managed-fields")
        found = {
            m["manager"]: m["fieldsV1"]
            for m in stored["metadata"].get("managedFields", [])
            if m.get("subresource") == "status"
        }
        wanted = {"geo-operator/reconcile", "geo-operator/autoscaler"}
        return found if wanted <= set(found) else None

    found = wait_for(managers, "both status writers' field managers", timeout=60)
    reconcile = yaml.safe_dump(found["geo-operator/reconcile"])
    scaler = yaml.safe_dump(found["geo-operator/autoscaler"])
    assert 'k:{"type":"Ready"}' in reconcile and 'k:{"type":"Ready"}' not in scaler
    assert 'k:{"type":"MetricsAvailable"}' in scaler
    assert "f:lastDecision" in scaler and "f:lastDecision" not in reconcile
    assert "f:readyReplicas" in reconcile and "f:readyReplicas" not in scaler
    # Deployment.spec.replicas has one writer, through the scale subresource. The API server
    # lists its own placeholder "before-first-apply" beside it while the first scale set the
    # value the field already had (the default 1): it is no writer, and a forced scale to
    # another count drops it.
    stored = cluster.json("get", "deployment", "digits", "-n", namespace, "--show-managed-fields")
    owners = [
        (m["manager"], m.get("subresource"))
        for m in stored["metadata"]["managedFields"]
        if "f:replicas" in (m.get("fieldsV1") or {}).get("f:spec", {})
        and m["manager"] != "before-first-apply"
    ]
    assert owners == [("geo-operator/replicas", "scale")], owners


def test_junk_in_kopfs_bookkeeping_is_reported_and_the_edit_still_acted_on(
    operator: OperatorProcess, namespace: str
) -> None:
    """kopf's state lives under kopf.geo.ai/, apart from geo.ai/rollout; junk written over it
    (or over the old geo.ai/ key) is a Warning Event and a log line, and the next spec edit
    is handled as if the object were new, not ignored."""
    cluster = operator.cluster
    cluster.apply(example(namespace))
    body = wait_for(lambda: _available(cluster, namespace), "digits Ready=True", timeout=90)
    annotations = body["metadata"]["annotations"]
    assert "kopf.geo.ai/last-handled-configuration" in annotations
    assert not [k for k in annotations if k.startswith("geo.ai/")], annotations
    for key in ("kopf.geo.ai/last-handled-configuration", "geo.ai/last-handled-configuration"):
        cluster.kubectl(
            "annotate", "--overwrite", "geod", "digits", "-n", namespace, f"{key}={{junk"
        )
    edited = example(namespace)
    edited["spec"]["triton"]["resources"] = {"limits": {"cpu": "3"}, "requests": {"cpu": "1"}}
    cluster.apply(edited)

    def acted_on() -> dict[str, Any] | None:
        deployment = cluster.get("deployment", "digits", namespace) or {}
        containers = deployment.get("spec", {}).get("template", {}).get("spec", {})
        limits = [
            c.get("resources", {}).get("limits", {}).get("cpu")
            for c in containers.get("containers", [])
        ]
        return deployment if "3" in limits else None

    wait_for(acted_on, "the edit applied to the Deployment despite the junk", timeout=60)
    wait_for(lambda: _available(cluster, namespace), "Ready=True after the edit", timeout=90)

    def migrated() -> dict[str, str] | None:
        # kopf patches its annotations after the handler returns, and the handler wrote the
        # status (Ready, observedGeneration) before that: read until kopf's patch is there
        stored = ((cluster.get("geod", "digits", namespace) or {}).get("metadata") or {}).get(
            "annotations"
        ) or {}
        return None if "geo.ai/last-handled-configuration" in stored else stored

    stored = wait_for(migrated, "the old key removed", timeout=30)
    assert stored["kopf.geo.ai/last-handled-configuration"].startswith('{"')  # rewritten
    warnings = wait_for(
        lambda: _warnings(cluster, namespace, "CorruptDiffBase"), "a CorruptDiffBase Warning"
    )
    assert any("not JSON" in w and "handled anew" in w for w in warnings), warnings


def test_a_name_no_child_could_carry_is_refused_at_admission(
    operator: OperatorProcess, namespace: str
) -> None:
    cluster = operator.cluster
    for name in ("1digits", "a.b.c", "d" * 64):
        body = example(namespace)
        body["metadata"]["name"] = name
        out = cluster.apply(body, check=False)
        assert out.returncode != 0
        assert "metadata.name must be a DNS-1035 label" in out.stderr, out.stderr
        assert "metadata.name: Invalid value" in out.stderr, out.stderr  # the field named
    assert cluster.json("get", "geod", "-n", namespace)["items"] == []
    assert cluster.json("get", "deployments", "-n", namespace)["items"] == []


def test_deleting_the_namespace_is_routine(operator: OperatorProcess, namespace: str) -> None:
    """Its children's deletion events re-run the owner's reconcile while the namespace
    terminates: nothing refused is reported, no warning, no error."""
    cluster = operator.cluster
    cluster.apply(example(namespace))
    wait_for(lambda: _available(cluster, namespace), "digits Ready=True", timeout=90)
    before = len(operator.logs().splitlines())
    cluster.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=90s")
    after = [
        line
        for line in operator.logs().splitlines()[before:]
        if namespace in line and (" WARNING " in line or " ERROR " in line)
    ]
    assert after == [], after


def test_geos_pods_are_admitted_where_the_restricted_standard_is_enforced(
    operator: OperatorProcess, namespace: str
) -> None:
    """The namespace enforces `restricted` (every e2e namespace does): a pod with no
    security context is refused by the API server's PodSecurity admission, GEO's serving
    and tuning pods are admitted, and the pods as stored keep the user and read-only root."""
    cluster = operator.cluster
    labels = cluster.json("get", "namespace", namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    plain = cluster.kubectl(
        "run", "plain", "-n", namespace, "--image=busybox", "--restart=Never", check=False
    )
    assert plain.returncode != 0 and 'violates PodSecurity "restricted:latest"' in plain.stderr
    tuned = example(namespace)
    tuned["spec"]["triton"]["maxBatchSize"] = 0  # a tuning Job's pod per artifact too
    cluster.apply(tuned)

    def pods() -> list[dict[str, Any]] | None:
        items = cluster.json("get", "pods", "-n", namespace)["items"]
        kinds = {p["metadata"]["labels"].get(names.COMPONENT_LABEL) for p in items}
        wanted = {names.SERVING_COMPONENT, names.TUNING_COMPONENT}
        return items if wanted <= kinds else None

    for pod in wait_for(pods, "a serving pod and a tuning pod admitted", timeout=90):
        for container in [*pod["spec"]["initContainers"], *pod["spec"]["containers"]]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    events = cluster.json("get", "events", "-n", namespace)["items"]
    assert not [e["message"] for e in events if e["reason"] == "FailedCreate"]


def test_the_operator_watches_only_geos_children(operator: OperatorProcess) -> None:
    """Issue 29: every child watch and list the operator sends carries a label selector,
    so the API server never sends it a neighbour's pod, ConfigMap, Service, Deployment
    or Job; the GeoDeployment watch has none (every one is GEO's). Read off the API
    server's audit log (the operator's ServiceAccount only) across a restart."""
    audit = operator.cluster.kubeconfig.parent / "logs" / "audit.log"
    offset = audit.stat().st_size
    operator.restart()
    wanted = ("pods", "configmaps", "services", "deployments", "jobs", "geodeployments")

    def requests() -> dict[str, list[str]] | None:
        with audit.open("rb") as stream:
            stream.seek(offset)
            events = [json.loads(line) for line in stream if line.strip()]
        seen: dict[str, list[str]] = {}
        for e in events:
            uri = e.get("requestURI", "")
            if e.get("verb") not in ("list", "watch") or "geo-operator" not in str(e["user"]):
                continue
            plural = uri.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
            if plural in wanted:
                seen.setdefault(plural, []).append(urllib.parse.unquote(uri))
        return seen if all(p in seen for p in wanted) else None

    seen = wait_for(requests, "the restarted operator's lists and watches", timeout=60)
    managed = f"labelSelector={names.MANAGED_BY_LABEL}={names.MANAGER}"
    tuning = f"labelSelector={names.COMPONENT_LABEL}={names.TUNING_COMPONENT}"
    for plural, selector in (
        ("pods", managed),
        ("configmaps", managed),
        ("services", managed),
        ("deployments", managed),
        ("jobs", tuning),
    ):
        # kopf's cluster-wide watch carries GEO's selector; the reconcile's own lists carry
        # their owner's: nothing is listed or watched unselected
        assert all("labelSelector=" in u for u in seen[plural]), seen[plural]
        assert any(selector in u and "watch=true" in u for u in seen[plural]), seen[plural]
    assert not any("labelSelector" in u for u in seen["geodeployments"])
