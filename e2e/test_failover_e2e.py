"""Two operators, one acting: `geo run --leader-elect` as the chart runs its two replicas.

The active operator holds the Lease in geo-system; the standby serves its liveness
endpoint and nothing else. The active one's process is killed (SIGKILL, as when its node
dies) and a GeoDeployment is edited at once: the standby takes the Lease when the dead
one's last renewal is a lease duration old, starts kopf, and acts on the edit. The figure
printed is the time from the kill to the edit acted on (observedGeneration); the
invariant checker holds afterwards. A graceful stop hands the Lease over without the wait.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from e2e.harness import OperatorProcess, example, invariants, wait_for
from e2e.harness.cluster import OPERATOR_NAMESPACE

LEASE = "geo-operator-failover"
DURATION = 6  # seconds: the chart's default is 15; short here to keep the test short


def _pair(operator: OperatorProcess, tmp: pytest.TempPathFactory) -> list[OperatorProcess]:
    args = (
        "--leader-elect",
        f"--leader-elect-namespace={OPERATOR_NAMESPACE}",
        f"--leader-elect-name={LEASE}",
        f"--lease-duration={DURATION}",
    )
    return [
        OperatorProcess(
            operator.cluster, tmp.mktemp(f"ha-{name}"), args=args, env={"POD_NAME": name}
        )
        for name in ("geo-a", "geo-b")
    ]


@pytest.fixture
def pair(
    killable_operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[OperatorProcess]]:
    """The session's standalone operator stopped, two electing ones in its place."""
    killable_operator.stop()
    procs = _pair(killable_operator, tmp_path_factory)
    yield procs
    for proc in procs:
        proc.stop()
        print(f"\n--- {proc.extra_env['POD_NAME']} log tail ---\n{proc.tail(15)}")
    killable_operator.cluster.kubectl(
        "delete", "lease", LEASE, "-n", OPERATOR_NAMESPACE, "--ignore-not-found"
    )


def _holder(operator: OperatorProcess) -> str:
    found = operator.cluster.get("lease", LEASE, OPERATOR_NAMESPACE) or {}
    return str((found.get("spec") or {}).get("holderIdentity") or "")


def _acted(operator: OperatorProcess, namespace: str, generation: int) -> bool:
    body = operator.cluster.get("geod", "digits", namespace) or {}
    return int((body.get("status") or {}).get("observedGeneration") or 0) >= generation


def test_the_standby_takes_over_when_the_active_operator_dies(
    pair: list[OperatorProcess], namespace: str
) -> None:
    first, second = pair
    cluster = first.cluster
    first.start()
    wait_for(lambda: _holder(first).startswith("geo-a_"), "geo-a holding the Lease", timeout=30)
    second.start()  # healthy while standing by: its liveness endpoint answers
    wait_for(lambda: "standing by: lease" in second.logs(), "geo-b standing by", timeout=10)
    cluster.apply(example(namespace))
    wait_for(lambda: _acted(first, namespace, 1), "digits reconciled by geo-a", timeout=60)
    assert "reconcil" not in second.logs().split("standing by", 1)[1].lower()

    first.kill()
    killed = time.monotonic()
    cluster.kubectl(
        "patch",
        "geod",
        "digits",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"triton": {"maxBatchSize": 16}}}),
    )
    generation = int(cluster.get("geod", "digits", namespace)["metadata"]["generation"])
    wait_for(
        lambda: _acted(second, namespace, generation),
        "the edit acted on by the standby",
        timeout=DURATION + 60,
        every=0.5,
    )
    failover = time.monotonic() - killed
    print(
        f"\nfailover: kill -> edit acted on by the standby in {failover:.1f} s "
        f"(lease duration {DURATION} s)"
    )
    assert _holder(second).startswith("geo-b_")
    assert failover >= DURATION - 1  # it waited for the dead one's lease to run out
    assert "leading: holding lease" in second.logs()
    invariants.wait_held(cluster, namespace, after="the failover")

    # A graceful stop releases the Lease: geo-a, started again, stands by, then takes
    # over from geo-b's stop without waiting out the duration.
    first.start()
    wait_for(lambda: "standing by" in first.logs().rsplit("leading", 1)[-1], "geo-a standing by")
    second.stop()
    stopped = time.monotonic()
    wait_for(lambda: _holder(first).startswith("geo-a_"), "geo-a taking the released Lease")
    handover = time.monotonic() - stopped
    print(f"handover on a graceful stop: {handover:.1f} s")
    assert "released lease" in second.logs()
