# talkalign: `make run` (set up + the whole toy pipeline), `make test` (set up + the test suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed

# Stage commands (`talkalign ...`) and tools resolve from the venv; services stay local and quiet.
export PATH := $(BIN):$(PATH)
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export MLFLOW_DISABLE_TELEMETRY ?= true
export GX_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: setup system-deps extractor-env run test bench gpu-check clean app ablations

setup: $(STAMP) extractor-env system-deps

# The extractor env for `ingest.keypoints.extractor: mediapipe|auto`: mediapipe needs protobuf<5 (our venv has 7),
# so it lives beside .venv and runs as a subprocess. --no-deps with the exact list in constraints-extract.txt
# (mediapipe's declared jax/jaxlib/opencv-contrib are not imported at run time). Optional: without a network the
# warning below is printed and ingest with `extractor: mediapipe` says to run `make setup`.
EXTRACT_VENV := .venv-extract
EXTRACT_STAMP := $(EXTRACT_VENV)/.installed
extractor-env: $(EXTRACT_STAMP)
$(EXTRACT_STAMP): constraints-extract.txt
	@rm -rf $(EXTRACT_VENV)
	@$(PYTHON) -m venv $(EXTRACT_VENV) && \
	$(EXTRACT_VENV)/bin/pip install -q --disable-pip-version-check --no-deps -r constraints-extract.txt && \
	$(EXTRACT_VENV)/bin/python -c "import mediapipe" && touch $@ \
	|| { rm -rf $(EXTRACT_VENV); echo "warning: could not build $(EXTRACT_VENV) (no network?); ingest can only use keypoint sidecars"; }

# pip first (the venv's old pip backtracks for 20+ minutes on botocore pins), then torch alone (the CPU
# build on this machine; a bare `torch` would pull CUDA), then everything at the exact versions in constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -U "pip==26.3"
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $@

# ffmpeg and espeak-ng are optional (PyAV bundles its own codecs; speech falls back to a syllable synthesiser),
# so a machine without root still works; with root we install them.
system-deps:
	@if command -v espeak-ng >/dev/null && command -v ffmpeg >/dev/null && command -v chromium >/dev/null \
		&& command -v chromedriver >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng ffmpeg chromium chromium-driver >/dev/null) \
		|| echo "warning: could not install espeak-ng/ffmpeg/chromium; the synthetic world will use its syllable synthesiser and the browser tests skip"; \
	else echo "note: espeak-ng/ffmpeg/chromium missing and no root; the synthetic world will use its syllable synthesiser and the browser tests skip"; fi

# `dvc repro` with one local Prefect server for the run: its UI shows the stages live (flows/local_server.py).
run: setup
	$(BIN)/talkalign repro

# The linter first (seconds): an undefined name or an unused import fails the suite before it starts.
test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest

bench: setup
	$(BIN)/python -m benchmarks.run

# On a GPU machine: the 1.3B architecture in bf16, one phase-1 step, one DPO step, one 4-step sample (benchmarks/gpu_check.py).
gpu-check: setup
	$(BIN)/python -m benchmarks.gpu_check

# The preference ablations as DVC experiments of the committed params -> reports/ablations.md (README "Preference ablations").
ablations: setup
	$(BIN)/talkalign ablations $(ABLATION_ARGS)

# The browser app on 127.0.0.1:7860 (animate, rate, compare, admin); flags: `make app APP_ARGS="--candidates data/candidates"`.
app: setup
	$(BIN)/talkalign app $(APP_ARGS)

clean:
	rm -rf .prefect mlflow.db mlartifacts data reports .dvc/cache .dvc/tmp
