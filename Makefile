# Two entry points for a brand-new machine (each sets itself up):
#   make demo   -> the main job
#   make test   -> the test suite
# torch==2.13.0 is installed before anything that could pull torch (a CPU build lies on disk).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PYTEST_ARGS ?=

.PHONY: demo test bench-llm clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed-main: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	touch $@ $(VENV)/.installed-main

DEMO_WORKDIR ?= runs/demo
demo: $(VENV)/.installed-main
	$(VENV)/bin/vitron-train --config=experiments/pixelworld.py:quick --workdir=$(DEMO_WORKDIR)

test: $(VENV)/.installed-test
	$(PY) -m pytest -q -n 2 --durations=15 $(PYTEST_ARGS)

bench-llm: $(VENV)/.installed-test
	$(PY) -m vitron_jax.bench.llm

clean:
	rm -rf $(VENV) .pytest_cache
