"""kopf wiring, and nothing else: which events reach which part of the controller.

`geo run` imports this module and starts kopf with a memo holding the
`controller.context.Context` (``memo.geo``) and the `Autoscaler`
(``memo.autoscaler``). Every cause of a reconcile goes to the one
`controller.reconcile.reconcile`:

- the GeoDeployment created, its spec changed, the operator resumed, a
  by-hand rollout action annotated (`geo rollout promote|abort`);
- a child (Deployment, Service, ConfigMap, tuning Job) changed or was deleted:
  kopf has no owner re-queue, so the child's event names its owner by label and
  reconciles it (that is also how readiness reaches status, and how a deleted
  child comes back);
- a tuning retry's back-off passed: `requeue` looks every few seconds for an
  object whose time has come.

kopf's own state (handler progress, the last-handled diff-base) lives under
`kopf.geo.ai/`, apart from the user-facing `geo.ai/` annotations; the keys it had under
`geo.ai/` are read as a fallback and removed as it writes. A corrupt value there is logged,
posted as a Warning Event and read as absent: the object is handled anew.

kopf's indexes keep the autoscaler's view (GeoDeployments, Triton pods,
Deployments' replica counts); its loop is an asyncio task started and stopped
here. No finalizer: children go with their owner by ownerReferences, so
deleting a GeoDeployment never waits for the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import kopf

from geo_operator.api import models, names
from geo_operator.builders import children, plan, tuning
from geo_operator.controller import autoscaler as autoscaler_
from geo_operator.controller import context, reconcile, telemetry
from geo_operator.k8s import client as k8s

log = logging.getLogger(__name__)

RESOURCE = (models.GROUP, models.VERSION, models.PLURAL)
MANAGED = {names.MANAGED_BY_LABEL: names.MANAGER}
REQUEUE_PERIOD = 2.0
HANDLER_THREADS = 24  # kopf's handler pool (k8s.POOL_SIZE connections serve them)
CONSISTENCY_SECONDS = 30.0


def memo(tuner_image: str = names.DEFAULT_TUNER_IMAGE) -> kopf.Memo:
    """The memo `geo run` passes to kopf: the client is made at startup, after login."""
    return kopf.Memo(tuner_image=tuner_image)


def _context(memo: Any) -> context.Context:
    return memo.geo  # type: ignore[no-any-return]


class _Forever:
    """kopf's backoffs between retries of a failed API request: 1, 1, 2, 3, 5 s, then every
    8 s for as long as it takes. Each request iterates afresh (an iterable, not one
    shared iterator); unsized, so kopf counts attempts without a total."""

    def __iter__(self) -> Iterator[float]:
        return itertools.chain((1.0, 1.0, 2.0, 3.0, 5.0), itertools.repeat(8.0))


RETRY_FOREVER = _Forever()


# ------------------------------------------------------------------ kopf's bookkeeping

# kopf's own state (each handler's progress, the last-handled diff-base) lives under a prefix
# of its own, apart from the user-facing `geo.ai/` annotations such as `geo.ai/rollout`
# (issue 31.5: a junk `geo.ai/last-handled-configuration` wedged an object silently).
KOPF_PREFIX = f"kopf.{models.GROUP}"
# Where it lived before: read as a fallback and cleared as the new keys are written, so the
# old keys go away as objects are handled.
LEGACY_KOPF_PREFIX = models.GROUP
DIFFBASE_KEY = "last-handled-configuration"
# The finalizer keeps its old name: objects in clusters carry it, and a renamed one would
# strand them (kopf would never remove the old name, and their deletion would hang).
FINALIZER = f"{models.GROUP}/finalizer"
CORRUPT_DIFFBASE_REASON = "CorruptDiffBase"
CORRUPT_PROGRESS_REASON = "CorruptHandlerProgress"
# The GeoDeployment's user-facing annotations under the legacy prefix. Every other key there
# is taken for kopf's (its marker, touch key, diff-base and the handlers' progress, named by
# handler id), kept out of the diff as the legacy storage always did.
USER_ANNOTATIONS = frozenset({names.ROLLOUT_ANNOTATION})


def _is_legacy_kopf_key(key: str) -> bool:
    return key.startswith(f"{LEGACY_KOPF_PREFIX}/") and key not in USER_ANNOTATIONS


class _CorruptState:
    """Reports an annotation of kopf's that is not its JSON state: a WARNING log line and a
    Warning Event, once per object, key and value (not on every event that reads it)."""

    def __init__(self) -> None:
        self._reported: dict[tuple[str, str, str], str] = {}

    def decode(self, body: kopf.Body, key: str, encoded: str | None, reason: str) -> Any:
        """The decoded dict, or None when absent or corrupt (kopf then handles the object
        anew, and its next write replaces the value)."""
        where = (str(body.metadata.namespace), str(body.metadata.name), key)
        if encoded is None:
            self._reported.pop(where, None)
            return None
        try:
            decoded = json.loads(encoded)
        except ValueError as e:
            problem = f"not JSON ({e})"
        else:
            if decoded is None or isinstance(decoded, dict):
                self._reported.pop(where, None)
                return decoded
            problem = f"a JSON {type(decoded).__name__}, not an object"
        if self._reported.get(where) != encoded:
            if len(self._reported) > 10_000:  # bounded: objects deleted while corrupt
                self._reported.clear()
            self._reported[where] = encoded
            message = (
                f"annotation {key} is {problem}: ignored, the object is handled anew "
                "and the annotation rewritten"
            )
            log.warning("%s/%s: %s", where[0], where[1], message)
            # Posted only inside the operator, where kopf's event queue is set up.
            with contextlib.suppress(LookupError, RuntimeError):
                kopf.warn(body, reason=reason, message=message)
        return None


_CORRUPT = _CorruptState()


class _TolerantDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base, a corrupt value read as none (reported)."""

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        for key in self.make_keys(self.key, body=body):
            encoded = body.metadata.annotations.get(key)
            decoded = _CORRUPT.decode(body, key, encoded, CORRUPT_DIFFBASE_REASON)
            if decoded is not None:
                return decoded  # type: ignore[no-any-return]
        return None


