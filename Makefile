# Trialbook — two commands for a newcomer: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help run test install migrate lint typecheck imports format openapi demo clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml sdk/pyproject.toml
	$(BIN)/pip install --quiet -e ./sdk -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the service, the SDK and the dev tools

migrate: install ## bring the database (TRIALBOOK_DATABASE_URL) to the latest migration
	$(BIN)/trialbook migrate

# Serves on $(TRIALBOOK_HOST):$(TRIALBOOK_PORT) (default 127.0.0.1:8000) with $(TRIALBOOK_WORKERS) workers.
run: migrate ## migrate and serve on 127.0.0.1:8000 (a first start prints the admin key)
	$(BIN)/trialbook serve

# Parallel workers (pytest-xdist): many tests wait on live servers and subprocesses, so more
# workers than cores pays; PYTEST_WORKERS=0 runs in this process (for a debugger).
PYTEST_WORKERS ?= 4

test: install ## run the whole test suite (the docs' walk-throughs included)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS)

lint: install ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

imports: install ## check the package boundaries (import-linter contracts)
	$(BIN)/lint-imports

format: install ## ruff format and ruff check --fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install ## mypy on stats, the SDK and the service
	$(BIN)/mypy stats sdk/trialbook service

openapi: install ## rewrite openapi/openapi.json from the code
	$(BIN)/trialbook openapi > openapi/openapi.json

demo: install ## simulate a demo experiment on the running server (no key needed here)
	$(BIN)/trialbook demo

clean: ## remove .venv and the local SQLite database
	rm -rf $(VENV) trialbook.db trialbook.db-wal trialbook.db-shm
