# One command to set up and run the main job, one to set up and run the tests.
#   make run    trains a Switch SAE and writes its report to runs/<timestamp>/
#   make test   checks the notebooks export to the library unchanged, lints it, checks README.md against nbs/index.ipynb,
#               runs the SAELens/SAEBench interop tests in their own environment (.venv-saelens, built on first use),
#               runs every notebook (keeping the executed copies for the website), runs pytest
#   make figures reruns the commands behind README's figures: results/main_job.json, results/figures.md (machine, date)
#   make docs   builds the website in _docs/ from the notebooks, offline (reusing make test's executed notebooks)
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# commands below run inside the project's environment, whatever environment the caller had active
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup run test export-check lint interop-env test-interop clean docs readme readme-check figures
setup: $(VENV)/.installed

# torch is pinned first: a bare "torch" requirement on a machine without it pulls a multi-GB CUDA build.
$(VENV)/.installed: settings.ini setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip show torch >/dev/null 2>&1 || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# The SAELens / SAEBench environment (transformer-lens 3.x, numpy<2, datasets<4: they cannot share the one above),
# built once and reused while settings.ini and setup.py are unchanged. SAEBench requires torchvision: PyPI's newest
# pulls a multi-GB CUDA torch, and PyPI's torchvision (built for the CUDA torch) beside the CPU torch breaks
# `import transformers`. The constraints keep the CPU torch; nothing here uses torchvision, so it is removed after.
SAELENS_VENV ?= .venv-saelens
SAELENS_PY := $(SAELENS_VENV)/bin/python
interop-env: $(SAELENS_VENV)/.installed
$(SAELENS_VENV)/.installed: settings.ini setup.py
	test -x $(SAELENS_PY) || python3 -m venv $(SAELENS_VENV)
	$(SAELENS_PY) -m pip install -q --upgrade pip
	printf 'torch==2.13.0\ntorchvision==0.28.0\n' > $(SAELENS_VENV)/constraints.txt
	$(SAELENS_PY) -m pip install -q -c $(SAELENS_VENV)/constraints.txt torch==2.13.0
	$(SAELENS_PY) -m pip install -q -c $(SAELENS_VENV)/constraints.txt -e ".[saebench]" "nbdev>=2.4,<3" "execnb<0.2" pytest
	$(SAELENS_PY) -m pip uninstall -q -y torchvision
	touch $@

# The interop tests and the SAELens notebook's flagged cells, in that environment (a few minutes, see tests_interop/).
# VIRTUAL_ENV must name that environment: IPython (under nbdev_test) adds $$VIRTUAL_ENV's site-packages to sys.path,
# and with the default one exported above, its numpy 2 reached SAELens's pandas (built for numpy 1) and broke it.
SAELENS_ENV := env VIRTUAL_ENV=$(abspath $(SAELENS_VENV)) PATH=$(abspath $(SAELENS_VENV))/bin:$(PATH) OMP_NUM_THREADS=1
test-interop: interop-env
	$(SAELENS_ENV) $(SAELENS_PY) -m pytest -q tests_interop
	$(SAELENS_ENV) $(SAELENS_VENV)/bin/nbdev_test --path nbs/22_saelens.ipynb --flags saelens

run: setup
	$(BIN)/switch-sae train $(ARGS)

export-check: setup
	$(BIN)/nbdev_export
	@if [ -n "$$(git status --porcelain switch_sae)" ]; then \
	  echo "switch_sae/ differs from what nbdev_export writes from nbs/: edit the notebooks, not the library:"; \
	  git status --porcelain switch_sae; git diff --stat switch_sae; exit 1; fi
	@echo "nbdev_export: switch_sae/ is in step with nbs/"

# ruff (settings in pyproject.toml) on the exported library, the tests and benchmarks/; fix findings in nbs/, not in switch_sae/
lint: setup
	$(BIN)/ruff check switch_sae tests tests_interop benchmarks results/figures.py results/tiny_lm_lb2/why_bias.py

# The notebooks run once, as nbdev_test runs them, and their executed copies (_proc/executed/) are the website's pages.
test: export-check lint readme-check test-interop
	OMP_NUM_THREADS=1 $(PY) docs/execute.py --n_workers 2 --force
	$(BIN)/pytest -q tests

docs: setup
	OMP_NUM_THREADS=1 $(PY) docs/build.py --n_workers 2

# The figures README quotes: results/main_job.json (the main and synthetic jobs) and docs/images/switch_sae.png
# (docs/figures.py), then results/figures.md (results/figures.py: bad inputs, distributed precision, the reproduction's
# verdicts recomputed); about 10 minutes on a 2-core CPU. `make figures ALL=1` adds the attribution runs of the main
# job, the torchrun pair, the speed table and the stream-resume timing (about half an hour more).
figures: setup
	OMP_NUM_THREADS=1 $(PY) docs/figures.py
	OMP_NUM_THREADS=1 $(PY) results/figures.py $(if $(ALL),--all,)

# README.md is made from nbs/index.ipynb, the website's home page
readme: setup
	$(PY) docs/readme.py

readme-check: setup
	$(PY) docs/readme.py --check

clean:
	rm -rf $(VENV) $(SAELENS_VENV) runs _proc _docs
