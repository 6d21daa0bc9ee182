"""The CRD's CEL rules, evaluated with a real CEL interpreter (cel-python), agree
with the pydantic validators on the same objects. The API server enforces the
CEL; `geo render` and the handlers enforce the pydantic — they must not differ.
"""

from __future__ import annotations

from typing import Any

import celpy
import pydantic
import pytest

from geo_operator.api import crd, models


def _schema_at(*path: str) -> dict[str, Any]:
    """The schema at a dotted path of spec; ``name[]`` is the items of array ``name``."""
    node = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for part in path:
        node = node["properties"][part.removesuffix("[]")]
        if part.endswith("[]"):
            node = node["items"]
    return dict(node)


def _is_quantity(value: Any) -> celpy.celtypes.BoolType:
    """The API server's CEL isQuantity (Kubernetes' quantity library), for cel-python."""
    from kubernetes.utils import parse_quantity

    try:
        parse_quantity(str(value))
    except ValueError:
        return celpy.celtypes.BoolType(False)
    return celpy.celtypes.BoolType(True)


def _cel_ok(rules: list[dict[str, str]], obj: dict[str, Any]) -> bool:
    env = celpy.Environment()
    for rule in rules:
        program = env.program(env.compile(rule["rule"]), functions={"isQuantity": _is_quantity})
        if not bool(program.evaluate({"self": celpy.json_to_cel(obj)})):
            return False
    return True


def _pydantic_ok(model: type[pydantic.BaseModel], obj: dict[str, Any]) -> bool:
    try:
        model.model_validate(obj)
    except pydantic.ValidationError:
        return False
    return True


def _defaulted(model: type[pydantic.BaseModel], **over: Any) -> dict[str, Any]:
    """As the API server evaluates CEL: after defaulting, so every field is set."""
    base = model().model_dump(by_alias=True, exclude_none=True, mode="json")
    base.update(over)
    return base


def _batching_case(valid: bool, **over: Any) -> tuple[str, type[pydantic.BaseModel], Any, bool]:
    """A CASES row for the dynamic batcher's rules, after defaulting."""
    return (
        "triton.dynamicBatching",
        models.DynamicBatching,
        _defaulted(models.DynamicBatching, **over),
        valid,
    )


def _preferred(sizes: list[int], max_batch_size: int) -> dict[str, Any]:
    batching = _defaulted(models.DynamicBatching, preferredBatchSizes=sizes)
    return _defaulted(models.TritonSpec, maxBatchSize=max_batch_size, dynamicBatching=batching)


ARTIFACT = {
    "name": "a",
    "precision": "fp32",
    "format": "onnx",
    "uri": "http://h/a",
    "accuracy": 0.9,
}
TENSOR = {"name": "x", "dataType": "TYPE_FP32", "dims": [1]}


def _model(selection: dict[str, Any], names: tuple[str, ...] = ("a", "b")) -> dict[str, Any]:
    return {
        "name": "m",
        "inputs": [TENSOR],
        "outputs": [TENSOR],
        "artifacts": [{**ARTIFACT, "name": n} for n in names],
        "selection": {"policy": "best-score", "minAccuracyRatio": 0.95, **selection},
    }


def _undeclared(**over: Any) -> dict[str, Any]:
    """A model whose artifacts declare no accuracy (valid only with an evaluation)."""
    model = _model({})
    model["artifacts"] = [
        {k: v for k, v in a.items() if k != "accuracy"} for a in model["artifacts"]
    ]
    return {**model, **over}


