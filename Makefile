# The two commands of the README. Both set up the machine first (idempotent).
VENV ?= .venv
CONFIG ?= configs/quick.yaml
# Let Python cache bytecode in the project's venv even where PYTHONDONTWRITEBYTECODE is set
# (this machine and its CI set it). scripts/setup.sh installs with uv, which compiles no
# bytecode at install time; with the variable set, every process compiled torch and
# transformers from source again (imports 3.7-4.6 s instead of 2.2-2.4 s) and the test
# suite, which starts many processes, took 259 s instead of 198.
unexport PYTHONDONTWRITEBYTECODE

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
