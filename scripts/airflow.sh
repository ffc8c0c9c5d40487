#!/usr/bin/env bash
# Local Airflow (standalone: api-server, scheduler, dag-processor, triggerer; SQLite; LocalExecutor).
#   scripts/airflow.sh start | stop | status
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../infra/airflow/env.sh"
PIDFILE="$AIRFLOW_HOME/standalone.pid"
URL="http://$AIRFLOW__API__HOST:$AIRFLOW__API__PORT"

healthy() { python - "$URL" <<'PY' 2>/dev/null
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/api/v2/monitor/health", timeout=5) as r:
    h = json.load(r)
sys.exit(0 if h.get("scheduler", {}).get("status") == "healthy" else 1)
PY
}

running_pid() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && cat "$PIDFILE"; }

start() {
  mkdir -p "$AIRFLOW_HOME"
  if running_pid >/dev/null && healthy; then echo "airflow: already running at $URL"; return 0; fi
  airflow db migrate >"$AIRFLOW_HOME/migrate.log" 2>&1 || { tail -n 30 "$AIRFLOW_HOME/migrate.log"; exit 1; }
  echo "airflow: starting standalone (log: $AIRFLOW_HOME/standalone.log)"
  setsid airflow standalone >"$AIRFLOW_HOME/standalone.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 180); do
    if healthy; then echo "airflow: healthy at $URL"; return 0; fi
    running_pid >/dev/null || { echo "airflow: standalone exited"; tail -n 40 "$AIRFLOW_HOME/standalone.log"; exit 1; }
    sleep 1
  done
  echo "airflow: not healthy after 180s"; tail -n 40 "$AIRFLOW_HOME/standalone.log"; exit 1
}

stop() {
  local pid
  if pid="$(running_pid)"; then
    # standalone was started with setsid: its pid is the process group of all its parts.
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "airflow: stopped"
  else
    echo "airflow: not running"
  fi
  rm -f "$PIDFILE"
}

login() {
  local user="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS%%:*}"
  python - "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" "$user" <<'PY'
import json, sys
print(f"user {sys.argv[2]}, password {json.load(open(sys.argv[1]))[sys.argv[2]]} (from {sys.argv[1]})")
PY
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running_pid >/dev/null && healthy; then echo "airflow: healthy at $URL"; else echo "airflow: not running"; exit 1; fi ;;
  url) echo "$URL" ;;
  login) login ;;
  *) echo "usage: $0 {start|stop|status|url|login}" >&2; exit 2 ;;
esac
