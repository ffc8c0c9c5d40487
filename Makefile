# The two commands that matter: `make run` (set up and run the main job) and `make test` (set up and pass
# the tests). Everything else is a step they use. All state lives under .state/ (ignored by git).
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
KAFKA := infra/kafka/kafka.sh
PYTEST_ARGS ?=
OLDER_WEEK ?= 0

.PHONY: help setup system-deps kafka-jars kafka-start kafka-stop airflow-start run run-cluster stop test test-unit bench clean

help:
	@echo "make run    set up, start Kafka and Airflow, run the main job, print the UI address and login"
	@echo "            (OLDER_WEEK=1: then the week before the demo lands: a rebuild, the gate, the switch)"
	@echo "make run-cluster  the same on the distributed stack: 3 Kafka nodes, PostgreSQL, Redis, Celery workers"
	@echo "make test   set up and run the whole test suite (starts and stops its own broker)"
	@echo "make stop   stop what make run and make run-cluster started"
	@echo "make bench  run the benchmarks under bench/"

$(STAMP): requirements.txt constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade "pip==26.3"
	$(VENV)/bin/pip install -q -r requirements.txt -c constraints.txt
	touch $(STAMP)

setup: $(STAMP) kafka-jars

kafka-jars:
	$(KAFKA) fetch

# Debian packages the tests and make run-cluster need (headless Chromium, PostgreSQL, Redis); fast when present.
system-deps:
	scripts/system_deps.sh

kafka-start: kafka-jars
	$(KAFKA) start

kafka-stop:
	$(KAFKA) stop

airflow-start: setup
	scripts/airflow.sh start

run: setup
	OLDER_WEEK=$(OLDER_WEEK) scripts/run.sh

# The distributed stack (scripts/cluster.sh): redis-server and PostgreSQL come from system-deps.
run-cluster: setup system-deps
	scripts/run.sh --cluster

stop:
	scripts/serve.sh stop
	scripts/airflow.sh stop
	$(KAFKA) stop
	if [ -d "$${CLUSTER_STATE_DIR:-.state/cluster}" ]; then scripts/cluster.sh stop; fi

test: setup system-deps
	scripts/test.sh $(PYTEST_ARGS)

test-unit: setup
	$(VENV)/bin/python -m pytest tests/unit tests/dags -q $(PYTEST_ARGS)

bench: setup
	scripts/bench.sh

clean: stop
	rm -rf .state
