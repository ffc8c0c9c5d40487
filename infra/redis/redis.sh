#!/usr/bin/env bash
# A private Redis (Debian's redis-server) on 127.0.0.1: the Celery broker of `make run-cluster`, as the
# `redis` service of docker-compose.yml is for the containers.
#
#   infra/redis/redis.sh start    start in the background, wait until it answers PING
#   infra/redis/redis.sh stop     SHUTDOWN (it saves its snapshot first), wait until it is gone
#   infra/redis/redis.sh status   exit 0 when it answers PING
#
# Environment (defaults in brackets):
#   REDIS_STATE_DIR   its snapshot, log and pid file    [<project>/.state/redis]
#   REDIS_PORT        TCP port on 127.0.0.1             [6379]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT="$(cd "$HERE/../.." && pwd)"
STATE="${REDIS_STATE_DIR:-$PROJECT/.state/redis}"
PORT="${REDIS_PORT:-6379}"
PIDFILE="$STATE/redis.pid"

log() { echo "redis.sh: $*" >&2; }

need() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || {
    log "redis-server is not installed (make system-deps installs it)"; exit 1; }
}

ping() { [ "$(redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null)" = "PONG" ]; }

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid; pid="$(cat "$PIDFILE")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start() {
  need
  if running_pid >/dev/null && ping; then log "already running on 127.0.0.1:$PORT"; return 0; fi
  mkdir -p "$STATE"
  log "starting on 127.0.0.1:$PORT (log: $STATE/redis.log)"
  redis-server --bind 127.0.0.1 --port "$PORT" --protected-mode yes --dir "$STATE" --daemonize yes \
    --pidfile "$PIDFILE" --logfile "$STATE/redis.log"
  for _ in $(seq 1 100); do ping && { log "ready on 127.0.0.1:$PORT"; return 0; }; sleep 0.1; done
  log "not answering PING"; tail -n 20 "$STATE/redis.log" >&2 || true; exit 1
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then log "not running"; rm -f "$PIDFILE"; return 0; fi
  redis-cli -h 127.0.0.1 -p "$PORT" shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || { rm -f "$PIDFILE"; log "stopped"; return 0; }; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"; log "killed after 10 s"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running_pid >/dev/null && ping; then echo "running on 127.0.0.1:$PORT"; else echo "not running"; exit 1; fi ;;
  *) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
