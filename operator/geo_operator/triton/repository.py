"""Lay out a Triton model repository on local disk from a GeoDeployment's ConfigMap.

Does on this machine what the Triton pod's init container does in a cluster
(`builders.children._init_script`): fetch the artifact with the same
`fetch.py`, put config.pbtxt (and model.py for the python format) in place.
Used by the real-Triton tests, the demo and the e2e runner that plays the
kubelet for kwok's pods — so all of them serve exactly what the operator built.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping

from geo_operator.api import models, names
from geo_operator.triton import fetch, model_config


def rewrite_uri(uri: str, mirrors: Mapping[str, str]) -> str:
    """Replace the first matching URI prefix (e.g. a cluster-only host by file://)."""
    for prefix, replacement in mirrors.items():
        if uri.startswith(prefix):
            return replacement + uri[len(prefix) :]
    return uri


def materialize(
    data: Mapping[str, str],
    *,
    model_name: str,
    artifact_format: models.ArtifactFormat,
    uri: str,
    repository: pathlib.Path,
    mirrors: Mapping[str, str] | None = None,
    config_key: str = "config.pbtxt",
) -> pathlib.Path:
    """Write the repository under `repository`; returns the model's folder. ``config_key``:
    which ConfigMap entry is this model's config.pbtxt (the tuning pod's reference model
    has its own, ``reference.pbtxt``)."""
    model_dir = repository / model_name
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    fetch.fetch(
        rewrite_uri(uri, mirrors or {}),
        str(version_dir / model_config.FILENAMES[artifact_format]),
    )
    (model_dir / "config.pbtxt").write_text(data[config_key])
    if artifact_format in (models.ArtifactFormat.PYTHON, models.ArtifactFormat.GGUF):
        (version_dir / "model.py").write_text(data["model.py"])
    if config_key == "config.pbtxt" and names.WARMUP_FILES in data:
        for path, warmup_uri in json.loads(data[names.WARMUP_FILES]).items():
            (model_dir / path).parent.mkdir(parents=True, exist_ok=True)
            fetch.fetch(rewrite_uri(warmup_uri, mirrors or {}), str(model_dir / path))
    return model_dir


def materialize_reference(
    data: Mapping[str, str],
    *,
    uri: str,
    repository: pathlib.Path,
    mirrors: Mapping[str, str] | None = None,
) -> pathlib.Path:
    """agreement's reference artifact beside the candidate, as the tuning pod's init
    container lays it out: its own config (``reference.pbtxt``, which names it
    <model>-reference and its backend), the artifact at ``uri``."""
    config = model_config.parse(data[names.REFERENCE_CONFIG])
    return materialize(
        data,
        model_name=config.name,
        artifact_format=model_config.artifact_format_of(config),
        uri=uri,
        repository=repository,
        mirrors=mirrors,
        config_key=names.REFERENCE_CONFIG,
    )
