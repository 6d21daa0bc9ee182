"""Slow work off the reconcile path (controller/background.py): a job that hangs holds a
pool thread, never the caller; results are kept; failures come back after a back-off."""

from __future__ import annotations

import threading
import time

from geo_operator.controller import background


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_hanging_job_never_blocks_the_caller_nor_another_owners_job() -> None:
    release = threading.Event()
    jobs = background.Jobs(2)
    try:
        t0 = time.monotonic()
        first = jobs.result("slow", lambda: release.wait(30), what="fetching A", owner=("ns", "a"))
        assert first == background.Pending("fetching A: started")
        again = jobs.result("slow", lambda: 1 / 0, what="fetching A")
        assert isinstance(again, background.Pending) and "running for" in again.words
        jobs.result("fast", lambda: "b.npz", what="fetching B", owner=("ns", "b"))
        deadline = time.monotonic() + 5
        while jobs.result("fast", lambda: "x", what="fetching B") != "b.npz":
            assert time.monotonic() < deadline, "B waited on A"
            time.sleep(0.01)
        assert time.monotonic() - t0 < 2  # no caller waited on the hanging job
    finally:
        release.set()
        jobs.wait(5)
        jobs.stop()
    assert jobs.result("slow", lambda: False, what="fetching A") is True  # kept


def test_a_failure_is_said_backed_off_and_retried_and_the_owner_told() -> None:
    clock, told, calls = Clock(), [], []

    def flaky() -> str:
        calls.append(clock.now)
        if len(calls) < 3:
            raise OSError("connection refused")
        return "ok"

    jobs = background.Jobs(1, clock=clock, backoff=(10, 15), on_done=told.append)
    owner = ("ns", "a")
    try:
        assert isinstance(jobs.result("k", flaky, what="fetch", owner=owner), background.Pending)
        jobs.wait(5)
        said = jobs.result("k", flaky, what="fetch", owner=owner)
        assert said == background.Pending("fetch failed: connection refused; retrying in 10 s")
        clock.now += 10
        jobs.result("k", flaky, what="fetch", owner=owner)  # due: runs again, fails again
        jobs.wait(5)
        said = jobs.result("k", flaky, what="fetch", owner=owner)
        assert said == background.Pending("fetch failed: connection refused; retrying in 15 s")
        clock.now += 15
        jobs.result("k", flaky, what="fetch", owner=owner)
        jobs.wait(5)
        assert jobs.result("k", flaky, what="fetch", owner=owner) == "ok"
        assert len(calls) == 3 and told == [owner] * 3
    finally:
        jobs.stop()


def test_a_kept_result_expires_after_its_ttl_and_forget_drops_it() -> None:
    clock, runs = Clock(), []
    jobs = background.Jobs(1, clock=clock)
    try:

        def work() -> int:
            runs.append(1)
            return len(runs)

        jobs.result("k", work, what="w", owner=("ns", "a"), ttl=60)
        jobs.wait(5)
        assert jobs.result("k", work, what="w", ttl=60) == 1
        clock.now += 61
        expired = jobs.result("k", work, what="w", owner=("ns", "a"), ttl=60)
        assert isinstance(expired, background.Pending)
        jobs.wait(5)
        assert jobs.result("k", work, what="w", ttl=60) == 2
        jobs.forget(("ns", "a"))
        jobs.result("k", work, what="w", owner=("ns", "a"))
        jobs.wait(5)
        assert runs == [1, 1, 1]
    finally:
        jobs.stop()