class _TolerantProgressStorage(kopf.AnnotationsProgressStorage):
    """kopf's annotation progress, a corrupt record read as none (reported): the handler runs
    as if never started."""

    def fetch(self, *, key: Any, body: kopf.Body) -> kopf.ProgressRecord | None:
        for full_key in self.make_keys(key, body=body):
            encoded = body.metadata.annotations.get(full_key)
            decoded = _CORRUPT.decode(body, full_key, encoded, CORRUPT_PROGRESS_REASON)
            if decoded is not None:
                return decoded  # type: ignore[no-any-return]
        return None


def _drop(body: kopf.Body, patch: kopf.Patch, keys: Any) -> None:
    """Remove those of ``keys`` the body has (kopf's Multi* storages would write them all)."""
    for key in keys:
        if key in body.metadata.annotations:
            patch.metadata.annotations[key] = None


# What kopf's essence keeps of the metadata, and what its storage keys read of it.
_ESSENCE_METADATA = ("labels", "annotations", "ownerReferences", "name", "namespace")


def _within_essence(fields: Any) -> bool:
    """Whether kopf's extra fields (the rollout handler's annotation) all lie in what
    `_essential` keeps."""
    for field in fields or ():
        path = field.split(".") if isinstance(field, str) else list(field)
        top = path[0] if path else ""
        if (
            top == "status"
            or (top == "metadata" and path[1:2] == [])
            or (top == "metadata" and path[1] not in _ESSENCE_METADATA)
        ):
            return False
    return True


def _essential(body: kopf.Body) -> kopf.Body:
    """``body`` without its status and with only the metadata the essence is built from."""
    meta = body.get("metadata") or {}
    kept = {k: v for k, v in body.items() if k not in ("status", "metadata")}
    kept["metadata"] = {k: meta[k] for k in _ESSENCE_METADATA if k in meta}
    return kopf.Body(kept)  # type: ignore[arg-type]


class MigratingDiffBaseStorage(kopf.DiffBaseStorage):
    """The diff-base under `KOPF_PREFIX`, else the one under the legacy prefix; written
    under `KOPF_PREFIX` only, the legacy key (and kopf's legacy marker) removed."""

    def __init__(self) -> None:
        super().__init__()
        self.primary = _TolerantDiffBaseStorage(prefix=KOPF_PREFIX, key=DIFFBASE_KEY)
        self.legacy = _TolerantDiffBaseStorage(prefix=LEGACY_KOPF_PREFIX, key=DIFFBASE_KEY)

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        # kopf deep-copies the whole body and then drops all but the spec, the labels and the
        # annotations: for every GeoDeployment event (a status write is one), the status and
        # managedFields were copied to be thrown away (~7 % of the operator's CPU at 300
        # objects, e2e/bench_scale.py under py-spy). The same essence from what it keeps.
        slim = _essential(body) if _within_essence(extra_fields) else body
        essence = self.primary.build(body=slim, extra_fields=extra_fields)
        self.remove_annotations(essence, set(self.legacy.make_keys(DIFFBASE_KEY, body=body)))
        self.remove_empty_stanzas(essence)
        return essence

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        found = self.primary.fetch(body=body)
        return found if found is not None else self.legacy.fetch(body=body)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        self.primary.store(body=body, patch=patch, essence=essence)
        legacy = [*self.legacy.make_keys(DIFFBASE_KEY, body=body)]
        _drop(body, patch, [*legacy, f"{LEGACY_KOPF_PREFIX}/kopf-managed"])


