# Trialbook — two commands for a newcomer: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install migrate lint typecheck imports format openapi demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml sdk/pyproject.toml
	$(BIN)/pip install --quiet -e ./sdk -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/trialbook migrate

# Serves on $(TRIALBOOK_HOST):$(TRIALBOOK_PORT) (default 127.0.0.1:8000) with $(TRIALBOOK_WORKERS) workers.
run: migrate
	$(BIN)/trialbook serve

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

imports: install
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy stats sdk/trialbook service

openapi: install
	$(BIN)/trialbook openapi > openapi/openapi.json

demo: install
	$(BIN)/trialbook demo

clean:
	rm -rf $(VENV) trialbook.db trialbook.db-wal trialbook.db-shm
