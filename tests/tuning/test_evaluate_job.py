"""The tuning Job's held-out step, as its pod runs it, through the real tritonserver.

The repository is laid out from the operator's own tuning ConfigMap for the
digits-family example — the candidate, and for ``agreement`` the reference artifact
next to it as ``<model>-reference`` — exactly as the Job's init container does;
then the real ``geo tune --evaluate`` (with the args the Job builder writes) tunes a
tiny grid and scores the held-out set. The deliberately bad artifact
(int8-miscalibrated, declared 0.9778) must come out near its real accuracy, 0.1056.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import yaml
from tests.support.paths import FAMILY_MANIFEST, FAMILY_PREFIX

from geo_operator import cli
from geo_operator.api import models, names
from geo_operator.builders import children, tuning
from geo_operator.triton import local, model_config, repository

pytestmark = pytest.mark.triton

BAD = "int8-miscalibrated"
MODEL = "digits-family"


def _spec(metric: str, **evaluation: Any) -> models.GeoDeploymentSpec:
    body = yaml.safe_load(FAMILY_MANIFEST.read_text())
    body["spec"]["model"]["evaluation"] = {
        "uri": f"{FAMILY_PREFIX}heldout.npz",
        "metric": metric,
        **evaluation,
    }
    body["spec"]["triton"]["maxBatchSize"] = 0
    return models.parse_spec(body["spec"])


def _target(spec: models.GeoDeploymentSpec, artifact: str) -> children.Target:
    return children.Target(
        name=MODEL,
        namespace="default",
        uid="u",
        spec=spec,
        artifact=next(a for a in spec.model.artifacts if a.name == artifact),
        batch=model_config.BatchSettings(max_batch_size=8),
        replicas=1,
    )


def _lay_out(target: children.Target, family: pathlib.Path, repo: pathlib.Path) -> dict[str, Any]:
    """What the Job's init container does; returns the Job (to read its tuner args)."""
    mirrors = {FAMILY_PREFIX: f"file://{family}/"}
    data = tuning.tuning_config_map(target)["data"]
    repository.materialize(
        data,
        model_name=MODEL,
        artifact_format=target.artifact.format,
        uri=target.artifact.uri,
        repository=repo,
        mirrors=mirrors,
    )
    job = tuning.tuning_job(target, key_="k" * 10, attempt=1, image="geo")
    fetch = job["spec"]["template"]["spec"]["initContainers"][0]
    env = {e["name"]: e["value"] for e in fetch["env"]}
    if names.REFERENCE_URI_ENV in env:
        repository.materialize_reference(
            data, uri=env[names.REFERENCE_URI_ENV], repository=repo, mirrors=mirrors
        )
    return job


@pytest.fixture(scope="module")
def agreement_server(
    family: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[local.TritonServer, dict[str, Any]]]:
    repo = tmp_path_factory.mktemp("evaluate-repository")
    job = _lay_out(_target(_spec("agreement"), BAD), family, repo)
    with local.TritonServer(
        repo,
        model_control_mode="explicit",
        load_models=[MODEL],
        log_path=repo.parent / "triton-evaluate.log",
    ) as triton:
        yield triton, job


def _tune(
    server: local.TritonServer, job: dict[str, Any], heldout: pathlib.Path, out: pathlib.Path
) -> tuple[int, dict[str, Any]]:
    """The Job's `geo tune` args, with a tiny grid, pointed at this Triton and files."""
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    kept = [a for a in args if a.split("=")[0] in ("--model", "--metric", "--reference-model")]
    kept += [a for a in args if a.startswith("--reference=")]
    code = cli.main(
        [
            "tune",
            f"--url={server.http_url}",
            *kept,
            "--latency-budget-ms=500",
            "--candidates=8",
            "--delays=100",
            "--concurrency=2",
            "--seconds=0.5",
            f"--evaluate={heldout}",
            f"--result-file={out}",
        ]
    )
    return code, json.loads(out.read_text())


def test_the_job_fetches_the_set_and_the_reference_and_scores_the_candidate(
    agreement_server: tuple[local.TritonServer, dict[str, Any]],
    family: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:
    server, job = agreement_server
    pod = job["spec"]["template"]["spec"]
    tuner = pod["containers"][0]
    assert f"--evaluate={names.HELDOUT_FILE}" in tuner["args"]
    assert f"--reference-model={MODEL}{names.REFERENCE_SUFFIX}" in tuner["args"]
    assert "--reference=teacher" in tuner["args"]  # fp32, first in spec order
    assert {v["name"] for v in pod["volumes"]} >= {names.EVALUATION_VOLUME}

    code, result = _tune(server, job, family / "heldout.npz", tmp_path / "result.json")
    assert code == 0, result
    scored = models.TunedBatch.model_validate(result).accuracy
    assert scored is not None and scored.samples == 540
    assert scored.metric is models.EvaluationMetric.AGREEMENT and scored.reference == "teacher"
    # The miscalibrated int8 agrees with its teacher about as often as it is right.
    assert scored.value < 0.2, scored


def test_accuracy_against_labels_exposes_the_bad_artifact(
    agreement_server: tuple[local.TritonServer, dict[str, Any]],
    family: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:
    server, _ = agreement_server
    job = tuning.tuning_job(_target(_spec("accuracy"), BAD), key_="k" * 10, attempt=1, image="g")
    code, result = _tune(server, job, family / "heldout.npz", tmp_path / "result.json")
    assert code == 0, result
    scored = models.TunedBatch.model_validate(result).accuracy
    assert scored is not None and scored.metric is models.EvaluationMetric.ACCURACY
    measured = json.loads((family / "measurements.json").read_text())
    truth = next(a["accuracy"] for a in measured["artifacts"] if a["name"] == BAD)
    assert abs(scored.value - truth) < 0.002, (scored, truth)


def test_a_bad_held_out_file_fails_the_run_with_words(
    agreement_server: tuple[local.TritonServer, dict[str, Any]], tmp_path: pathlib.Path
) -> None:
    server, job = agreement_server
    bad = tmp_path / "heldout.npz"
    np.savez(bad, x=np.zeros((3, 64), np.float32))
    code, result = _tune(server, job, bad, tmp_path / "result.json")
    assert code == 2  # a usage error: one line on stderr, no traceback
    error = result["error"]
    assert "no array 'input' for input input (has x)" in error
    parsed = tuning.parse_result(json.dumps({"error": error}))
    assert isinstance(parsed, str) and "held-out evaluation" in parsed
