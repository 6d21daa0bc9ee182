"""The generative engine (triton/llama_model.py): its pure parts, llama.cpp driven directly,
and the real tritonserver serving the pycode family through generate, generate_stream and
gRPC streaming, with Triton's vLLM backend's request conventions and metric names."""

from __future__ import annotations

import json
import pathlib
import queue
import re
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from geo_operator.triton import llama_model as lm
from geo_operator.triton import llm_metrics, local, model_config

MODEL = "pycode"
LONG = "pycode-long"
PROMPT = "import os\n\n\ndef main("


# ---------------------------------------------------------------- pure parts


def test_sampling_parameters_follow_vllm_and_refuse_what_cannot_apply() -> None:
    parsed = lm.parse_sampling(
        {"max_tokens": "12", "temperature": "0.5", "top_k": "-1", "stop": '["\\n\\n"]'},
        cap=64,
        default_max_tokens=16,
        max_tokens=None,
    )
    assert parsed == lm.Sampling(max_tokens=12, temperature=0.5, top_k=0, stop=("\n\n",))
    assert lm.parse_sampling({}, cap=64, default_max_tokens=16, max_tokens=None).max_tokens == 16
    # TensorRT-LLM's max_tokens input wins over the JSON's
    assert lm.parse_sampling({"max_tokens": 3}, cap=64, default_max_tokens=16, max_tokens=5) == (
        lm.Sampling(max_tokens=5)
    )
    for bad, words in (
        ({"max_tokens": 0}, "between 1 and 64"),
        ({"max_tokens": -3}, "between 1 and 64"),
        ({"max_tokens": 65}, "between 1 and 64 (the cap), got 65"),
        ({"max_tokens": "many"}, "max_tokens must be a int"),
        ({"temperature": -1}, "temperature must be 0 or more"),
        ({"top_p": 0}, "top_p must be in (0, 1]"),
    ):
        with pytest.raises(lm.RequestError, match=re.escape(words)):
            lm.parse_sampling(bad, cap=64, default_max_tokens=16, max_tokens=None)


def test_sampling_is_greedy_at_zero_and_seeded_otherwise() -> None:
    logits = np.array([0.1, 3.0, 2.9, -1.0], np.float32)
    rng = np.random.default_rng(0)
    assert lm.sample(logits, lm.Sampling(), rng) == 1
    assert lm.sample(logits, lm.Sampling(temperature=1.0, top_k=1), rng) == 1
    draws = [
        lm.sample(logits, lm.Sampling(temperature=1.0), np.random.default_rng(7)) for _ in range(3)
    ]
    assert len(set(draws)) == 1  # the same seed, the same token
    many = {lm.sample(logits, lm.Sampling(temperature=1.0), rng) for _ in range(200)}
    assert many >= {1, 2}
    nucleus = {lm.sample(logits, lm.Sampling(temperature=1.0, top_p=0.5), rng) for _ in range(50)}
    assert nucleus == {1}  # 1 alone holds half the mass


def test_a_character_split_across_tokens_waits_for_its_last_byte() -> None:
    stream = lm.Utf8Stream()
    euro = "€".encode()
    assert stream.push(b"a" + euro[:1]) == "a"
    assert stream.push(euro[1:2]) == ""
    assert stream.push(euro[2:] + b"b") == "€b"
    assert stream.push(b"\xff") == ""  # could still be a prefix... of nothing: at the end
    assert stream.flush() == "\ufffd"


# ---------------------------------------------------------------- llama.cpp, directly


@pytest.fixture(scope="module")
def engine(pycode: pathlib.Path) -> Iterator[lm.Engine]:
    e = lm.Engine(str(pycode / "q8_0" / "model.gguf"), slots=3, context_length=128, n_batch=128)
    yield e
    e.stop()


def _run(engine: lm.Engine, prompts: list[str], max_tokens: int = 24) -> dict[int, tuple[str, str]]:
    done: dict[int, tuple[str, str]] = {}
    finished = threading.Event()

    def emitter(i: int) -> Any:
        parts: list[str] = []

        def emit(seq: lm.Sequence, text: str, finish: str | None) -> bool:
            parts.append(text)
            if finish is not None:
                done[i] = (finish, "".join(parts))
                if len(done) == len(prompts):
                    finished.set()
            return True

        return emit

    for i, prompt in enumerate(prompts):
        engine.submit(
            lm.Sequence(
                prompt=engine.tokenize(prompt),
                sampling=lm.Sampling(max_tokens=max_tokens),
                emit=emitter(i),
            )
        )
    assert finished.wait(60), f"{len(done)} of {len(prompts)} finished"
    return done


