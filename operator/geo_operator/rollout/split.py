"""The replica split between the stable and the canary track. Pure.

`split(total, weight)` turns the autoscaler's total and the current step's weight
into (stable, canary) replica counts. The traffic split is by replica ratio: both
tracks' pods sit behind the one Service, which spreads new connections evenly over
ready pods, so the canary's share of requests is its share of the ready pods.

The rules, in order:

- weight 0: every replica is stable; weight 100: every replica is canary;
- otherwise the canary gets ``total × weight / 100`` rounded half up (integer
  arithmetic: ``(total × weight + 50) // 100``), then at least one pod (a canary
  without a pod is not judged) and at most ``total - 1`` (the stable keeps at
  least one pod until weight 100, so a rollback has something serving);
- total 1 cannot hold both: the canary then comes as a surge pod, (1, 1), and the
  service briefly runs one replica more than the autoscaler asked for;
- total 0 (scaled to zero by hand) stays (0, 0): there is nothing to split.

The caller applies the split to the autoscaler's total on every tick, so the
total follows the autoscaler and the ratio is kept as it scales (at the nearest
whole pod, with the bounds above).
"""

from __future__ import annotations


def split(total: int, weight: int) -> tuple[int, int]:
    """(stable, canary) replicas for ``total`` replicas at ``weight`` percent canary."""
    if total < 0:
        raise ValueError(f"total replicas must be >= 0, got {total}")
    if not 0 <= weight <= 100:
        raise ValueError(f"weight must be within 0..100, got {weight}")
    if total == 0:
        return 0, 0
    if weight == 0:
        return total, 0
    if weight == 100:
        return 0, total
    if total == 1:
        return 1, 1  # the surge pod: one replica more than asked, while the canary runs
    canary = min(max((total * weight + 50) // 100, 1), total - 1)
    return total - canary, canary
