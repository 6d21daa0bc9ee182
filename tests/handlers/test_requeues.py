"""Due reconciles run side by side (issue 31.2): one that hangs holds no other."""

from __future__ import annotations

import asyncio
import threading
import time

import kopf
import pytest
from tests.support.kube import FakeKube

from geo_operator import handlers
from geo_operator.controller import context, reconcile


def test_a_slow_reconcile_delays_no_other_due_one(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = context.Context(kube, clock=lambda: 1000.0)
    release = threading.Event()
    ran: list[tuple[str, str, float]] = []

    def run(ctx_: context.Context, namespace: str, name: str, cause: str) -> None:
        if name == "slow":  # a reconcile stuck on something slow (was: a held-out fetch)
            release.wait(timeout=10)
        ran.append((namespace, name, time.monotonic()))

    monkeypatch.setattr(reconcile, "run", run)
    monkeypatch.setattr(handlers, "REQUEUE_PERIOD", 0.01)
    ctx.requeues.set(("a", "slow"), 999.0)
    ctx.requeues.set(("b", "quick"), 999.0)

    async def main() -> None:
        task = asyncio.create_task(handlers._requeues(ctx))
        started = time.monotonic()
        while not ran and time.monotonic() - started < 5:
            await asyncio.sleep(0.01)
        release.set()
        while len(ran) < 2 and time.monotonic() - started < 5:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(main())
    assert [name for _, name, _ in ran] == ["quick", "slow"]


def test_a_deleted_objects_back_off_is_forgotten() -> None:
    """Failures step the back-off up; deleting the GeoDeployment forgets it, so one
    created again under the same name retries at the first step."""
    requeues = context.Requeues()
    key = ("ml", "digits")
    assert [requeues.failed(key, now) for now in (0.0, 10.0, 30.0)] == [5.0, 10.0, 20.0]
    ctx = context.Context(FakeKube())
    ctx.requeues = requeues
    scaler = type("Scaler", (), {"forget": lambda self, key: None})()
    memo = type("Memo", (), {"geo": ctx, "autoscaler": scaler})()
    body = {"metadata": {"namespace": "ml", "name": "digits"}}
    handlers.on_geodeployment_event(body=kopf.Body(body), memo=memo, type="DELETED")
    assert requeues.pending(key) is None
    assert requeues.failed(key, 100.0) == 5.0