CASES = [
    ("triton", models.TritonSpec, _defaulted(models.TritonSpec), True),
    (
        "triton",
        models.TritonSpec,
        _defaulted(models.TritonSpec, instanceGroups=[{"count": 2}]),
        True,
    ),
    (
        "triton",
        models.TritonSpec,
        _defaulted(models.TritonSpec, instanceCount=2, instanceGroups=[{"count": 2}]),
        False,
    ),
    ("triton", models.TritonSpec, _preferred([4, 8], 8), True),
    ("triton", models.TritonSpec, _preferred([4, 16], 8), False),
    # maxBatchSize 0 is tuned: the plan keeps the preferred sizes below the tuned one.
    ("triton", models.TritonSpec, _preferred([64], 0), True),
    # What the pods carry must be Kubernetes' own syntax (issue 14's findings).
    (
        "triton",
        models.TritonSpec,
        _defaulted(
            models.TritonSpec,
            resources={
                "limits": {"cpu": "500m", "nvidia.com/gpu": 1},
                "requests": {"memory": "2Gi"},
            },
            nodeSelector={"nvidia.com/gpu.family": "hopper", "pool": "a"},
        ),
        True,
    ),
    (
        "triton",
        models.TritonSpec,
        _defaulted(models.TritonSpec, resources={"limits": {"cpu": "lots"}}),
        False,
    ),
    (
        "triton",
        models.TritonSpec,
        _defaulted(models.TritonSpec, resources={"limits": {"cpu": "-1"}}),
        False,
    ),
    (
        "model.selection.weights",
        models.SelectionWeights,
        {"accuracy": 0.0, "latency": 0.0, "cost": 0.0},
        False,
    ),
    (
        "model.selection.weights",
        models.SelectionWeights,
        {"accuracy": 0.0, "latency": 0.0, "cost": 0.1},
        True,
    ),
    _batching_case(True),
    _batching_case(True, priorityLevels=2),
    _batching_case(False, priorityLevels=2, defaultPriorityLevel=3),
    _batching_case(False, defaultPriorityLevel=1),
    _batching_case(True, priorityLevels=2, priorityQueuePolicies=[{"level": 1}, {"level": 2}]),
    _batching_case(False, priorityLevels=2, priorityQueuePolicies=[{"level": 3}]),
    _batching_case(False, priorityLevels=2, priorityQueuePolicies=[{"level": 1}, {"level": 1}]),
    ("triton.instanceGroups[]", models.InstanceGroup, {"count": 1, "kind": "GPU"}, True),
    (
        "triton.instanceGroups[]",
        models.InstanceGroup,
        {"count": 1, "kind": "GPU", "gpus": [0]},
        True,
    ),
    ("triton.instanceGroups[]", models.InstanceGroup, {"count": 1, "gpus": [0]}, False),
    (
        "triton.instanceGroups[]",
        models.InstanceGroup,
        {"count": 1, "kind": "CPU", "gpus": [0]},
        False,
    ),
    ("autoscaling", models.Autoscaling, _defaulted(models.Autoscaling), True),
    (
        "autoscaling",
        models.Autoscaling,
        _defaulted(models.Autoscaling, minReplicas=4, maxReplicas=4),
        True,
    ),
    (
        "autoscaling",
        models.Autoscaling,
        _defaulted(models.Autoscaling, minReplicas=5, maxReplicas=2),
        False,
    ),
    (
        "autoscaling",
        models.Autoscaling,
        _defaulted(models.Autoscaling, scaleInRatio=1.5, scaleOutRatio=1.5),
        False,
    ),
    (
        "autoscaling",
        models.Autoscaling,
        _defaulted(models.Autoscaling, metrics={"source": "prometheus"}),
        False,
    ),
    (
        "autoscaling",
        models.Autoscaling,
        _defaulted(
            models.Autoscaling, metrics={"source": "prometheus", "prometheusUrl": "http://p:9090"}
        ),
        True,
    ),
    ("model", models.ModelSpec, _model({}), True),
    ("model", models.ModelSpec, _model({"pinned": "b"}), True),
    ("model", models.ModelSpec, _model({"pinned": "zz"}), False),
    ("model", models.ModelSpec, _undeclared(), False),
    ("model", models.ModelSpec, _undeclared(evaluation={"uri": "http://h/held.npz"}), True),
    (
        "model",
        models.ModelSpec,
        _undeclared(
            evaluation={"uri": "http://h/held.npz", "metric": "agreement", "reference": "b"}
        ),
        True,
    ),
    (
        "model",
        models.ModelSpec,
        _undeclared(evaluation={"uri": "http://h/held.npz", "reference": "zz"}),
        False,
    ),
    ("model.selection", models.Selection, {"policy": "pinned", "minAccuracyRatio": 0.9}, False),
    ("model.selection", models.Selection, {"policy": "pinned", "pinned": "a"}, True),
    ("rollout", models.Rollout, _defaulted(models.Rollout), True),
    # All the traffic to an unjudged canary on the first tick, the stable at zero: refused.
    ("rollout", models.Rollout, _defaulted(models.Rollout, steps=[100]), False),
    ("rollout", models.Rollout, _defaulted(models.Rollout, steps=[10, 100]), True),
    ("rollout", models.Rollout, _defaulted(models.Rollout, steps=[99, 100]), True),
    (
        "rollout",
        models.Rollout,
        _defaulted(models.Rollout, steps=[1, 2, 3, 4, 5, 6, 7, 8, 9, 100]),
        True,
    ),
    (
        "rollout",
        models.Rollout,
        _defaulted(models.Rollout, steps=[1, 2, 3, 4, 5, 6, 7, 8, 100, 99]),
        False,
    ),
    (
        "rollout",
        models.Rollout,
        _defaulted(models.Rollout, steps=[10, 50]),
        False,
    ),  # never reaches 100
    (
        "rollout",
        models.Rollout,
        _defaulted(models.Rollout, steps=[10, 10, 100]),
        False,
    ),  # a repeated step
    ("rollout", models.Rollout, _defaulted(models.Rollout, steps=[50, 20, 100]), False),
    ("rollout", models.Rollout, _defaulted(models.Rollout, steps=[100, 100]), False),
]


