# One command to set up and run the main job, one to set up and run the tests.
#   make run    trains a Switch SAE and writes its report to runs/<timestamp>/
#   make test   checks the notebooks export to the library unchanged, lints it, runs every notebook, runs pytest
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# commands below run inside the project's environment, whatever environment the caller had active
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup run test export-check lint clean
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

# ruff (settings in pyproject.toml) on the exported library and the tests; fix findings in nbs/, not in switch_sae/
lint: setup
	$(BIN)/ruff check switch_sae tests

test: export-check lint
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2
	$(BIN)/pytest -q tests

clean:
	rm -rf $(VENV) runs _proc _docs
