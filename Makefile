# Customer-segmentation warehouse. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export GX_ANALYTICS_ENABLED := false

.PHONY: help install demo run serve test test-fast test-spark lint bench bench-spark clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# The pinned requirements, then the project itself (editable, no dependency
# resolution: the pins are the tested set).
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed  ## create/update .venv from requirements*.txt + the package, editable (idempotent)

demo: install  ## generate a sample landing zone and run the whole pipeline through Airflow
	$(BIN)/python -m segment_warehouse.cli demo $(if $(CUSTOMERS),--customers $(CUSTOMERS)) $(if $(DATE),--date $(DATE))

run: install  ## run both DAGs once over SEGMENTS_LANDING_DIR (new files only); DATE=YYYY-MM-DD to backfill
	$(BIN)/python -m segment_warehouse.cli run $(if $(DATE),--date $(DATE))

serve: install  ## the decision API over the published snapshot (HOST=127.0.0.1 PORT=8000)
	$(BIN)/python -m segment_warehouse.api --host $(or $(HOST),127.0.0.1) --port $(or $(PORT),8000)

test: install  ## the full test suite (unit, dbt, GX, clustering, Airflow end-to-end)
	$(BIN)/ruff check plugins dags tests tools scripts
	$(BIN)/python -m pytest

test-fast: install  ## everything except the Airflow end-to-end tests
	$(BIN)/python -m pytest -m "not e2e"

test-spark: install  ## every dbt model on Spark equals DuckDB's, and a SEGMENTS_ENGINE=spark run publishes what a DuckDB run does (needs requirements-spark.txt, Java)
	$(BIN)/pip install -q -r requirements-spark.txt
	$(BIN)/python -m pytest tests/spark -m spark

lint: install  ## ruff
	$(BIN)/ruff check plugins dags tests tools scripts

bench: install  ## generate 10k/100k/1M landing zones, time every stage, write docs/benchmarks.md
	$(BIN)/python -m segment_tools.bench $(BENCH_ARGS)

bench-spark: install  ## capacity model: every stage timed at 1k/3k/10k customers on DuckDB and Spark, fitted fixed + per-customer cost (.bench/spark/capacity.md; needs requirements-spark.txt, Java)
	$(BIN)/python -m segment_tools.bench_spark $(BENCH_SPARK_ARGS)

clean:  ## remove generated data, Airflow home and dbt target (keeps .venv)
	rm -rf data airflow_home dbt_project/target dbt_project/logs
