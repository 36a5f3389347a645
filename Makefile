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

.PHONY: install demo test validator browser clean

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

test: install validator browser
	PAINPLAST_BIDS_VALIDATOR=$(abspath $(BIDS_VALIDATOR)) $(PY) -m pytest -n 2 --durations=15 tests

clean:
	rm -rf $(VENV) .tools demo_output
