"""Triton python-backend model that serves a GGUF file with llama.cpp, decoupled, on CPU.

The operator copies this file verbatim to ``<repo>/<model>/<version>/model.py`` next
to the fetched ``model.gguf``, as it does ``python_model.py`` for ONNX. It must stay
self-contained: stdlib, numpy, ``llama_cpp`` (llama-cpp-python's binding of the C
API) and ``triton_python_backend_utils`` only -- never ``geo_operator``. The engine
below (``Engine``) needs no Triton, so the tests drive it directly too.

**Continuous batching.** One llama.cpp context holds ``slots`` sequences, each with a
KV cache of ``context_length`` tokens (``n_ctx = slots x context_length``, the cache
split per sequence). One engine thread runs the loop vLLM and TensorRT-LLM run: admit
waiting requests into free slots, then build **one** ``llama_batch`` holding the next
token of every decoding sequence plus a chunk of the prompt of every sequence still
in prefill (each token tagged with its sequence id), ``llama_decode`` it once, and
sample one token for every sequence whose logits came out. A request arriving while
others decode joins the next step; one that finishes frees its slot (its KV cells
removed) for the next waiting request.

**The conventions of Triton's vLLM backend**, so a client written for it works
unchanged: inputs ``text_input`` (STRING), optional ``stream`` (BOOL),
``sampling_parameters`` (STRING, JSON: ``max_tokens``, ``temperature``, ``top_p``,
``top_k``, ``seed``, ``stop``, ``ignore_eos``; or the same keys as request
parameters, which is what ``generate``/``generate_stream`` send),
``exclude_input_in_output``, ``return_finish_reason``, ``return_num_input_tokens``,
``return_num_output_tokens``; and TensorRT-LLM's ``max_tokens`` (INT32) input.
Outputs ``text_output`` (one response per generated token when streaming, the last
flagged final; otherwise one response, prompt prepended unless excluded, as vLLM
does), ``finish_reason`` (``stop``, ``length``, ``abort``), ``num_input_tokens``,
``num_output_tokens``. A request that cannot be served (empty prompt, bytes that are
not UTF-8, a prompt longer than a slot's context, ``max_tokens`` below 1 or above the
cap, bad JSON) gets an error response of its own; the engine and the other streams go
on. A client that goes away (``is_cancelled``, or a send that fails) has its slot
freed at the next step and is counted with ``finished_reason="abort"``.

**Metrics** under the names of Triton's vLLM backend (python-backend custom metrics,
label ``model``/``version``): ``vllm:num_requests_running``,
``vllm:num_requests_waiting``, ``vllm:gpu_cache_usage_perc`` and its newer name
``vllm:kv_cache_usage_perc`` (KV cells in use / all cells; on a CPU all the same),
``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``,
``vllm:request_success_total{finished_reason}``, and the histograms
``vllm:time_to_first_token_seconds``, ``vllm:time_per_output_token_seconds``,
``vllm:e2e_request_latency_seconds`` (the python backend of Triton 2.51 has
histograms; where one does not, each is exported as ``<name>_sum`` and
``<name>_count`` counters).

``parameters`` in config.pbtxt (string values, all optional): ``gguf_file``
(``model.gguf``), ``slots`` (4), ``context_length`` (the model's training context),
``max_tokens_cap`` (the context length), ``default_max_tokens`` (16, vLLM's default),
``n_batch`` (512: tokens per ``llama_decode``), ``n_threads`` (2).
"""

from __future__ import annotations

import collections
import ctypes
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # outside Triton (unit tests, linters)
    pb_utils = None

FINISH_STOP, FINISH_LENGTH, FINISH_ABORT = "stop", "length", "abort"
DEFAULT_MAX_TOKENS = 16  # vLLM's SamplingParams default
TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0]
TPOT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0]
E2E_BUCKETS = [0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0]


class RequestError(ValueError):
    """A request that cannot be served; its message is the client's error."""


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False