def test_sequences_decoded_together_match_each_decoded_alone(engine: lm.Engine) -> None:
    prompts = [PROMPT, "class Parser:\n    def ", "for i in range(", "import sys\n", "x = ["]
    alone = {i: _run(engine, [p])[0] for i, p in enumerate(prompts)}
    steps = engine.stats.steps
    together = _run(engine, prompts)
    batched_steps = engine.stats.steps - steps
    assert together == alone  # greedy: the shared batch changes nothing
    tokens = sum(len(engine.tokenize(t)) for _, t in together.values())
    # 5 requests on 3 slots, 24 tokens each: about 2 x 24 steps, not 5 x 24
    assert batched_steps < 3 * 24, (batched_steps, tokens)
    assert engine.stats.running == 0 and engine.stats.kv_usage == 0.0


def test_a_prompt_longer_than_a_slots_context_is_refused(engine: lm.Engine) -> None:
    with pytest.raises(lm.RequestError, match="a sequence's context holds 128"):
        engine.check_prompt(engine.tokenize("x = 1\n" * 100))


def test_a_cancelled_sequence_frees_its_slot_and_is_counted(engine: lm.Engine) -> None:
    gone = threading.Event()
    before = engine.stats.finished["abort"]

    def emit(seq: lm.Sequence, text: str, finish: str | None) -> bool:
        if seq.generated >= 3:
            gone.set()
        return True

    engine.submit(
        lm.Sequence(
            prompt=engine.tokenize(PROMPT),
            sampling=lm.Sampling(max_tokens=100, ignore_eos=True),
            emit=emit,
            cancelled=gone.is_set,
        )
    )
    deadline = time.monotonic() + 30
    while engine.stats.finished["abort"] == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.stats.finished["abort"] == before + 1
    assert _run(engine, [PROMPT])[0][0] in ("length", "stop")  # the slot serves again


# ---------------------------------------------------------------- the real Triton


