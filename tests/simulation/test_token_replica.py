"""The token-level replica model (simulation/token_replica.py): its costs and invariants."""

from __future__ import annotations

import dataclasses
import math

import pytest

from geo_operator.simulation import token_replica as tr

PROFILE = tr.TokenProfile(prefill_ms_per_token=0.05, step_base_ms=0.2, decode_ms_per_sequence=0.1)


@dataclasses.dataclass
class Sink:
    ttft: dict[int, float] = dataclasses.field(default_factory=dict)
    first_at: dict[int, float] = dataclasses.field(default_factory=dict)
    seen: list[tuple[int, float, int]] = dataclasses.field(default_factory=list)
    done: dict[int, float] = dataclasses.field(default_factory=dict)
    prompt: int = 0
    generated: int = 0

    def first_token(self, request: int, at: float, ttft: float) -> None:
        self.ttft[request] = ttft
        self.first_at[request] = at

    def gaps(self, request: int, at: float, gap: float, count: int) -> None:
        self.seen.append((request, gap, count))

    def tokens(self, at: float, prompt: int, generated: int) -> None:
        self.prompt += prompt
        self.generated += generated

    def finished(self, request: int, at: float) -> None:
        self.done[request] = at


def _replica(slots: int = 2, context: int = 4096, batch: int = 512) -> tr.TokenReplica:
    return tr.TokenReplica(PROFILE, slots=slots, context_length=context, batch_tokens=batch)


def test_step_cost_rises_with_sequences_and_prompt_tokens() -> None:
    costs = [PROFILE.step_ms(n, 0) for n in range(1, 9)]
    assert costs == sorted(costs) and len(set(costs)) == len(costs)
    assert PROFILE.step_ms(2, 100) > PROFILE.step_ms(2, 10) > PROFILE.step_ms(2, 0)
    # a full batch decodes a token for less than a lone sequence does
    assert PROFILE.token_seconds(8)[1] < PROFILE.token_seconds(1)[1]


def test_profile_refuses_nonsense_and_the_checked_in_one_loads() -> None:
    with pytest.raises(ValueError, match="finite"):
        tr.TokenProfile(prefill_ms_per_token=0, step_base_ms=0.1, decode_ms_per_sequence=0.1)
    with pytest.raises(ValueError, match="finite"):
        tr.TokenProfile(prefill_ms_per_token=math.nan, step_base_ms=0, decode_ms_per_sequence=1)
    shipped = tr.TokenProfile.load()
    assert shipped.prefill_ms_per_token > 0 and shipped.decode_ms_per_sequence > 0
    assert shipped.measured and "calibrate_llm_replica.py" in shipped.command


def test_one_request_ttft_is_its_prefill_and_its_gaps_one_step_each() -> None:
    replica, sink = _replica(), Sink()
    replica.submit(0, 0.0, 1000, 10)
    replica.advance(10.0, sink)
    # 1000 prompt tokens in two steps of <= 512
    expected = (PROFILE.step_ms(0, 512) + PROFILE.step_ms(0, 488)) / 1000
    assert sink.ttft[0] == pytest.approx(expected)
    assert sum(c for _, _, c in sink.seen) == 9  # 10 tokens, 9 gaps
    assert all(g == pytest.approx(PROFILE.step_ms(1, 0) / 1000) for _, g, _ in sink.seen)
    assert sink.prompt == 1000 and sink.generated == 10
    assert not replica.busy() and replica.kv_usage() == 0.0


def test_a_queue_forms_when_slots_are_full_and_ttft_includes_the_wait() -> None:
    replica, sink = _replica(slots=2), Sink()
    for i in range(3):
        replica.submit(i, 0.0, 100, 200)
    replica.advance(0.001, sink)
    assert replica.running == 2 and replica.queued(0.001) == 1
    assert replica.waited == 1
    assert replica.kv_usage() > 0
    replica.advance(100.0, sink)
    # the third waited for a slot: its first token after the first two finished
    assert sink.first_at[2] >= min(sink.done[0], sink.done[1])
    assert sink.ttft[2] > 5 * sink.ttft[0]
    assert set(sink.done) == {0, 1, 2}


def test_decoding_together_is_cheaper_per_token_but_slower_per_gap() -> None:
    alone, together = Sink(), Sink()
    r1 = _replica(slots=4)
    r1.submit(0, 0.0, 10, 100)
    r1.advance(100.0, alone)
    r4 = _replica(slots=4)
    for i in range(4):
        r4.submit(i, 0.0, 10, 100)
    r4.advance(100.0, together)
    assert max(g for _, g, _ in together.seen) > max(g for _, g, _ in alone.seen)
    assert max(together.done.values()) < 4 * alone.done[0]  # batched beats serial


def test_a_prefill_slows_the_decoders_beside_it() -> None:
    replica, sink = _replica(slots=2), Sink()
    replica.submit(0, 0.0, 10, 400)
    replica.submit(1, 0.05, 2000, 5)  # arrives while 0 decodes
    replica.advance(100.0, sink)
    gaps0 = [g for r, g, _ in sink.seen if r == 0]
    assert max(gaps0) >= PROFILE.step_ms(1, 511) / 1000 - 1e-12
    assert min(gaps0) == pytest.approx(PROFILE.step_ms(1, 0) / 1000)


def test_an_arrival_joins_at_the_next_step_not_after_the_running_ones() -> None:
    replica, sink = _replica(slots=2), Sink()
    replica.submit(0, 0.0, 10, 10_000)
    replica.submit(1, 0.5, 10, 5)
    replica.advance(0.3, sink)  # horizon before the arrival
    replica.advance(100.0, sink)
    step = PROFILE.step_ms(1, 0) / 1000
    assert 0.5 <= sink.first_at[1] <= 0.5 + 3 * step + 0.01
    assert sink.done[1] < sink.done[0]


def test_a_prompt_of_a_whole_context_is_refused_and_outputs_fit_the_context() -> None:
    replica, sink = _replica(context=128), Sink()
    assert not replica.fits(128) and not replica.fits(0) and replica.fits(127)
    with pytest.raises(ValueError, match="context holds 128"):
        replica.submit(0, 0.0, 128, 1)
    replica.submit(1, 0.0, 100, 1000)
    replica.advance(100.0, sink)
    assert sink.generated == 28  # cut to the context's room
