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

.PHONY: overlays security setup tools tools-test examples-env promtool lint unit test-fast e2e engine test cluster down up validate bench test-engine clean policy-check policy-preview checkov

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

# The pinned upstream bases in overlays/upstream/ (the stack's mirror, else online), so that
# `kustomize build overlays/<component>/<env>` works as it is.
overlays: setup
	$(MLP) overlays prepare --stack $(STACK)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

validate: setup
	$(MLP) validate
	@if [ -n "$(MLPLATFORM_MIRROR)" ]; then $(MLP) mirror check; fi
	$(MAKE) policy-check

# The policy pack (policies/) over every shipped stack, offline: the program runs under mocks
# (kustomize builds upstream bases) and any mandatory violation fails.
SHIPPED_STACKS := lab openshift cloud
# The stacks are checked side by side (one core each), their reports printed in order.
POLICY_LOGS := .mlplatform/policy-check
policy-check: tools-test
	@mkdir -p $(POLICY_LOGS); pids=(); \
	for stack in $(SHIPPED_STACKS); do \
	  $(MLP) policy check --stack $$stack > $(POLICY_LOGS)/$$stack.log 2>&1 & pids+=($$!); \
	done; \
	status=0; index=0; \
	for stack in $(SHIPPED_STACKS); do \
	  wait $${pids[$$index]} || status=1; index=$$((index + 1)); \
	  echo "---- mlplatform policy check --stack $$stack"; cat $(POLICY_LOGS)/$$stack.log; \
	done; exit $$status

# What a pipeline with the Pulumi engine and cluster access runs before `pulumi up`: each
# stack's preview gated by the pack, with its environment's config.
POLICY_STACKS ?= $(SHIPPED_STACKS)
policy-preview: setup
	for stack in $(POLICY_STACKS); do \
	  env=$$($(BIN)/python -c 'import sys; from mlplatform.config import load_stack; print(load_stack(sys.argv[1]).config.environment)' $$stack); \
	  PATH="$(CURDIR)/.mlplatform/bin:$(CURDIR)/$(BIN):$$PATH" pulumi preview --stack $$stack --non-interactive \
	    --policy-pack policies --policy-pack-config policies/config.$$env.json; \
	done

# checkov (its own virtualenv: its pins clash with pytest's) over every stack's render;
# failures outside policies/checkov-skips.yaml fail the build. The virtualenv lives in the user's
# cache, one per pinned version, so a fresh clone does not install checkov again.
USER_CACHE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/mlplatform
checkov: tools-test
	@version=$$($(BIN)/python -c 'from mlplatform.lock import load_lock; print(load_lock().python["checkov"])'); \
	venv="$(USER_CACHE)/venvs/checkov-$$version"; \
	if [ "$$($$venv/bin/checkov --version 2>/dev/null)" != "$$version" ]; then \
	  rm -rf "$$venv" && $(PYTHON) -m venv "$$venv" && "$$venv/bin/pip" install --quiet "checkov==$$version"; \
	fi; \
	$(BIN)/python -m mlplatform.checkov_scan --checkov "$$venv/bin/checkov" $(SHIPPED_STACKS)

# The examples' own environment: the kfp SDK pins protobuf apart from the Pulumi SDK's.
EXAMPLES_VENV := .venv-examples
examples-env: $(EXAMPLES_VENV)/.installed

$(EXAMPLES_VENV)/.installed: examples/requirements.txt
	$(PYTHON) -m venv $(EXAMPLES_VENV)
	$(EXAMPLES_VENV)/bin/pip install --quiet -r examples/requirements.txt
	touch $@