class MigratingProgressStorage(kopf.ProgressStorage):
    """Handler progress under `KOPF_PREFIX`, else under the legacy prefix; written under
    `KOPF_PREFIX` only, each legacy key removed as its handler's progress is written."""

    def __init__(self) -> None:
        super().__init__()
        self.primary = _TolerantProgressStorage(prefix=KOPF_PREFIX)
        self.legacy = _TolerantProgressStorage(prefix=LEGACY_KOPF_PREFIX)

    def fetch(self, *, key: Any, body: kopf.Body) -> kopf.ProgressRecord | None:
        found = self.primary.fetch(key=key, body=body)
        return found if found is not None else self.legacy.fetch(key=key, body=body)

    def store(
        self, *, key: Any, record: kopf.ProgressRecord, body: kopf.Body, patch: kopf.Patch
    ) -> None:
        self.primary.store(key=key, record=record, body=body, patch=patch)
        self.legacy.purge(key=key, body=body, patch=patch)

    def purge(self, *, key: Any, body: kopf.Body, patch: kopf.Patch) -> None:
        self.primary.purge(key=key, body=body, patch=patch)
        self.legacy.purge(key=key, body=body, patch=patch)

    def touch(self, *, body: kopf.Body, patch: kopf.Patch, value: str | None) -> None:
        self.primary.touch(body=body, patch=patch, value=value)
        _drop(body, patch, self.legacy.make_keys(self.legacy.touch_key, body=body))

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        """The essence without kopf's keys, new and legacy (but with the user-facing
        `geo.ai/` annotations: the `geo.ai/rollout` handler reacts to them)."""
        essence = self.primary.clear(essence=essence)
        annotations = essence.get("metadata", {}).get("annotations", {})
        self.remove_annotations(essence, {k for k in annotations if _is_legacy_kopf_key(k)})
        self.remove_empty_stanzas(essence)
        return essence


# What the API server sends the operator (issue 29): only GEO's own children, filtered
# server-side (kopf's handler ``labels=`` filter on the client, after the download). Each
# selector is no stricter than any handler's filter on that resource.
WATCH_SELECTORS = {
    ("apps", "v1", "deployments"): MANAGED,
    ("", "v1", "pods"): MANAGED,
    ("", "v1", "services"): MANAGED,
    ("", "v1", "configmaps"): MANAGED,
    ("batch", "v1", "jobs"): {names.COMPONENT_LABEL: names.TUNING_COMPONENT},
}


def _event_counter(plural: str, labels: dict[str, str]) -> Any:
    """A handler counting every event of ``plural`` the watch brings (no filter of its own):
    geo when the object carries the selector's labels, other when it does not (only ever
    with the selectors off). In the event loop, no thread: a counter's cost."""

    async def count(body: kopf.Body, **_: Any) -> None:
        found = body.metadata.labels or {}
        mine = all(found.get(k) == v for k, v in labels.items())
        telemetry.WATCH_EVENTS.labels(plural, "geo" if mine else "other").inc()

    return count


for (_group, _version, _plural), _labels_of in WATCH_SELECTORS.items():
    kopf.on.event(_group, _version, _plural, id=f"count_{_plural}_events")(
        _event_counter(_plural, _labels_of)
    )


def watch_selectors(settings: kopf.OperatorSettings) -> None:
    """Server-side label selectors on every child watch: the neighbours' pods, ConfigMaps
    and Jobs never reach the operator. ``GEO_WATCH_SELECTORS=off`` leaves them out (only
    e2e/bench_neighbours.py does, to measure what they save)."""
    if os.environ.get("GEO_WATCH_SELECTORS", "on") == "off":
        log.warning("GEO_WATCH_SELECTORS=off: every child watch downloads the whole cluster")
        return
    for (group, version, plural), labels in WATCH_SELECTORS.items():
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        settings.watching.label_selectors[group, version, plural] = selector


