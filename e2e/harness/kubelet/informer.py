"""List and watch GEO's pods; tell a callback about every change, like a kubelet's informer.

`PodInformer` keeps a store of the pods it last saw. `start()` runs a background
thread that lists (reporting pods gone since the last list as deleted), then
watches from the list's resourceVersion, reconnecting with back-off on errors
(connection refused while the API server restarts) and listing again on 410.
`on_pod(key, pod)` gets the newest copy of a pod, or None once it is gone; it runs
in the informer's thread, so it must not block for long.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from e2e.harness.kubelet.podspec import LABEL_SELECTOR, PodKey, key
from kubernetes import client as k8s_client
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("kubelet_runner.informer")

WATCH_TIMEOUT_S = 300  # the API server ends each watch after this; we resume from its RV

OnPod = Callable[[PodKey, "dict[str, Any] | None"], None]


class PodInformer:
    def __init__(
        self,
        core: k8s_client.CoreV1Api,
        on_pod: OnPod,
        *,
        namespace: str | None = None,
        label_selector: str = LABEL_SELECTOR,
    ) -> None:
        self._core = core
        self._on_pod = on_pod
        self.namespace = namespace
        self.label_selector = label_selector
        self._known: set[PodKey] = set()  # reported with a pod, not yet as gone
        self._stopping = threading.Event()
        self.synced = threading.Event()  # set once the first list went through
        self._watch: k8s_watch.Watch | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> PodInformer:
        self._thread = threading.Thread(
            target=self._loop, name="kubelet-runner-pod-watch", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop watching; no callback runs after this returns (within `timeout`)."""
        self._stopping.set()
        thread = self._thread
        if thread is None:
            return
        for _ in range(max(1, int(timeout / 0.5))):
            if not thread.is_alive():
                break
            # Shuts the watch's socket down, unblocking its read. Repeated: a watch
            # whose request was not sent yet forgets an earlier stop().
            watch = self._watch
            if watch is not None:
                watch.stop()
            thread.join(timeout=0.5)

    # --- the loop ---------------------------------------------------------------------

    def _report(self, key_: PodKey, pod: dict[str, Any] | None) -> None:
        if self._stopping.is_set():
            return
        if pod is None:
            self._known.discard(key_)
        else:
            self._known.add(key_)
        self._on_pod(key_, pod)

    def _list(self) -> str:
        """Report every pod as listed now, and the ones gone since; return the list's RV."""
        # Raw JSON (_preload_content=False): the runner works on plain dicts throughout.
        kwargs: dict[str, Any] = {"label_selector": self.label_selector, "_preload_content": False}
        resp: Any
        if self.namespace:
            resp = self._core.list_namespaced_pod(self.namespace, **kwargs)
        else:
            resp = self._core.list_pod_for_all_namespaces(**kwargs)
        body = json.loads(resp.data)
        pods = {key(p): p for p in body.get("items", [])}
        for gone in sorted(self._known - set(pods)):
            self._report(gone, None)
        for key_, pod in pods.items():
            self._report(key_, pod)
        return str(body["metadata"]["resourceVersion"])

    def _loop(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            try:
                rv = self._list()
                self.synced.set()
                backoff = 1.0
                while not self._stopping.is_set():
                    rv = self._watch_once(rv)
            except ApiException as error:
                if self._stopping.is_set():
                    break
                if error.status == 410:  # our resourceVersion is too old: list again
                    log.info("pod watch expired (410); listing again")
                    continue
                log.warning(
                    "pod watch failed: %s %s; retrying in %.0fs",
                    error.status,
                    error.reason,
                    backoff,
                )
            except Exception as error:  # connection refused/reset while the apiserver restarts
                if self._stopping.is_set():
                    break
                log.warning("pod watch failed: %r; retrying in %.0fs", error, backoff)
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, 10.0)

    def _watch_once(self, rv: str) -> str:
        """One watch request from `rv` until the server ends it; returns the last RV seen."""
        watch = k8s_watch.Watch()
        self._watch = watch
        if self._stopping.is_set():  # stop() may have looked for a watch just before
            return rv
        func: Callable[..., Any] = self._core.list_pod_for_all_namespaces
        args: tuple[str, ...] = ()
        if self.namespace:
            func, args = self._core.list_namespaced_pod, (self.namespace,)
        try:
            for event in watch.stream(
                func,
                *args,
                label_selector=self.label_selector,
                resource_version=rv,
                allow_watch_bookmarks=True,
                # With a timeout the client doesn't retry by itself: errors reach us.
                timeout_seconds=WATCH_TIMEOUT_S,
                deserialize=False,
            ):
                obj = event["object"]
                rv = str(obj["metadata"]["resourceVersion"])
                if event["type"] == "BOOKMARK":
                    continue
                self._report(key(obj), None if event["type"] == "DELETED" else obj)
                if self._stopping.is_set():
                    break
        finally:
            self._watch = None
        return rv
