"""A coordination.k8s.io/v1 Lease, read and written for leader election (`controller.leader`).

Written with optimistic concurrency: a create that finds the Lease there, or a replace
whose resourceVersion is no longer the stored one, answers False (someone else wrote
first) instead of raising; a refusal of the operator's rights raises `Forbidden` with
what it needs; anything else the API server answers raises as usual.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Protocol

import kubernetes
from kubernetes.client import exceptions

CONFLICT = 409
UNAUTHORIZED = (401, 403)


class Forbidden(Exception):
    """The API server refuses the operator the Lease: a setup mistake, not a transient."""

    def __init__(self, verb: str, namespace: str, name: str) -> None:
        super().__init__(
            f"the operator may not {verb} Lease {namespace}/{name}: --leader-elect needs get, "
            f"create and update on coordination.k8s.io leases in {namespace} (the chart's "
            "role-leader-election.yaml grants them in the release's namespace; "
            "--leader-elect-namespace names another)"
        )


def _refused(error: exceptions.ApiException, verb: str, namespace: str, name: str) -> None:
    if error.status in UNAUTHORIZED:
        raise Forbidden(verb, namespace, name) from None


@dataclasses.dataclass(frozen=True)
class Record:
    """What a Lease says: who holds it, for how long a renewal counts, how often it changed
    hands; ``version`` is the resourceVersion a replace must name."""

    holder: str
    duration_s: int
    transitions: int = 0
    version: str = ""
    acquired: str = ""  # when the holder took it (RFC 3339); "" for now


class Leases(Protocol):
    """The seam `controller.leader` elects through (a fake in the unit tests)."""

    def read(self, namespace: str, name: str) -> Record | None: ...

    def create(self, namespace: str, name: str, record: Record) -> bool: ...

    def replace(self, namespace: str, name: str, record: Record) -> bool: ...


TIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # a MicroTime


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime(TIME)


class LeaseClient:
    """`Leases` on the official client (coordination.k8s.io/v1)."""

    def __init__(self, api_client: kubernetes.client.ApiClient | None = None) -> None:
        self._api = kubernetes.client.CoordinationV1Api(api_client or kubernetes.client.ApiClient())

    def read(self, namespace: str, name: str) -> Record | None:
        try:
            lease = self._api.read_namespaced_lease(name, namespace)
        except exceptions.ApiException as error:
            if error.status == 404:
                return None
            _refused(error, "get", namespace, name)
            raise
        spec = lease.spec or kubernetes.client.V1LeaseSpec()
        metadata = lease.metadata or kubernetes.client.V1ObjectMeta()
        return Record(
            holder=spec.holder_identity or "",
            duration_s=int(spec.lease_duration_seconds or 0),
            transitions=int(spec.lease_transitions or 0),
            version=str(metadata.resource_version or ""),
            acquired=spec.acquire_time.strftime(TIME) if spec.acquire_time else "",
        )

    def _body(self, namespace: str, name: str, record: Record) -> dict[str, Any]:
        now = _now()
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if record.version:
            metadata["resourceVersion"] = record.version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": record.holder or None,
                "leaseDurationSeconds": record.duration_s,
                "leaseTransitions": record.transitions,
                "acquireTime": record.acquired or now,
                "renewTime": now,
            },
        }

    def create(self, namespace: str, name: str, record: Record) -> bool:
        try:
            body: Any = self._body(namespace, name, record)  # the client takes a dict too
            self._api.create_namespaced_lease(namespace, body)
        except exceptions.ApiException as error:
            if error.status == CONFLICT:
                return False
            _refused(error, "create", namespace, name)
            raise
        return True

    def replace(self, namespace: str, name: str, record: Record) -> bool:
        try:
            body: Any = self._body(namespace, name, record)
            self._api.replace_namespaced_lease(name, namespace, body)
        except exceptions.ApiException as error:
            if error.status == CONFLICT:
                return False
            _refused(error, "update", namespace, name)
            raise
        return True
