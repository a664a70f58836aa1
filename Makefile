# make demo: create .venv, install tagless, run the demo on digits.
# make test: create/update .venv, check imports run one way (lint-imports) and the lint rules
#            (ruff), then run the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tagless demo

test: lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check --no-cache tagless tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/train_bench.py
	$(BIN)/python benchmarks/eval_bench.py

clean:
	rm -rf $(VENV) runs .cache
