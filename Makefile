# The README's two commands:  make run   (set up + whole pipeline)   make test   (set up + tests)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: run test setup dataset browser bench clean-venv

run: setup dataset          ## create the venv, install Fashion-MNIST if needed, run the whole pipeline
	dvc repro
	@cat report.md
	@echo "All figures: dvc metrics show   Plots: dvc plots show   (after: source $(VENV)/bin/activate)"

test: setup dataset browser ## create the venv, install chromium if missing (browser test), run the test suite
	python -m pytest -q

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test]'
	touch $@

dataset:
	@bash scripts/ensure-dataset.sh

browser:
	@bash scripts/ensure-chromium.sh

bench: setup dataset        ## measure what the pipeline buys (docs/benchmark.md)
	python -m shrink.bench

clean-venv:
	rm -rf $(VENV)