def _number(params: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = params.get(key, default)
    if value is None:
        return default
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                return value.lower() in ("true", "1")
            return bool(value)
        number = kind(value)
    except (TypeError, ValueError):
        raise RequestError(f"{key} must be a {kind.__name__}, got {value!r}") from None
    return number


def parse_sampling(
    params: Mapping[str, Any], *, cap: int, default_max_tokens: int, max_tokens: int | None
) -> Sampling:
    """vLLM's sampling parameters (values may be strings, as request parameters are)."""
    tokens = max_tokens if max_tokens is not None else params.get("max_tokens")
    tokens = _number({"max_tokens": tokens}, "max_tokens", int, default_max_tokens)
    if tokens < 1 or tokens > cap:
        raise RequestError(f"max_tokens must be between 1 and {cap} (the cap), got {tokens}")
    temperature = _number(params, "temperature", float, 0.0)
    top_p = _number(params, "top_p", float, 1.0)
    top_k = _number(params, "top_k", int, 0)
    if temperature < 0:
        raise RequestError(f"temperature must be 0 or more, got {temperature}")
    if not 0 < top_p <= 1:
        raise RequestError(f"top_p must be in (0, 1], got {top_p}")
    stop = params.get("stop") or ()
    if isinstance(stop, str):
        stop = json.loads(stop) if stop.startswith("[") else [stop]
    seed = params.get("seed")
    return Sampling(
        max_tokens=tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=max(0, top_k),  # vLLM: -1 means all
        seed=None if seed is None else _number(params, "seed", int, None),
        stop=tuple(str(s) for s in stop if s),
        ignore_eos=_number(params, "ignore_eos", bool, False),
    )


def sample(logits: npt.NDArray[np.float32], sampling: Sampling, rng: np.random.Generator) -> int:
    """Greedy at temperature 0, else temperature, top-k and top-p (nucleus) sampling."""
    if sampling.temperature <= 0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / sampling.temperature
    order = np.argsort(-scaled)
    if sampling.top_k:
        order = order[: sampling.top_k]
    probs = np.exp(scaled[order] - scaled[order[0]])
    probs /= probs.sum()
    if sampling.top_p < 1:
        keep = int(np.searchsorted(np.cumsum(probs), sampling.top_p)) + 1
        order, probs = order[:keep], probs[:keep] / probs[:keep].sum()
    return int(order[rng.choice(len(order), p=probs)])


class Utf8Stream:
    """Bytes in (token pieces), text out: a character split across tokens waits for its
    last byte; bytes that can never decode are replaced at the end."""

    def __init__(self) -> None:
        self.pending = b""

    def push(self, piece: bytes) -> str:
        data = self.pending + piece
        for cut in range(len(data), max(-1, len(data) - 4), -1):
            try:
                text = data[:cut].decode("utf-8")
            except UnicodeDecodeError:
                continue
            self.pending = data[cut:]
            return text
        self.pending = b""
        return data.decode("utf-8", errors="replace")

    def flush(self) -> str:
        text, self.pending = self.pending.decode("utf-8", errors="replace"), b""
        return text


@dataclass
class Sequence:
    """One request in the engine."""

    prompt: list[int]
    sampling: Sampling
    emit: Callable[[Sequence, str, str | None], bool]  # (seq, text, finish) -> still wanted
    cancelled: Callable[[], bool] = lambda: False
    arrived: float = field(default_factory=time.perf_counter)
    slot: int = -1
    cached: int = 0  # tokens in this slot's KV cache
    next_token: int | None = None
    generated: int = 0
    first_token_at: float | None = None
    last_token_at: float | None = None
    text: str = ""
    sent: int = 0  # characters of text sent so far
    utf8: Utf8Stream = field(default_factory=Utf8Stream)
    rng: np.random.Generator = field(default_factory=np.random.default_rng)


@dataclass
class Stats:
    prompt_tokens: int = 0
    generation_tokens: int = 0
    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0
    steps: int = 0
    finished: collections.Counter[str] = field(default_factory=collections.Counter)
    ttft: list[float] = field(default_factory=list)  # drained by the metrics reporter
    tpot: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)


