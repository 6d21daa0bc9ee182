"""A generative replica, token by token: what `triton/llama_model.Engine` does, in time.

The engine holds ``slots`` sequences, each with its own KV cache of ``context_length``
tokens (llama.cpp's ``kv_unified = False``: KV capacity is slots x context tokens, and a
request that fits a context never waits for cache, only for a slot). One engine step is
one ``llama_decode`` of one batch of at most ``batch_tokens`` tokens: the next token of
every decoding sequence first, then a chunk of each prompt still in prefill, in
admission order, as much as the batch has room for. A sequence whose last prompt token
was in the step gets its first token at the step's end; every decoding one its next.
Requests wait (first come, first served) while every slot is taken and are admitted at
the next step boundary after a slot frees (continuous batching).

One step costs `TokenProfile.step_ms`: ``step_base_ms + decode_ms_per_sequence x
decoding + prefill_ms_per_token x prompt tokens`` (calibrated on the real engine by
``e2e/calibrate_llm_replica.py``; the profile is ``simulation/pycode-cpu.json``).

`TokenReplica` is event-driven: between two events (an arrival joining, a sequence
finishing, the horizon) the batch is the same, so the steps between are taken at once.
It records into a `Sink`: each request's time to first token and each gap between two of
its tokens (inter-token latency), by the request's index, and per second the prompt and
generated tokens processed and the requests finished.

Called by `simulation.token_engine` (the replay loop) and its tests.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import pathlib
from typing import Any, Protocol

DEFAULT_PROFILE = pathlib.Path(__file__).with_name("pycode-cpu.json")


@dataclasses.dataclass(frozen=True)
class TokenProfile:
    """One generative replica's measured step cost (milliseconds) and model load."""

    prefill_ms_per_token: float
    step_base_ms: float
    decode_ms_per_sequence: float
    load_seconds: float = 0.0  # the engine's own model load, measured (not the pod start-up)
    source: str = ""
    measured: str = ""
    command: str = ""
    points: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        costs = (self.prefill_ms_per_token, self.step_base_ms, self.decode_ms_per_sequence)
        if any(not math.isfinite(c) or c < 0 for c in costs) or not (
            self.prefill_ms_per_token > 0 and self.step_ms(1, 0) > 0
        ):
            raise ValueError(
                "a token profile's costs must be finite and >= 0, a prompt token's and a "
                f"decode step's above 0; got {costs}"
            )

    def step_ms(self, decoding: int, prefill_tokens: int) -> float:
        """One engine step with ``decoding`` sequences decoding and ``prefill_tokens``
        prompt tokens in the batch."""
        return (
            self.step_base_ms
            + self.decode_ms_per_sequence * decoding
            + self.prefill_ms_per_token * prefill_tokens
        )

    def token_seconds(self, slots: int) -> tuple[float, float]:
        """(seconds of engine time per prompt token, per generated token with every slot
        decoding): the weights that turn token demand into busy replicas."""
        decode = (self.step_base_ms / max(slots, 1) + self.decode_ms_per_sequence) / 1000.0
        return self.prefill_ms_per_token / 1000.0, decode

    def to_json(self) -> dict[str, Any]:
        return {
            "prefillMsPerToken": self.prefill_ms_per_token,
            "stepBaseMs": self.step_base_ms,
            "decodeMsPerSequence": self.decode_ms_per_sequence,
            "loadSeconds": self.load_seconds,
            "source": self.source,
            "measured": self.measured,
            "command": self.command,
            "points": self.points,
        }

    @classmethod
    def load(cls, path: pathlib.Path | str = DEFAULT_PROFILE) -> TokenProfile:
        try:
            body = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
            return cls(
                prefill_ms_per_token=float(body["prefillMsPerToken"]),
                step_base_ms=float(body["stepBaseMs"]),
                decode_ms_per_sequence=float(body["decodeMsPerSequence"]),
                load_seconds=float(body.get("loadSeconds", 0.0)),
                source=str(body.get("source", "")),
                measured=str(body.get("measured", "")),
                command=str(body.get("command", "")),
                points=dict(body.get("points", {})),
            )
        except OSError as error:
            raise ValueError(f"cannot read token profile {path}: {error.strerror}") from error
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path} is not a token profile: {error}") from error


class Sink(Protocol):
    """Where a replica reports what users see (`token_engine` keeps the arrays)."""

    def first_token(self, request: int, at: float, ttft: float) -> None: ...

    def gaps(self, request: int, at: float, gap: float, count: int) -> None:
        """``count`` inter-token gaps of ``gap`` seconds each, the last ending at ``at``."""

    def tokens(self, at: float, prompt: int, generated: int) -> None: ...

    def finished(self, request: int, at: float) -> None: ...


@dataclasses.dataclass
class _Seq:
    request: int
    arrival: float
    prompt: int
    output: int  # tokens to generate (at least 1)
    cached: int = 0  # prompt tokens processed
    waited: bool = False  # found every slot taken at a step boundary
    generated: int = 0

    @property
    def decoding(self) -> bool:
        return self.cached >= self.prompt


