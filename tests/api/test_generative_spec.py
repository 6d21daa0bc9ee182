"""A generative GeoDeployment (model.kind: generative, gguf artifacts): what admission
refuses, with the field named, the CRD's CEL and pydantic agreeing; and what the builders
make of the example (a decoupled llama.cpp model, no Triton batching, no tuning Job)."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import celpy
import pydantic
import pytest
import yaml

from geo_operator.api import crd, models
from geo_operator.builders import children, plan
from geo_operator.triton import model_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "manifests" / "examples" / "pycode.yaml"


def _spec() -> dict[str, Any]:
    return dict(yaml.safe_load(EXAMPLE.read_text())["spec"])


def _rules(schema: dict[str, Any]) -> list[dict[str, str]]:
    return list(schema.get("x-kubernetes-validations", []))


def _cel_ok(spec: dict[str, Any]) -> bool:
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    env = celpy.Environment()
    for rules, obj in (
        (_rules(schema), spec),
        (_rules(schema["properties"]["model"]), spec["model"]),
    ):
        for rule in rules:
            program = env.program(env.compile(rule["rule"]))
            if not bool(program.evaluate({"self": celpy.json_to_cel(obj)})):
                return False
    return True


def _changed(**paths: Any) -> dict[str, Any]:
    spec = copy.deepcopy(_spec())
    for path, value in paths.items():
        node = spec
        *parents, leaf = path.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return spec


def test_the_example_is_admitted_by_both() -> None:
    spec = _spec()
    assert _cel_ok(spec)
    parsed = models.parse_spec(spec)
    assert parsed.model.generative and not parsed.model.inputs
    # as the API server stores it: every default filled in, dynamicBatching's too
    defaults = models.TritonSpec().model_dump(by_alias=True, exclude_none=True, mode="json")
    stored = _changed(triton__dynamicBatching=defaults["dynamicBatching"], triton__maxBatchSize=0)
    assert _cel_ok(stored)
    models.parse_spec(stored)


GGUF = {"name": "x", "precision": "int4", "format": "gguf", "uri": "http://h/x", "accuracy": 1}
ONNX = {"name": "x", "precision": "fp32", "format": "onnx", "uri": "http://h/x", "accuracy": 1}
TENSOR = {"name": "x", "dataType": "TYPE_FP32", "dims": [1]}

REFUSED = [
    (
        _changed(triton__dynamicBatching={"maxQueueDelayMicroseconds": 500}),
        "triton.dynamicBatching does not apply to a generative model",
    ),
    (_changed(triton__maxBatchSize=8), "triton.maxBatchSize does not apply to a generative"),
    (_changed(model__inputs=[TENSOR]), "model.inputs and model.outputs do not apply"),
    (_changed(model__artifacts=[ONNX]), "a generative model's artifacts are all format gguf"),
    (
        _changed(model__kind="predictive", model__inputs=[TENSOR], model__outputs=[TENSOR]),
        "a generative model's artifacts are all format gguf, and gguf is for generative",
    ),
    (
        _changed(triton__engine={"contextLength": 128, "maxTokensCap": 128}),
        "maxTokensCap 128 must be below contextLength 128",
    ),
    (_changed(triton__engine={"slots": 65}), "less than or equal to 64"),
    (
        # the API server fills in the metric's default, accuracy: a text has no labels
        _changed(model__evaluation={"uri": "http://h/heldout.txt", "metric": "accuracy"}),
        "a generative model's model.evaluation.metric is agreement, perplexity",
    ),
]


@pytest.mark.parametrize(("spec", "words"), REFUSED, ids=[w[:40] for _, w in REFUSED])
def test_what_cannot_apply_to_a_generative_model_is_refused_naming_the_field(
    spec: dict[str, Any], words: str
) -> None:
    with pytest.raises(pydantic.ValidationError, match=words):
        models.parse_spec(spec)
    if "than or equal" not in words and "must be below" not in words:  # schema bounds, pydantic
        assert not _cel_ok(spec)


def test_token_objectives_and_engine_levers_belong_to_generative_models() -> None:
    predictive = {
        "model": {"name": "m", "inputs": [TENSOR], "outputs": [TENSOR], "artifacts": [ONNX]},
    }
    assert _cel_ok(predictive)
    models.parse_spec(predictive)
    for extra, words in (
        ({"objectives": {"timeToFirstTokenP99Ms": 100}}, r"apply to a\s+generative model only"),
        ({"triton": {"engine": {"slots": 2}}}, "triton.engine applies to a generative model"),
    ):
        spec = {**predictive, **extra}
        with pytest.raises(pydantic.ValidationError, match=words):
            models.parse_spec(spec)
        assert not _cel_ok(spec)
    for metric in ("perplexity", "kl-divergence"):
        spec = {"model": {**predictive["model"], "evaluation": {"uri": "http://h/e.npz"}}}
        spec["model"]["evaluation"]["metric"] = metric
        with pytest.raises(pydantic.ValidationError, match="score held-out text: a generative"):
            models.parse_spec(spec)
        assert not _cel_ok(spec)
        generative_ = _changed(model__evaluation={"uri": "http://h/heldout.txt", "metric": metric})
        assert _cel_ok(generative_)
        models.parse_spec(generative_)
    bare = {"model": {"name": "m", "artifacts": [ONNX]}}
    with pytest.raises(pydantic.ValidationError, match=r"needs model\.inputs and model\.outputs"):
        models.parse_spec(bare)
    assert not _cel_ok(bare)
    generative = {"model": {"name": "m", "kind": "generative", "artifacts": [GGUF]}}
    assert _cel_ok(generative)
    models.parse_spec(generative)


def test_the_builders_serve_a_gguf_with_llama_cpp_decoupled_and_tune_no_batch() -> None:
    spec = models.parse_spec(_spec())
    decided = plan.plan(
        name="pycode",
        namespace="default",
        uid="u",
        spec=spec,
        status=models.GeoDeploymentStatus(),
        current_replicas=None,
    )
    assert decided.target is not None and decided.tuning_keys == {}  # no tuning Job
    assert decided.tuning_key is None
    assert decided.batch_tuned and decided.batch_reason == "EngineBatches"
    assert "decodes up to 4 sequences together" in decided.batch_message
    data = children.config_map_data(decided.target)
    assert "class TritonPythonModel" in data["model.py"] and "llama_cpp" in data["model.py"]
    config = model_config.parse(data["config.pbtxt"])
    assert config.backend == "python" and config.max_batch_size == 0
    assert config.model_transaction_policy.decoupled
    assert not config.HasField("dynamic_batching")
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params == {
        "gguf_file": "model.gguf",
        "slots": "4",
        "context_length": "256",
        "max_tokens_cap": "128",
        "n_batch": "512",
        "n_threads": "2",
    }
    assert [i.name for i in config.input][:3] == ["text_input", "stream", "max_tokens"]
    assert config.output[0].name == "text_output"
    script = children._init_script(decided.target)
    assert "model.gguf" in script and "model.py" in script and "--sha256" in script


@pytest.mark.parametrize(
    ("engine", "words"),
    [
        ({"backend": "tensorrtllm"}, r"needs triton\.engine\.tensorrtllmEngine"),
        ({"tensorrtllmEngine": "http://h/e.tar"}, r"tensorrtllmEngine applies only to"),
        ({"backend": "tensorrt"}, "'vllm' or 'tensorrtllm'"),
    ],
)
def test_the_tensorrtllm_backend_needs_a_built_engine_not_the_gguf(
    engine: dict[str, Any], words: str
) -> None:
    spec = _changed(triton__engine=engine)
    with pytest.raises(pydantic.ValidationError, match=words):
        models.parse_spec(spec)
    if "backend" not in engine or engine["backend"] == "tensorrtllm":
        schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        engine_schema = schema["properties"]["spec"]["properties"]["triton"]["properties"]["engine"]
        env = celpy.Environment()
        failed = [
            rule
            for rule in _rules(engine_schema)
            if not bool(
                env.program(env.compile(rule["rule"])).evaluate(
                    {"self": celpy.json_to_cel({"backend": "vllm", **engine})}
                )
            )
        ]
        assert failed and all(r["fieldPath"] == ".tensorrtllmEngine" for r in failed)
    ok = _changed(triton__engine={"backend": "tensorrtllm", "tensorrtllmEngine": "http://h/e.tar"})
    ok["triton"]["resources"]["limits"]["nvidia.com/gpu"] = 1
    assert models.parse_spec(ok).triton.engine is not None


def test_the_tensorrtllm_backend_refuses_a_cpu_pod_naming_the_field() -> None:
    engine = {"backend": "tensorrtllm", "tensorrtllmEngine": "http://h/e.tar"}
    triton = copy.deepcopy(_spec()["triton"])
    triton["engine"] = engine
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    triton_schema = schema["properties"]["spec"]["properties"]["triton"]
    env = celpy.Environment()
    (rule,) = [r for r in _rules(triton_schema) if r["fieldPath"] == ".engine.backend"]
    program = env.program(env.compile(rule["rule"]))
    # (CEL checks the limit is there, pydantic that it isn't 0: reading the value in CEL
    # costs more than the API server's budget, which refused the whole CRD)
    for gpus, admitted in ((None, False), ("0", None), (1, True)):
        limits = triton.setdefault("resources", {}).setdefault("limits", {})
        limits.pop("nvidia.com/gpu", None)
        if gpus is not None:
            limits["nvidia.com/gpu"] = gpus
        spec = _changed(triton=copy.deepcopy(triton))
        cel = bool(program.evaluate({"self": celpy.json_to_cel(triton)}))
        assert cel == (admitted is not False)
        if admitted:
            models.parse_spec(spec)
        else:
            with pytest.raises(pydantic.ValidationError, match=r"tensorrtllm needs a GPU"):
                models.parse_spec(spec)
