#!/usr/bin/env bash
# A single-node Apache Kafka 3.9 broker (KRaft, combined broker+controller) on 127.0.0.1, run from the
# jars Maven resolves into infra/kafka/lib. No Docker, no downloaded tarball.
#
#   infra/kafka/kafka.sh fetch    resolve the jars (once; Maven caches them)
#   infra/kafka/kafka.sh start    format storage on first use, start in the background, wait until ready
#   infra/kafka/kafka.sh stop     stop it (SIGTERM, then SIGKILL after a grace period)
#   infra/kafka/kafka.sh kill     SIGKILL it (fault-injection tests)
#   infra/kafka/kafka.sh status   exit 0 and print the address when it answers a metadata request
#   infra/kafka/kafka.sh logs     follow the server log
#   infra/kafka/kafka.sh run-class CLASS ARGS...   run a Kafka tool class with the broker's classpath
#
# Environment (defaults in brackets):
#   KAFKA_STATE_DIR   where data, logs and the pid file live   [<project>/.state/kafka]
#   KAFKA_PORT        client listener port on 127.0.0.1         [9092]
#   KAFKA_CONTROLLER_PORT                                        [KAFKA_PORT + 1]
#   KAFKA_START_TIMEOUT  seconds to wait for readiness           [90]
#   KAFKA_HEAP_OPTS   JVM heap                                   [-Xms256m -Xmx1g]
#   KAFKA_SASL_PLAIN_USERS  optional "user:password[,user:password...]": adds a SASL_PLAINTEXT listener
#                     (mechanism PLAIN) for these users, its JAAS file written to the state folder (mode 600).
#                     Unset (the default): no SASL listener, nothing changes.
#   KAFKA_SASL_PORT   port of that listener on 127.0.0.1         [KAFKA_PORT + 2]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT="$(cd "$HERE/../.." && pwd)"
LIB="$HERE/lib"
STATE="${KAFKA_STATE_DIR:-$PROJECT/.state/kafka}"
PORT="${KAFKA_PORT:-9092}"
CPORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
HEAP="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
PIDFILE="$STATE/broker.pid"
CONF="$STATE/server.properties"
BOOTSTRAP="127.0.0.1:$PORT"
SASL_USERS="${KAFKA_SASL_PLAIN_USERS:-}"
SASL_PORT="${KAFKA_SASL_PORT:-$((PORT + 2))}"
JAAS="$STATE/kafka_server_jaas.conf"

log() { echo "kafka.sh: $*" >&2; }