class TokenReplica:
    """One engine: slots, a FIFO of waiting requests, steps in time."""

    def __init__(
        self,
        profile: TokenProfile,
        *,
        slots: int,
        context_length: int,
        batch_tokens: int,
        ready_at: float = 0.0,
    ) -> None:
        if slots < 1 or context_length < 2 or batch_tokens < 1:
            raise ValueError("need slots >= 1, context_length >= 2, batch_tokens >= 1")
        self.profile = profile
        self.slots = slots
        self.context_length = context_length
        self.batch_tokens = batch_tokens
        self.now = ready_at
        self.waiting: collections.deque[_Seq] = collections.deque()
        self.active: list[_Seq] = []
        self.waited = 0  # requests that found every slot taken (waited for one)

    # ------------------------------------------------------------------ requests

    def fits(self, prompt: int) -> bool:
        """The engine refuses a prompt of a whole context or more (llama_model.check_prompt)."""
        return 0 < prompt < self.context_length

    def submit(self, request: int, arrival: float, prompt: int, output: int) -> None:
        """Queue a request (arrivals in order); ``output`` is cut to the context's room."""
        if not self.fits(prompt):
            raise ValueError(f"prompt of {prompt} tokens: a context holds {self.context_length}")
        output = max(1, min(output, self.context_length - prompt))
        self.waiting.append(_Seq(request, arrival, prompt, output))

    @property
    def running(self) -> int:
        return len(self.active)

    def queued(self, at: float) -> int:
        """Requests arrived by ``at`` and waiting for a slot (vllm:num_requests_waiting)."""
        return sum(1 for s in self.waiting if s.arrival <= at)

    def kv_usage(self) -> float:
        """KV cells in use over all cells (vllm:kv_cache_usage_perc, as the engine counts)."""
        used = sum(s.cached + s.generated for s in self.active)
        return used / (self.slots * self.context_length)

    def busy(self) -> bool:
        return bool(self.active or self.waiting)

    # ------------------------------------------------------------------ time

    def _admit(self) -> None:
        while (
            self.waiting and len(self.active) < self.slots and self.waiting[0].arrival <= self.now
        ):
            self.active.append(self.waiting.popleft())
        for seq in self.waiting:
            if seq.arrival > self.now:
                break
            if not seq.waited:
                seq.waited = True
                self.waited += 1

    def advance(self, horizon: float, sink: Sink) -> None:
        """Run every step that starts before ``horizon`` (the last may end after it)."""
        while self.now < horizon:
            self._admit()
            if not self.active:
                if self.waiting and self.waiting[0].arrival < horizon:
                    self.now = max(self.now, self.waiting[0].arrival)
                    continue
                self.now = max(self.now, horizon)
                return
            if any(not s.decoding for s in self.active):
                self._prefill_step(sink)
            else:
                self._decode_steps(horizon, sink)

    def _prefill_step(self, sink: Sink) -> None:
        decoders = [s for s in self.active if s.decoding]
        room = self.batch_tokens - len(decoders)
        chunks: list[tuple[_Seq, int]] = []
        for seq in self.active:
            if seq.decoding or room <= 0:
                continue
            take = min(room, seq.prompt - seq.cached)
            chunks.append((seq, take))
            room -= take
        prompt_tokens = sum(t for _, t in chunks)
        step = self.profile.step_ms(len(decoders), prompt_tokens) / 1000.0
        end = self.now + step
        for seq in decoders:
            seq.generated += 1
            sink.gaps(seq.request, end, step, 1)
        for seq, take in chunks:
            seq.cached += take
            if seq.decoding:  # its last prompt token was in this batch: the first token
                seq.generated += 1
                sink.first_token(seq.request, end, end - seq.arrival)
        sink.tokens(end, prompt_tokens, len(decoders) + sum(1 for s, _ in chunks if s.decoding))
        self.now = end
        self._retire(sink)

    def _decode_steps(self, horizon: float, sink: Sink) -> None:
        n = len(self.active)
        step = self.profile.step_ms(n, 0) / 1000.0
        k = min(s.output - s.generated for s in self.active)
        if math.isfinite(horizon):
            k = min(k, max(1, math.ceil((horizon - self.now) / step)))
        if self.waiting and len(self.active) < self.slots:
            # an arrival joins at the first step boundary at or after it
            k = min(k, max(1, math.ceil((self.waiting[0].arrival - self.now) / step)))
        end = self.now + k * step
        for seq in self.active:
            seq.generated += k
            sink.gaps(seq.request, end, step, k)
        sink.tokens(end, 0, n * k)
        self.now = end
        self._retire(sink)

    def _retire(self, sink: Sink) -> None:
        done = [s for s in self.active if s.generated >= s.output]
        for seq in done:
            self.active.remove(seq)
            sink.finished(seq.request, self.now)
