"""Where the repository's test inputs are: the checkout, tests/fixtures, the examples."""

from __future__ import annotations

import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
ARTIFACTS = ROOT / "examples" / "digits" / "artifacts"
EXAMPLE = ROOT / "manifests" / "examples" / "digits.yaml"

# The digits-family example (examples/digits-family): built by its script when absent.
FAMILY = ROOT / "examples" / "digits-family"
FAMILY_SCRIPT = FAMILY / "make_artifacts.py"
FAMILY_ARTIFACTS = FAMILY / "artifacts"
FAMILY_MANIFEST = ROOT / "manifests" / "examples" / "digits-family.yaml"
FAMILY_PREFIX = "http://models.geo.local/digits-family/"

# The pycode example (examples/pycode): a small llama model and its GGUF family.
PYCODE = ROOT / "examples" / "pycode"
PYCODE_ARTIFACTS = PYCODE / "artifacts"
