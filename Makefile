# The two commands of the README. Both set up the machine first (idempotent).
VENV ?= .venv
CONFIG ?= configs/quick.yaml

.PHONY: run test lint setup bench

setup:
	@scripts/setup.sh

run: setup
	$(VENV)/bin/peerdiff run --config $(CONFIG)
	$(VENV)/bin/peerdiff report --config $(CONFIG)

test: setup
	$(VENV)/bin/python -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests bench scripts examples && $(VENV)/bin/ruff format --check src tests bench scripts examples

bench: setup
	$(VENV)/bin/python bench/run_all.py
