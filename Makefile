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

.PHONY: setup system-deps run test bench clean

setup: $(STAMP) system-deps

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
	@if command -v espeak-ng >/dev/null && command -v ffmpeg >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng ffmpeg >/dev/null) \
		|| echo "warning: could not install espeak-ng/ffmpeg; the synthetic world will use its syllable synthesiser"; \
	else echo "note: espeak-ng/ffmpeg missing and no root; the synthetic world will use its syllable synthesiser"; fi

# `dvc repro` with one local Prefect server for the run: its UI shows the stages live (flows/local_server.py).
run: setup
	$(BIN)/talkalign repro

test: setup
	$(BIN)/pytest

bench: setup
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf .prefect mlflow.db mlartifacts data reports .dvc/cache .dvc/tmp
