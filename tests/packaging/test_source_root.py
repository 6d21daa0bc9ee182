"""operator/ is a source root, never a package: the stdlib `operator` must win."""

from __future__ import annotations

import operator
import sys

from tests.support.paths import ROOT


def test_stdlib_operator_wins() -> None:
    assert operator.__file__ is not None
    assert operator.__file__.startswith(sys.base_prefix) or "lib/python" in operator.__file__
    assert hasattr(operator, "itemgetter")
    assert not (ROOT / "operator" / "__init__.py").exists()


def test_package_is_typed() -> None:
    assert (ROOT / "operator" / "geo_operator" / "py.typed").exists()
