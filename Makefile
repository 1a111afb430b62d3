# Two commands matter on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STACK  ?= dev
export PYTHONPATH := $(CURDIR):$(CURDIR)/services/apinode

.PHONY: help install run test test-fast system-deps data render bench soak clean catalog mutate

help:
	@echo "make run      both services on 127.0.0.1 (scoring :8080, features :8081), bundled data"
	@echo "make test     the whole test suite (installs what it needs, starts its own dockerd and PostgreSQL)"
	@echo "make data     rebuild the customer datasets and the model (byte-identical)"
	@echo "make render STACK=dev|prod   write the stack's Kubernetes manifests to rendered/<stack>/"
	@echo "                             and its connectivity table into docs/kubernetes.md"
	@echo "make bench    benchmark against Feast and MLflow serving; writes bench/results.md"
	@echo "make soak     10 minutes of mixed load; report in bench/out/soak.md"
	@echo "make catalog  regenerate catalog-info.yaml (Backstage entities) from the service definitions"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# The runtime alone: enough for `make run`.
$(VENV)/.runtime: services/apinode/requirements.txt | $(PY)
	$(PY) -m pip install -q -r services/apinode/requirements.txt
	touch $@

# Everything: the Pulumi program, the runtime, the flow, the test tools.
$(VENV)/.installed: requirements.txt requirements-dev.txt services/apinode/requirements.txt $(wildcard flow/requirements.txt policy/requirements.txt) | $(PY)
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $(VENV)/.runtime $@

install: $(VENV)/.installed

system-deps:
	scripts/system-deps

run: $(VENV)/.runtime
	$(PY) -m apinode.local

test: install system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

# The suite without the Docker image builds (for a quick loop while developing).
test-fast: install
	$(PY) -m pytest -m "not docker" $(PYTEST_ARGS)

data: install
	$(PY) -m flow all

render: install
	$(PY) -m infra.render --stack $(STACK) --out rendered/$(STACK) --docs docs/kubernetes.md

catalog: install
	$(PY) -m tools.catalog

bench: install
	bench/run

soak: install
	$(PY) -m bench.soak --minutes 10

# Mutation check of the core modules with their fast tests (not part of `make test`); docs/mutation.md.
# MODULES=infra/config.py narrows it to some of them.
mutate: install
	$(PY) -m pip install -q -r requirements-mutate.txt
	$(PY) tools/mutate.py $(MODULES)

clean:
	rm -rf $(VENV) .venv-checkov bench/.venv-peers build rendered bench/out .pytest_cache
