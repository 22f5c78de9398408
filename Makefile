# Two commands do all set-up on a fresh machine:
#   make reproduce   # venv + install + every notebook on profiles/default.yaml (CPU, < 60 min)
#   make test        # venv + install + the test suite (CPU, well under 30 min)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PROFILE ?= default
STAMP  := $(VENV)/.installed

.PHONY: reproduce test test-slow test-all notebooks sync lab benchmarks clean-runs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,ray]'  # ray: the executor's optional extra (~10 s), so its test runs
	touch $(STAMP)

reproduce: $(STAMP)
	$(PY) -m dwml.runner --profile $(PROFILE)

test: $(STAMP)
	$(PY) -m pytest -m "not slow and not gpu" -q

test-slow: $(STAMP)
	$(PY) -m pytest -m "slow and not gpu" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

# Carry edits of the .py sources over to the paired .ipynb files (jupytext keeps their outputs); the .py
# files are the source, the .ipynb the default profile's executed notebooks that `make reproduce` writes.
sync: $(STAMP)
	$(VENV)/bin/jupytext --sync notebooks/[0-9][0-9]_*.py

# JupyterLab on this checkout, the py:percent notebooks opening as notebooks on a double-click: jupytext's
# contents manager serves them, and the project's .jupyter/labconfig/default_setting_overrides.json (found
# through JUPYTER_CONFIG_PATH, so nothing is written into the user's home) makes "Jupytext Notebook" the
# default viewer of .py and .md files. The committed executed notebooks/NN_*.ipynb supply the outputs.
LAB_ENV := JUPYTER_CONFIG_PATH=$(CURDIR)/.jupyter$(if $(JUPYTER_CONFIG_PATH),:$(JUPYTER_CONFIG_PATH))
LAB_ARGS ?=
LAB_ROOT ?= notebooks
lab: $(STAMP)
	$(LAB_ENV) $(VENV)/bin/jupyter lab --ServerApp.contents_manager_class=jupytext.TextFileContentsManager --ServerApp.root_dir=$(LAB_ROOT) $(LAB_ARGS)

benchmarks: $(STAMP)
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean-runs:
	rm -rf runs
