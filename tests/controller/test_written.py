"""`context.Written`: a Service or ConfigMap the reconcile wrote is not read again while the
watch shows nobody else has touched it."""

from __future__ import annotations

import copy
from typing import Any

import kopf
from tests.support.kube import FakeKube

from geo_operator import handlers
from geo_operator.api import models, names
from geo_operator.controller import context, reconcile


def _child(version: str | None, applied: str = "h1", uid: str = "u1") -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": "digits-model",
        "namespace": "ml",
        "annotations": {names.APPLIED_ANNOTATION: applied},
        "ownerReferences": [{"controller": True, "uid": uid}],
    }
    if version is not None:
        meta["resourceVersion"] = version
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}


def test_vouches_only_for_the_version_it_wrote_as_the_watch_last_saw_it() -> None:
    written = context.Written()
    wanted = _child(None)
    written.wrote(_child("5"))
    assert not written.current(wanted, "u1")  # the watch has not shown version 5 yet
    written.watched("ConfigMap", "ml", "digits-model", "5")
    assert written.current(wanted, "u1")
    assert not written.current(_child(None, applied="h2"), "u1")  # other content wanted
    assert not written.current(wanted, "u2")  # another owner (deleted and made again)
    written.watched("ConfigMap", "ml", "digits-model", "6")  # somebody else wrote it
    assert not written.current(wanted, "u1")
    written.wrote(_child("7"))
    written.watched("ConfigMap", "ml", "digits-model", "7")
    assert written.current(wanted, "u1")
    written.watched("ConfigMap", "ml", "digits-model", None)  # deleted
    assert not written.current(wanted, "u1")


def test_an_edit_the_watch_delivered_before_the_write_was_recorded_is_still_read() -> None:
    """The answer to our apply (version 5) comes back after the watch showed a user's
    edit (version 6): the two differ, so the object is read again."""
    written = context.Written()
    written.watched("ConfigMap", "ml", "digits-model", "6")
    written.wrote(_child("5"))
    assert not written.current(_child(None), "u1")


def test_other_kinds_are_always_read() -> None:
    written = context.Written()
    deployment = {**_child("5"), "kind": "Deployment"}
    written.wrote(deployment)
    written.watched("Deployment", "ml", "digits-model", "5")
    assert not written.current({**_child(None), "kind": "Deployment"}, "u1")


class _Counting(FakeKube):
    def __init__(self) -> None:
        super().__init__()
        self.gets: list[str] = []

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Any:
        self.gets.append(kind)
        return super().get(api_version, kind, namespace, name)


def _watch(memo: Any, kube: FakeKube, kind: str, name: str) -> None:
    """What the watch delivers: the object as stored now."""
    stored = copy.deepcopy(kube.objects[(kind, "ml", name)])
    handlers.on_child_deleted(body=kopf.Body(stored), memo=memo, type="MODIFIED")


def test_the_reconcile_reads_a_child_again_only_after_somebody_else_wrote_it(
    body: dict[str, Any],
) -> None:
    kube = _Counting()
    kube.objects[(models.KIND, "ml", "digits")] = copy.deepcopy(body)
    kube.objects[(models.KIND, "ml", "digits")]["metadata"]["uid"] = "u-digits"
    ctx = context.Context(kube)
    memo = type("Memo", (), {"geo": ctx})()
    reconcile.run(ctx, "ml", "digits", "change")
    children = [
        (k, n) for (k, ns, n) in kube.objects if k in ("Service", "ConfigMap") and ns == "ml"
    ]
    assert {k for k, _ in children} == {"Service", "ConfigMap"}
    for kind, name in children:
        _watch(memo, kube, kind, name)
    kube.gets.clear()
    applied = len(kube.applied)
    reconcile.run(ctx, "ml", "digits", "deployment")
    assert "Service" not in kube.gets and "ConfigMap" not in kube.gets
    assert [o["kind"] for o in kube.applied[applied:]] == []
    # A user edits the ConfigMap: the watch shows a version GEO did not write.
    config = next(n for k, n in children if k == "ConfigMap")
    edited = kube.objects[("ConfigMap", "ml", config)]
    edited["data"] = {**edited["data"], "config.pbtxt": "edited by hand"}
    edited["metadata"]["resourceVersion"] = str(int(edited["metadata"]["resourceVersion"]) + 1)
    _watch(memo, kube, "ConfigMap", config)
    kube.gets.clear()
    reconcile.run(ctx, "ml", "digits", "requeue")
    assert kube.gets.count("ConfigMap") == 1 and "Service" not in kube.gets
    assert [o["kind"] for o in kube.applied[applied:]] == ["ConfigMap"]  # repaired
    assert kube.objects[("ConfigMap", "ml", config)]["data"]["config.pbtxt"] != "edited by hand"
