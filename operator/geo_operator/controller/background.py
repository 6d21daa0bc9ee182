"""Slow work off the reconcile path: each job runs once on a small pool, its result kept.

The canary's held-out gate needs a file fetched (seconds, or never: a URL that hangs
or trickles) and a canary scored through Triton. Done inside a reconcile, one
tenant's slow download held every reconcile queued behind it (issue 31). Here the
reconcile asks `Jobs.result(key, work)`: the answer when the job has finished, else a
`Pending` with words for status (running for how long, or failed and retrying when)
and the job started, or left running, on the pool. Nothing here calls a reconcile:
when a job ends, ``on_done(owner)`` lets the caller bring the owner's reconcile
forward (`Context` sets its requeue time).

- bounded: ``workers`` threads; a job that never ends holds one of them, never a
  reconcile (the work itself carries its timeouts: `triton.fetch.fetch`'s per-read
  ``timeout`` and total ``deadline``);
- kept: a result is reused until ``ttl`` seconds old (None: for the process' life);
- retried with back-off: a failed job runs again after ``backoff[0]`` seconds,
  doubling up to ``backoff[1]``; meanwhile its failure is the answer's words.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

log = logging.getLogger(__name__)

Owner = tuple[str, str]  # the GeoDeployment a job is for (namespace, name)


@dataclasses.dataclass(frozen=True)
class Pending:
    """No result yet: why, in words for a condition or a log line."""

    words: str


@dataclasses.dataclass
class _Job:
    owner: Owner | None
    started: float
    future: concurrent.futures.Future[Any] | None = None
    result: Any = None
    done_at: float | None = None
    error: str | None = None
    failures: int = 0
    retry_at: float | None = None


class Jobs:
    """Keyed background jobs with kept results and backed-off retries."""

    def __init__(
        self,
        workers: int = 4,
        *,
        clock: Callable[[], float] = time.monotonic,
        backoff: tuple[float, float] = (10.0, 300.0),
        on_done: Callable[[Owner], None] | None = None,
    ) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="geo-job")
        self._clock = clock
        self._backoff = backoff
        self.on_done = on_done
        self._guard = threading.Lock()
        self._jobs: dict[Hashable, _Job] = {}

    def result(
        self,
        key: Hashable,
        work: Callable[[], Any],
        *,
        what: str,
        owner: Owner | None = None,
        ttl: float | None = None,
    ) -> Any:
        """``work()``'s result once it has run, else `Pending` (and the job started).

        ``what`` names the job in the words ("fetching the held-out set URI").
        """
        now = self._clock()
        with self._guard:
            job = self._jobs.get(key)
            kept = job is not None and job.done_at is not None and job.error is None
            if kept and job is not None and (ttl is None or now - (job.done_at or now) < ttl):
                return job.result
            if job is not None and job.future is not None and not job.future.done():
                return Pending(f"{what}: running for {now - job.started:.0f} s")
            if job is not None and job.retry_at is not None and now < job.retry_at:
                return Pending(
                    f"{what} failed: {job.error}; retrying in {job.retry_at - now:.0f} s"
                )
            failures = job.failures if job is not None else 0
            job = self._jobs[key] = _Job(owner, now, failures=failures)
            job.future = self._pool.submit(self._run, key, job, work, what)
            return Pending(f"{what}: started")

    def _run(self, key: Hashable, job: _Job, work: Callable[[], Any], what: str) -> None:
        try:
            result = work()
        except Exception as error:  # the job's own failure: kept as words, retried later
            now = self._clock()
            with self._guard:
                job.failures += 1
                delay = min(self._backoff[0] * 2 ** (job.failures - 1), self._backoff[1])
                job.error = str(error)[:300] or type(error).__name__
                job.retry_at = now + delay
                job.done_at = now
            log.info("%s failed (retry in %.0f s): %s", what, delay, error)
        else:
            with self._guard:
                job.result, job.done_at, job.error, job.failures = result, self._clock(), None, 0
        if job.owner is not None and self.on_done is not None:
            self.on_done(job.owner)

    def forget(self, owner: Owner) -> None:
        """Drop the kept results of ``owner``'s jobs (a running one finishes, unkept)."""
        with self._guard:
            self._jobs = {k: j for k, j in self._jobs.items() if j.owner != owner}

    def wait(self, timeout: float | None = None) -> None:
        """Until every job started so far has finished (tests; `stop`)."""
        with self._guard:
            futures = [j.future for j in self._jobs.values() if j.future is not None]
        concurrent.futures.wait(futures, timeout=timeout)

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
