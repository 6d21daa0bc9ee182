"""Faults under a running GEO, each story ending with the invariant check
(`e2e/harness/invariants.py`: one serving Deployment per GeoDeployment, two during a
canary; nothing orphaned; status agreeing with the children; every object reconciled
to its latest generation; no Event twice; no pod refused).

* The operator SIGKILLed at seeded random moments while specs are edited — during
  its reconciles, between them, and while it is down — then the namespace settles to
  the invariants.

`GEO_FAULT_KILLS` (default 6) and `GEO_FAULT_SEED` make a longer soak. kwok plays the
nodes: the pods go Ready without Triton (load and Triton's own faults are the closed
loop's stories, e2e/test_closed_loop.py).
"""

from __future__ import annotations

import json
import os
import random
import time

from e2e.harness import OperatorProcess, example, invariants

KILLS = int(os.environ.get("GEO_FAULT_KILLS", "6"))
SEED = int(os.environ.get("GEO_FAULT_SEED", "14"))
NAMES = ("k0", "k1", "k2")


def _edit(rng: random.Random) -> tuple[str, dict[str, object]]:
    """A spec edit of a random GeoDeployment: what rolls, scales, or re-tunes."""
    name = rng.choice(NAMES)
    choice = rng.randrange(4)
    if choice == 0:
        return name, {"spec": {"replicas": rng.randint(0, 3)}}
    if choice == 1:
        return name, {"spec": {"triton": {"instanceCount": rng.randint(1, 3)}}}
    if name == "k2":  # the one that tunes: another grid is another tuning Job
        grid = sorted(rng.sample([1, 2, 4, 8, 16, 32], 3))
        return name, {"spec": {"batchTuning": {"candidates": grid}}}
    return name, {"spec": {"triton": {"maxBatchSize": rng.choice([8, 16, 32, 64])}}}


def test_the_operator_killed_at_random_moments_while_specs_change(
    killable_operator: OperatorProcess, namespace: str
) -> None:
    operator = killable_operator
    cluster = operator.cluster
    rng = random.Random(SEED)
    for name in NAMES:
        body = example(namespace, rollout={"strategy": "rolling"})
        body["metadata"]["name"] = name
        if name == "k2":
            body["spec"]["triton"]["maxBatchSize"] = 0  # tuned: a Job per candidate
        cluster.apply(body)
    edits = 0
    for _ in range(KILLS):
        for _ in range(rng.randint(1, 3)):
            name, patch = _edit(rng)
            cluster.kubectl(
                "patch", "geod", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch)
            )
            edits += 1
            time.sleep(rng.uniform(0, 0.7))
        time.sleep(rng.uniform(0, 2.0))  # mid-reconcile or between reconciles
        operator.kill()
        if rng.random() < 0.5:  # an edit while it is down
            name, patch = _edit(rng)
            cluster.kubectl(
                "patch", "geod", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch)
            )
            edits += 1
        time.sleep(rng.uniform(0, 1.0))
        operator.start()
    started = time.monotonic()

    invariants.wait_held(
        cluster, namespace, f"{KILLS} kills and {edits} edits (seed {SEED})", timeout=120
    )
    print(
        f"\n[faults] {KILLS} SIGKILLs, {edits} spec edits (seed {SEED}): invariants hold "
        f"{time.monotonic() - started:.1f} s after the last start"
    )
