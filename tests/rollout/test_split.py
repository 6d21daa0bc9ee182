"""The replica split: exhaustively over totals 1..50 and every weight, and examples."""

from __future__ import annotations

import pytest

from geo_operator.rollout.split import split

TOTALS = range(1, 51)
WEIGHTS = range(0, 101)


@pytest.mark.parametrize(
    ("total", "weight", "expected"),
    [
        (10, 10, (9, 1)),
        (10, 50, (5, 5)),
        (10, 100, (0, 10)),
        (10, 0, (10, 0)),
        (4, 10, (3, 1)),  # 0.4 rounds to 0, but a canary has at least one pod
        (4, 50, (2, 2)),
        (4, 90, (1, 3)),  # 3.6 rounds to 4, but the stable keeps one
        (3, 50, (1, 2)),  # 1.5 rounds half up
        (2, 10, (1, 1)),
        (2, 99, (1, 1)),
        (1, 10, (1, 1)),  # the surge pod
        (1, 50, (1, 1)),
        (1, 100, (0, 1)),
        (1, 0, (1, 0)),
        (0, 50, (0, 0)),
        (20, 25, (15, 5)),
        (7, 33, (5, 2)),  # 2.31 -> 2
        (7, 36, (4, 3)),  # 2.52 -> 3
    ],
)
def test_examples(total: int, weight: int, expected: tuple[int, int]) -> None:
    assert split(total, weight) == expected


@pytest.mark.parametrize("total", TOTALS)
def test_every_weight_keeps_the_bounds(total: int) -> None:
    for weight in WEIGHTS:
        stable, canary = split(total, weight)
        if total == 1 and 0 < weight < 100:
            assert (stable, canary) == (1, 1)
            continue
        assert stable + canary == total, (total, weight)  # the autoscaler's total is kept
        assert (canary >= 1) is (weight > 0), (total, weight)
        assert (stable >= 1) is (weight < 100), (total, weight)


@pytest.mark.parametrize("total", TOTALS)
def test_the_canary_is_the_nearest_whole_pod_within_the_bounds(total: int) -> None:
    for weight in range(1, 100):
        _, canary = split(total, weight)
        exact = total * weight / 100
        low, high = (1, 1) if total == 1 else (1, total - 1)
        nearest = min(max(int(exact + 0.5), low), high)
        assert canary == nearest, (total, weight)
        if low < canary < high:
            assert abs(canary - exact) <= 0.5


@pytest.mark.parametrize("total", TOTALS)
def test_more_weight_never_means_fewer_canary_pods(total: int) -> None:
    canaries = [split(total, w)[1] for w in WEIGHTS]
    assert canaries == sorted(canaries)
    stables = [split(total, w)[0] for w in WEIGHTS]
    assert stables == sorted(stables, reverse=True)


@pytest.mark.parametrize("weight", range(1, 100))
def test_the_split_follows_the_total_as_it_scales(weight: int) -> None:
    """Scaling out never takes pods from either track."""
    for total in range(2, 50):
        before, after = split(total, weight), split(total + 1, weight)
        assert after[0] >= before[0] and after[1] >= before[1]
        assert sum(after) == sum(before) + 1


@pytest.mark.parametrize(("total", "weight"), [(-1, 10), (5, -1), (5, 101)])
def test_out_of_range_is_refused(total: int, weight: int) -> None:
    with pytest.raises(ValueError):
        split(total, weight)
