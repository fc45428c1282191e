# The commands people type. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK_FLAGS := --generate-hashes --no-emit-index-url --no-emit-find-links --python-version 3.11 --native-tls --quiet

.PHONY: help setup demo backtest feed-demo test test-fast lint format bench bench-peers lock docs clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(VENV)/.installed ## create .venv from the hashed lock file (runtime + dev tools)

$(VENV)/.installed: requirements-dev.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

demo: setup ## the whole stack as processes: simulated IB, engine, gateway, services, dashboard (Ctrl-C stops)
	$(BIN)/quayside demo

backtest: setup ## a backtest of the crossover on the built-in synthetic market (results/replay/)
	$(BIN)/quayside replay

feed-demo: setup ## synthetic quotes through a feed ring, a reader, the UDP relay and a receiver
	$(BIN)/quayside feed demo

test: setup ## lint, then every test (slow ones included, as CI runs them)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

test-fast: setup ## the tests not marked slow
	$(BIN)/pytest -m "not slow"

lint: setup ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup ## every benchmark: one table, JSON and plots in benchmarks/results/ (BENCH_FLAGS="--quick --only feed,engine")
	$(BIN)/quayside bench $(BENCH_FLAGS)

bench-peers: .venv-peers/.installed ## hftbacktest and NautilusTrader beside Quayside's replay, in .venv-peers (BENCH_FLAGS=--quick)
	.venv-peers/bin/python -m benchmarks.peers $(BENCH_FLAGS)

.venv-peers/.installed: requirements-peers.lock pyproject.toml
	$(PYTHON) -m venv .venv-peers
	.venv-peers/bin/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-peers.lock
	.venv-peers/bin/pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

docs: setup ## regenerate docs/wire-format.md from the dtypes
	$(BIN)/python -m quayside.core.wire > docs/wire-format.md

lock: ## re-lock dependencies with hashes (runtime; + dev; + dev and peers; the support image's subset)
	$(BIN)/uv pip compile pyproject.toml $(LOCK_FLAGS) -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --group dev $(LOCK_FLAGS) -o requirements-dev.lock
	$(BIN)/uv pip compile pyproject.toml --group dev --group peers $(LOCK_FLAGS) -o requirements-peers.lock
	$(BIN)/uv pip compile support/requirements.in -c requirements.lock $(LOCK_FLAGS) -o requirements-support.lock

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
