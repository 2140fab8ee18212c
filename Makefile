# selfimprove — every target works on a fresh machine; `demo` and `test` set up what they need.
PYTHON ?= python3.11
VENV := .venv
PXVENV := .venv-phoenix
BIN := $(VENV)/bin
PHOENIX_VERSION ?= arize-phoenix>=12,<30

.PHONY: setup demo test bench lint clean

setup: $(VENV)/.installed $(PXVENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

$(PXVENV)/.installed:
	$(PYTHON) -m venv $(PXVENV)
	$(PXVENV)/bin/pip install -q --upgrade pip
	$(PXVENV)/bin/pip install -q '$(PHOENIX_VERSION)'
	touch $@

demo: setup
	SELFIMPROVE_PHOENIX_PYTHON=$(CURDIR)/$(PXVENV)/bin/python $(BIN)/selfimprove demo

test: setup
	SELFIMPROVE_PHOENIX_PYTHON=$(CURDIR)/$(PXVENV)/bin/python $(BIN)/python -m pytest

bench: setup
	SELFIMPROVE_PHOENIX_PYTHON=$(CURDIR)/$(PXVENV)/bin/python sh -c 'for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done'

lint: setup
	$(BIN)/ruff check selfimprove tests benchmarks

clean:
	rm -rf $(VENV) $(PXVENV) build *.egg-info .pytest_cache
