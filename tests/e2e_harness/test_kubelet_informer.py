"""The e2e kubelet runner's informer: a relist reports the pods gone since; no cluster."""

from __future__ import annotations

import json
import types
from typing import Any

from e2e.harness.kubelet.informer import PodInformer
from e2e.harness.kubelet.podspec import LABEL_SELECTOR, PodKey


def _pod(name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "ml", "name": name, "resourceVersion": "1"}}


class FakeCore:
    """list_namespaced_pod answering with raw JSON, as with _preload_content=False."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.rv = 0
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> Any:
        self.calls.append((namespace, kwargs))
        self.rv += 1
        body = {"items": self.items, "metadata": {"resourceVersion": str(self.rv)}}
        return types.SimpleNamespace(data=json.dumps(body).encode())


def test_a_relist_reports_the_pods_gone_since_the_last_one() -> None:
    core = FakeCore()
    seen: list[tuple[PodKey, str | None]] = []
    informer = PodInformer(
        core,  # type: ignore[arg-type]
        lambda key, pod: seen.append((key, pod and pod["metadata"]["name"])),
        namespace="ml",
    )
    core.items = [_pod("a"), _pod("b")]
    assert informer._list() == "1"
    assert seen == [(("ml", "a"), "a"), (("ml", "b"), "b")]
    assert core.calls[0] == ("ml", {"label_selector": LABEL_SELECTOR, "_preload_content": False})

    seen.clear()
    core.items = [_pod("b")]
    assert informer._list() == "2"
    assert seen == [(("ml", "a"), None), (("ml", "b"), "b")]

    seen.clear()
    core.items = []
    informer._list()
    informer._list()  # a pod is reported gone once
    assert seen == [(("ml", "b"), None)]


def test_nothing_is_reported_once_stopped() -> None:
    core = FakeCore()
    seen: list[PodKey] = []
    informer = PodInformer(core, lambda key, pod: seen.append(key), namespace="ml")  # type: ignore[arg-type]
    informer.stop()  # never started: returns at once
    core.items = [_pod("a")]
    informer._list()
    assert seen == []