@pytest.fixture(scope="module")
def triton(pycode: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    repo = tmp_path_factory.mktemp("llm-repository")
    version = repo / MODEL / "1"
    version.mkdir(parents=True)
    shutil.copy(pycode / "q4_k_m" / "model.gguf", version / model_config.GGUF_FILENAME)
    shutil.copy(lm.__file__, version / "model.py")
    engine = model_config.EngineSettings(slots=3, context_length=128, max_tokens_cap=64)
    (repo / MODEL / "config.pbtxt").write_text(
        model_config.render(model_config.build_generative(MODEL, engine))
    )
    # a second model whose streams last long enough (4,000 tokens, about a second here:
    # the small model decodes thousands of tokens a second) for a client to leave midway
    long = repo / LONG / "1"
    long.mkdir(parents=True)
    shutil.copy(version / model_config.GGUF_FILENAME, long / model_config.GGUF_FILENAME)
    shutil.copy(lm.__file__, long / "model.py")
    settings = model_config.EngineSettings(slots=1, context_length=4096, max_tokens_cap=4000)
    (repo / LONG / "config.pbtxt").write_text(
        model_config.render(model_config.build_generative(LONG, settings))
    )
    with local.TritonServer(repo, log_path=repo.parent / "triton-llm.log") as server:
        yield server


def _post(server: Any, path: str, body: dict[str, Any]) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://{server.http_url}/v2/models/{MODEL}/{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]


def _metrics(server: Any) -> str:
    return _get(server.metrics_url)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _settled(server: Any) -> str:
    """The scrape once the engine's reporter (every 0.5 s) has pushed everything: two
    scrapes 0.6 s apart with the same token and latency counts."""
    keys = ("vllm:generation_tokens_total", "vllm:time_per_output_token_seconds_count")
    last = _metrics(server)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(0.6)
        now = _metrics(server)
        if all(_metric(now, k, model=MODEL) == _metric(last, k, model=MODEL) for k in keys):
            return now
        last = now
    return last


@pytest.mark.triton
def test_generate_and_generate_stream_speak_the_vllm_backends_conventions(triton: Any) -> None:
    params = {"max_tokens": 20, "temperature": 0}
    status, body = _post(triton, "generate", {"text_input": PROMPT, "parameters": params})
    assert status == 200, body
    whole = json.loads(body)["text_output"]
    assert whole.startswith(PROMPT) and len(whole) > len(PROMPT)  # vLLM prepends the prompt
    status, body = _post(
        triton,
        "generate_stream",
        {"text_input": PROMPT, "stream": True, "return_finish_reason": True, "parameters": params},
    )
    assert status == 200, body
    events = _events(body)
    assert len(events) >= 10  # one event per token (a token may end a word mid-character)
    assert PROMPT + "".join(e["text_output"] for e in events) == whole
    assert events[-1]["finish_reason"] in ("length", "stop")


@pytest.mark.triton
def test_grpc_streaming_gives_one_response_per_token_and_the_last_is_final(triton: Any) -> None:
    import tritonclient.grpc as grpcclient

    responses: queue.Queue[Any] = queue.Queue()
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    try:
        inputs = []
        for name, dtype, value in (
            ("text_input", "BYTES", np.array([PROMPT.encode()], dtype=np.object_)),
            ("stream", "BOOL", np.array([True])),
            ("max_tokens", "INT32", np.array([12], np.int32)),
            ("return_num_output_tokens", "BOOL", np.array([True])),
        ):
            tensor = grpcclient.InferInput(name, [1], dtype)
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        client.async_stream_infer(MODEL, inputs, enable_empty_final_response=True)
        tokens, finals = 0, 0
        while True:
            result, error = responses.get(timeout=60)
            assert error is None, error
            final = result.get_response().parameters["triton_final_response"].bool_param
            if result.as_numpy("num_output_tokens") is not None:
                tokens += int(result.as_numpy("num_output_tokens")[0])
            finals += final
            if final:
                break
        assert tokens == 12 and finals == 1
    finally:
        client.stop_stream()
        client.close()


@pytest.mark.triton
def test_bad_requests_get_their_own_error_and_the_server_goes_on(triton: Any) -> None:
    for body, words in (
        ({"text_input": ""}, "text_input is empty"),
        ({"text_input": PROMPT, "parameters": {"max_tokens": 0}}, "between 1 and 64"),
        ({"text_input": PROMPT, "parameters": {"max_tokens": 65}}, "between 1 and 64"),
        ({"text_input": PROMPT, "parameters": {"max_tokens": -1}}, "between 1 and 64"),
        ({"text_input": "x = 1\n" * 100}, "a sequence's context holds 128"),
        ({"text_input": PROMPT, "sampling_parameters": "{not json"}, "not JSON"),
    ):
        status, text = _post(triton, "generate", body)
        assert status == 400, (body, status, text)
        assert words in text, text
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(triton.grpc_url)
    tensor = grpcclient.InferInput("text_input", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"def \xff\xfe("], dtype=np.object_))
    errors: queue.Queue[Any] = queue.Queue()
    client.start_stream(callback=lambda result, error: errors.put(error))
    client.async_stream_infer(MODEL, [tensor])
    error = errors.get(timeout=30)
    client.stop_stream()
    assert isinstance(error, InferenceServerException) and "not UTF-8" in str(error)
    status, text = _post(triton, "generate", {"text_input": PROMPT})
    assert status == 200, text  # the engine and the others unharmed


