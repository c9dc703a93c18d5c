# Every target builds .venv from nothing, so each works on a fresh clone.
# `make demo` installs only what the demo needs (the library, no extras); `make
# test` adds the test tools, OpenTelemetry and Airflow to the same environment.
PYTHON ?= python3
# `make test` runs the suite in .venv ($(PYTHON), Airflow included), then the
# library, CLI and simulator tests on each other version here the machine has
# (.venv-3.12, ...; see .ci/pythons), and says which versions ran.
PYTHON_VERSIONS ?= 3.11 3.12 3.13
VENV := .venv
BIN := $(VENV)/bin
# The interpreter's own pip installs into the venv: a venv without pip of its
# own is made in a fraction of a second, where ensurepip takes several.
PIP := $(PYTHON) -m pip --python $(BIN)/python --quiet
BASE := $(VENV)/.installed-base
FULL := $(VENV)/.installed

.PHONY: test demo lint venv clean bench-airflow package

$(BIN)/python:
	$(PYTHON) -m venv --without-pip $(VENV)

# No build isolation: hatchling is installed once into the venv instead of
# into a throwaway build environment on every install.
$(BASE): pyproject.toml | $(BIN)/python
	$(PIP) install hatchling editables
	$(PIP) install --no-build-isolation -e .
	touch $(BASE)

$(FULL): $(BASE)
	$(PIP) install pip
	$(PIP) install --no-build-isolation -e '.[test,airflow,otel]'
	touch $(FULL)

venv: $(FULL)

lint: $(FULL)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict poller

test: lint
	$(BIN)/pytest -q
	.ci/pythons $(PYTHON) $(PYTHON_VERSIONS)

# The sdist and the wheel, their metadata checked, the wheel installed into a
# clean venv and used from outside the source tree (.ci/package).
package: $(FULL)
	.ci/package $(PYTHON)

# A real Airflow deployment (api-server, scheduler, dag-processor, triggerer;
# LocalExecutor on SQLite) against the simulator: ~15 min on 2 cores. Not in `test`.
bench-airflow: $(FULL)
	$(BIN)/python benchmarks/bench_airflow.py $(BENCH_ARGS)

demo: $(BASE)
	$(BIN)/poller demo

clean:
	rm -rf $(VENV) $(VENV)-3.* dist .pytest_cache .mypy_cache .ruff_cache
