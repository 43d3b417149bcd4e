# Two commands do all the set-up (README): `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck proto bench clean

$(BIN)/corral: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# A local cluster (a master and 3 agents, no ZooKeeper) runs a real batch job
# in cgroup-limited containers and shows the result. Needs root for cgroups.
demo: $(BIN)/corral
	$(BIN)/corral local --agents 3 --port 0 --submit examples/jobs/demo.toml

# Lint, types, then every test (unit, integration with real gRPC and cgroups).
test: $(BIN)/corral
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PATH=$(CURDIR)/$(BIN):$$PATH tools/typecheck.sh
	$(BIN)/pytest -q

lint: $(BIN)/corral
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: $(BIN)/corral
	PATH=$(CURDIR)/$(BIN):$$PATH tools/typecheck.sh

proto: $(BIN)/corral
	$(BIN)/python proto/generate.py

bench: $(BIN)/corral
	$(BIN)/python bench/launch_throughput.py --tasks 1000 --agents 4

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