def _quiet_llama_log() -> None:
    import llama_cpp

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def _drop(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level >= 4 and os.environ.get("GEO_LLAMA_VERBOSE"):  # GGML_LOG_LEVEL_ERROR = 4
            print(text.decode(errors="replace"), end="", flush=True)

    _quiet_llama_log.keep = _drop  # type: ignore[attr-defined]  # keep the callback alive
    llama_cpp.llama_log_set(_drop, ctypes.c_void_p())


class Engine:
    """llama.cpp with ``slots`` sequences decoded together, one batch per step."""

    def __init__(
        self,
        model_path: str,
        *,
        slots: int = 4,
        context_length: int = 0,
        n_batch: int = 512,
        n_threads: int = 2,
    ) -> None:
        import llama_cpp

        self.c = llama_cpp
        _quiet_llama_log()
        llama_cpp.llama_backend_init()
        mparams = llama_cpp.llama_model_default_params()
        self.model = llama_cpp.llama_model_load_from_file(model_path.encode(), mparams)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {model_path}")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        trained = llama_cpp.llama_model_n_ctx_train(self.model)
        self.slots = slots
        self.context_length = context_length or trained
        self.n_batch = n_batch
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self.slots * self.context_length
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = self.slots
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        cparams.kv_unified = False  # each sequence its own context_length cells
        self.ctx = llama_cpp.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not make a context of {cparams.n_ctx} tokens")
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.bos = llama_cpp.llama_vocab_bos(self.vocab)
        self.stats = Stats()
        self.lock = threading.Condition()
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.active: dict[int, Sequence] = {}
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="llama-engine", daemon=True)
        self.thread.start()

    # ---------------------------------------------------------------- tokens

    def tokenize(self, text: str) -> list[int]:
        data = text.encode("utf-8")
        size = len(data) + 2
        buf = (self.c.llama_token * size)()
        n = self.c.llama_tokenize(self.vocab, data, len(data), buf, size, True, False)
        if n < 0:  # more room needed
            size = -n
            buf = (self.c.llama_token * size)()
            n = self.c.llama_tokenize(self.vocab, data, len(data), buf, size, True, False)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self.c.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.c.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
        return buf.raw[:n]

    # ---------------------------------------------------------------- requests

    def check_prompt(self, prompt: list[int]) -> None:
        if len(prompt) >= self.context_length:
            raise RequestError(
                f"the prompt is {len(prompt)} tokens; a sequence's context holds "
                f"{self.context_length} (prompt and generated tokens together)"
            )

    def submit(self, seq: Sequence) -> None:
        self.check_prompt(seq.prompt)
        if seq.sampling.seed is not None:
            seq.rng = np.random.default_rng(seq.sampling.seed)
        with self.lock:
            self.waiting.append(seq)
            self.stats.waiting = len(self.waiting)
            self.lock.notify()

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            self.lock.notify()
        self.thread.join(timeout=10)
        self.c.llama_batch_free(self.batch)
        self.c.llama_free(self.ctx)
        self.c.llama_model_free(self.model)

    # ---------------------------------------------------------------- the loop

    def _admit(self) -> None:
        with self.lock:
            while not self.active and not self.waiting and not self.stopping:
                self.lock.wait(timeout=0.5)
            free = [s for s in range(self.slots) if s not in self.active]
            while free and self.waiting:
                seq = self.waiting.popleft()
                seq.slot = free.pop(0)
                self.active[seq.slot] = seq
            self.stats.waiting = len(self.waiting)
            self.stats.running = len(self.active)

    def _loop(self) -> None:
        while not self.stopping:
            self._admit()
            if self.stopping:
                break
            for seq in [s for s in self.active.values() if s.cancelled()]:
                self._finish(seq, FINISH_ABORT)
            if self.active:
                self._step()

    def _step(self) -> None:
        """One llama_decode for every active sequence: a token each for those decoding,
        as much prompt as the batch has room for for those in prefill."""
        batch, n = self.batch, 0
        outputs: list[tuple[int, Sequence]] = []
        decoding = [s for s in self.active.values() if s.next_token is not None]
        prefill = [s for s in self.active.values() if s.next_token is None]
        for seq in decoding:
            self._add(n, seq.next_token, seq.cached, seq.slot, True)  # type: ignore[arg-type]
            outputs.append((n, seq))
            seq.cached += 1
            n += 1
        for seq in prefill:
            room = self.n_batch - n
            if room <= 0:
                break
            chunk = seq.prompt[seq.cached : seq.cached + room]
            for i, token in enumerate(chunk):
                last = seq.cached + i == len(seq.prompt) - 1
                self._add(n, token, seq.cached + i, seq.slot, last)
                if last:
                    outputs.append((n, seq))
                n += 1
            seq.cached += len(chunk)
            self.stats.prompt_tokens += len(chunk)
        batch.n_tokens = n
        rc = self.c.llama_decode(self.ctx, batch)
        self.stats.steps += 1
        if rc != 0:  # 1: no KV room (cannot happen: each slot has its own context); <0 error
            for seq in list(self.active.values()):
                self._finish(seq, FINISH_ABORT, error=f"llama_decode returned {rc}")
            return
        now = time.perf_counter()
        for index, seq in outputs:
            logits = np.ctypeslib.as_array(
                self.c.llama_get_logits_ith(self.ctx, index), shape=(self.n_vocab,)
            )
            token = sample(logits, seq.sampling, seq.rng)
            self._emit(seq, token, now)
        self.stats.kv_usage = self._kv_usage()

    def _kv_usage(self) -> float:
        """KV cells in use over all cells (each active sequence holds its cached tokens)."""
        used = sum(s.cached for s in self.active.values())
        return used / (self.slots * self.context_length)

    def _add(self, i: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
        b = self.batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq_id
        b.logits[i] = logits

    def _emit(self, seq: Sequence, token: int, now: float) -> None:
        if seq.first_token_at is None:
            seq.first_token_at = now
            self.stats.ttft.append(now - seq.arrived)
        else:
            self.stats.tpot.append(now - (seq.last_token_at or now))
        seq.last_token_at = now
        eog = self.c.llama_vocab_is_eog(self.vocab, token) and not seq.sampling.ignore_eos
        finish: str | None = None
        stops = seq.sampling.stop
        if eog:
            finish = FINISH_STOP
            seq.text += seq.utf8.flush()
        else:
            seq.generated += 1
            self.stats.generation_tokens += 1
            seq.next_token = token
            seq.text += seq.utf8.push(self.piece(token))
            if seq.generated >= seq.sampling.max_tokens or seq.cached + 1 >= self.context_length:
                finish = FINISH_LENGTH
                seq.text += seq.utf8.flush()
        # a stop string ends the text before it (it is never sent: text that could still
        # become one is held back until it cannot, as vLLM does)
        found = [
            at for stop in stops if (at := seq.text.find(stop, max(0, seq.sent - len(stop)))) >= 0
        ]
        if found:
            seq.text = seq.text[: min(found)]
            finish = FINISH_STOP
        hold = 0 if finish is not None or not stops else max(len(x) for x in stops) - 1
        upto = max(seq.sent, len(seq.text) - hold)
        text, seq.sent = seq.text[seq.sent : upto], upto
        if finish is not None:
            self._finish(seq, finish, text=text)
        elif not seq.emit(seq, text, None):
            self._finish(seq, FINISH_ABORT, notify=False)

    def _finish(
        self,
        seq: Sequence,
        reason: str,
        *,
        text: str = "",
        error: str | None = None,
        notify: bool = True,
    ) -> None:
        self.c.llama_memory_seq_rm(self.memory, seq.slot, -1, -1)
        self.active.pop(seq.slot, None)
        self.stats.finished[reason] += 1
        self.stats.running = len(self.active)
        self.stats.kv_usage = self._kv_usage()
        self.stats.e2e.append(time.perf_counter() - seq.arrived)
        if (notify and reason != FINISH_ABORT) or error:
            seq.emit(seq, text if error is None else "\x00" + error, reason)


# ---------------------------------------------------------------------------- Triton


def _config_params(model_config: Mapping[str, Any]) -> dict[str, str]:
    return {
        key: value.get("string_value", "")
        for key, value in model_config.get("parameters", {}).items()
    }


class TritonPythonModel:
    """Triton's side: requests in, responses out through each request's sender."""

    @classmethod
    def auto_complete_config(cls, config: Any) -> Any:
        names = {i["name"] for i in config.as_dict().get("input", [])}
        for name, dtype in (
            ("text_input", "TYPE_STRING"),
            ("stream", "TYPE_BOOL"),
            ("max_tokens", "TYPE_INT32"),
            ("sampling_parameters", "TYPE_STRING"),
            ("exclude_input_in_output", "TYPE_BOOL"),
            ("return_finish_reason", "TYPE_BOOL"),
            ("return_num_input_tokens", "TYPE_BOOL"),
            ("return_num_output_tokens", "TYPE_BOOL"),
        ):
            if name not in names:
                spec: dict[str, Any] = {"name": name, "data_type": dtype, "dims": [1]}
                spec["optional"] = name != "text_input"
                config.add_input(spec)
        outputs = {o["name"] for o in config.as_dict().get("output", [])}
        for name, dtype in (
            ("text_output", "TYPE_STRING"),
            ("finish_reason", "TYPE_STRING"),
            ("num_input_tokens", "TYPE_UINT32"),
            ("num_output_tokens", "TYPE_UINT32"),
        ):
            if name not in outputs:
                config.add_output({"name": name, "data_type": dtype, "dims": [-1]})
        config.set_model_transaction_policy({"decoupled": True})
        config.set_max_batch_size(0)
        return config

    def initialize(self, args: Mapping[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = _config_params(config)
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.engine = Engine(
            os.path.join(folder, params.get("gguf_file") or "model.gguf"),
            slots=int(params.get("slots") or 4),
            context_length=int(params.get("context_length") or 0),
            n_batch=int(params.get("n_batch") or 512),
            n_threads=int(params.get("n_threads") or 2),
        )
        self.cap = min(
            int(params.get("max_tokens_cap") or self.engine.context_length),
            self.engine.context_length,
        )
        self.default_max_tokens = min(
            int(params.get("default_max_tokens") or DEFAULT_MAX_TOKENS), self.cap
        )
        labels = {"model": args["model_name"], "version": args["model_version"]}
        self.metrics = Metrics(labels)
        self.metrics_thread = threading.Thread(target=self._report, daemon=True)
        self.reporting = True
        self.metrics_thread.start()
        pb_utils.Logger.log_info(
            f"[geo-llama] {args['model_name']}: {self.engine.slots} slots x "
            f"{self.engine.context_length} tokens, cap {self.cap}, batch {self.engine.n_batch}"
        )

    def _report(self) -> None:
        failed = False
        while self.reporting:
            try:
                self.metrics.update(self.engine.stats)
            except Exception as e:  # a metrics failure must not stop the engine
                if not failed:
                    pb_utils.Logger.log_error(f"[geo-llama] metrics not updated: {e}")
                failed = True
            time.sleep(0.5)

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                seq = self._parse(request, sender)
                self.engine.submit(seq)
            except RequestError as e:
                error = pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG)
                sender.send(
                    pb_utils.InferenceResponse(error=error),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                )
        return None

    def _parse(self, request: Any, sender: Any) -> Sequence:
        def flag(name: str, default: bool = False) -> bool:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            return default if tensor is None else bool(tensor.as_numpy().reshape(-1)[0])

        raw = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy().reshape(-1)[0]
        try:
            prompt = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        except UnicodeDecodeError as e:
            raise RequestError(f"text_input is not UTF-8: {e}") from None
        if not prompt:
            raise RequestError("text_input is empty")
        tensor = pb_utils.get_input_tensor_by_name(request, "sampling_parameters")
        text = tensor.as_numpy().reshape(-1)[0] if tensor is not None else request.parameters()
        try:
            params = json.loads(text.decode() if isinstance(text, bytes) else text or "{}")
        except (ValueError, UnicodeDecodeError) as e:
            raise RequestError(f"sampling parameters are not JSON: {e}") from None
        if not isinstance(params, dict):
            raise RequestError("sampling parameters must be a JSON object")
        # the stream input, else a "stream" request parameter (as some generate clients send)
        stream = flag("stream", default=str(params.get("stream", "")).lower() in ("true", "1"))
        exclude = flag("exclude_input_in_output", default=stream)
        tokens = pb_utils.get_input_tensor_by_name(request, "max_tokens")
        sampling = parse_sampling(
            params,
            cap=self.cap,
            default_max_tokens=self.default_max_tokens,
            max_tokens=None if tokens is None else int(tokens.as_numpy().reshape(-1)[0]),
        )
        extras = {n: flag(f"return_{n}") for n in ("finish_reason", "num_input_tokens")}
        extras["num_output_tokens"] = flag("return_num_output_tokens")
        tokens_in = self.engine.tokenize(prompt)
        self.engine.check_prompt(tokens_in)
        prefix = "" if exclude else prompt
        sent = {"tokens": 0}
        closed = threading.Event()  # the final response went out: the sender is gone

        def cancelled() -> bool:
            # never ask a sender after its final response (Triton 2.51 crashes on it)
            return closed.is_set() or bool(sender.is_cancelled())

        def emit(seq: Sequence, text: str, finish: str | None) -> bool:
            final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
            if text.startswith("\x00"):  # the engine failed this request
                closed.set()
                error = pb_utils.TritonError(text[1:])
                sender.send(pb_utils.InferenceResponse(error=error), flags=final)
                return False
            if not stream and finish is None:
                return not cancelled()
            body = text if stream else prefix + seq.text
            new_tokens = seq.generated - sent["tokens"] if stream else seq.generated
            sent["tokens"] = seq.generated
            out = [pb_utils.Tensor("text_output", np.array([body.encode()], dtype=np.object_))]
            if extras["finish_reason"] and finish is not None:
                out.append(pb_utils.Tensor("finish_reason", np.array([finish], dtype=np.object_)))
            if extras["num_input_tokens"]:
                out.append(
                    pb_utils.Tensor("num_input_tokens", np.array([len(seq.prompt)], np.uint32))
                )
            if extras["num_output_tokens"]:
                out.append(pb_utils.Tensor("num_output_tokens", np.array([new_tokens], np.uint32)))
            if finish is not None:
                closed.set()
            try:
                sender.send(
                    pb_utils.InferenceResponse(output_tensors=out),
                    flags=final if finish is not None else 0,
                )
            except Exception:  # the client went away: free the slot
                return False
            return not cancelled()

        return Sequence(prompt=tokens_in, sampling=sampling, emit=emit, cancelled=cancelled)

    def finalize(self) -> None:
        self.reporting = False
        self.engine.stop()


class Metrics:
    """The engine's Stats as Triton custom metrics under vLLM's names."""

    def __init__(self, labels: Mapping[str, str]) -> None:
        mf = pb_utils.MetricFamily
        self.labels = dict(labels)

        self.families: list[Any] = []  # a family must outlive its metrics: keep them all

        def family(name: str, kind: Any, text: str) -> Any:
            self.families.append(mf(name=name, description=text, kind=kind))
            return self.families[-1]

        self.gauges = {
            key: family(name, mf.GAUGE, text).Metric(labels=self.labels)
            for key, name, text in (
                ("running", "vllm:num_requests_running", "Requests decoding in a slot."),
                ("waiting", "vllm:num_requests_waiting", "Requests waiting for a slot."),
                ("kv", "vllm:gpu_cache_usage_perc", "KV-cache usage, 1 = full."),
                ("kv2", "vllm:kv_cache_usage_perc", "KV-cache usage, 1 = full."),
            )
        }
        self.counters = {
            key: family(name, mf.COUNTER, text).Metric(labels=self.labels)
            for key, name, text in (
                ("prompt", "vllm:prompt_tokens_total", "Prefill tokens processed."),
                ("generation", "vllm:generation_tokens_total", "Generation tokens processed."),
            )
        }
        self.success = family(
            "vllm:request_success_total", mf.COUNTER, "Finished requests by reason."
        )
        self.by_reason: dict[str, Any] = {}
        self.histograms: dict[str, Any] = {}
        self.fallback: dict[str, tuple[Any, Any]] = {}
        for key, name, text, buckets in (
            ("ttft", "vllm:time_to_first_token_seconds", "Time to first token.", TTFT_BUCKETS),
            ("tpot", "vllm:time_per_output_token_seconds", "Time per output token.", TPOT_BUCKETS),
            ("e2e", "vllm:e2e_request_latency_seconds", "End-to-end latency.", E2E_BUCKETS),
        ):
            if hasattr(mf, "HISTOGRAM"):
                self.histograms[key] = family(name, mf.HISTOGRAM, text).Metric(
                    labels=self.labels, buckets=buckets
                )
            else:
                self.fallback[key] = (
                    family(f"{name}_sum", mf.COUNTER, text).Metric(labels=self.labels),
                    family(f"{name}_count", mf.COUNTER, text).Metric(labels=self.labels),
                )
        self.seen = {"prompt": 0, "generation": 0}
        self.seen_reasons: collections.Counter[str] = collections.Counter()

    def update(self, stats: Stats) -> None:
        self.gauges["running"].set(stats.running)
        self.gauges["waiting"].set(stats.waiting)
        self.gauges["kv"].set(stats.kv_usage)
        self.gauges["kv2"].set(stats.kv_usage)
        for key, total in (
            ("prompt", stats.prompt_tokens),
            ("generation", stats.generation_tokens),
        ):
            if total > self.seen[key]:
                self.counters[key].increment(total - self.seen[key])
                self.seen[key] = total
        for reason, total in list(stats.finished.items()):
            if reason not in self.by_reason:
                self.by_reason[reason] = self.success.Metric(
                    labels={**self.labels, "finished_reason": reason}
                )
            if total > self.seen_reasons[reason]:
                self.by_reason[reason].increment(total - self.seen_reasons[reason])
                self.seen_reasons[reason] = total
        for key, values in (("ttft", stats.ttft), ("tpot", stats.tpot), ("e2e", stats.e2e)):
            count = len(values)  # the engine thread only appends: take what is there
            drained = values[:count]
            del values[:count]
            for value in drained:
                if key in self.histograms:
                    self.histograms[key].observe(value)
                else:
                    total, count = self.fallback[key]
                    total.increment(value)
                    count.increment(1)
