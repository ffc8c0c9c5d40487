#!/usr/bin/env bash
# `make run`: start the Kafka broker and Airflow (standalone) with this project's DAGs and plugins, generate
# four weeks of demo data with drift in week 3 (unless the landing folder has data), backfill those weeks
# through the DAGs (training follows on the Asset events), leave the schedule running, and print where the UI
# is, how to log in, and an accuracy table. Idempotent: a second run reuses what exists and ingests nothing twice.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source infra/airflow/env.sh
infra/kafka/kafka.sh start >/dev/null
scripts/airflow.sh start
python -m include.main_job "$@"
echo
echo "Kafka:      $KAFKA_BOOTSTRAP_SERVERS"
echo "Airflow UI: $(scripts/airflow.sh url)   (Model accuracy page: Browse > Model accuracy)"
echo "Login:      $(scripts/airflow.sh login)"
echo "Stop with:  make stop"
