"""The examples as the operator would deploy them: their targets, a model repository
laid out by the operator's builders, the digits-family script as a module."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from types import ModuleType
from typing import Any

import yaml
from tests.support.paths import EXAMPLE, FAMILY_SCRIPT

from geo_operator.api import models
from geo_operator.builders import children, plan
from geo_operator.triton import repository


def example_target() -> children.Target:
    body = yaml.safe_load(EXAMPLE.read_text())
    # A queue delay long enough that concurrent requests from one client on two
    # busy cores reliably meet in the batcher.
    body["spec"]["triton"]["dynamicBatching"]["maxQueueDelayMicroseconds"] = 20000
    return planned(body["spec"], "digits")


def planned(spec: dict[str, Any], name: str) -> children.Target:
    """What the operator would deploy for a fresh GeoDeployment with this spec."""
    decided = plan.plan(
        name=name,
        namespace="default",
        uid="u",
        spec=models.parse_spec(spec),
        status=models.GeoDeploymentStatus(),
        current_replicas=None,
    )
    assert decided.target is not None, decided.choice.reason
    return decided.target


def example_repository(artifacts: pathlib.Path, repo: pathlib.Path) -> pathlib.Path:
    """Lay out the example's model repository from the operator's own ConfigMap data."""
    target = example_target()
    repository.materialize(
        children.config_map_data(target),
        model_name=target.spec.model.name,
        artifact_format=target.artifact.format,
        uri=target.artifact.uri,
        repository=repo,
        mirrors={"http://models.geo.local/digits/": f"file://{artifacts}/"},
    )
    return repo


def load_family_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("digits_family_make_artifacts", FAMILY_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module
