#!/usr/bin/env bash
# The distributed stack on this machine (`make run-cluster`): docker-compose.yml's configuration with its
# kafka-cluster profile, without Docker. PostgreSQL (infra/postgres/postgres.sh), Redis (infra/redis/redis.sh), a
# 3-node Kafka cluster (infra/kafka/kafka.sh cluster) and Airflow with the CeleryExecutor: api-server, scheduler,
# dag-processor, triggerer and two Celery workers, each a process of its own with compose's command and
# environment (infra/cluster/stack.py derives both from docker-compose.yml; infra/cluster/env.sh has the ports).
#
#   scripts/cluster.sh start        start what is not running (all of it the first time), wait until healthy
#   scripts/cluster.sh start NAME   start one Airflow process (e.g. a killed worker-1)
#   scripts/cluster.sh stop         stop all of it (Airflow, Redis, PostgreSQL, the Kafka cluster)
#   scripts/cluster.sh status       each part; exit 0 when all run and Airflow is healthy
#   scripts/cluster.sh url | login  the UI's address; the login (the simple auth manager's generated password)
#   scripts/cluster.sh kill NAME    SIGKILL an Airflow process (e.g. worker-1) and every process it started,
#                                   task runners included, as a machine that dies (the fault tests)
#   scripts/cluster.sh pids NAME    those processes' ids
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../infra/cluster/env.sh"
RUN="$CLUSTER_STATE_DIR/run"   # pid files and logs of the Airflow processes
URL="http://$AIRFLOW__API__HOST:$AIRFLOW__API__PORT"
KAFKA="$PROJECT/infra/kafka/kafka.sh"
START_TIMEOUT="${CLUSTER_START_TIMEOUT:-240}"

log() { echo "cluster: $*" >&2; }

processes() { python "$PROJECT/infra/cluster/stack.py" processes; }

names() { processes | cut -f1; }

