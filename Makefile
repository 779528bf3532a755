# PacBook Warehouse — the two commands: `make run` and `make test` (README.md).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STATE := $(CURDIR)/.state
DBT_DIR := include/dbt_pacbook
MANIFEST := $(DBT_DIR)/target/manifest.json

export PYTHONPATH := $(CURDIR)
export XDG_RUNTIME_DIR := $(STATE)/runtime
export DO_NOT_TRACK := 1
export DBT_SEND_ANONYMOUS_USAGE_STATS := False
export AIRFLOW__COSMOS__ENABLE_TELEMETRY := False
export SCARF_ANALYTICS := false

.PHONY: help run airflow test lint pytest bench manifest clean stop

help:
	@echo "make run   — set up everything and run the pacbook_warehouse DAG once with real Airflow"
	@echo "make test  — the same set-up, then lint, dbt build and every test"
	@echo "make airflow — Airflow on the embedded PostgreSQL with this DAG, until Ctrl-C"
	@echo "make bench — extraction vs psql and pandas, nightly increment vs full rebuild, DAG parse time (bench/README.md)"

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	@echo "installing the pinned requirements into $(VENV) ..."
	@# One resolver pass for runtime and dev pins: sqlfluff's dbt templater must not upgrade dbt-core.
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt \
	  2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
	@touch $@

# Cosmos renders the DAG from this manifest, so the scheduler never runs dbt to parse the DAG.
$(MANIFEST): $(VENV)/.installed $(shell find $(DBT_DIR) -path $(DBT_DIR)/target -prune -o -type f \( -name '*.sql' -o -name '*.yml' -o -name '*.csv' \) -print)
	@cd $(DBT_DIR) && ../../$(VENV)/bin/dbt parse --quiet --profiles-dir . --target-path target
	@echo "dbt manifest built: $(MANIFEST)"

manifest: $(MANIFEST)

$(STATE)/runtime:
	@install -d -m 700 $@

# The embedded server is Debian's PostgreSQL 15 (with the contrib modules: pgcrypto encrypts the
# personal columns). Only its binaries are used: the drop-in keeps the package from creating its own
# cluster, and a cluster an older postgresql-common created anyway is stopped; ours runs on its own
# data folder and port (include/pacbook/embedded_postgres.py).
PG_BIN := /usr/lib/postgresql/15/bin
$(STATE)/postgresql.ok: | $(STATE)/runtime
	@test -x $(PG_BIN)/initdb || { \
	  echo "installing Debian's postgresql-15 for the embedded PostgreSQL ..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO install -d /etc/postgresql-common/createcluster.d; \
	  echo "create_main_cluster = false" | $$SUDO tee /etc/postgresql-common/createcluster.d/pacbook-no-main-cluster.conf >/dev/null; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null; \
	  if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q '^15 \+main \+[0-9]\+ \+online'; then \
	    $$SUDO pg_ctlcluster 15 main stop; fi; }
	@test -x $(PG_BIN)/initdb && test -f /usr/share/postgresql/15/extension/pgcrypto.control
	@touch $@

run: $(VENV)/.installed $(MANIFEST) $(STATE)/postgresql.ok | $(STATE)/runtime
	@$(PY) -m include.pacbook.local_run run

airflow: $(VENV)/.installed $(MANIFEST) $(STATE)/postgresql.ok | $(STATE)/runtime
	@$(PY) -m include.pacbook.local_run airflow

# Each benchmark prints its table (figure, ours, baseline, ratio); bench/README.md has the last figures.
bench: $(VENV)/.installed $(MANIFEST) $(STATE)/postgresql.ok | $(STATE)/runtime
	@$(PY) -m bench.extraction --scale 10 --repeat 3 --memory-scales 10,100
	@$(PY) -m bench.increment --scale 10 --repeat 3
	@$(PY) -m bench.dag_parse --repeat 7
	@$(PY) -m bench.transform --scale 1 --repeat 3
	@$(PY) -m bench.scale --scale 100 --repeat 3
	@$(PY) -m bench.summary

lint: $(VENV)/.installed
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/sqlfluff lint --disable-progress-bar --nocolor $(DBT_DIR)/models $(DBT_DIR)/snapshots $(DBT_DIR)/tests $(DBT_DIR)/macros

# The browser tests drive Debian's headless Chromium through its chromedriver.
$(STATE)/chromium.ok: | $(STATE)/runtime
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing Debian's chromium and chromium-driver for the browser tests ..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }
	@touch $@

pytest: $(VENV)/.installed $(MANIFEST) $(STATE)/chromium.ok $(STATE)/postgresql.ok | $(STATE)/runtime
	@$(PY) -m pytest

test: lint pytest

stop:
	@$(PY) -m include.pacbook.embedded_postgres stop || true

clean: stop
	rm -rf $(STATE) $(DBT_DIR)/target $(DBT_DIR)/logs