# promtool (alert rule checks and rule unit tests) from the Debian package the lock names;
# fails unless it reports the version the lock records.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
LOCKED = $(BIN)/python -c 'import sys; from mlplatform.lock import load_lock; print(load_lock().raw["packages"]["promtool"][sys.argv[1]])'
promtool: setup
	@version=$$($(LOCKED) version); \
	if ! command -v promtool >/dev/null; then \
	  $(SUDO) apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$($(LOCKED) debian); \
	fi; \
	found=$$(promtool --version 2>&1 | head -1); \
	if ! grep -Eq "version $${version//./\\.}([^0-9.]|$$)" <<<"$$found"; then \
	  echo "promtool $$version expected (versions.lock.yaml packages.promtool), found: $$found" >&2; exit 1; \
	fi

# Each suite leaves a JUnit report here (CI systems read them; benchmarks/bench_ci.py counts them).
REPORTS := build/test-reports

# Unit tests render stacks, which runs kustomize on upstream bases: the render tools come first.
# They run in parallel over the machine's cores (pytest-xdist); TEST_WORKERS=0 runs one process.
TEST_WORKERS ?= auto
unit: tools-test examples-env promtool
	$(BIN)/pytest -m "not e2e and not engine" -n $(TEST_WORKERS) --durations=10 --junit-xml=$(REPORTS)/unit.xml

# The edit-test loop: ruff, then the unit tests but the `slow` ones (whole programs of their
# own, every overlay built), over the cores, stopping at the first failure. Nothing on a plane.
test-fast: setup tools-test
	$(BIN)/ruff check .
	$(BIN)/pytest -m "not e2e and not engine and not slow" -n $(TEST_WORKERS) -x -q

# The security checks alone (tests/security/README.md lists them); `make unit` runs them too.
security: tools-test examples-env
	$(BIN)/pytest -m "security and not e2e and not engine" -n $(TEST_WORKERS)

e2e: tools-test
	$(BIN)/pytest -m e2e --durations=10 --junit-xml=$(REPORTS)/e2e.xml

# `pulumi up/preview/refresh/destroy` on a local plane per stack, with the engine built by
# `make tools`. `make engine` (part of `make test`) runs the lab stack, `make test-engine` all.
ENGINE_STACKS ?= lab openshift cloud
test-engine: tools
	MLPLATFORM_ENGINE_STACKS="$(ENGINE_STACKS)" $(BIN)/pytest -m engine --durations=5 --junit-xml=$(REPORTS)/test-engine.xml

engine: tools
	MLPLATFORM_ENGINE_STACKS=lab $(BIN)/pytest -m engine --durations=5 --junit-xml=$(REPORTS)/engine.xml

# What CI runs (.ci/run calls `make test`); .github/workflows/ci.yml runs the same targets, one
# step each (tests/unit/test_ci_workflow.py holds the two together). The first ones run in this
# order; then e2e and the engine lifecycle run side by side, each on control planes of its own
# (the e2e planes mostly wait on controllers, the engine's CLI mostly computes), every line of
# their output as it comes, prefixed with the target. `tools` first, so that neither builds or
# relinks a tool the other is using.
CI_TARGETS := lint validate unit checkov e2e engine
CI_IN_ORDER := lint validate unit checkov
CI_SIDE_BY_SIDE := e2e engine
test: $(CI_IN_ORDER) tools
	$(MAKE) -j2 $(addprefix beside-,$(CI_SIDE_BY_SIDE))

# A static pattern rule: these targets are phony, and make looks up no implicit rule for those.
.PHONY: $(addprefix beside-,$(CI_SIDE_BY_SIDE))
$(addprefix beside-,$(CI_SIDE_BY_SIDE)): beside-%:
	@$(MAKE) --no-print-directory $* 2>&1 | sed -u 's/^/[$*] /'

cluster: tools-test
	$(MLP) cluster up --stack $(STACK)

down: setup
	$(MLP) cluster down

up: setup
	$(MLP) up --stack $(STACK)

# Every section, even past a failed one; the summary at the end says which held.
# `make bench BENCH_ARGS=--quick` for a smoke run of every section.
bench: tools
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

clean: down
	$(MLP) cluster down --purge
	rm -rf .mlplatform
