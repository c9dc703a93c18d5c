# Both targets build .venv from nothing, so they work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint venv clean bench-airflow

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,airflow]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict poller

test: lint
	$(BIN)/pytest -q

# A real Airflow deployment (api-server, scheduler, dag-processor, triggerer;
# LocalExecutor on SQLite) against the simulator: ~15 min on 2 cores. Not in `test`.
bench-airflow: $(STAMP)
	$(BIN)/python benchmarks/bench_airflow.py $(BENCH_ARGS)

demo: $(STAMP)
	$(BIN)/poller demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
