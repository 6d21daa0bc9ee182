"""One active operator, the others standing by: leader election on a Lease.

`geo run --leader-elect` calls `Elector.acquire` before kopf starts: a standby holds no
watch and no index (it costs the API server one Lease read per retry period), and
takes over when the active one stops renewing (its pod killed) or releases the Lease
(its pod stopped). Once it holds the Lease, `keep` renews it in a thread; a leader
that cannot renew within ``renew_deadline_s`` calls ``on_lost`` (`geo run` exits: its
pod restarts as a standby), so two operators never act at once for longer than that.

The timing rule is client-go's: a standby never compares the holder's renewTime with
its own clock; it takes the Lease when the record has not changed for
``duration_s`` of its own time since it last saw it change.

Why not kopf's peering: with equal priorities every peer freezes, and a paused kopf
pauses its watches but not GEO's own loops (the autoscaler, the requeues), which would
go on acting from indexes no longer fed.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from geo_operator.k8s import lease

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Timing:
    """client-go's defaults (controller-runtime's leader election uses the same)."""

    duration_s: int = 15  # how long a renewal holds off the standbys
    renew_deadline_s: float = 10.0  # a leader that could not renew for this long lets go
    retry_s: float = 2.0  # between tries to take or renew

    @classmethod
    def for_lease(cls, duration_s: int) -> Timing:
        """client-go's proportions for another lease: the renew deadline 2/3 of it, the
        retry period a fifth of that (15 s gives the defaults: 10 s, 2 s)."""
        deadline = max(1.0, duration_s * 2 / 3)
        return cls(duration_s, deadline, max(0.5, deadline / 5))


def may_take(
    record: lease.Record | None, identity: str, unchanged_since: float, now: float
) -> bool:
    """Whether ``identity`` may write itself into the Lease now: there is none, it is
    ours, it was released (no holder), or its holder has not renewed it for its
    duration since we last saw it change (``unchanged_since``, our clock). Pure."""
    if record is None or not record.holder or record.holder == identity:
        return True
    return now - unchanged_since >= record.duration_s


class Elector:
    """Takes, keeps and releases one Lease for one identity."""

    def __init__(
        self,
        leases: lease.Leases,
        namespace: str,
        name: str,
        identity: str,
        timing: Timing = Timing(),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.leases, self.namespace, self.name, self.identity = leases, namespace, name, identity
        self.timing, self.clock, self.sleep = timing, clock, sleep
        self._seen: lease.Record | None = None
        self._seen_at = clock()
        self._stop = threading.Event()

    def try_take(self) -> bool:
        """One try to take or renew the Lease; True while we hold it."""
        now = self.clock()
        found = self.leases.read(self.namespace, self.name)
        if found != self._seen:
            self._seen, self._seen_at = found, now
        if not may_take(found, self.identity, self._seen_at, now):
            return False
        if found is None:
            mine = lease.Record(self.identity, self.timing.duration_s)
            return self.leases.create(self.namespace, self.name, mine)
        ours = found.holder == self.identity
        mine = dataclasses.replace(
            found,
            holder=self.identity,
            duration_s=self.timing.duration_s,
            transitions=found.transitions + (0 if ours else 1),
            acquired=found.acquired if ours else "",
        )
        return self.leases.replace(self.namespace, self.name, mine)

    def acquire(self) -> None:
        """Wait until we hold the Lease (a standby waits here, saying so once per holder)."""
        told = None
        while not self._try_take_waiting():
            holder = self._seen.holder if self._seen else ""
            if holder != told:
                log.info(
                    "standing by: lease %s/%s is held by %s; taking over when it stops "
                    "renewing (%d s)",
                    self.namespace,
                    self.name,
                    holder,
                    self.timing.duration_s,
                )
                told = holder
            self.sleep(self.timing.retry_s)
        log.info("leading: holding lease %s/%s as %s", self.namespace, self.name, self.identity)

    def _try_take_waiting(self) -> bool:
        """`try_take`, where an API server that can't be reached is tried again (a standby
        outlives an outage); a refusal of the operator's rights (`lease.Forbidden`) raises."""
        try:
            return self.try_take()
        except lease.Forbidden:
            raise
        except Exception as error:
            log.warning("reading lease %s/%s failed: %s", self.namespace, self.name, error)
            return False

    def renew(self, on_lost: Callable[[str], object]) -> None:
        """Renew every retry period until `release`; ``on_lost`` (with the reason) when no
        renewal succeeded for the renew deadline."""
        last = self.clock()
        while not self._stop.is_set():
            self.sleep(self.timing.retry_s)
            if self._stop.is_set():
                return
            try:
                held = self.try_take()
            except Exception as error:  # the API server unreachable: try again, to the deadline
                log.warning("renewing lease %s/%s failed: %s", self.namespace, self.name, error)
                held = False
            if held:
                last = self.clock()
            elif (
                self._seen is not None and self._seen.holder not in ("", self.identity)
            ) or self.clock() - last >= self.timing.renew_deadline_s:
                holder = self._seen.holder if self._seen else "nobody"
                on_lost(
                    f"lost lease {self.namespace}/{self.name} (now held by {holder}; "
                    f"last renewed {self.clock() - last:.0f} s ago)"
                )
                return

    def keep(self, on_lost: Callable[[str], object]) -> threading.Thread:
        """`renew` in a daemon thread."""
        thread = threading.Thread(target=self.renew, args=(on_lost,), name="lease", daemon=True)
        thread.start()
        return thread

    def release(self) -> None:
        """Stop renewing and hand the Lease back (no holder), so a standby takes it at its
        next try instead of after the duration."""
        self._stop.set()
        found = self.leases.read(self.namespace, self.name)
        if found is not None and found.holder == self.identity:
            self.leases.replace(
                self.namespace, self.name, dataclasses.replace(found, holder="", duration_s=1)
            )
            log.info("released lease %s/%s", self.namespace, self.name)
