# painplast — set-up, demo and tests on a fresh machine (Python 3.11, pip, apt, npm).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIDS_VALIDATOR := .tools/node_modules/.bin/bids-validator
# one BLAS thread per process: parallel workers on 2 cores otherwise oversubscribe
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export MPLBACKEND ?= Agg

.PHONY: install demo test validator browser wheel-check clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,dask]"
	touch $@

install: $(VENV)/.installed

$(BIDS_VALIDATOR):
	mkdir -p .tools
	cd .tools && npm install --no-audit --no-fund --loglevel=error bids-validator@1.15.0

validator: $(BIDS_VALIDATOR)

# headless Chromium for the report test (Debian's package)
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

demo: install
	$(VENV)/bin/painplast demo demo_output

# the package as a user installs it: build the wheel, install it without extras into a fresh
# venv and run a tiny simulated cohort through every module (tests/installed_smoke.py). pip
# reads its cache (and PyPI if a wheel is missing), so this takes about a minute.
WHEEL_VENV := build/wheel-venv
WHEEL_WORK := build/wheel-smoke
wheel-check: install
	rm -rf dist $(WHEEL_VENV) $(WHEEL_WORK)
	$(PY) -m build --wheel --outdir dist . >/dev/null
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install --quiet dist/painplast-*.whl
	mkdir -p $(WHEEL_WORK)
	cd $(WHEEL_WORK) && $(abspath $(WHEEL_VENV))/bin/python $(abspath tests/installed_smoke.py) .
	rm -rf $(WHEEL_WORK)

test: install validator browser wheel-check
	PAINPLAST_BIDS_VALIDATOR=$(abspath $(BIDS_VALIDATOR)) $(PY) -m pytest -n 2 --durations=15 tests

clean:
	rm -rf $(VENV) .tools demo_output build dist
