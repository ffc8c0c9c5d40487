#!/usr/bin/env bash
# `make run`: start the Kafka broker and Airflow (standalone) with this project's DAGs and plugins, generate
# four weeks of demo data with drift in week 3 (unless the landing folder has data), backfill those weeks
# through the DAGs (training follows on the Asset events), leave the schedule running, and print where the UI
# is, how to log in, an accuracy table, and how to score rows with the champion (predict, serve + curl).
# With OLDER_WEEK=1 the week before the demo then lands: it waits for a rebuild, rebuild_model rebuilds
# generation 2 with every week in time order, the gate decides and (if it passes) the live generation switches.
# Idempotent: a second run reuses what exists and ingests nothing twice.
#   scripts/run.sh [DEMO OPTIONS]             `make run`: one broker, airflow standalone (SQLite, LocalExecutor)
#   scripts/run.sh --cluster [DEMO OPTIONS]   `make run-cluster`: the distributed stack of scripts/cluster.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ "${1:-}" = "--cluster" ]; then
  # `make run-cluster`: the same job on the distributed stack (scripts/cluster.sh: the 3-node Kafka cluster,
  # PostgreSQL, Redis, Airflow with the CeleryExecutor and two workers). With PostgreSQL the backfill may be created
  # while the scheduler runs.
  shift
  STACK=scripts/cluster.sh
  source infra/cluster/env.sh
  $STACK start
  python -m include demo prepare "$@"
else
  STACK=scripts/airflow.sh
  source infra/airflow/env.sh
  infra/kafka/kafka.sh start >/dev/null
  # The backfill is created while the scheduler is stopped: on SQLite a CLI backfill racing the scheduler can fail.
  $STACK stop >/dev/null
  mkdir -p "$AIRFLOW_HOME" && airflow db migrate >"$AIRFLOW_HOME/migrate.log" 2>&1
  python -m include demo prepare "$@"
  $STACK start
fi
# TensorFlow (the batch ceilings) logs CUDA plugin registration errors on a CPU-only machine: not for the user.
TF_CPP_MIN_LOG_LEVEL=3 python -m include demo wait "$@"
echo
echo "Kafka:      $KAFKA_BOOTSTRAP_SERVERS"
echo "Airflow UI: $($STACK url)   (model accuracy: "Accuracy" in the navigation)"
echo "Login:      $($STACK login)"
echo "Stop with:  make stop"
echo
scripts/serve.sh start >/dev/null || echo "serve: not started (see ${RETRAIN_STATE_DIR:-.state}/serve.log); python -m include serve starts it"
python -m include demo scoring
# `make run OLDER_WEEK=1`: then the week before the demo lands (the backfill that needs a rebuild and a switch).
if [ "${OLDER_WEEK:-0}" = "1" ]; then
  echo
  TF_CPP_MIN_LOG_LEVEL=3 python -m include demo older "$@"
fi
