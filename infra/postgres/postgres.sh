#!/usr/bin/env bash
# A private PostgreSQL server (Debian's server programs: initdb + pg_ctl) on 127.0.0.1, with what
# docker-compose.yml's `postgres` service has: the superuser POSTGRES_USER / POSTGRES_PASSWORD, the database
# POSTGRES_DB, and the databases infra/postgres/init/*.sql create (run once, on a fresh data folder, as the
# postgres image runs /docker-entrypoint-initdb.d). `make run-cluster` (scripts/cluster.sh) and the tests use it.
#
#   infra/postgres/postgres.sh start                  initialise on first use, start, wait until it accepts connections
#   infra/postgres/postgres.sh stop [fast|immediate]  stop (immediate: connections cut, as a crash looks to clients)
#   infra/postgres/postgres.sh status                 exit 0 when it accepts connections
#   infra/postgres/postgres.sh url [DATABASE]         the SQLAlchemy URL of DATABASE [POSTGRES_DB]
#   infra/postgres/postgres.sh bindir                 where the server programs are (exit 1: not installed)
#
# Environment (defaults in brackets):
#   POSTGRES_STATE_DIR  data/, server.log and the socket       [<project>/.state/postgres]
#   POSTGRES_PORT       TCP port on 127.0.0.1                   [5432]
#   POSTGRES_USER       superuser                               [airflow]
#   POSTGRES_PASSWORD   its password (TCP logins need it)       [airflow]
#   POSTGRES_DB         database created at initialisation      [airflow]
#   POSTGRES_OPTIONS    extra server options, e.g. "-c fsync=off" (the tests) []
# As root the server runs as the `postgres` user (PostgreSQL refuses root), which then owns POSTGRES_STATE_DIR.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT="$(cd "$HERE/../.." && pwd)"
STATE="${POSTGRES_STATE_DIR:-$PROJECT/.state/postgres}"
PORT="${POSTGRES_PORT:-5432}"
SUPERUSER="${POSTGRES_USER:-airflow}"
PASSWORD="${POSTGRES_PASSWORD:-airflow}"
DATABASE="${POSTGRES_DB:-airflow}"
OPTIONS="${POSTGRES_OPTIONS:-}"
DATA="$STATE/data"

log() { echo "postgres.sh: $*" >&2; }

bindir() {
  # Debian keeps the server programs in /usr/lib/postgresql/<major>/bin; the newest major wins.
  local found
  found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n | tail -n 1)"
  [ -n "$found" ] && [ -x "$found/initdb" ] || { log "PostgreSQL is not installed (make system-deps installs it)"; return 1; }
  echo "$found"
}

as_owner() {
  # Run a server program as the data folder's owner: `postgres` when we are root.
  local program="$1"; shift
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$BIN/$program" "$@"; else "$BIN/$program" "$@"; fi
}

ready() { as_owner pg_isready -q -h 127.0.0.1 -p "$PORT" -d postgres >/dev/null 2>&1; }

running() { [ -f "$DATA/postmaster.pid" ] && as_owner pg_ctl -D "$DATA" status >/dev/null 2>&1; }

psql_socket() {
  # The superuser over the Unix socket in the state folder (trusted): initialisation only.
  as_owner psql -X -q -v ON_ERROR_STOP=1 -h "$STATE" -p "$PORT" -U "$SUPERUSER" "$@"
}

init() {
  mkdir -p "$STATE"
  chmod 700 "$STATE"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres:postgres "$STATE"
    runuser -u postgres -- test -x "$STATE" || {
      log "the postgres user cannot reach $STATE: let it through the folders above (chmod o+x)"; exit 1; }
  fi
  local pwfile="$STATE/.pwfile"
  (umask 077 && printf '%s\n' "$PASSWORD" >"$pwfile")
  [ "$(id -u)" -ne 0 ] || chown postgres:postgres "$pwfile"
  log "initialising a cluster in $DATA (superuser $SUPERUSER)"
  # Password logins over TCP (as the compose service, whose clients give POSTGRES_PASSWORD); the socket in the
  # state folder, reachable only by its owner, is trusted for the initialisation below.
  if ! as_owner initdb -D "$DATA" -U "$SUPERUSER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --no-sync >"$STATE/initdb.log" 2>&1; then
    rm -f "$pwfile"; cat "$STATE/initdb.log" >&2; exit 1
  fi
  rm -f "$pwfile"
}

first_start() {
  # What the postgres image does on an empty volume: POSTGRES_DB, then the init scripts, once.
  if [ "$DATABASE" != "postgres" ]; then
    psql_socket -d postgres -c "CREATE DATABASE \"$DATABASE\""
  fi
  local sql
  for sql in "$PROJECT"/infra/postgres/init/*.sql; do
    [ -e "$sql" ] || continue
    # The file is read by this shell, not by the server's user (who may not see the project folder).
    psql_socket -d "$DATABASE" <"$sql"
  done
  touch "$STATE/.initialised"
}

start() {
  BIN="$(bindir)"
  if running && ready; then log "already running on 127.0.0.1:$PORT"; return 0; fi
  [ -f "$DATA/PG_VERSION" ] || init
  log "starting on 127.0.0.1:$PORT (log: $STATE/server.log)"
  # shellcheck disable=SC2086
  if ! as_owner pg_ctl -D "$DATA" -l "$STATE/server.log" -w -t 60 \
      -o "-p $PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$STATE $OPTIONS" start >/dev/null; then
    tail -n 30 "$STATE/server.log" >&2 || true
    exit 1
  fi
  for _ in $(seq 1 60); do ready && break; sleep 0.5; done
  ready || { log "not accepting connections"; tail -n 30 "$STATE/server.log" >&2; exit 1; }
  [ -f "$STATE/.initialised" ] || first_start
  log "ready on 127.0.0.1:$PORT"
}

stop() {
  [ -f "$DATA/postmaster.pid" ] || { log "not running"; return 0; }
  BIN="$(bindir)"
  local mode="${1:-fast}"
  case "$mode" in fast|immediate|smart) ;; *) log "stop mode must be fast, immediate or smart"; exit 2 ;; esac
  if ! running; then log "not running"; return 0; fi
  as_owner pg_ctl -D "$DATA" -m "$mode" -w -t 60 stop >/dev/null
  log "stopped ($mode)"
}

url() {
  local db="${1:-$DATABASE}"
  python3 - "$SUPERUSER" "$PASSWORD" "$PORT" "$db" <<'PY'
import sys
from urllib.parse import quote
user, password, port, db = sys.argv[1:]
print(f"postgresql+psycopg2://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{port}/{db}")
PY
}

case "${1:-}" in
  start) start ;;
  stop) shift; stop "$@" ;;
  status) BIN="$(bindir)"; if running && ready; then echo "running on 127.0.0.1:$PORT"; else echo "not running"; exit 1; fi ;;
  url) shift; url "$@" ;;
  bindir) bindir ;;
  *) echo "usage: $0 {start|stop [fast|immediate]|status|url [DATABASE]|bindir}" >&2; exit 2 ;;
esac
