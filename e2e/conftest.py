"""Registers the e2e harness's fixtures (e2e/harness/fixtures.py) and marks every test e2e."""

from __future__ import annotations

import pytest
from e2e.harness.fixtures import (
    MARKERS,
    chart,
    cluster,
    control_plane_restart,
    killable_operator,
    namespace,
    operator,
    operator_process,
    runner,
    uninstallable_chart,
)

__all__ = [
    "chart",
    "cluster",
    "control_plane_restart",
    "killable_operator",
    "namespace",
    "operator",
    "operator_process",
    "runner",
    "uninstallable_chart",
]


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.e2e)