fetch() {
  if [ -f "$LIB/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || { log "Maven (mvn) is required to resolve the Kafka jars"; exit 1; }
  command -v java >/dev/null || { log "Java 17 is required to run the broker"; exit 1; }
  log "resolving Kafka jars with Maven into $LIB"
  rm -rf "$LIB"
  (cd "$HERE" && mvn -q -B package)
  touch "$LIB/.complete"
}

tool() {
  # Tools get a small heap and log to stderr at WARN, so their output stays readable.
  java -Xmx256m -Dlog4j.configuration="file:$HERE/tools-log4j.properties" -cp "$LIB/*" "$@"
}

write_config() {
  mkdir -p "$STATE/data" "$STATE/logs"
  local listeners="PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT"
  local advertised="PLAINTEXT://127.0.0.1:$PORT"
  local protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  if [ -n "$SASL_USERS" ]; then
    listeners="$listeners,SASL_PLAINTEXT://127.0.0.1:$SASL_PORT"
    advertised="$advertised,SASL_PLAINTEXT://127.0.0.1:$SASL_PORT"
    protocols="$protocols,SASL_PLAINTEXT:SASL_PLAINTEXT"
    write_jaas
  else
    rm -f "$JAAS"
  fi
  cat >"$CONF" <<EOF
# Written by infra/kafka/kafka.sh; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
log.dirs=$STATE/data
num.partitions=1
# One node: every internal topic has replication factor 1, or transactions and groups never start.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
default.replication.factor=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=-1
EOF
  if [ -n "$SASL_USERS" ]; then
    echo "sasl.enabled.mechanisms=PLAIN" >>"$CONF"
  fi
  cat >"$STATE/log4j.properties" <<EOF
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=$STATE/logs/server.log
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=3
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.clients=WARN
EOF
}

write_jaas() {
  # The broker's side of SASL/PLAIN: one user_<name>="<password>" entry per user. The passwords live only
  # in this file (mode 600, in the state folder), never in server.properties or on a command line, so
  # they may not contain a double quote or a backslash.
  local entries="" pair user pass
  local IFS=','
  for pair in $SASL_USERS; do
    user="${pair%%:*}"; pass="${pair#*:}"
    if [ -z "$user" ] || [ "$user" = "$pair" ]; then
      log "KAFKA_SASL_PLAIN_USERS: expected user:password pairs"; exit 1
    fi
    entries="$entries
  user_$user=\"$pass\""
  done
  (umask 077 && cat >"$JAAS" <<EOF
KafkaServer {
  org.apache.kafka.common.security.plain.PlainLoginModule required$entries;
};
EOF
  )
}

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid="$(cat "$PIDFILE")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

ready() {
  # A metadata request through the admin client: the broker answers only once it is serving clients.
  # The port check first, because the admin client waits a whole minute for an absent broker.
  port_open || return 1
  timeout 30 java -Xmx128m -Dlog4j.configuration="file:$HERE/tools-log4j.properties" -cp "$LIB/*" \
    org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --list >/dev/null 2>&1
}

start() {
  fetch
  if pid="$(running_pid)"; then
    if ready; then log "already running (pid $pid) on $BOOTSTRAP"; echo "$BOOTSTRAP"; return 0; fi
  fi
  write_config
  if [ ! -f "$STATE/data/meta.properties" ]; then
    log "formatting storage in $STATE/data"
    local cluster_id
    cluster_id="$(tool kafka.tools.StorageTool random-uuid)"
    tool kafka.tools.StorageTool format -t "$cluster_id" -c "$CONF" >/dev/null
  fi
  log "starting broker on $BOOTSTRAP (logs: $STATE/logs)"
  local jaas_opt=()
  if [ -n "$SASL_USERS" ]; then jaas_opt=("-Djava.security.auth.login.config=$JAAS"); fi
  # setsid: the broker outlives the shell that started it and is not killed with its process group.
  # shellcheck disable=SC2086
  setsid java $HEAP "${jaas_opt[@]}" -Dlog4j.configuration="file:$STATE/log4j.properties" \
    -Dkafka.logs.dir="$STATE/logs" \
    -cp "$LIB/*" kafka.Kafka "$CONF" >"$STATE/logs/stdout.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  local waited=0
  until ready; do
    if ! running_pid >/dev/null; then
      log "broker exited during start-up; last log lines:"; tail -n 30 "$STATE/logs/stdout.log" >&2 || true
      tail -n 30 "$STATE/logs/server.log" >&2 || true
      exit 1
    fi
    if [ "$waited" -ge "$TIMEOUT" ]; then log "not ready after ${TIMEOUT}s"; exit 1; fi
    sleep 1; waited=$((waited + 1))
  done
  log "ready on $BOOTSTRAP"
  echo "$BOOTSTRAP"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then log "not running"; rm -f "$PIDFILE"; return 0; fi
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$PIDFILE"; log "stopped"; return 0; }
    sleep 0.5
  done
  log "did not stop in 30s; killing"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
}

hard_kill() {
  local pid
  if pid="$(running_pid)"; then kill -KILL "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; fi
  rm -f "$PIDFILE"
}

status() {
  if running_pid >/dev/null && ready; then echo "running on $BOOTSTRAP"; return 0; fi
  echo "not running"; return 1
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  kill) hard_kill ;;
  status) status ;;
  logs) tail -F "$STATE/logs/server.log" ;;
  run-class) shift; fetch; tool "$@" ;;
  *) echo "usage: $0 {fetch|start|stop|kill|status|logs|run-class CLASS ARGS...}" >&2; exit 2 ;;
esac
