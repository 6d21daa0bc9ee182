"""Leader election on a Lease: one active operator, the others standing by (a fake of our
own `k8s.lease` seam with the API server's optimistic concurrency; the real Lease is
driven by e2e/test_failover_e2e.py)."""

from __future__ import annotations

import dataclasses

import pytest

from geo_operator.controller import leader
from geo_operator.k8s import lease


class FakeLeases:
    """Leases as the API server keeps them: a replace naming an old resourceVersion, or a
    create of one that exists, is a conflict (False)."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], lease.Record] = {}
        self.version = 0
        self.down = False

    def read(self, namespace: str, name: str) -> lease.Record | None:
        if self.down:
            raise ConnectionError("the API server is unreachable")
        return self.stored.get((namespace, name))

    def _store(self, key: tuple[str, str], record: lease.Record) -> bool:
        self.version += 1
        self.stored[key] = dataclasses.replace(record, version=str(self.version))
        return True

    def create(self, namespace: str, name: str, record: lease.Record) -> bool:
        if (namespace, name) in self.stored:
            return False
        return self._store((namespace, name), record)

    def replace(self, namespace: str, name: str, record: lease.Record) -> bool:
        if self.down:
            raise ConnectionError("the API server is unreachable")
        found = self.stored.get((namespace, name))
        if found is None or found.version != record.version:
            return False
        return self._store((namespace, name), record)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def leases() -> FakeLeases:
    return FakeLeases()


def elector(leases: FakeLeases, identity: str, clock: Clock) -> leader.Elector:
    return leader.Elector(leases, "geo", "geo-operator", identity, leader.Timing(), clock)


def test_may_take_only_an_absent_released_own_or_expired_lease() -> None:
    held = lease.Record("a", 15)
    assert leader.may_take(None, "b", 0.0, 0.0)
    assert leader.may_take(lease.Record("", 15), "b", 0.0, 0.0)
    assert leader.may_take(held, "a", 0.0, 0.0)
    assert not leader.may_take(held, "b", 100.0, 114.9)
    assert leader.may_take(held, "b", 100.0, 115.0)


def test_one_leads_the_other_stands_by_until_renewals_stop(leases: FakeLeases) -> None:
    clock = Clock()
    a, b = elector(leases, "a", clock), elector(leases, "b", clock)
    assert a.try_take() and not b.try_take()
    for _ in range(20):  # a renews every 2 s: b never may take it
        clock.now += 2
        assert a.try_take() and not b.try_take()
    # a's pod is killed: no more renewals. b waits the duration of its own clock.
    clock.now += 14
    assert not b.try_take()
    clock.now += 1
    assert b.try_take()
    record = leases.stored[("geo", "geo-operator")]
    assert (record.holder, record.transitions, record.acquired) == ("b", 1, "")
    assert not a.try_take()  # a, were it still alive, sees b's renewals from now on


def test_a_released_lease_is_taken_at_the_next_try(leases: FakeLeases) -> None:
    clock = Clock()
    a, b = elector(leases, "a", clock), elector(leases, "b", clock)
    assert a.try_take() and not b.try_take()
    a.release()
    assert leases.stored[("geo", "geo-operator")].holder == ""
    assert b.try_take()


def test_two_standbys_racing_for_an_expired_lease_one_wins(leases: FakeLeases) -> None:
    clock = Clock()
    a, b, c = (elector(leases, name, clock) for name in "abc")
    assert a.try_take()
    assert not b.try_take() and not c.try_take()
    clock.now += 15
    # b and c read the same record; b writes first, c's replace names a stale version.
    found = leases.read("geo", "geo-operator")
    real_read = leases.read
    leases.read = lambda namespace, name: found  # type: ignore[method-assign]
    assert b.try_take()
    assert not c.try_take()
    leases.read = real_read  # type: ignore[method-assign]
    assert leases.stored[("geo", "geo-operator")].holder == "b"


def test_a_leader_that_cannot_renew_lets_go_at_the_deadline(leases: FakeLeases) -> None:
    clock = Clock()
    a = elector(leases, "a", clock)
    a.acquire()

    def sleep(seconds: float) -> None:
        clock.now += seconds

    a.sleep = sleep
    leases.down = True
    lost: list[str] = []
    a.renew(lost.append)
    assert clock.now == pytest.approx(10.0)  # five failed tries 2 s apart: the deadline
    assert lost and "lost lease geo/geo-operator" in lost[0]


def test_a_leader_overtaken_lets_go_at_once(leases: FakeLeases) -> None:
    clock = Clock()
    a = elector(leases, "a", clock)
    a.acquire()
    record = leases.stored[("geo", "geo-operator")]
    leases.stored[("geo", "geo-operator")] = dataclasses.replace(record, holder="b", version="x")
    a.sleep = lambda seconds: None
    lost: list[str] = []
    a.renew(lost.append)
    assert lost == [lost[0]] and "now held by b" in lost[0]


def test_a_standby_outlives_an_outage_but_a_refusal_of_its_rights_stops_it(
    leases: FakeLeases,
) -> None:
    clock = Clock()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.now += seconds
        if len(sleeps) == 3:
            leases.down = False  # the API server is back

    leases.down = True
    elector = leader.Elector(leases, "geo-system", "geo", "a", clock=clock, sleep=sleep)
    elector.acquire()  # no raise: it waited through the outage and took the Lease
    assert len(sleeps) == 3 and leases.stored[("geo-system", "geo")].holder == "a"

    class Refusing(FakeLeases):
        def read(self, namespace: str, name: str) -> lease.Record | None:
            raise lease.Forbidden("get", namespace, name)

    refused = leader.Elector(Refusing(), "geo-system", "geo", "b", clock=clock, sleep=sleep)
    with pytest.raises(lease.Forbidden, match="needs get, create and update"):
        refused.acquire()


def test_another_lease_keeps_client_gos_proportions() -> None:
    assert leader.Timing.for_lease(15) == leader.Timing()
    assert leader.Timing.for_lease(6) == leader.Timing(6, 4.0, 0.8)
