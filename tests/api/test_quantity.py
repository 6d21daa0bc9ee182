"""`api.quantity`: the one grammar for Kubernetes quantities, against the Kubernetes client's
own parser, and every way a value is not one refused with the value named."""

from __future__ import annotations

import pytest

from geo_operator.api import models, quantity
from geo_operator.artifacts import selection

KUBERNETES_SPELLINGS = [
    "500m", "1.5", "2Gi", "128974848", "129e6", "123Mi", "1E3", "1E", "1e-3", ".5Ki", "+2",
    "1n", "0.1m", "4k", "1G", "100M", "3Ti", "1.", "0", "-1", "-500m",
]  # fmt: skip


def test_the_examples_read_as_their_base_units() -> None:
    assert quantity.parse("500m") == 0.5  # cores
    assert quantity.parse("1.5") == 1.5
    assert quantity.parse("2Gi") == 2 * 2**30  # bytes
    assert quantity.parse("128974848") == 128974848.0
    assert quantity.parse("129e6") == 129e6
    assert quantity.parse("123Mi") == 128974848.0  # the same bytes as the line above but one
    assert quantity.parse("1E") == 1e18 and quantity.parse("1E3") == 1000.0  # exa, exponent
    assert quantity.parse(3) == 3.0 and quantity.parse(0.25) == 0.25
    assert quantity.parse("-1") == -1.0  # a quantity may be negative; resources may not


@pytest.mark.parametrize("text", KUBERNETES_SPELLINGS)
def test_it_reads_what_the_kubernetes_client_reads(text: str) -> None:
    from kubernetes.utils import parse_quantity

    assert quantity.parse(text) == pytest.approx(float(parse_quantity(text)), rel=1e-12)


@pytest.mark.parametrize(
    "bad", ["", "abc", "Mi", "1Gb", "1mi", "2gi", "1.2.3", "2 Gi", " 1", "1e", "e3", "0x10", "--1"]
)
def test_what_is_not_a_quantity_is_a_value_error_naming_it(bad: str) -> None:
    with pytest.raises(ValueError) as refused:
        quantity.parse(bad)
    assert str(refused.value) == (
        f"{bad!r} is not a Kubernetes quantity (a number with an optional suffix: m, k, M, G, T, "
        "Ki, Mi, Gi, Ti, or an exponent such as e3)"
    )
    assert not quantity.is_non_negative(bad)


@pytest.mark.parametrize("bad", [True, False, float("nan"), float("inf")])
def test_a_bool_or_a_number_that_is_not_finite_is_refused(bad: bool | float) -> None:
    with pytest.raises(ValueError, match="is not a Kubernetes quantity"):
        quantity.parse(bad)


def test_a_quantity_too_large_for_a_float_is_refused_not_a_crash() -> None:
    for huge in ("1e400", "1" * 400, "9" * 400 + "Ei"):
        with pytest.raises(ValueError, match="is too large a quantity"):
            quantity.parse(huge)
        assert not quantity.is_non_negative(huge)
    assert quantity.parse("1e-400") == 0.0


def test_non_negative_is_what_a_container_takes() -> None:
    assert [quantity.is_non_negative(v) for v in ("0", "500m", 2, "+1", "-1", -1, "-500m")] == [
        True, True, True, True, False, False, False
    ]  # fmt: skip


def test_every_reader_uses_it() -> None:
    """Validation, the response cache's comparison, pricing and the GPU limit agree."""
    for limit, gpu in (("1", True), ("0", False), ("0.0", False), ("0m", False), ("500m", True)):
        triton = models.TritonSpec.model_validate({"resources": {"limits": {GPU: limit}}})
        assert selection.hardware_of(triton).gpu is gpu, limit
    with pytest.raises(ValueError, match=r"sizeBytes .* must be below"):
        models.TritonSpec.model_validate(
            {
                "resources": {"limits": {"memory": "129e6"}},
                "responseCache": {"enabled": True, "sizeBytes": 129_000_000},
            }
        )


GPU = "nvidia.com/gpu"
