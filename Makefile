# GEO — the two commands a newcomer needs:
#   make demo   set everything up and run the main job
#   make test   run every test (installs what it needs into .venv)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: setup system-deps demo test lint unit e2e artifacts crd manifests image clean help

help:
	@echo "make demo   - set up and run the GEO demo"
	@echo "make test   - lint, type-check and run all tests"
	@echo "make crd    - regenerate crds/ and the chart's CRD template from the API models"
	@echo "make manifests - re-render manifests/ from the chart"
	@echo "make image  - build the operator's OCI image archive, no container engine (root)"

$(STAMP): pyproject.toml
	@echo "[setup] creating $(VENV) and installing geo-operator with its dev extras"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)

# Debian's Prometheus, run for real by the metrics tests (apt needs root).
system-deps:
	@command -v prometheus >/dev/null || { \
	  echo "[setup] installing Debian's prometheus"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

artifacts: setup
	@test -f examples/digits/artifacts/measurements.json || $(PY) examples/digits/make_artifacts.py
	@test -f examples/digits-family/artifacts/measurements.json || \
	  $(PY) examples/digits-family/make_artifacts.py

crd: setup
	$(VENV)/bin/geo crd > crds/geodeployments.geo.ai.yaml
	$(VENV)/bin/geo crd --chart > charts/geo-operator/templates/crd.yaml
	$(VENV)/bin/geo alerts > charts/geo-operator/files/geo-alerts.rules.yaml
	$(VENV)/bin/geo dashboard > charts/geo-operator/files/geo-dashboard.json

manifests:
	bash e2e/render-manifests.sh > manifests/geo-operator.yaml

# The operator's OCI image without a container engine (root: mmdebstrap, chroot), about
# 2-3 min: out/image/geo-operator-<version>.tar, its runtime dependencies pinned to the
# versions this venv tests (pip constraints from its freeze). The e2e suite builds it too.
image: setup
	@mkdir -p out/image
	@$(VENV)/bin/pip freeze --exclude-editable | grep '==' > out/image/constraints.txt
	CONSTRAINTS=out/image/constraints.txt PYTHON=$(PY) bash image/build-image.sh

lint: setup
	$(VENV)/bin/ruff check operator tests e2e examples
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: setup system-deps artifacts
	$(PY) -m pytest tests

# Builds the local cluster's binaries on first use (about 10-15 min, cached).
e2e: setup artifacts
	$(PY) -m pytest e2e

test: lint unit e2e

demo: setup artifacts
	$(PY) e2e/demo.py

clean:
	rm -rf $(VENV) examples/digits/artifacts examples/digits-family/artifacts .pytest_cache .mypy_cache .ruff_cache
