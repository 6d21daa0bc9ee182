"""tuning/llm_speed's slot search: pure, on made-up figures (the real engine's in
tests/triton/test_llama_model.py)."""

from __future__ import annotations

from geo_operator.tuning import llm_speed


def _speed(slots: int, tps: float, ttft: float, itl: float) -> llm_speed.Speed:
    return llm_speed.Speed(slots, 2 * slots, tps, ttft, itl, itl / 2)


def test_the_highest_throughput_within_both_objectives_is_kept_after_a_confirmation() -> None:
    figures = {
        1: _speed(1, 500, 20, 3),
        2: _speed(2, 900, 30, 4),
        4: _speed(4, 1500, 60, 6),  # the first token too slow for a 50 ms objective
        8: _speed(8, 1700, 90, 12),
    }
    asked: list[int] = []

    def at(slots: int) -> llm_speed.Speed:
        asked.append(slots)
        return figures[slots]

    found = llm_speed.search_slots(at, [8, 4, 2, 1, 2], ttft_budget_ms=50, itl_budget_ms=10)
    assert found.chosen == 2 and found.speed == figures[2]
    assert asked == [1, 2, 4, 8, 2]  # each once, ascending, then the confirmation
    unbounded = llm_speed.search_slots(at, [1, 8], None, None)
    assert unbounded.chosen == 8


def test_a_confirmation_that_misses_takes_the_next_best_and_none_fitting_says_so() -> None:
    calls = {"n": 0}

    def noisy(slots: int) -> llm_speed.Speed:
        calls["n"] += 1
        if slots == 4 and calls["n"] > 3:  # the repeat of 4 slots runs slow
            return _speed(4, 1400, 80, 7)
        return {1: _speed(1, 500, 20, 3), 2: _speed(2, 900, 30, 4), 4: _speed(4, 1500, 40, 6)}[
            slots
        ]

    found = llm_speed.search_slots(noisy, [1, 2, 4], ttft_budget_ms=50, itl_budget_ms=None)
    assert found.chosen == 2 and [c for c, _ in found.measured] == [1, 2, 4, 4]
    none = llm_speed.search_slots(noisy, [1, 2], ttft_budget_ms=5, itl_budget_ms=None)
    assert none.chosen is None and none.speed is None and len(none.measured) == 2