def persistence(settings: kopf.OperatorSettings) -> None:
    """kopf's finalizer name and its state's storages (`configure`)."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = MigratingProgressStorage()
    settings.persistence.diffbase_storage = MigratingDiffBaseStorage()


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **kwargs: Any) -> None:
    """kopf's bookkeeping under our prefix; watches that notice a dead server; the
    controller's context and the autoscaler's loop."""
    persistence(settings)
    watch_selectors(settings)
    # Reconnect promptly when the API server restarts or a watch silently dies, and never
    # give up: kopf's default retries end after 54 s, and a watch that gave up is not
    # started again (the operator would stay up, deaf to every change).
    settings.networking.error_backoffs = RETRY_FOREVER
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    settings.watching.connect_timeout = 10
    settings.watching.reconnect_backoff = 1.0
    # The handlers are sync and mostly wait on the API server: kopf's default pool (CPU
    # count + 4 threads) left both the API server and the operator half idle at 1,000
    # GeoDeployments while events queued up (e2e/bench_scale.py).
    settings.execution.max_workers = HANDLER_THREADS
    # kopf waits this long for the version its own diff-base patch wrote before it takes the
    # older events queued meanwhile as they are: they lack the diff-base, so it ran the
    # create handler a second time. At 1,000 GeoDeployments its watch fell more than kopf's
    # default 5 s behind: 467 of 1,000 objects were created twice (e2e/bench_scale.py).
    settings.persistence.consistency_timeout = CONSISTENCY_SECONDS
    # Our Events carry the numbers; kopf's per-handler "Handler succeeded" would be noise.
    settings.posting.level = logging.WARNING
    if not hasattr(memo, "geo"):
        k8s.load_config()
        kube = k8s.KubeClient()
        image = getattr(memo, "tuner_image", names.DEFAULT_TUNER_IMAGE)
        memo.geo = context.Context(kube, tuner_image=image)
        memo.autoscaler = autoscaler_.Autoscaler(kube)
    memo.requeue_task = asyncio.get_running_loop().create_task(_requeues(memo.geo))
    _start_autoscaler(memo.autoscaler, kwargs)


def _start_autoscaler(scaler: autoscaler_.Autoscaler, kwargs: dict[str, Any]) -> None:
    """The autoscaler's loop reads kopf's indexes in the event loop, where they live."""
    gds, pods, deployments = (
        kwargs["geodeployments"],
        kwargs["triton_pods"],
        kwargs["triton_replicas"],
    )

    def replicas_of(key: autoscaler_.Key, name: str) -> int | None:
        return next((n for d, n in deployments.get(key, ()) if d == name), None)

    def tick() -> list[autoscaler_.Work]:
        objects = [next(iter(v)) for v in gds.values() if v]
        return scaler.due(
            objects,
            lambda key: list(pods.get(key, ())),
            lambda key: replicas_of(key, key[1]),
            scaler.clock(),
            lambda key: replicas_of(key, children.canary_name(key[1])),
        )

    scaler.start(tick)


@kopf.on.cleanup()
async def stop(memo: Any, **_: Any) -> None:
    await memo.autoscaler.stop()
    memo.requeue_task.cancel()


async def _requeues(ctx: context.Context) -> None:
    """Reconcile the objects whose time has come, side by side on the loop's default
    thread pool (issue 31: one after another, one tenant's slow reconcile held every
    other's analysis). Each object's own lock keeps its reconciles one at a time."""
    running: set[asyncio.Task[None]] = set()  # held, so none is collected mid-run
    while True:
        await asyncio.sleep(REQUEUE_PERIOD)
        for key in ctx.requeues.keys_due(ctx.clock()):
            task = asyncio.create_task(asyncio.to_thread(reconcile.run, ctx, *key, "requeue"))
            running.add(task)
            task.add_done_callback(running.discard)


# ------------------------------------------------------------------ the GeoDeployment


def _labels(body: kopf.Body) -> dict[str, str]:
    return dict(body.metadata.labels or {})


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
@kopf.on.update(*RESOURCE, field=("metadata", "annotations", names.ROLLOUT_ANNOTATION))
def on_change(body: kopf.Body, memo: Any, **_: Any) -> None:
    """Create, edit and operator restart all converge the same way."""
    reconcile.run(_context(memo), str(body.metadata.namespace), str(body.metadata.name), "change")


@kopf.on.event(*RESOURCE)
def on_geodeployment_event(body: kopf.Body, memo: Any, type: str, **_: Any) -> None:
    """A deleted GeoDeployment is forgotten (its children go by their ownerReferences)."""
    if type == "DELETED":
        key = (str(body.metadata.namespace), str(body.metadata.name))
        memo.autoscaler.forget(key)
        _context(memo).locks.forget(key)
        _context(memo).requeues.forget(key)


# What the GeoDeployment index keeps of each object's metadata.
INDEXED_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion", "labels")


@kopf.index(*RESOURCE)
def geodeployments(body: kopf.Body, **_: Any) -> Any:
    """The autoscaler's view of each GeoDeployment: its spec and status, and of its metadata
    only what the loop and its Events read (not managedFields nor the annotations, where
    kopf keeps a copy of the spec: held for every object, they were most of its size)."""
    key = (body.metadata.namespace, body.metadata.name)
    metadata = {k: body.metadata[k] for k in INDEXED_METADATA if k in body.metadata}
    return {key: {"metadata": metadata, "spec": dict(body.spec), "status": dict(body.status)}}


# ------------------------------------------------------------------ children re-run the owner


def _owner_event(memo: Any, body: kopf.Body, label: str, cause: str) -> None:
    owner = _labels(body).get(label)
    if owner:
        reconcile.run(_context(memo), str(body.metadata.namespace), owner, cause)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
def on_deployment_event(body: kopf.Body, memo: Any, type: str, **_: Any) -> None:
    """Readiness changed, or the Deployment was deleted: the owner's reconcile says so
    (an event that changes nothing it reads is skipped: `reconcile.deployment_digest`)."""
    key = (str(body.metadata.namespace), str(body.metadata.name))
    seen = _context(memo).seen
    if type == "DELETED":
        seen.forget(key)
    elif not seen.changed(key, reconcile.deployment_digest(dict(body))):
        return
    _owner_event(memo, body, names.OWNER_LABEL, "deployment")


@kopf.on.event("", "v1", "pods", labels={**MANAGED, names.OWNER_LABEL: kopf.PRESENT})
def on_triton_pod_event(body: kopf.Body, memo: Any, **_: Any) -> None:
    """A Triton pod's artifact fetch failed (a wrong key, a missing object or Secret): the
    owner's reconcile puts the words in Ready. Other pod changes reach it via the Deployment."""
    if plan.fetch_failure([dict(body)]) is not None:
        _owner_event(memo, body, names.OWNER_LABEL, "pod")


@kopf.on.event("", "v1", "services", labels=MANAGED)
@kopf.on.event("", "v1", "configmaps", labels=MANAGED)
def on_child_deleted(body: kopf.Body, memo: Any, type: str, **_: Any) -> None:
    """A Service or ConfigMap has no state of its own to report: only its loss is repaired.
    Every version is noted (`context.Written`: one the reconcile did not write is read
    and repaired by the next reconcile)."""
    meta = body.metadata
    version = None if type == "DELETED" else meta.get("resourceVersion")
    _context(memo).written.watched(
        str(body.get("kind")), str(meta.namespace), str(meta.name), version
    )
    if type == "DELETED":
        _owner_event(memo, body, names.OWNER_LABEL, "child-deleted")


@kopf.on.event("batch", "v1", "jobs", labels={names.COMPONENT_LABEL: names.TUNING_COMPONENT})
def on_tuning_job_event(body: kopf.Body, memo: Any, **_: Any) -> None:
    """A tuning Job finished: its GeoDeployment takes the result in (or backs off)."""
    if tuning.finished(body):
        _owner_event(memo, body, names.TUNING_FOR_LABEL, "tuning-job")


# ------------------------------------------------------------------ the autoscaler's view


@kopf.index("", "v1", "pods", labels={**MANAGED, names.OWNER_LABEL: kopf.PRESENT})
def triton_pods(body: kopf.Body, **_: Any) -> Any:
    """Each GeoDeployment's Triton pods, as the autoscaler needs them."""
    key = (body.metadata.namespace, _labels(body)[names.OWNER_LABEL])
    return {key: autoscaler_.pod_view(body)}


@kopf.index("apps", "v1", "deployments", labels={**MANAGED, names.OWNER_LABEL: kopf.PRESENT})
def triton_replicas(body: kopf.Body, **_: Any) -> Any:
    """Each GeoDeployment's Deployments' (the stable's, a rollout's canary's) replica counts:
    the autoscaler's "current"."""
    key = (body.metadata.namespace, _labels(body)[names.OWNER_LABEL])
    return {key: (str(body.metadata.name), body.spec.get("replicas"))}
