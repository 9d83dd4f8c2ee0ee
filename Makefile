# One command to set up and run the main job, one to set up and run the tests.
#   make run    trains a Switch SAE and writes its report to runs/<timestamp>/
#   make test   checks the notebooks export to the library unchanged, runs every notebook, runs pytest
#   make docs   builds the website in _docs/ from the notebooks, offline (reusing make test's executed notebooks)
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# commands below run inside the project's environment, whatever environment the caller had active
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup run test export-check clean docs readme readme-check
setup: $(VENV)/.installed

# torch is pinned first: a bare "torch" requirement on a machine without it pulls a multi-GB CUDA build.
$(VENV)/.installed: settings.ini setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip show torch >/dev/null 2>&1 || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

run: setup
	$(BIN)/switch-sae train $(ARGS)

export-check: setup
	$(BIN)/nbdev_export
	@if [ -n "$$(git status --porcelain switch_sae)" ]; then \
	  echo "switch_sae/ differs from what nbdev_export writes from nbs/: edit the notebooks, not the library:"; \
	  git status --porcelain switch_sae; git diff --stat switch_sae; exit 1; fi
	@echo "nbdev_export: switch_sae/ is in step with nbs/"

# The notebooks run once, as nbdev_test runs them, and their executed copies (_proc/executed/) are the website's pages.
test: export-check
	OMP_NUM_THREADS=1 $(PY) docs/execute.py --n_workers 2 --force
	$(BIN)/pytest -q tests

docs: setup
	OMP_NUM_THREADS=1 $(PY) docs/build.py --n_workers 2

# README.md is made from nbs/index.ipynb, the website's home page
readme: setup
	$(PY) docs/readme.py

readme-check: setup
	$(PY) docs/readme.py --check

clean:
	rm -rf $(VENV) runs _proc _docs
