"""What the `geo` verbs' options share: the flags several verbs take, and range types.

Every verb module's ``register`` adds its options with these helpers, so a flag
that several verbs take (``-f/--file``, ``--json``, ``--gpu-arch``) has one
help text, and a number with a range is checked by its ``type=``: argparse
itself then exits 2 with usage and the flag named, e.g.
``geo simulate: error: --duration must be at least 60, got 5``. ``GeoParser``
is the parser class of ``geo`` and, through ``add_subparsers``, of every verb.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn, TypeAlias, TypeVar

from geo_operator.artifacts import selection

if TYPE_CHECKING:
    Verbs: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

N = TypeVar("N", int, float)

# argparse words a type's error as "argument --duration: must be at least 60, got 5";
# geo has always said "--duration must be at least 60, got 5" (and its tests read that).
_RANGE_ERROR = re.compile(r"^argument (\S+): must be ")


class GeoParser(argparse.ArgumentParser):
    """argparse's parser, with range errors worded as one sentence that opens with the flag."""

    def error(self, message: str) -> NoReturn:
        super().error(_RANGE_ERROR.sub(r"\1 must be ", message))


# --- flags several verbs share ---------------------------------------------------------


def add_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--file", required=True, help="GeoDeployment YAML ('-' = stdin)")


FORMATS = ("text", "json", "yaml")


def add_output(p: argparse.ArgumentParser, *, text: bool = True) -> None:
    """``-o/--output`` as kubectl has it (and ``--json``, the same as ``-o json``);
    ``text=False``: a verb that has no text form (JSON by default)."""
    formats = FORMATS if text else FORMATS[1:]
    p.add_argument(
        "-o",
        "--output",
        choices=formats,
        default=formats[0],
        help="print as " + ", ".join(formats) + " (default: %(default)s)",
    )
    p.add_argument(
        "--json", dest="output", action="store_const", const="json", help="the same as -o json"
    )


def gpu_arch(text: str) -> str:
    """A GPU architecture GEO knows (`selection.GPU_ARCHS`), in any case: ``Hopper``."""
    arch = text.strip().lower()
    if arch not in selection.GPU_ARCHS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a GPU architecture GEO knows; one of "
            + ", ".join(selection.GPU_ARCHS)
        )
    return arch


def add_gpu_arch(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gpu-arch",
        type=gpu_arch,
        metavar="ARCH",
        help="GPU architecture the pods land on, one of "
        + ", ".join(selection.GPU_ARCHS)
        + "; default: from spec.triton resources and nodeSelector",
    )


# --- numbers with ranges, as argparse type= callables ------------------------------------


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _show(value: float) -> str:
    """A bound or value as the user would type it: 60, 0.5, 1000000 (not 1e+06)."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def _range_problem(value: N, lo: N | None, hi: N | None) -> str | None:
    if lo is not None and value < lo:
        return f"must be at least {_show(lo)}, got {_show(value)}"
    if hi is not None and value > hi:
        return f"must be at most {_show(hi)}, got {_show(value)}"
    return None


def _number(
    convert: Callable[[str], N], noun: str, lo: N | None, hi: N | None
) -> Callable[[str], N]:
    def parse(text: str) -> N:
        try:
            value = convert(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        problem = _range_problem(value, lo, hi)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


def int_in(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An integer in [lo, hi] (either bound may be None: open that side)."""
    return _number(int, "an integer", lo, hi)


def float_in(lo: float | None = None, hi: float | None = None) -> Callable[[str], float]:
    """A finite number in [lo, hi] (either bound may be None: open that side)."""
    return _number(_finite_float, "a number", lo, hi)


positive_int = int_in(1)
non_negative_int = int_in(0)
non_negative_float = float_in(0)


def positive_float(text: str) -> float:
    """A finite number above 0."""
    value = float_in()(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {_show(value)}")
    return value


def int_list(lo: int | None = None, hi: int | None = None) -> Callable[[str], list[int]]:
    """Comma-separated integers, each in [lo, hi]: ``1,4,16``."""
    item = int_in(lo, hi)

    def parse(text: str) -> list[int]:
        return [item(part) for part in text.split(",")]

    return parse


def int_list_or_off(
    lo: int | None = None, hi: int | None = None
) -> Callable[[str], list[int | None]]:
    """Like `int_list`, where an item may also be ``off`` (None): ``off,0,500``."""
    item = _number(int, "an integer or off", lo, hi)

    def parse(text: str) -> list[int | None]:
        return [None if part.strip() == "off" else item(part) for part in text.split(",")]

    return parse