@pytest.mark.parametrize(("where", "model", "obj", "valid"), CASES)
def test_cel_and_pydantic_agree(
    where: str, model: type[pydantic.BaseModel], obj: dict[str, Any], valid: bool
) -> None:
    rules = _schema_at(*where.split("."))["x-kubernetes-validations"]
    assert _cel_ok(rules, obj) is valid
    assert _pydantic_ok(model, obj) is valid


def test_every_rule_has_a_message_and_compiles() -> None:
    env = celpy.Environment()
    for where in {case[0] for case in CASES}:
        for rule in _schema_at(*where.split("."))["x-kubernetes-validations"]:
            assert rule["message"]
            env.compile(rule["rule"])


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("digits", True),
        ("digits-2", True),
        ("d" * 63, True),
        ("d" * 64, False),
        ("1digits", False),  # a Service name must start with a letter
        ("a.b.c", False),
        ("Digits", False),
        ("digits-", False),
    ],
)
def test_the_name_rule_refuses_what_a_child_could_not_carry(name: str, ok: bool) -> None:
    root = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    # On metadata.name itself, so that the API server names that field in its error.
    rules = root["properties"]["metadata"]["properties"]["name"]["x-kubernetes-validations"]
    assert _cel_ok(rules, name) is ok


@pytest.mark.parametrize(
    ("files", "valid"),
    [
        ({"x": "http://h/x.bin"}, True),
        ({"y": "http://h/y.bin"}, False),  # not an input
        ({"x": "http://h/x.bin", "y": "http://h/y.bin"}, False),  # one too many
        (None, True),
    ],
)
def test_warmup_files_name_the_inputs_in_cel_and_pydantic(
    files: dict[str, str] | None, valid: bool
) -> None:
    warmup: dict[str, Any] = {"batchSize": 1, "count": 1, "data": "file" if files else "zero"}
    if files is not None:
        warmup["files"] = files
    spec = {
        "model": _model({}),
        "triton": _defaulted(models.TritonSpec, warmup=[warmup]),
    }
    rules = _schema_at()["x-kubernetes-validations"]
    assert _cel_ok(rules, spec) is valid
    assert _pydantic_ok(models.GeoDeploymentSpec, spec) is valid
    item = _schema_at("triton", "warmup[]")["x-kubernetes-validations"]
    assert _cel_ok(item, warmup)


@pytest.mark.parametrize(
    "triton",
    [
        {"resources": {"limits": {"c p u": 1}}},
        {"nodeSelector": {"bad key!": "a"}},
        {"nodeSelector": {"a/b/c": "a"}},
    ],
)
def test_map_keys_are_the_operators_to_refuse(triton: dict[str, Any]) -> None:
    """A structural schema can't bound a map key's length, so a CEL rule on keys costs
    the API server too much: these pass admission and the operator refuses them
    (Ready=False InvalidSpec, the key named; e2e/test_operator_e2e.py)."""
    obj = _defaulted(models.TritonSpec, **triton)
    assert _cel_ok(_schema_at("triton")["x-kubernetes-validations"], obj)
    assert not _pydantic_ok(models.TritonSpec, obj)


def test_node_selector_values_are_label_values_in_the_schema() -> None:
    values = _schema_at("triton", "nodeSelector")["additionalProperties"]
    assert values["maxLength"] == 63 and values["pattern"] == models.LABEL_VALUE
    assert not _pydantic_ok(models.TritonSpec, {"nodeSelector": {"a": "v" * 64}})


def test_a_first_step_of_100_is_refused_at_admission_with_the_reason() -> None:
    """steps [100] would scale the stable to zero for a canary nobody judged yet (a rollback
    would start cold): the API server refuses it, saying why and what to write instead."""
    rules = _schema_at("rollout")["x-kubernetes-validations"]
    refusing = [r for r in rules if not _cel_ok([r], _defaulted(models.Rollout, steps=[100]))]
    assert [r["message"] for r in refusing] == [models.FIRST_STEP_MESSAGE]
    assert refusing[0]["fieldPath"] == ".steps"
    assert "the first step must be below 100" in refusing[0]["message"]
    assert "[10, 50, 100]" in refusing[0]["message"]
    assert _cel_ok(rules, _defaulted(models.Rollout, steps=[10, 100]))
    with pytest.raises(pydantic.ValidationError, match="the first step must be below 100"):
        models.Rollout(steps=[100])
