#!/usr/bin/env bash
# `make run`: start the Kafka broker and Airflow (standalone) with this project's DAGs and plugins, then
# print where the UI is and how to log in. Idempotent: a second run reuses what is running.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source infra/airflow/env.sh
infra/kafka/kafka.sh start >/dev/null
scripts/airflow.sh start
echo
echo "Kafka:      $KAFKA_BOOTSTRAP_SERVERS"
echo "Airflow UI: $(scripts/airflow.sh url)"
echo "Login:      $(scripts/airflow.sh login)"
echo "Stop with:  make stop"
