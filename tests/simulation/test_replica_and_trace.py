"""The replica kernel (Triton's dynamic batcher) and trace handling."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from geo_operator.simulation import replica, trace


def _serve(fn, arrivals, *, horizon=1e9, max_batch=8, delay=100e-6, a=1e-3, b=0.0, instances=1):
    arrivals = np.asarray(arrivals, dtype=np.float64)
    n = len(arrivals)
    first, size, end = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n)
    free_at = np.zeros(instances)
    j, written = fn(arrivals, 0, free_at, horizon, max_batch, delay, a, b, first, size, end)
    free = float(free_at.max())
    return (
        j,
        free,
        list(
            zip(
                first[:written].tolist(),
                size[:written].tolist(),
                end[:written].tolist(),
                strict=True,
            )
        ),
    )


def test_batch_fills_before_the_delay() -> None:
    # Two requests 0.1 ms apart, max batch 2, delay 1 ms: the second fills the batch.
    j, free, batches = _serve(replica.serve, [0.0, 0.0001, 0.0002], max_batch=2, delay=0.001)
    assert batches[0][:2] == (0, 2) and batches[0][2] == pytest.approx(0.0011)
    # The third waits for the instance (free at 1.1 ms) and its own delay (1.2 ms).
    assert batches[1][:2] == (2, 1) and batches[1][2] == pytest.approx(0.0022)
    assert j == 3 and free == pytest.approx(0.0022)


def test_busy_instance_takes_everything_queued_up_to_max_batch() -> None:
    arrivals = [0.0] + [0.0001 * i for i in range(1, 11)]
    _, _, batches = _serve(replica.serve, arrivals, max_batch=4, delay=0.0, a=0.002, b=0.001)
    # Batch 1 alone (delay 0); then the instance is busy until 3 ms: 4, 4, then 2.
    assert [s for _, s, _ in batches] == [1, 4, 4, 2]
    assert batches[0][2] == pytest.approx(0.003)
    assert batches[1][2] == pytest.approx(0.003 + 0.002 + 0.004)


def test_batching_off_serves_one_at_a_time() -> None:
    _, _, batches = _serve(replica.serve, [0.0, 0.0, 0.0], delay=-1.0, a=0.001)
    assert [s for _, s, _ in batches] == [1, 1, 1]
    assert [e for _, _, e in batches] == pytest.approx([0.001, 0.002, 0.003])


def test_a_batch_is_not_decided_past_the_horizon() -> None:
    # The oldest waits up to 1 ms for company; at horizon 0.5 ms it may still get some.
    j, _, batches = _serve(replica.serve, [0.0], delay=0.001, horizon=0.0005)
    assert j == 0 and batches == []
    j, _, batches = _serve(replica.serve, [0.0], delay=0.001, horizon=0.002)
    assert j == 1 and batches[0][2] == pytest.approx(0.002)


def test_instances_run_batches_in_parallel() -> None:
    # Batching off, 1 ms per request, 4 at once: one instance ends at 4 ms, two at 2 ms.
    _, free1, one = _serve(replica.serve, [0.0] * 4, delay=-1.0, a=0.001)
    assert [e for _, _, e in one] == pytest.approx([0.001, 0.002, 0.003, 0.004])
    _, free2, two = _serve(replica.serve, [0.0] * 4, delay=-1.0, a=0.001, instances=2)
    assert free1 == pytest.approx(0.004) and free2 == pytest.approx(0.002)
    assert [e for _, _, e in two] == pytest.approx([0.001, 0.001, 0.002, 0.002])
    assert replica.Profile(1.0, 0.0, 0.0).capacity(1, instances=2) == pytest.approx(2000)


def test_compiled_kernel_gives_the_same_batches() -> None:
    arrivals = np.cumsum(np.random.default_rng(3).exponential(1 / 4000, 20000))
    for delay in (-1.0, 0.0, 100e-6, 2e-3):
        for instances in (1, 3):
            kw = {"delay": delay, "a": 2.8e-4, "b": 1.6e-6, "horizon": 3.0, "instances": instances}
            assert _serve(replica.serve, arrivals, **kw) == _serve(
                replica.serve_fast, arrivals, **kw
            )


def test_profile_shipped_is_the_calibrated_one() -> None:
    profile = replica.Profile.load()
    assert profile.service_a_ms > 0 and profile.service_b_ms >= 0
    assert "calibrate_replica.py" in profile.source
    assert set(profile.measured) >= {"1", "8", "64"}
    assert profile.capacity(8) > profile.capacity(1)


def test_profile_errors_name_the_file(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "p.json"
    bad.write_text('{"service_a_ms": -1, "service_b_ms": 0, "overhead_ms": 0}')
    with pytest.raises(ValueError, match=r"p\.json"):
        replica.Profile.load(bad)


def test_timestamps_of_the_azure_format() -> None:
    base = trace.parse_timestamp("2023-11-16 18:17:03")
    assert trace.parse_timestamp("2023-11-16 18:17:03.9799600") == pytest.approx(base + 0.97996)
    assert trace.parse_timestamp("2023-11-16 19:17:03+01:00") == pytest.approx(base)
    assert trace.parse_timestamp("2023-11-16T18:17:03Z") == pytest.approx(base)
    assert trace.parse_timestamp(" 12.5 ") == 12.5  # seconds, as some traces write them
    for bad in ("yesterday", "nan", "inf"):
        with pytest.raises(ValueError):
            trace.parse_timestamp(bad)


def test_csv_is_sorted_and_offset_to_zero(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        "ContextTokens,TIMESTAMP\n5,2024-05-10 00:00:02.5\n7,2024-05-10 00:00:00.0\n"
        "1,2024-05-10 00:00:01.25\n"
    )
    assert trace.load_csv(path).tolist() == pytest.approx([0.0, 1.25, 2.5])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("time,tokens\n1,2\n", "no TIMESTAMP column"),
        ("TIMESTAMP\n2024-05-10 00:00:00\nnot-a-time\n", "row 3"),
        ("TIMESTAMP\n2024-05-10 00:00:00\n", "at least 2"),
    ],
)
def test_bad_csv_is_refused_clearly(tmp_path: pathlib.Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(trace.TraceError, match=message):
        trace.load_csv(path)


def test_rate_keeps_every_request_and_scaling_hits_the_peak() -> None:
    arrivals = np.sort(np.random.default_rng(0).uniform(0, 600, 3000))
    rate = trace.rate_from_arrivals(arrivals, 10)
    assert rate.sum() == pytest.approx(3000)
    scaled = trace.scale_to_peak(trace.Trace("x", rate), 5, 1000)
    assert scaled.peak(10) == pytest.approx(5000)


@pytest.mark.parametrize("shape", [s for s in trace.SHAPES if s not in trace.STEADY_NOISE])
def test_synthetic_shapes_span_base_to_peak(shape: str) -> None:
    t = trace.synthetic(shape, duration=1200, base=1, peak=4)
    assert t.duration == 1200
    assert t.rate.min() == pytest.approx(1, rel=0.15)
    assert t.rate.max() == pytest.approx(4, rel=0.15)
    with pytest.raises(ValueError, match="unknown shape"):
        trace.synthetic("sawtooth")


@pytest.mark.parametrize("shape", list(trace.STEADY_NOISE))
def test_steady_shapes_are_stationary_with_their_noise(shape: str) -> None:
    t = trace.synthetic(shape, duration=3600, base=2.0, seed=3)
    windows = trace.window_means(t.rate, 10)
    cv = trace.STEADY_NOISE[shape]
    assert windows.mean() == pytest.approx(2.0, rel=4 * cv / len(windows) ** 0.5)
    assert windows.std() / windows.mean() == pytest.approx(cv, rel=0.15)
    # No trend: the first and second halves have the same mean within the noise.
    half = len(windows) // 2
    assert windows[:half].mean() == pytest.approx(windows[half:].mean(), rel=3 * cv / half**0.5)
    # Constant within each 10-second window; seeded.
    assert np.all(t.rate[:10] == t.rate[0])
    assert np.array_equal(t.rate, trace.synthetic(shape, duration=3600, base=2.0, seed=3).rate)


# ---- the bounded queue (Triton's default queue policy): replica.serve_bounded


def _bounded(fn, arrivals, *, max_queue=0, timeout=-1.0, horizon=1e9, **kw):  # type: ignore[no-untyped-def]
    arrivals = np.asarray(arrivals, dtype=np.float64)
    state, end = np.zeros(len(arrivals), np.int8), np.zeros(len(arrivals))
    free_at = np.zeros(kw.pop("instances", 1))
    args = (kw.get("max_batch", 8), kw.get("delay", 100e-6), kw.get("a", 1e-3), kw.get("b", 0.0))
    fn(arrivals, state, end, free_at, horizon, *args, max_queue, timeout)
    return state.tolist(), end.tolist()


def test_a_full_queue_refuses_arrivals_at_once() -> None:
    # Batching off, 10 ms per request, 6 arrive at once: 3 fit the queue, 3 are refused.
    state, end = _bounded(replica.serve_bounded, [0.0] * 6, max_queue=3, delay=-1.0, a=0.01)
    assert state == [replica.SERVED] * 3 + [replica.QUEUE_FULL] * 3
    assert end[:3] == pytest.approx([0.01, 0.02, 0.03]) and end[3:] == [0.0, 0.0, 0.0]
    # Room again once the queue drains: a late arrival is admitted.
    state, _ = _bounded(replica.serve_bounded, [0.0] * 6 + [0.015], max_queue=3, delay=-1.0, a=0.01)
    assert state[-1] == replica.SERVED


def test_a_request_that_would_wait_past_the_timeout_is_refused_then() -> None:
    # 10 ms per request, timeout 15 ms: the third would start at 20 ms, refused at 15 ms.
    state, end = _bounded(replica.serve_bounded, [0.0] * 3, timeout=0.015, delay=-1.0, a=0.01)
    assert state == [replica.SERVED, replica.SERVED, replica.TIMED_OUT]
    assert end == pytest.approx([0.01, 0.02, 0.015])


def test_a_timeout_is_not_decided_before_it_is_certain() -> None:
    # The oldest waits for company (delay 50 ms > timeout 10 ms); by horizon 5 ms the batch
    # could still fill, so nothing is decided yet.
    state, _ = _bounded(replica.serve_bounded, [0.0], timeout=0.01, delay=0.05, horizon=0.005)
    assert state == [replica.WAITING]


def test_unbounded_it_serves_as_serve_does() -> None:
    arrivals = np.cumsum(np.random.default_rng(4).exponential(1 / 3000, 5000))
    for delay in (-1.0, 100e-6):
        kw = {"delay": delay, "a": 2.8e-4, "b": 1.6e-6, "max_batch": 8}
        _, _, batches = _serve(replica.serve, arrivals, **kw)
        ends = np.repeat([e for _, _, e in batches], [s for _, s, _ in batches])
        for fn in (replica.serve_bounded, replica.serve_bounded_fast):
            state, end = _bounded(fn, arrivals, **kw)
            assert set(state) == {replica.SERVED}
            assert end == pytest.approx(ends.tolist())


def test_a_generative_trace_keeps_each_requests_token_counts(tmp_path: pathlib.Path) -> None:
    """Issue 28's input: the Azure LLM format's ContextTokens and GeneratedTokens, per
    request; the repository's copy of the code trace (traces/) read whole."""
    root = pathlib.Path(__file__).resolve().parents[2]
    code = trace.load_token_csv(root / "traces" / "azure-llm-2023-code.csv")
    assert len(code.arrivals) == len(code.context_tokens) == len(code.generated_tokens) == 8819
    assert code.arrivals[0] == 0 and bool(np.all(np.diff(code.arrivals) >= 0))
    assert int(code.context_tokens.min()) >= 0 and int(code.generated_tokens.max()) > 0
    unsorted = tmp_path / "unsorted.csv"
    unsorted.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:05,30,3\n2023-11-16 18:17:03,10,1\n2023-11-16 18:17:04,20,2\n"
    )
    read = trace.load_token_csv(unsorted)
    assert list(read.arrivals) == [0.0, 1.0, 2.0]
    assert list(read.context_tokens) == [10, 20, 30] and list(read.generated_tokens) == [1, 2, 3]


def test_a_trace_without_token_counts_is_refused_for_a_generative_replay(
    tmp_path: pathlib.Path,
) -> None:
    times_only = tmp_path / "times.csv"
    times_only.write_text("TIMESTAMP\n2023-11-16 18:17:03\n2023-11-16 18:17:04\n")
    assert len(trace.load_csv(times_only)) == 2  # fine for a request-rate replay
    with pytest.raises(trace.TraceError, match="no ContextTokens, GeneratedTokens columns"):
        trace.load_token_csv(times_only)
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03,10,1\n"
        "2023-11-16 18:17:04,ten,1\n"
    )
    with pytest.raises(trace.TraceError, match="row 3"):
        trace.load_token_csv(bad)
    negative = tmp_path / "negative.csv"
    negative.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03,10,1\n"
        "2023-11-16 18:17:04,5,-1\n"
    )
    with pytest.raises(trace.TraceError, match="row 3: a token count below 0"):
        trace.load_token_csv(negative)