running_pid() { local f="$RUN/$1.pid"; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"; }

session_pids() {
  # Every process of the session a process started with setsid leads: the task supervisors and task runners a
  # worker forks live in process groups of their own, but stay in its session.
  ps -e -o pid=,sid= | awk -v sid="$1" '$2 == sid { print $1 }'
}

launch() {
  local name="$1" command="$2"
  log "starting $name: $command (log: $RUN/$name.log)"
  # setsid: each process leads a session of its own, so stop and kill reach everything it starts.
  eval "set -- $command"
  setsid "$@" >"$RUN/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

healthy() { python - "$URL" <<'PY' 2>/dev/null
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/api/v2/monitor/health", timeout=5) as r:
    h = json.load(r)
parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
sys.exit(0 if all((h.get(p) or {}).get("status") == "healthy" for p in parts) else 1)
PY
}

workers_ready() {
  # Each worker has said "<name>@<host> ready." since it was launched (its log starts anew at each launch).
  local name
  for name in $(names | grep '^worker-'); do
    grep -q "$name@[^ ]* ready\." "$RUN/$name.log" 2>/dev/null || return 1
  done
}

start_one() {
  # One Airflow process (e.g. a killed worker), the rest of the stack already running.
  local name="$1" command
  command="$(processes | awk -F'\t' -v n="$name" '$1 == n { print $2 }')"
  [ -n "$command" ] || { log "no process named '$name' (names: $(names | tr '\n' ' '))"; exit 2; }
  mkdir -p "$RUN"
  if running_pid "$name" >/dev/null; then log "$name already running"; return 0; fi
  launch "$name" "$command"
  local waited=0
  until healthy && workers_ready; do
    running_pid "$name" >/dev/null || { log "$name exited"; tail -n 40 "$RUN/$name.log" >&2; exit 1; }
    [ "$waited" -lt "$START_TIMEOUT" ] || { log "not healthy after ${START_TIMEOUT}s"; exit 1; }
    sleep 1; waited=$((waited + 1))
  done
  log "$name running"
}

start() {
  mkdir -p "$RUN"
  "$PROJECT/infra/postgres/postgres.sh" start
  "$PROJECT/infra/redis/redis.sh" start
  # The three Kafka nodes start while Airflow's database is migrated and its processes start (tasks need Kafka,
  # starting Airflow does not).
  "$KAFKA" cluster start >"$RUN/kafka-start.log" 2>&1 &
  local kafka_pid=$!
  airflow db migrate >"$RUN/migrate.log" 2>&1 || { log "airflow db migrate failed"; tail -n 30 "$RUN/migrate.log" >&2; wait "$kafka_pid" || true; exit 1; }
  log "database migrated (${SECONDS}s)"
  local name command
  while IFS=$'\t' read -r name command; do
    running_pid "$name" >/dev/null || launch "$name" "$command"
  done < <(processes)
  wait "$kafka_pid" || { log "the Kafka cluster did not start"; tail -n 30 "$RUN/kafka-start.log" >&2; exit 1; }
  log "Kafka cluster ready: $KAFKA_BOOTSTRAP_SERVERS (${SECONDS}s)"
  local waited=0
  until healthy && workers_ready; do
    for name in $(names); do
      running_pid "$name" >/dev/null || { log "$name exited"; tail -n 40 "$RUN/$name.log" >&2; exit 1; }
    done
    [ "$waited" -lt "$START_TIMEOUT" ] || { log "not healthy after ${START_TIMEOUT}s"; exit 1; }
    sleep 2; waited=$((waited + 2))
  done
  log "healthy at $URL (workers: $(names | grep '^worker-' | tr '\n' ' ')) after ${SECONDS}s"
}

stop_airflow() {
  # SIGTERM to every process (a Celery worker then finishes its running tasks), up to 30 s, then SIGKILL to
  # whatever of their sessions is left.
  local name pid sessions=()
  for name in $(names); do
    if pid="$(running_pid "$name")"; then kill -TERM -- "-$pid" 2>/dev/null || true; sessions+=("$pid"); fi
  done
  for pid in "${sessions[@]}"; do
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  done
  for pid in "${sessions[@]}"; do
    # shellcheck disable=SC2046
    kill -KILL $(session_pids "$pid") 2>/dev/null || true
  done
  for name in $(names); do rm -f "$RUN/$name.pid"; done
  [ "${#sessions[@]}" -eq 0 ] && log "Airflow not running" || log "Airflow stopped"
}

stop() {
  # The Kafka nodes stop while Airflow does (each takes a while; nothing is left to protect).
  local kafka_pid=""
  if compgen -G "$KAFKA_CLUSTER_DIR/node-*/broker.pid" >/dev/null; then "$KAFKA" cluster stop & kafka_pid=$!; fi
  [ -d "$RUN" ] && stop_airflow
  "$HERE/serve.sh" stop >/dev/null 2>&1 || true
  [ -z "$kafka_pid" ] || wait "$kafka_pid"
  "$PROJECT/infra/redis/redis.sh" stop
  "$PROJECT/infra/postgres/postgres.sh" stop
}

kill_process() {
  local name="$1" pid pids
  pid="$(running_pid "$name")" || { log "$name is not running"; exit 1; }
  pids="$(session_pids "$pid")"
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
  log "$name killed (processes $(echo $pids))"
}

status() {
  local ok=0 name
  "$PROJECT/infra/postgres/postgres.sh" status || ok=1
  "$PROJECT/infra/redis/redis.sh" status || ok=1
  "$KAFKA" cluster status || ok=1
  for name in $(names); do
    if running_pid "$name" >/dev/null; then echo "$name: running (pid $(running_pid "$name"))"; else echo "$name: not running"; ok=1; fi
  done
  if healthy; then echo "airflow: healthy at $URL"; else echo "airflow: not healthy"; ok=1; fi
  return "$ok"
}

case "${1:-}" in
  start) if [ -n "${2:-}" ]; then start_one "$2"; else start; fi ;;
  stop) stop ;;
  status) status ;;
  url) echo "$URL" ;;
  login) "$HERE/airflow.sh" login ;;
  kill) kill_process "${2:?usage: $0 kill NAME}" ;;
  pids) pid="$(running_pid "${2:?usage: $0 pids NAME}")" && session_pids "$pid" ;;
  *) echo "usage: $0 {start [NAME]|stop|status|url|login|kill NAME|pids NAME}" >&2; exit 2 ;;
esac
