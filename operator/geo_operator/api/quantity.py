"""Kubernetes resource quantities ("500m", "2Gi", "129e6"): the one grammar GEO reads them by.

`api.models` validates triton.resources with it (a non-negative quantity, as the API
server's CEL ``isQuantity`` admits) and compares the response cache with the memory
limit; `artifacts.cost` prices a replica's cpu, memory and GPUs; `artifacts.selection`
reads the GPU limit. The grammar is k8s.io/apimachinery's ``resource.Quantity``: a
signed decimal number, then a binary suffix (Ki, Mi, Gi, Ti, Pi, Ei), a decimal-SI one
(n, u, m, k, M, G, T, P, E) or a decimal exponent (e3, E-2), or none.
"""

from __future__ import annotations

import math
import re

_GRAMMAR = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_DECIMAL |= {"P": 1e15, "E": 1e18}


def parse(value: int | float | str) -> float:
    """A quantity as a number of base units: ``"500m"`` → 0.5 (cores), ``"2Gi"`` →
    2147483648.0 (bytes), ``"129e6"`` → 129000000.0, ``"1.5"`` → 1.5, ``2`` → 2.0.

    Raises ValueError naming the value and the accepted forms when it is not one (a
    bool, a non-finite number, a unit Kubernetes does not know such as "1Mb" or "1 Gi").
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a Kubernetes quantity")
        return float(value)
    match = _GRAMMAR.match(value)
    if match is None:
        raise ValueError(
            f"{value!r} is not a Kubernetes quantity (a number with an optional suffix: "
            "m, k, M, G, T, Ki, Mi, Gi, Ti, or an exponent such as e3)"
        )
    number, suffix = float(match["number"]), match["suffix"]
    if not suffix:
        scaled = number
    elif suffix in _BINARY:
        scaled = number * _BINARY[suffix]
    elif suffix in _DECIMAL:
        scaled = number * _DECIMAL[suffix]
    else:
        try:
            scaled = number * 10.0 ** int(suffix[1:])
        except OverflowError:
            scaled = math.inf
    if not math.isfinite(scaled):
        raise ValueError(f"{value!r} is too large a quantity")
    return scaled


def is_non_negative(value: int | float | str) -> bool:
    """Whether ``value`` is a quantity of at least 0: what a container's resources take."""
    try:
        return parse(value) >= 0
    except ValueError:
        return False
