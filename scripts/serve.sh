#!/usr/bin/env bash
# The HTTP scorer of `make run` (python -m include serve: TF Serving's REST API, following the champion), in the
# background so the curl line `make run` prints answers at once.
#   scripts/serve.sh start | stop | status | url
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../infra/airflow/env.sh"
STATE="${RETRAIN_STATE_DIR:-$PROJECT/.state}"
PIDFILE="$STATE/serve.pid"
LOG="$STATE/serve.log"
URL="http://${RETRAIN_SERVE_HOST:-127.0.0.1}:${RETRAIN_SERVE_PORT:-8501}"
MODEL="${RETRAIN_SERVE_MODEL:-default}"

ready() { python - "$URL/v1/models/$MODEL" <<'PY' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
}

running_pid() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && cat "$PIDFILE"; }

start() {
  mkdir -p "$STATE"
  if running_pid >/dev/null && ready; then echo "serve: already running at $URL"; return 0; fi
  setsid python -m include serve >"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 120); do
    if ready; then echo "serve: ready at $URL (log: $LOG)"; return 0; fi
    running_pid >/dev/null || { echo "serve: exited"; tail -n 20 "$LOG"; exit 1; }
    sleep 0.5
  done
  echo "serve: no champion answered after 60s (log: $LOG)"; exit 1
}

stop() {
  local pid
  if pid="$(running_pid)"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$pid" 2>/dev/null || true
    echo "serve: stopped"
  else
    echo "serve: not running"
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running_pid >/dev/null && ready; then echo "serve: ready at $URL"; else echo "serve: not running"; exit 1; fi ;;
  url) echo "$URL" ;;
  *) echo "usage: $0 {start|stop|status|url}" >&2; exit 2 ;;
esac
