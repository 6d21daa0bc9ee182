"""`geo`'s range types: in range, at the bounds, and out of range through argparse (exit 2)."""

from __future__ import annotations

import argparse

import pytest

from geo_operator import cli
from geo_operator.cli import options


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The last stderr line of a command line argparse refuses; it must exit 2."""
    with pytest.raises(SystemExit) as exited:
        cli.parser().parse_args(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: geo ") and "Traceback" not in err
    return err.strip().splitlines()[-1]


def _refuses(parse: object, text: str) -> str:
    assert callable(parse)
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        parse(text)
    return str(refused.value)


def test_int_in_takes_its_bounds_and_refuses_past_them() -> None:
    between = options.int_in(1, 5)
    assert [between(t) for t in ("1", "3", "5", " 4 ")] == [1, 3, 5, 4]
    assert _refuses(between, "0") == "must be at least 1, got 0"
    assert _refuses(between, "6") == "must be at most 5, got 6"
    assert _refuses(between, "2.5") == "'2.5' is not an integer"
    assert _refuses(between, "") == "'' is not an integer"
    assert options.int_in()("-7") == -7  # no bounds: any integer
    assert _refuses(options.int_in(0, 1_000_000), "1000001") == (
        "must be at most 1000000, got 1000001"  # as typed, not 1e+06
    )


def test_float_in_takes_its_bounds_and_only_finite_numbers() -> None:
    between = options.float_in(0.5, 2)
    assert [between(t) for t in ("0.5", "1", "2", "2e0")] == [0.5, 1.0, 2.0, 2.0]
    assert _refuses(between, "0.49") == "must be at least 0.5, got 0.49"
    assert _refuses(between, "2.01") == "must be at most 2, got 2.01"
    for junk in ("nan", "inf", "-inf", "x", "1,5"):
        assert _refuses(between, junk) == f"{junk!r} is not a number"


def test_named_ranges_at_their_boundaries() -> None:
    assert options.positive_int("1") == 1
    assert _refuses(options.positive_int, "0") == "must be at least 1, got 0"
    assert options.non_negative_int("0") == 0
    assert _refuses(options.non_negative_int, "-1") == "must be at least 0, got -1"
    assert options.non_negative_float("0") == 0.0
    assert _refuses(options.non_negative_float, "-0.001") == "must be at least 0, got -0.001"
    assert options.positive_float("1e-9") == 1e-9
    assert _refuses(options.positive_float, "0") == "must be greater than 0, got 0"
    assert _refuses(options.positive_float, "-3") == "must be greater than 0, got -3"
    assert _refuses(options.positive_float, "nan") == "'nan' is not a number"


def test_int_lists_with_and_without_off() -> None:
    batches = options.int_list(1, 4096)
    assert batches("1,4,16") == [1, 4, 16]
    assert batches(" 1 , 4096") == [1, 4096]
    assert _refuses(batches, "1,0") == "must be at least 1, got 0"
    assert _refuses(batches, "1,4097") == "must be at most 4096, got 4097"
    assert _refuses(batches, "1,off") == "'off' is not an integer"
    assert _refuses(batches, "") == "'' is not an integer"
    delays = options.int_list_or_off(0)
    assert delays("off") == [None]
    assert delays("0, off,500") == [0, None, 500]
    assert _refuses(delays, "-1,off") == "must be at least 0, got -1"
    assert _refuses(delays, "0,of") == "'of' is not an integer or off"


SIMULATE = ["simulate", "-f", "x"]
TUNE = ["tune", "--url", "u", "--model", "m", "--latency-budget-ms"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*SIMULATE, "--duration", "59"], "--duration must be at least 60, got 59"),
        ([*SIMULATE, "--rate-resolution", "0"], "--rate-resolution must be at least 1, got 0"),
        ([*SIMULATE, "--startup-seconds", "-5"], "--startup-seconds must be at least 0, got -5"),
        ([*SIMULATE, "--peak-replicas", "-2"], "--peak-replicas must be at least 0, got -2"),
        ([*SIMULATE, "--metrics-lag-seconds", "-1"], "--metrics-lag-seconds must be at least 0"),
        (["decide", "-f", "x", "--replicas", "-1"], "--replicas must be at least 0, got -1"),
        (["decide", "-f", "x", "--replicas", "1", "--ready", "-1"], "--ready must be at least 0"),
        (["run", "--metrics-port", "65536"], "--metrics-port must be at most 65535, got 65536"),
        (["run", "--metrics-port", "-1"], "--metrics-port must be at least 0, got -1"),
        ([*TUNE, "0"], "--latency-budget-ms must be greater than 0, got 0"),
        ([*TUNE, "5", "--candidates", "0"], "--candidates must be at least 1, got 0"),
        ([*TUNE, "5", "--delays", "-1"], "--delays must be at least 0, got -1"),
        ([*TUNE, "5", "--concurrency", "4,0"], "--concurrency must be at least 1, got 0"),
        ([*TUNE, "5", "--seconds", "0"], "--seconds must be greater than 0, got 0"),
        ([*TUNE, "5", "--wait-seconds", "-1"], "--wait-seconds must be at least 0, got -1"),
        ([*TUNE, "5", "--delays", "x"], "argument --delays: 'x' is not an integer or off"),
    ],
)
def test_out_of_range_is_argparse_exit_2_naming_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    verb = argv[0]
    line = _error(argv, capsys)
    assert line.startswith(f"geo {verb}: error: ") and message in line


def test_in_range_boundaries_parse() -> None:
    top = cli.parser()
    simulate = top.parse_args(
        [*SIMULATE, "--duration", "60", "--rate-resolution", "1",
         "--startup-seconds", "0", "--metrics-lag-seconds", "0", "--peak-replicas", "0"]
    )  # fmt: skip
    assert (simulate.duration, simulate.rate_resolution) == (60, 1)
    assert (simulate.startup_seconds, simulate.metrics_lag_seconds) == (0.0, 0)
    assert top.parse_args(["run", "--metrics-port", "0"]).metrics_port == 0
    assert top.parse_args(["run", "--metrics-port", "65535"]).metrics_port == 65535
    decide = top.parse_args(["decide", "-f", "x", "--replicas", "0", "--qps", "0"])
    assert (decide.replicas, decide.qps, decide.ready) == (0, 0.0, None)


def test_other_argparse_errors_keep_argparse_words(capsys: pytest.CaptureFixture[str]) -> None:
    assert _error(["select", "-f"], capsys) == (
        "geo select: error: argument -f/--file: expected one argument"
    )
    assert "argument --log-level: invalid choice: 'loud'" in _error(
        ["run", "--log-level", "loud"], capsys
    )
    assert "the following arguments are required: --replicas" in _error(
        ["decide", "-f", "x"], capsys
    )


def test_tune_defaults_go_through_the_types() -> None:
    args = cli.parser().parse_args([*TUNE, "5"])
    assert args.candidates == [1, 2, 4, 8, 16, 32]
    assert args.delays == [0, 100, 500, 2000]
    assert args.concurrency == [1, 4, 16, 32]
    assert (args.seconds, args.wait_seconds, args.latency_budget_ms) == (3.0, 0.0, 5.0)


@pytest.mark.parametrize("verb", ["select", "render"])
def test_gpu_arch_is_one_geo_knows(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    line = _error([verb, "-f", "x", "--gpu-arch", "nonsense"], capsys)
    assert line == (
        f"geo {verb}: error: argument --gpu-arch: 'nonsense' is not a GPU architecture GEO "
        "knows; one of pascal, volta, turing, ampere, ada, hopper, blackwell"
    )
    assert _error([verb, "-f", "x", "--gpu-arch", ""], capsys).endswith(
        "'' is not a GPU architecture GEO knows; one of pascal, volta, turing, ampere, ada, "
        "hopper, blackwell"
    )
    args = cli.parser().parse_args([verb, "-f", "x", "--gpu-arch", " Hopper "])
    assert args.gpu_arch == "hopper"
    assert cli.parser().parse_args([verb, "-f", "x"]).gpu_arch is None
