"""One Triton replica: a FIFO queue in front of Triton's dynamic batcher and its model instances.

The service time of a batch of k requests is ``a + b·k`` milliseconds, measured
on the real tritonserver here by ``e2e/calibrate_replica.py`` (the profile
ships as ``digits-cpu.json`` next to this module). Every request also pays a
fixed ``overhead_ms`` outside the instance (HTTP front end and response).

The dynamic batcher, as Triton documents it: the oldest queued request waits at
most ``max_queue_delay`` for the batch to fill to ``max_batch_size``; when the
instance is busy, requests keep queuing and the next batch takes every queued
request up to ``max_batch_size`` the moment the instance frees. With dynamic
batching off, every request is its own batch of one.

`serve` is the kernel: it advances one replica's queue up to a time horizon and
returns the batches it started. It runs as plain Python, or compiled by numba
when numba is installed (same code, same results: a test checks both).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import numpy as np
import numpy.typing as npt

DEFAULT_PROFILE_PATH = pathlib.Path(__file__).resolve().parent / "digits-cpu.json"

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Int8Array = npt.NDArray[np.int8]


@dataclasses.dataclass(frozen=True)
class Profile:
    """Service-time model of one replica: a batch of k takes a + b·k ms; each request + overhead."""

    service_a_ms: float
    service_b_ms: float
    overhead_ms: float
    source: str = ""
    measured: dict[str, Any] = dataclasses.field(default_factory=dict)
    measured_startup_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.service_a_ms < 0 or self.service_b_ms < 0 or self.overhead_ms < 0:
            raise ValueError("service times must not be negative")
        if self.service_a_ms + self.service_b_ms <= 0:
            raise ValueError("a batch of one must take some time")

    def batch_ms(self, k: int) -> float:
        return self.service_a_ms + self.service_b_ms * k

    def capacity(self, max_batch_size: int, instances: int = 1) -> float:
        """Requests per second of one replica when every batch is full."""
        k = max(1, max_batch_size)
        return instances * 1000.0 * k / self.batch_ms(k)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def load(cls, path: pathlib.Path | str = DEFAULT_PROFILE_PATH) -> Profile:
        try:
            data = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
            return cls(**data)
        except (OSError, ValueError, TypeError) as error:
            raise ValueError(f"cannot read replica profile {path}: {error}") from error


def serve(
    arrivals: FloatArray,
    start: int,
    free_at: FloatArray,
    horizon: float,
    max_batch: int,
    delay: float,
    a: float,
    b: float,
    out_first: IntArray,
    out_size: IntArray,
    out_end: FloatArray,
) -> tuple[int, int]:
    """Start every batch of ``arrivals[start:]`` whose start time is known by ``horizon``.

    ``arrivals`` are this replica's arrival times in seconds, sorted; the queue
    holds ``arrivals[start:]``; ``free_at`` holds, per model instance (Triton's
    instance_group count), when it is next idle, and is updated in place.
    ``delay`` is the batcher's max queue delay in seconds, negative for dynamic
    batching off; ``a`` and ``b`` are in seconds. Batches go into ``out_*``
    (first index, size, end time), which must have room for
    ``len(arrivals) - start``. Returns (next queued index, batches written).

    A batch starts at max(the first instance idle, min(oldest + delay, arrival
    of the max_batch-th queued request)) on that instance and takes every
    request queued by then, up to max_batch. It is decided only when that time
    is within the horizon: later arrivals could still join it.
    """
    n = arrivals.shape[0]
    j = start
    written = 0
    while j < n:
        instance = 0
        for i in range(1, free_at.shape[0]):
            if free_at[i] < free_at[instance]:
                instance = i
        idle = free_at[instance]
        oldest = arrivals[j]
        if delay < 0:
            size_cap = 1
            ready = oldest
        else:
            size_cap = max_batch
            last = j + max_batch - 1
            ready = oldest + delay
            if last < n and arrivals[last] < ready:
                ready = arrivals[last]
        begin = idle if idle > ready else ready
        if begin > horizon:
            break
        # Requests queued by `begin`, up to the cap (arrivals are sorted).
        k = 1
        while k < size_cap and j + k < n and arrivals[j + k] <= begin:
            k += 1
        end = begin + a + b * k
        out_first[written] = j
        out_size[written] = k
        out_end[written] = end
        written += 1
        free_at[instance] = end
        j += k
    return j, written


# The states of a request in a bounded queue (`serve_bounded`).
UNDECIDED, WAITING, SERVED, TIMED_OUT, QUEUE_FULL = 0, 1, 2, 3, 4


def serve_bounded(
    arrivals: FloatArray,
    state: Int8Array,
    end: FloatArray,
    free_at: FloatArray,
    horizon: float,
    max_batch: int,
    delay: float,
    a: float,
    b: float,
    max_queue: int,
    timeout: float,
) -> None:
    """`serve` with Triton's bounded queue: ``max_queue`` waiting requests at most (0:
    unbounded), an arrival past it refused at once (QUEUE_FULL), and a request whose
    batch would start more than ``timeout`` seconds after its arrival refused then
    (TIMED_OUT; negative: no timeout), as Triton's default queue policy with
    timeout_action REJECT does.

    ``state`` and ``end`` run beside ``arrivals`` and carry over between calls: WAITING
    requests were admitted and wait; SERVED ones end at ``end``, refused ones were
    answered at ``end``. Arrivals are admitted in order, each against the requests
    waiting at its arrival — those admitted since the oldest unstarted one, since every
    earlier batch started before it arrived (batches start in order).
    """
    n = arrivals.shape[0]
    fifo = np.empty(n, np.int64)
    head = 0
    tail = 0
    i = 0
    for index in range(n):
        if state[index] == WAITING:
            fifo[tail] = index
            tail += 1
        if state[index] != UNDECIDED:
            i = index + 1
    while True:
        if head == tail:
            if i >= n:
                break
            state[i] = WAITING  # an empty queue always has room
            fifo[tail] = i
            tail += 1
            i += 1
            continue
        oldest = arrivals[fifo[head]]
        instance = 0
        for k in range(1, free_at.shape[0]):
            if free_at[k] < free_at[instance]:
                instance = k
        idle = free_at[instance]
        cap = 1 if delay < 0 else max_batch
        ready = oldest if delay < 0 else oldest + delay
        if tail - head >= cap and arrivals[fifo[head + cap - 1]] < ready:
            ready = arrivals[fifo[head + cap - 1]]
        begin = idle if idle > ready else ready
        # Admit what arrives while the oldest waits (nothing starts before `begin`).
        while i < n and arrivals[i] <= begin:
            if max_queue > 0 and tail - head >= max_queue:
                state[i] = QUEUE_FULL
                end[i] = arrivals[i]
            else:
                state[i] = WAITING
                fifo[tail] = i
                tail += 1
                if tail - head == cap and arrivals[i] < ready:
                    ready = arrivals[i]
                    begin = idle if idle > ready else ready
            i += 1
        # Refused once certain: later arrivals can't make the batch start sooner than idle.
        certain = begin <= horizon or idle - oldest > timeout
        if timeout >= 0 and begin - oldest > timeout and certain:
            state[fifo[head]] = TIMED_OUT
            end[fifo[head]] = oldest + timeout
            head += 1
            continue
        if begin > horizon:
            break
        k = 0
        while k < cap and head + k < tail and arrivals[fifo[head + k]] <= begin:
            k += 1
        finish = begin + a + b * k
        for q in range(k):
            state[fifo[head + q]] = SERVED
            end[fifo[head + q]] = finish
        head += k
        free_at[instance] = finish


def _compiled(function: Any) -> Any:
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is the `simulate` extra
        return function
    return numba.njit(cache=True, nogil=True)(function)


serve_fast = _compiled(serve)
serve_bounded_fast = _compiled(serve_bounded)
