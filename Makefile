# The README's two commands are `make demo` and `make test`; both set up .venv first.
# VENV may point elsewhere (CI installs into a fresh one).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pare-installed

.PHONY: setup demo test lint bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the dependencies change.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# The demo migrates its own SQLite file in demo-output/.
demo: setup
	$(BIN)/pare demo

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Figures, not tests: see docs/benchmarks.md. The Slack part wants PostgreSQL on 127.0.0.1.
bench: setup
	$(BIN)/python -m benchmarks.evidence
	$(BIN)/python -m benchmarks.slack
