"""The `geo` verbs' input and output: reading a GeoDeployment file or status, UsageError,
result files.

Called by the verb modules. `load_spec` validates a GeoDeployment exactly as
the operator does; what is wrong with it raises `UsageError`, which `cli.main`
prints without a traceback and turns into exit code 2.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pydantic
import yaml

from geo_operator.api import models


def emit(data: Any, output: str) -> None:
    """Print structured output as ``-o`` asks: "json" or "yaml" (keys in their order)."""
    if output == "yaml":
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    else:
        print(json.dumps(data, indent=2))


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit code 2."""


def _read_yaml(path: str, what: str, all_documents: bool) -> Any:
    """The YAML at ``path`` ('-' = stdin): every document, or the one; each way a file
    can't be read or parsed is a UsageError naming it (``what`` it should have been)."""
    try:
        with open(path if path != "-" else "/dev/stdin", encoding="utf-8") as stream:
            if all_documents:
                return [d for d in yaml.safe_load_all(stream) if d]
            return yaml.safe_load(stream)
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise UsageError(f"{path} is not valid {what}: {error}") from error
    except UnicodeDecodeError as error:
        raise UsageError(
            f"{path} is not UTF-8 text: {error.reason} at byte {error.start}"
        ) from error
    except RecursionError as error:
        raise UsageError(f"{path} nests too deep to be valid {what}") from error


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


_SCALARS = {str: "string", int: "number", float: "number", bool: "boolean"}


def _document(document: Any) -> str:
    """What one YAML document is, in words: "a Deployment", "a YAML list of 2 items"."""
    if isinstance(document, dict):
        kind = document.get("kind")
        if kind is None:
            return "a mapping without kind"
        return f"a {kind}" if isinstance(kind, str) else f"a mapping whose kind is {kind!r}"
    if isinstance(document, list):
        return f"a YAML list of {_plural(len(document), 'item')}"
    noun = _SCALARS.get(type(document), type(document).__name__)
    return f"a YAML {noun} ({str(document)[:40]!r})"


def _holds(documents: list[Any]) -> str:
    """What a file that does not hold exactly one GeoDeployment holds instead, in words."""
    ours = sum(isinstance(d, dict) and d.get("kind") == models.KIND for d in documents)
    if ours > 1:
        return f"{ours}: give each its own file"
    if not documents:
        return "no YAML document (the file is empty)"
    if len(documents) == 1:
        return f"{_document(documents[0])}, not a mapping with kind: {models.KIND}"
    what = "; ".join(_document(d) for d in documents[:5])
    more = f"; {len(documents) - 5} more" if len(documents) > 5 else ""
    return f"{len(documents)} YAML documents ({what}{more}), none with kind: {models.KIND}"


def load_geodeployment(path: str) -> dict[str, Any]:
    """The one GeoDeployment in the YAML file at ``path`` ('-' = stdin), unvalidated."""
    documents = _read_yaml(path, "YAML", all_documents=True)
    found = [d for d in documents if isinstance(d, dict) and d.get("kind") == models.KIND]
    if len(found) != 1:
        raise UsageError(
            f"{path} must hold exactly one {models.KIND}; it holds {_holds(documents)}"
        )
    body = found[0]
    if body.get("apiVersion") != models.API_VERSION:
        raise UsageError(f"apiVersion must be {models.API_VERSION}, got {body.get('apiVersion')!r}")
    return body


def spec_of(body: dict[str, Any]) -> models.GeoDeploymentSpec:
    """The validated spec of a GeoDeployment; every invalid field named in the error."""
    try:
        return models.parse_spec(body.get("spec") or {})
    except pydantic.ValidationError as error:
        lines = [f"  spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()]
        raise UsageError("invalid GeoDeployment:\n" + "\n".join(lines)) from error


def load_spec(path: str) -> models.GeoDeploymentSpec:
    """`spec_of(load_geodeployment(path))`: for the verbs that need only the spec."""
    return spec_of(load_geodeployment(path))


def load_status(path: str) -> models.GeoDeploymentStatus:
    """A GeoDeployment status from the YAML or JSON file at ``path``: the whole object
    (``kubectl get geod NAME -o yaml``) or its ``.status`` alone; fields of other versions
    are ignored, as the operator ignores them."""
    document = _read_yaml(path, "YAML or JSON", all_documents=False)
    if not isinstance(document, dict):
        holds = "nothing (the file is empty)" if document is None else _document(document)
        raise UsageError(
            f"{path} must hold a {models.KIND} or its status, a mapping; it holds {holds}"
        )
    if document.get("kind") == "List":
        raise UsageError(f"{path} is a List: give one {models.KIND}")
    whole = "status" in document and ({"kind", "apiVersion", "metadata", "spec"} & set(document))
    status = document.get("status") if whole else document
    try:
        return models.parse_status(status or {})
    except pydantic.ValidationError as error:
        lines = [
            f"  status.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        ]
        raise UsageError(f"invalid status in {path}:\n" + "\n".join(lines)) from error


def write_result(path: str | None, text: str) -> None:
    """The tuning Job's result channel: compact JSON in the termination-message file.

    Best effort: a file that can't be written is reported on stderr, not raised.
    """
    if not path:
        return
    try:
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(text)
    except OSError as error:
        print(f"geo tune: cannot write {path}: {error.strerror}", file=sys.stderr)
