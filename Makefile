# Entry points for people and CI. `make test` is what CI runs (.ci/run calls it).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STACK ?= lab
MLP := $(BIN)/mlplatform
# Offline sources: the upstream mirror beside the project, where there is one.
MIRROR_DEFAULT := $(wildcard $(abspath ../shared/upstream))
export MLPLATFORM_MIRROR ?= $(MIRROR_DEFAULT)

.PHONY: setup tools tools-test lint unit e2e test cluster down up validate bench test-engine clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Every pinned tool, Pulumi engine included (fails, naming the tool, where one cannot be built).
tools: setup
	$(MLP) tools

# The tools the test suite needs: the local control plane and the renderers.
tools-test: setup
	$(MLP) tools --only cluster --only render

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

validate: setup
	$(MLP) validate
	@if [ -n "$(MLPLATFORM_MIRROR)" ]; then $(MLP) mirror check; fi

# Unit tests render stacks, which runs kustomize on upstream bases: the render tools come first.
unit: tools-test
	$(BIN)/pytest -m "not e2e and not engine"

e2e: tools-test
	$(BIN)/pytest -m e2e

# `pulumi up/preview/refresh/destroy` of every stack on the local plane: needs the engine.
test-engine: tools
	$(BIN)/pytest -m engine

test: lint validate unit e2e

cluster: tools-test
	$(MLP) cluster up --stack $(STACK)

down: setup
	$(MLP) cluster down

up: setup
	$(MLP) up $(STACK)

bench: tools-test
	$(BIN)/python benchmarks/bench_toolchain_and_plane.py
	$(BIN)/python benchmarks/bench_tenancy_scale.py

clean: down
	$(MLP) cluster down --purge
	rm -rf .mlplatform
