# Sourced by scripts/cluster.sh and `scripts/run.sh --cluster`: the environment of the native CeleryExecutor stack
# (docker-compose.yml's configuration on this machine, derived by infra/cluster/stack.py), then what every local
# Airflow of this project gets (infra/airflow/env.sh: the venv, DAG and plugin folders, the simple auth manager).
# Where it lives and listens (defaults in brackets; `make run`'s standalone Airflow keeps its own ports):
#   CLUSTER_STATE_DIR [<project>/.state/cluster]   Airflow home, PostgreSQL, Redis, and shared/ (checkpoints, models)
#   CLUSTER_API_PORT [8081], CLUSTER_POSTGRES_PORT [5433], CLUSTER_REDIS_PORT [6380], CLUSTER_LOG_PORT [8795..8797]
#   KAFKA_CLUSTER_PORT [9192], KAFKA_CLUSTER_DIR [<project>/.state/kafka-cluster]   (infra/kafka/kafka.sh cluster)
# Compose's own variables (POSTGRES_PASSWORD, RETRAIN_TOPIC_PARTITIONS, LANDING_HOST_DIR...) work as with compose.
PROJECT="${PROJECT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
export PATH="$PROJECT/.venv/bin:$PATH"
_cluster_exports="$(python "$PROJECT/infra/cluster/stack.py" env)" || { echo "infra/cluster/env.sh: no environment" >&2; return 1; }
eval "$_cluster_exports"
unset _cluster_exports
source "$PROJECT/infra/airflow/env.sh"
