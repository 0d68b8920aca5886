# The two entry points of the README: `make quickstart` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ENV_STAMP := $(VENV)/.env-installed
EXT_STAMP := $(VENV)/.extension-built
EXT_SOURCES := setup.py $(shell find csrc -type f 2>/dev/null)

.PHONY: setup test test-fast lint quickstart docs docs-check check-cuda check-gpu clean

## setup: create .venv, install torch/Detectron2/deps/dev tools, build sparse_detr._C (idempotent)
setup: $(EXT_STAMP)

$(ENV_STAMP): tools/setup_env.sh
	PYTHON=$(PYTHON) bash tools/setup_env.sh
	touch $@

$(EXT_STAMP): $(ENV_STAMP) $(EXT_SOURCES)
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

## lint: ruff over the whole repository
lint: setup
	$(PY) -m ruff check .

## test: setup + lint + the pytest suite (which also builds the docs and runs every documented snippet)
test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest tests --ignore=tests/export --ignore=tests/docs
	$(PY) -m pytest tests/docs
	$(PY) -m pytest tests/export  # the deployment runtimes (ONNX Runtime, OpenVINO) in a process of their own

## test-fast: the inner loop: the suite without the slow tests (exports, wheel, training runs, subprocess
## runs of the tools; see tests/conftest.py), about 75 s on 2 cores
test-fast: setup
	$(PY) -m pytest tests -m "not slow" -q

## quickstart: setup + synthetic data + train the quickstart model on CPU + evaluate + visualise
quickstart: setup
	PYTHON=$(PY) bash tools/quickstart.sh

## docs: build the documentation site into docs/_build/html, warnings as errors
docs: setup
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

## docs-check: screenshots of the built site in headless Chromium (Debian's chromium package), not in CI
docs-check: docs
	bash tools/docs_screenshots.sh docs/_build/html docs/_build/screenshots

## check-cuda: compile the CUDA kernels for sm_90 into a throw-away directory (no GPU needed)
check-cuda: setup
	PYTHON=$(PY) bash tools/check_cuda_build.sh

## check-gpu: the whole GPU check on a machine with a CUDA GPU (tools/gpu_check.sh; wheels from
## tools/gpu_wheels.sh in .whl/); `make check-gpu ARGS=--dry-run` runs its CPU steps here
check-gpu:
	bash tools/gpu_check.sh $(ARGS)

clean:
	rm -rf build *.egg-info sparse_detr/_C*.so docs/_build
