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
# A local 3-node cluster (combined broker+controller nodes, KRaft quorum of 3, replication factor 3,
# min.insync.replicas 2, transaction and offsets topics replicated 3 with min ISR 2):
#   infra/kafka/kafka.sh cluster start|stop|status|bootstrap     the whole cluster
#   infra/kafka/kafka.sh cluster kill N|stop N|start N|restart N  one node (1-3): SIGKILL, SIGTERM, start
#   infra/kafka/kafka.sh cluster pid N                            its process id
#   infra/kafka/kafka.sh cluster config N                         the server.properties node N runs with
#   KAFKA_CLUSTER_DIR   state of the cluster, node-N below it    [<project>/.state/kafka-cluster]
#   KAFKA_CLUSTER_PORT  client port of node 1; node N listens on PORT+10*(N-1), its controller on +1 [9192]
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
# Single node by default; cluster_node sets these for one node of the cluster.
NODE_ID=1
VOTERS="1@127.0.0.1:$CPORT"
REPLICATION=1
MIN_ISR=1
CLUSTER_ID="${KAFKA_CLUSTER_ID:-}"
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
node.id=$NODE_ID
controller.quorum.voters=$VOTERS
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
log.dirs=$STATE/data
num.partitions=1
# One node: every internal topic has replication factor 1, or transactions and groups never start.
# The cluster: 3 copies of everything, and a write needs 2 of them (one node may fail without loss).
offsets.topic.replication.factor=$REPLICATION
transaction.state.log.replication.factor=$REPLICATION
transaction.state.log.min.isr=$MIN_ISR
default.replication.factor=$REPLICATION
min.insync.replicas=$MIN_ISR
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
  launch
  wait_ready
  echo "$BOOTSTRAP"
}

launch() {
  write_config
  if [ ! -f "$STATE/data/meta.properties" ]; then
    log "formatting storage in $STATE/data"
    local cluster_id="$CLUSTER_ID"
    [ -n "$cluster_id" ] || cluster_id="$(tool kafka.tools.StorageTool random-uuid)"
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
}

wait_ready() {
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

# --- the 3-node cluster -------------------------------------------------------------------------------------
CLUSTER_DIR="${KAFKA_CLUSTER_DIR:-$PROJECT/.state/kafka-cluster}"
CLUSTER_PORT="${KAFKA_CLUSTER_PORT:-9192}"
NODES=(1 2 3)

cluster_node() {
  # Point the single-node functions at node $1 of the cluster.
  local n="$1"
  case "$n" in 1|2|3) ;; *) log "node must be 1, 2 or 3, not '$n'"; exit 2 ;; esac
  NODE_ID="$n"
  PORT=$((CLUSTER_PORT + 10 * (n - 1)))
  CPORT=$((PORT + 1))
  STATE="$CLUSTER_DIR/node-$n"
  PIDFILE="$STATE/broker.pid"
  CONF="$STATE/server.properties"
  BOOTSTRAP="127.0.0.1:$PORT"
  SASL_USERS=""
  HEAP="${KAFKA_CLUSTER_HEAP_OPTS:--Xms128m -Xmx512m}"
  VOTERS=""
  local m
  for m in "${NODES[@]}"; do
    VOTERS="${VOTERS:+$VOTERS,}$m@127.0.0.1:$((CLUSTER_PORT + 10 * (m - 1) + 1))"
  done
  REPLICATION=3
  MIN_ISR=2
  mkdir -p "$CLUSTER_DIR"
  [ -f "$CLUSTER_DIR/cluster.id" ] || tool kafka.tools.StorageTool random-uuid >"$CLUSTER_DIR/cluster.id"
  CLUSTER_ID="$(cat "$CLUSTER_DIR/cluster.id")"
}

cluster_bootstrap() {
  local out="" n
  for n in "${NODES[@]}"; do out="${out:+$out,}127.0.0.1:$((CLUSTER_PORT + 10 * (n - 1)))"; done
  echo "$out"
}

cluster() {
  local action="${1:-}" n="${2:-}"
  if [ "$action" = config ]; then
    # Node N's server.properties, as start writes it (tests/unit/test_compose.py compares it with compose's nodes).
    cluster_node "$n"; write_config; cat "$CONF"; return
  fi
  fetch
  if [ -n "$n" ]; then
    cluster_node "$n"
    case "$action" in
      kill) hard_kill; log "node $n killed" ;;
      stop) stop ;;
      start) running_pid >/dev/null || launch; wait_ready ;;
      restart) stop; launch; wait_ready ;;
      pid) running_pid || exit 1 ;;
      status) status ;;
      *) echo "usage: $0 cluster {kill|stop|start|restart|pid|status} N" >&2; exit 2 ;;
    esac
    return
  fi
  case "$action" in
    start)
      # All nodes are launched before any is waited for: a controller needs a quorum of 2 to serve.
      for n in "${NODES[@]}"; do cluster_node "$n"; running_pid >/dev/null || launch; done
      for n in "${NODES[@]}"; do cluster_node "$n"; wait_ready; done
      cluster_bootstrap ;;
    stop)
      # All at once: a node stopped last, after its peers, has no quorum and would wait out its shutdown timeout.
      local pids=() pid
      for n in "${NODES[@]}"; do
        cluster_node "$n"
        if pid="$(running_pid)"; then kill -TERM "$pid"; pids+=("$pid"); fi
      done
      for pid in "${pids[@]}"; do
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$pid" 2>/dev/null || true
      done
      for n in "${NODES[@]}"; do cluster_node "$n"; rm -f "$PIDFILE"; done
      log "cluster stopped" ;;
    status)
      local up=0
      for n in "${NODES[@]}"; do
        cluster_node "$n"
        if running_pid >/dev/null && ready; then echo "node $n: running on $BOOTSTRAP"; up=$((up + 1));
        else echo "node $n: not running"; fi
      done
      [ "$up" -eq "${#NODES[@]}" ] ;;
    bootstrap) cluster_bootstrap ;;
    *) echo "usage: $0 cluster {start|stop|status|bootstrap} | cluster {kill|stop|start|restart|pid|status} N" >&2
       exit 2 ;;
  esac
}

case "${1:-}" in
  cluster) shift; cluster "$@" ;;
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  kill) hard_kill ;;
  status) status ;;
  logs) tail -F "$STATE/logs/server.log" ;;
  run-class) shift; fetch; tool "$@" ;;
  *) echo "usage: $0 {fetch|start|stop|kill|status|logs|run-class CLASS ARGS...|cluster ...}" >&2; exit 2 ;;
esac