@pytest.mark.triton
def test_a_client_gone_mid_stream_frees_its_slot_and_is_counted(triton: Any) -> None:
    import tritonclient.grpc as grpcclient

    def aborted() -> float:
        return _metric(
            _metrics(triton), "vllm:request_success_total", model=LONG, finished_reason="abort"
        )

    before = aborted()
    # over HTTP: the client closes its connection after three events
    host, port = triton.http_url.split(":")
    body = json.dumps(
        {
            "text_input": PROMPT,
            "stream": True,
            "parameters": {"max_tokens": 4000, "ignore_eos": True},
        }
    ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(
            f"POST /v2/models/{LONG}/generate_stream HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while received.count(b"data:") < 3:
            received += s.recv(4096)
    # over gRPC: the client stops its stream, cancelling what it has in flight
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    got: queue.Queue[Any] = queue.Queue()
    client.start_stream(callback=lambda result, error: got.put(error))
    text_input = grpcclient.InferInput("text_input", [1], "BYTES")
    text_input.set_data_from_numpy(np.array([PROMPT.encode()], dtype=np.object_))
    client.async_stream_infer(
        LONG,
        [text_input],
        parameters={"max_tokens": 4000, "ignore_eos": True, "stream": True},
    )
    for _ in range(3):
        assert got.get(timeout=30) is None
    client.stop_stream(cancel_requests=True)
    client.close()
    deadline = time.monotonic() + 30
    while aborted() < before + 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    text = _metrics(triton)
    assert aborted() == before + 2, text
    assert _metric(text, "vllm:num_requests_running", model=LONG) == 0
    status, reply = _post(triton, "generate", {"text_input": PROMPT})
    assert status == 200, reply


@pytest.mark.triton
def test_the_engine_exports_vllms_metric_names_and_they_agree_with_the_client(
    triton: Any,
) -> None:
    before = _settled(triton)  # what earlier tests generated, reported
    started = time.perf_counter()
    status, body = _post(
        triton,
        "generate_stream",
        {
            "text_input": PROMPT,
            "stream": True,
            "return_num_output_tokens": True,
            "parameters": {"max_tokens": 30, "ignore_eos": True},
        },
    )
    elapsed = time.perf_counter() - started
    assert status == 200, body
    streamed = sum(int(np.ravel(e["num_output_tokens"])[0]) for e in _events(body))
    assert streamed == 30
    after = _settled(triton)
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:gpu_cache_usage_perc",
        "vllm:kv_cache_usage_perc",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:time_to_first_token_seconds_count",
        "vllm:time_per_output_token_seconds_sum",
    ):
        assert name + "{" in after, name

    def delta(name: str) -> float:
        return _metric(after, name, model=MODEL) - _metric(before, name, model=MODEL)

    assert delta("vllm:generation_tokens_total") == 30
    assert delta("vllm:time_to_first_token_seconds_count") == 1
    assert delta("vllm:time_per_output_token_seconds_count") == 29
    # GEO's reader of engine metrics reads the real engine's scrape
    parsed = [llm_metrics.parse(t, MODEL, when) for t, when in ((before, 0.0), (after, 1.0))]
    assert parsed[0] is not None and parsed[1] is not None
    read = llm_metrics.rates(parsed[0], parsed[1])
    assert read is not None and read.generation_tokens_per_second == 30
    assert read.p99_tpot_s is not None and 0 < read.p99_tpot_s < elapsed
    engine_seconds = delta("vllm:e2e_request_latency_seconds_sum")
    assert 0 < engine_seconds <= elapsed  # the engine's time lies inside the client's


def test_stop_strings_and_seeded_sampling(engine: lm.Engine) -> None:
    def run(sampling: lm.Sampling) -> tuple[str, str]:
        done: dict[str, tuple[str, str]] = {}
        finished = threading.Event()
        parts: list[str] = []

        def emit(seq: lm.Sequence, text: str, finish: str | None) -> bool:
            parts.append(text)
            if finish is not None:
                done["x"] = (finish, "".join(parts))
                finished.set()
            return True

        engine.submit(lm.Sequence(prompt=engine.tokenize(PROMPT), sampling=sampling, emit=emit))
        assert finished.wait(60)
        return done["x"]

    greedy = run(lm.Sampling(max_tokens=40, ignore_eos=True))[1]
    cut = greedy[5:8]  # a piece of the greedy text, as a stop string
    finish, text = run(lm.Sampling(max_tokens=40, ignore_eos=True, stop=(cut,)))
    assert finish == "stop" and text == greedy[: greedy.index(cut)]
    hot = lm.Sampling(max_tokens=30, temperature=1.0, seed=42, ignore_eos=True)
    assert run(hot) == run(hot)  # the same seed, the same stream
    others = {run(lm.Sampling(max_tokens=30, temperature=1.0, seed=s))[1] for s in range(4)}
    assert len(others) > 1  # sampling samples


def test_geo_tune_llm_measures_token_speed_and_catches_the_miscalibrated_member(
    triton: Any, pycode: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """The tuning Job's verb: token speed through this Triton's generate_stream, quality on
    the held-out text from the GGUFs in the repository (here the miscalibrated member, the
    f16 its reference), the result JSON the operator reads back."""
    from geo_operator.builders import tuning
    from geo_operator.cli import main

    for folder, source in ((MODEL, "q2_k-miscalibrated"), (MODEL + "-reference", "f16")):
        (tmp_path / folder / "1").mkdir(parents=True)
        shutil.copy(pycode / source / "model.gguf", tmp_path / folder / "1" / "model.gguf")
    result = tmp_path / "result.json"
    args = [
        "tune-llm",
        f"--url={triton.http_url}",
        f"--model={MODEL}",
        "--slots=3",
        "--max-tokens=16",
        "--rounds=1",
        f"--evaluate={pycode / 'heldout.txt'}",
        f"--repository={tmp_path}",
        f"--reference-model={MODEL}-reference",
        "--reference=f16",
        f"--result-file={result}",
    ]
    assert main(args) == 0
    parsed = tuning.parse_result(result.read_text())
    assert not isinstance(parsed, str), parsed
    recorded = json.loads((pycode / "measurements.json").read_text())["artifacts"]
    accuracy = parsed.accuracy
    assert accuracy is not None and accuracy.metric == "agreement" and accuracy.reference == "f16"
    assert accuracy.value == pytest.approx(recorded["q2_k-miscalibrated"]["agreement"], abs=2e-3)
    assert accuracy.perplexity == pytest.approx(recorded["q2_k-miscalibrated"]["perplexity"], 1e-3)
    assert parsed.max_batch_size == 3 and parsed.concurrency == 3
    assert parsed.throughput > 0 and parsed.p99_ms > 0  # 3 streams x 16 tokens, measured
    assert parsed.prefill_tokens_per_second is not None and parsed.prefill_tokens_per_second > 0
    # a model Triton doesn't serve: the verb says so, exit 2, and the result file too
    args[2] = "--model=nope"
    assert main(args) == 2
    assert "nope" in json.loads(result.read_text())["error"]


def test_the_canary_gate_scores_next_token_agreement_through_the_serving_pods(
    triton: Any, pycode: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """A generative canary's held-out gate: prompts cut from the held-out text, the greedy
    next token through each pod's generate endpoint. The same engine agrees with itself;
    the miscalibrated member, served under the same name by another Triton, does not."""
    from geo_operator.tuning import llm_agreement

    repo = tmp_path / "bad"
    version = repo / MODEL / "1"
    version.mkdir(parents=True)
    shutil.copy(pycode / "q2_k-miscalibrated" / "model.gguf", version / "model.gguf")
    shutil.copy(lm.__file__, version / "model.py")
    engine = model_config.EngineSettings(slots=3, context_length=128, max_tokens_cap=64)
    (repo / MODEL / "config.pbtxt").write_text(
        model_config.render(model_config.build_generative(MODEL, engine))
    )
    held_out = str(pycode / "heldout.txt")
    chars = llm_agreement.prompt_chars(128)  # the fixture's slots hold 128 tokens
    same = llm_agreement.against(triton.http_url, triton.http_url, MODEL, held_out, chars=chars)
    assert same.value == 1.0 and same.samples == llm_agreement.PROMPTS
    with local.TritonServer(repo, log_path=tmp_path / "triton-bad.log") as bad:
        wrong = llm_agreement.against(bad.http_url, triton.http_url, MODEL, held_out, chars=chars)
    print(f"\nmiscalibrated canary against the q4_k_m stable: agreement {wrong.value}")
    assert wrong.value < 0.8 and wrong.reference == "stable"
    short = tmp_path / "short.txt"
    short.write_text("def f(): pass\n")
    with pytest.raises(llm_agreement.AgreementError, match="too short"):
        llm_agreement.against(triton.http_url, triton.http_url, MODEL, str(short))


def test_geo_tune_llm_measures_slots_through_triton_and_leaves_the_chosen_serving(
    pycode: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """triton.engine.slots 0: the tuning Job's search, for real. Triton in explicit model
    control (as in the Job), the model reloaded with each slot count; the kept one
    (within a generous objective here: two cores) is what Triton serves afterwards."""
    from geo_operator.builders import tuning
    from geo_operator.cli import main

    version = tmp_path / "repo" / MODEL / "1"
    version.mkdir(parents=True)
    shutil.copy(pycode / "q4_k_m" / "model.gguf", version / "model.gguf")
    shutil.copy(lm.__file__, version / "model.py")
    engine = model_config.EngineSettings(slots=3, context_length=128, max_tokens_cap=64)
    (version.parent / "config.pbtxt").write_text(
        model_config.render(model_config.build_generative(MODEL, engine))
    )
    result = tmp_path / "result.json"
    with local.TritonServer(
        tmp_path / "repo",
        log_path=tmp_path / "triton.log",
        model_control_mode="explicit",
        load_models=[MODEL],
    ) as server:
        argv = [
            "tune-llm",
            f"--url={server.http_url}",
            f"--model={MODEL}",
            "--slots=3",
            "--slot-candidates=1,3",
            "--ttft-budget-ms=5000",
            "--itl-budget-ms=2000",
            "--max-tokens=8",
            "--rounds=1",
            f"--result-file={result}",
        ]
        assert main(argv) == 0
        parsed = tuning.parse_result(result.read_text())
        assert not isinstance(parsed, str), parsed
        assert parsed.max_batch_size in (1, 3) and parsed.grid_size == 2
        assert parsed.measurements == 3  # two slot counts and the confirmation
        config = json.loads(
            urllib.request.urlopen(
                f"http://{server.http_url}/v2/models/{MODEL}/config", timeout=10
            ).read()
        )
        assert config["parameters"]["slots"]["string_value"] == str(parsed.max_batch_size)
        # an objective nothing meets: exit 2, the figures of each in the result's error
        argv[5] = "--ttft-budget-ms=0.001"
        assert main(argv) == 2
        error = json.loads(result.read_text())["error"]
        assert "no slot count kept the time to first token p99 within 0.001 ms" in error
        assert "1 slots: first token p99" in error and "3 slots" in error


@pytest.mark.triton
def test_the_canary_analysis_reads_the_engines_token_latencies_directly_and_via_prometheus(
    triton: Any, tmp_path: pathlib.Path
) -> None:
    """A generative canary's figures from the real engine's histograms, the one server
    playing a canary pod: the direct source (`controller.canary.Windows`, exact over the
    window) and a real Prometheus (`triton.prometheus.track_figures`, `increase`
    extrapolated to the window's edges) count its first tokens and inter-token gaps, and
    give the p99 of each."""
    from e2e.prometheus_local import Prometheus

    from geo_operator.api import names
    from geo_operator.controller import canary
    from geo_operator.triton import prometheus

    pod = {
        "metadata": {
            "name": "pycode-canary-0",
            "labels": {names.TRACK_LABEL: names.CANARY_TRACK},
            "annotations": {names.METRICS_URL_ANNOTATION: triton.metrics_url},
        },
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    labels = {"namespace": "ml", "geodeployment": MODEL, "pod": "pycode-canary-0"}
    file_sd = tmp_path / "targets.json"
    target = {"targets": [f"127.0.0.1:{triton.metrics_port}"], "labels": labels}
    file_sd.write_text(json.dumps([{**target, "labels": {**labels, "track": "canary"}}]))
    windows, key, sent = canary.Windows(_get), ("ml", MODEL), 12
    params = {"max_tokens": 20, "ignore_eos": True, "temperature": 0}
    with Prometheus(tmp_path / "prom", file_sd) as prom:
        _settled(triton)
        # two scrapes before the requests: increase() needs the counters' values before
        scraped = 'count_over_time(nv_inference_request_success{pod="pycode-canary-0"}[1m])'
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            answer = prom.query(scraped)
            if answer and float(answer[0]["value"][1]) >= 2:  # type: ignore[index]
                break
            time.sleep(0.5)
        started = time.monotonic()
        windows.open(key, 0.0, [pod], MODEL, generative=True)
        for _ in range(sent):
            status, body = _post(triton, "generate", {"text_input": PROMPT, "parameters": params})
            assert status == 200, body
        _settled(triton)
        got = windows.figures(key, 0.0, [pod], MODEL, 1.0, generative=True)
        assert got is not None
        mine, stable = got
        # 20 tokens each: one first token, 19 gaps
        assert (mine.requests, mine.first_tokens, mine.tokens) == (sent, sent, sent * 19)
        assert mine.ttft_p99_ms is not None and 0 < mine.ttft_p99_ms < 30_000
        assert mine.itl_p99_ms is not None and 0 < mine.itl_p99_ms < 1_000
        assert stable.requests == 0 and stable.first_tokens is None
        found: dict[str, prometheus.TrackLoad] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            window = round(time.monotonic() - started) + 2
            found = prometheus.track_figures(prom.url, "ml", MODEL, window, generative=True)
            if (found["canary"].first_tokens or 0) >= sent:
                break
            time.sleep(1)
    theirs = found["canary"]
    assert theirs.first_tokens is not None and sent <= theirs.first_tokens <= 3 * sent, found
    assert theirs.tokens is not None and 19 * sent <= theirs.tokens <= 3 * 19 * sent, found
    assert theirs.ttft_p99_ms is not None and theirs.itl_p99_ms is not None, found
    assert found["stable"].first_tokens is None  # no stable pod: no histogram
