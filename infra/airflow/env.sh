# Sourced by the Makefile's scripts: the environment of this project's local Airflow.
# Everything lives under .state/ (ignored by git). Override any variable by exporting it first.
PROJECT="${PROJECT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
export PATH="$PROJECT/.venv/bin:$PATH"            # airflow standalone starts its parts as `airflow`
export PYTHONPATH="$PROJECT${PYTHONPATH:+:$PYTHONPATH}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$PROJECT/.state/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$PROJECT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$PROJECT/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-$AIRFLOW_HOME/passwords.json}"
export AIRFLOW__API__PORT="${AIRFLOW__API__PORT:-8080}"
export AIRFLOW__API__HOST="${AIRFLOW__API__HOST:-127.0.0.1}"
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="${AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL:-30}"
export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:${KAFKA_PORT:-9092}}"
# (Not ${VAR:-default}: the braces of the JSON would end the expansion and append "}}" to a value given before.)
if [ -z "${AIRFLOW_CONN_KAFKA_DEFAULT:-}" ]; then
  export AIRFLOW_CONN_KAFKA_DEFAULT="{\"conn_type\": \"kafka\", \"extra\": {\"bootstrap.servers\": \"$KAFKA_BOOTSTRAP_SERVERS\"}}"
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# Airflow's SQLite metadata DB: wait for the writer instead of failing with "database is locked". (Not for the
# PostgreSQL of scripts/cluster.sh, whose driver has no such argument.)
case "${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite}" in
  sqlite*) export AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS:-include.airflow_sqlite.CONNECT_ARGS}" ;;
esac
# Tasks reach the API server's execution API; it must follow the port chosen above.
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-http://$AIRFLOW__API__HOST:$AIRFLOW__API__PORT/execution/}"
