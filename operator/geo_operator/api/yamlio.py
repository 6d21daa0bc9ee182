"""YAML output for humans: block style for multi-line strings, no anchors.

Used by `geo crd`, `geo render` and the golden tests, so that a config.pbtxt
inside a ConfigMap reads as the file it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml


class Dumper(yaml.SafeDumper):
    """SafeDumper that writes shared objects out in full and multi-line text as `|` blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        # Trailing spaces on a line force quoting; strip them so `|` is allowed.
        value = "\n".join(line.rstrip() for line in value.split("\n"))
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


Dumper.add_representer(str, _str)


def dump(obj: Any) -> str:
    return str(yaml.dump(obj, Dumper=Dumper, sort_keys=False, width=100))


def dump_all(objs: Iterable[Any]) -> str:
    return str(yaml.dump_all(list(objs), Dumper=Dumper, sort_keys=False, width=100))
