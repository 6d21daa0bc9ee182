# GEO — the two commands a newcomer needs:
#   make demo   set everything up and run the main job
#   make test   run every test (installs what it needs into .venv)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
# llama-cpp-python has no wheel on PyPI for this platform: it is compiled from its sdist
# once (about 6 min on two cores, measured 2026-12-05) into this folder and installed from it.
WHEELS ?= $(HOME)/.cache/geo-wheels
LLAMA_CPP := llama-cpp-python==0.3.36

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
	@ls $(WHEELS)/llama_cpp_python-$(subst llama-cpp-python==,,$(LLAMA_CPP))-*.whl >/dev/null 2>&1 || { \
	  echo "[setup] compiling $(LLAMA_CPP) from source, once (about 6 min on two cores)"; \
	  mkdir -p $(WHEELS) && CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	  CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF" \
	  $(PY) -m pip wheel -q --no-deps '$(LLAMA_CPP)' -w $(WHEELS); }
	@$(PY) -m pip install -q --find-links $(WHEELS) -e '.[dev]'
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
	@test -f examples/pycode/artifacts/measurements.json || $(PY) examples/pycode/make_artifacts.py

crd: setup
	$(VENV)/bin/geo crd > crds/geodeployments.geo.ai.yaml
	$(VENV)/bin/geo crd --chart > charts/geo-operator/templates/crd.yaml
	@mkdir -p docs/reference
	$(VENV)/bin/geo crd --reference > docs/reference/api.md
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
	rm -rf $(VENV) examples/digits/artifacts examples/digits-family/artifacts examples/pycode/artifacts .pytest_cache .mypy_cache .ruff_cache
