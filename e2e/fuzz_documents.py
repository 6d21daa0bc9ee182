"""GeoDeployment documents for the fuzz story (e2e/test_fuzz_e2e.py), by hypothesis.

Three classes, each from the example (manifests/examples/digits.yaml):

* ``valid``: the example with knobs set to values inside their bounds (replicas,
  maxBatchSize, autoscaling on or off, tuning, the rollout strategy, instances);
* ``near``: the example with one node made wrong — another type, a number past any
  bound, an empty or huge or unicode string, an unknown field beside it, a list
  repeated past its bound, or removed when it is needed;
* ``wild``: random JSON as the spec or one of its parts, nesting 60 deep, a list of
  3,000 artifacts, a name no object can take.

A `Case` knows its class, says what it changed (for the report) and makes the
document for a name and namespace.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import yaml
from e2e.harness.cluster import EXAMPLE
from hypothesis import HealthCheck
from hypothesis import strategies as st

HEALTH_CHECKS = (HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example)
BASE: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())

Path = tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class Case:
    kind: str  # valid | near | wild
    what: str  # what was changed, for the report and a failure's message
    change: Callable[[dict[str, Any]], None] = dataclasses.field(repr=False)
    name: str | None = None  # a wild name instead of the given one

    def document(self, name: str, namespace: str) -> dict[str, Any]:
        body = copy.deepcopy(BASE)
        body["metadata"] = {"name": self.name if self.name is not None else name}
        body["metadata"]["namespace"] = namespace
        self.change(body)
        return body


def _paths(value: Any, path: Path = ()) -> list[Path]:
    """Every node under the spec (containers too), as paths from the document's root."""
    found = [path] if path else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*path, index))
    return found


SPEC_PATHS = [("spec", *p) for p in _paths(BASE["spec"])]


def _dotted(path: Path) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _set(body: dict[str, Any], path: Path, value: Any) -> None:
    node: Any = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _remove(body: dict[str, Any], path: Path) -> None:
    node: Any = body
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]


def _get(body: dict[str, Any], path: Path) -> Any:
    node: Any = body
    for key in path:
        node = node[key]
    return node


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.text(min_size=1, max_size=12), children, max_size=6)
    ),
    max_leaves=25,
)
WRONG = st.sampled_from(
    [
        "text",
        "",
        "x" * 5000,
        "模型-🚀\u0000\u202e",
        " padded ",
        7,
        0,
        -1,
        2**31,
        2**62,
        3.5,
        -0.0,
        1e300,
        True,
        None,
        [],
        [1, "a", None],
        {},
        {"noSuchField": 1},
    ]
)


@st.composite
def _valid(draw: st.DrawFn) -> Case:
    knobs: dict[Path, Any] = {}
    knobs[("spec", "replicas")] = draw(st.integers(min_value=0, max_value=5))
    knobs[("spec", "triton", "maxBatchSize")] = draw(st.sampled_from([0, 1, 8, 64, 4096]))
    knobs[("spec", "triton", "instanceCount")] = draw(st.integers(min_value=1, max_value=4))
    knobs[("spec", "model", "selection", "policy")] = draw(
        st.sampled_from(["best-score", "smallest", "fastest", "min-cost"])
    )
    autoscaling = draw(st.booleans())
    knobs[("spec", "autoscaling")] = (
        {"enabled": True, "minReplicas": 1, "maxReplicas": draw(st.integers(1, 10))}
        if autoscaling
        else {"enabled": False}
    )
    knobs[("spec", "rollout")] = {"strategy": draw(st.sampled_from(["canary", "rolling"]))}
    knobs[("spec", "model", "artifacts", 0, "name")] = draw(
        st.from_regex(r"\A[a-z][a-z0-9-]{0,20}[a-z0-9]\Z", fullmatch=True)
    )

    def change(body: dict[str, Any]) -> None:
        for path, value in knobs.items():
            _set(body, path, value)

    what = ", ".join(f"{_dotted(p)}={v!r}" for p, v in knobs.items())
    return Case("valid", what, change)


@st.composite
def _near(draw: st.DrawFn) -> Case:
    path = draw(st.sampled_from(SPEC_PATHS))
    how = draw(st.sampled_from(["replace", "replace", "replace", "remove", "repeat", "extra"]))
    original = _get(BASE, path)
    if how == "remove":

        def change(body: dict[str, Any]) -> None:
            _remove(body, path)

        return Case("near", f"{_dotted(path)} removed", change)
    if how == "repeat" and isinstance(original, list):
        times = draw(st.sampled_from([2, 40, 300]))

        def change(body: dict[str, Any]) -> None:
            _set(body, path, original * times)

        return Case("near", f"{_dotted(path)} repeated x{times}", change)
    if how == "extra" and isinstance(original, dict):
        key = draw(st.sampled_from(["noSuchField", "Replicas", "maxbatchsize", "ünicode"]))

        def change(body: dict[str, Any]) -> None:
            _get(body, path)[key] = 1

        return Case("near", f"{_dotted(path)}.{key} added", change)
    value = draw(WRONG)

    def change(body: dict[str, Any]) -> None:
        _set(body, path, value)

    return Case("near", f"{_dotted(path)}={str(value)[:30]!r}", change)


@st.composite
def _wild(draw: st.DrawFn) -> Case:
    how = draw(st.sampled_from(["spec", "part", "deep", "long", "name", "top"]))
    if how == "spec":
        value = draw(JSON)

        def change(body: dict[str, Any]) -> None:
            body["spec"] = value

        return Case("wild", f"spec={str(value)[:40]!r}", change)
    if how == "part":
        path = draw(st.sampled_from(SPEC_PATHS))
        value = draw(JSON)

        def change(body: dict[str, Any]) -> None:
            _set(body, path, value)

        return Case("wild", f"{_dotted(path)}={str(value)[:40]!r}", change)
    if how == "deep":
        where = draw(st.sampled_from([("spec", "triton"), ("spec", "model"), ("spec",)]))
        nested: Any = 1
        for _ in range(60):
            nested = {"a": nested}

        def change(body: dict[str, Any]) -> None:
            _set(body, (*where, "nested"), nested)

        return Case("wild", f"{_dotted(where)}.nested 60 deep", change)
    if how == "long":
        count = draw(st.sampled_from([65, 3000]))

        def change(body: dict[str, Any]) -> None:
            first = body["spec"]["model"]["artifacts"][0]
            body["spec"]["model"]["artifacts"] = [{**first, "name": f"a{i}"} for i in range(count)]

        return Case("wild", f"{count} artifacts", change)
    if how == "name":
        name = draw(
            st.one_of(
                st.text(min_size=1, max_size=80),
                st.sampled_from(["x" * 64, "UPPER", "1digits", "a.b", "-a", "a_b", "ok-name"]),
            )
        )
        return Case("wild", f"metadata.name={name[:30]!r}", lambda body: None, name=name)
    key = draw(
        st.text(min_size=1, max_size=12).filter(
            lambda k: k not in ("apiVersion", "kind", "metadata", "spec")
        )
    )
    value = draw(JSON)

    def change(body: dict[str, Any]) -> None:
        body[key] = value

    return Case("wild", f"top-level {key!r}={str(value)[:30]!r}", change)


def documents() -> st.SearchStrategy[tuple[Case, Case, Case]]:
    """One case of each class: the caller takes them in turn, a third each (hypothesis'
    own choices between strategies favour the first)."""
    return st.tuples(_valid(), _near(), _wild())
