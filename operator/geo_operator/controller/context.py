"""The operator's process state, in one object passed in (kopf keeps it in its memo).

`geo run` builds one `Context`; kopf hands it (as ``memo.geo``) to every handler,
which passes it on. Tests build their own with a fake `Kube` and a clock they move.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from geo_operator.api import names
from geo_operator.controller import canary
from geo_operator.controller.autoscaler import http_fetch
from geo_operator.k8s import client as k8s

Key = tuple[str, str]  # (namespace, name)
MAX_RETRY_SECONDS = 300  # a failed reconcile is retried after 5 s, doubling up to this


class KeyLocks:
    """One lock per GeoDeployment: its reconciles run one at a time, whatever caused them
    (its own change, a child's event, a retry coming due), on whichever of kopf's threads."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Key, threading.Lock] = {}

    @contextmanager
    def hold(self, key: Key) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield

    def forget(self, key: Key) -> None:
        with self._guard:
            self._locks.pop(key, None)


class Requeues:
    """When each GeoDeployment wants its reconcile again (a tuning retry's back-off, or a
    failed reconcile's).
    A kopf timer asks `due` and runs the reconcile; nothing here runs anything."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._at: dict[Key, float] = {}
        self._failures: dict[Key, int] = {}

    def set(self, key: Key, at: float | None) -> None:
        with self._guard:
            if at is None:
                self._at.pop(key, None)
            else:
                self._at[key] = at

    def keys_due(self, now: float) -> list[Key]:
        """The objects whose time has come (each handed out once)."""
        with self._guard:
            due = [k for k, at in self._at.items() if at <= now]
            for key in due:
                del self._at[key]
            return due

    def failed(self, key: Key, now: float) -> float:
        """Record a failed reconcile; the seconds until its retry (5 s, doubling, at most
        MAX_RETRY_SECONDS), also set as its requeue time."""
        with self._guard:
            pending = self._at.get(key)
            if key in self._failures and pending is not None and pending > now:
                return pending - now  # other causes failing meanwhile: one retry, one step
            count = self._failures.get(key, 0) + 1
            self._failures[key] = count
            delay = float(min(5 * 2 ** (count - 1), MAX_RETRY_SECONDS))
            self._at[key] = now + delay
            return delay

    def succeeded(self, key: Key) -> None:
        with self._guard:
            self._failures.pop(key, None)

    def pending(self, key: Key) -> float | None:
        with self._guard:
            return self._at.get(key)

    def forget(self, key: Key) -> None:
        """A deleted object: its retry and its back-off go (one made again under the same
        name starts at the first step, not where the deleted one's failures left it)."""
        with self._guard:
            self._at.pop(key, None)
            self._failures.pop(key, None)


class Pending:
    """Which GeoDeployments' reconciles run now, and whether another was asked for meanwhile:
    the causes that come while one runs (its own Deployment's events, a retry, a spec
    edit) are served by one more run after it, however many came (as controller-runtime's
    work queue does). The thread that asked returns at once; kopf's handler threads no
    longer wait in line on an object's lock, and a burst of a child's events is one
    reconcile, not one each."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._again: dict[Key, bool] = {}  # running; True: asked for again meanwhile

    def enter(self, key: Key) -> bool:
        """True: the caller runs the reconcile. False: one runs; it will run once more."""
        with self._guard:
            if key in self._again:
                self._again[key] = True
                return False
            self._again[key] = False
            return True

    def leave(self, key: Key) -> bool:
        """After a run: True when asked for again meanwhile (run again), else False (the
        key is released)."""
        with self._guard:
            if self._again.get(key):
                self._again[key] = False
                return True
            self._again.pop(key, None)
            return False

    def release(self, key: Key) -> None:
        """Let go whatever happened (a run that raised past its own handling)."""
        with self._guard:
            self._again.pop(key, None)

    def running(self) -> int:
        with self._guard:
            return len(self._again)


class Written:
    """The Services and ConfigMaps the reconcile wrote (or read and found as it wants them),
    at the resourceVersion the API server gave them, beside the latest version the watch
    delivered for each. While the two are the same, nothing has touched the object since:
    a reconcile that would apply the same content (the same `names.APPLIED_ANNOTATION`
    hash) for the same owner skips its GET and its apply. Any other write (a user's edit,
    a deletion, another owner's apply) moves the watch's version on, and the next
    reconcile reads and repairs it as before. A child the watch has not delivered yet is
    always read. At 1,000 GeoDeployments these were two of the reconcile's nine requests."""

    KINDS = frozenset({"Service", "ConfigMap"})

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._wrote: dict[tuple[str, str, str], tuple[str, str, str]] = {}
        self._watched: dict[tuple[str, str, str], str] = {}

    @staticmethod
    def _identity(obj: Mapping[str, Any]) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
        meta = obj.get("metadata") or {}
        key = (str(obj.get("kind")), str(meta.get("namespace")), str(meta.get("name")))
        owners = meta.get("ownerReferences") or []
        owner: Mapping[str, Any] = next((o for o in owners if o.get("controller")), {})
        applied = (meta.get("annotations") or {}).get(names.APPLIED_ANNOTATION, "")
        return key, (str(meta.get("resourceVersion")), str(applied), str(owner.get("uid", "")))

    def wrote(self, stored: Mapping[str, Any]) -> None:
        """``stored``: the object as the API server returned it (an apply's answer, a GET)."""
        key, version = self._identity(stored)
        if key[0] in self.KINDS:
            with self._guard:
                self._wrote[key] = version

    def watched(self, kind: str, namespace: str, name: str, version: str | None) -> None:
        """The watch delivered ``version`` of the object (None: it was deleted)."""
        key = (kind, namespace, name)
        with self._guard:
            if version is None:
                self._watched.pop(key, None)
                self._wrote.pop(key, None)
            else:
                self._watched[key] = version

    def current(self, wanted: Mapping[str, Any], uid: str) -> bool:
        """Whether ``wanted`` (stamped) is stored as it is, for owner ``uid``, untouched since."""
        key, (_, applied, _) = self._identity(wanted)
        with self._guard:
            wrote = self._wrote.get(key)
            return (
                key[0] in self.KINDS
                and wrote is not None
                and wrote[0] == self._watched.get(key)
                and wrote[1:] == (applied, uid)
            )


class Seen:
    """The last digest of each child whose events re-run its owner: an event that changes
    nothing the reconcile reads (a Deployment's condition timestamps, its availableReplicas
    on the way up) re-runs nothing. At 1,000 GeoDeployments those were most reconciles."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._digests: dict[Key, str] = {}

    def changed(self, key: Key, digest: str) -> bool:
        """Whether ``digest`` is new for ``key`` (and remember it)."""
        with self._guard:
            if self._digests.get(key) == digest:
                return False
            self._digests[key] = digest
            return True

    def forget(self, key: Key) -> None:
        with self._guard:
            self._digests.pop(key, None)


@dataclasses.dataclass
class Context:
    """Everything the controller shares across objects and threads."""

    kube: k8s.Kube
    tuner_image: str = names.DEFAULT_TUNER_IMAGE
    clock: Callable[[], float] = time.time  # wall-clock seconds: retry times are RFC 3339
    locks: KeyLocks = dataclasses.field(default_factory=KeyLocks)
    requeues: Requeues = dataclasses.field(default_factory=Requeues)
    seen: Seen = dataclasses.field(default_factory=Seen)  # children's events: what changed
    pending: Pending = dataclasses.field(default_factory=Pending)  # reconciles running
    written: Written = dataclasses.field(default_factory=Written)  # children as last written
    # The canary analysis' open windows (their counters' baselines), read through ``fetch``.
    windows: canary.Windows = dataclasses.field(default_factory=lambda: canary.Windows(http_fetch))
    # Each canary configuration's held-out score (model.evaluation), measured once, off
    # the reconcile path: when its job ends, the owner's reconcile is brought forward.
    scores: canary.Scores = dataclasses.field(default_factory=canary.Scores)

    def __post_init__(self) -> None:
        self.scores.jobs.on_done = lambda owner: self.requeues.set(owner, self.clock())
