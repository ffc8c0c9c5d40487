#!/usr/bin/env bash
# `make bench` / scripts/bench.sh: start the Kafka broker (if it is not running) and run the benchmark scripts,
# which PRINT their figures and write markdown reports under bench/results/ (no pass/fail on timing).
#
#   scripts/bench.sh [ARGS...]          every benchmark below that exists, in order, each given ARGS
#   scripts/bench.sh NAME [ARGS...]     only bench/bench_NAME.py (e.g. ingest), with its own flags:
#                                       scripts/bench.sh ingest --rows 2000000 --rss-gb 1
#
# The broker is infra/kafka/kafka.sh's (KAFKA_PORT / KAFKA_STATE_DIR choose the instance); the benchmarks use
# KAFKA_BOOTSTRAP_SERVERS, which defaults to the address that broker reports.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Fixed order: the ingest first (it needs only Kafka), then training, then accuracy, then the drift detectors, then
# streaming scoring, then the HTTP scorer, then generalisation (~17 min on 2 cores).
BENCHMARKS=(bench/bench_ingest.py bench/bench_training.py bench/bench_accuracy.py bench/bench_drift.py
            bench/bench_scoring.py bench/bench_serving.py bench/bench_generalise.py)

if [ "$#" -gt 0 ] && [ -f "bench/bench_$1.py" ]; then
  BENCHMARKS=("bench/bench_$1.py")
  shift
fi

bootstrap="$(infra/kafka/kafka.sh start)"
export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-$bootstrap}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

ran=0
for script in "${BENCHMARKS[@]}"; do
  [ -f "$script" ] || continue
  echo "== $script $*"
  .venv/bin/python "$script" "$@"
  ran=$((ran + 1))
done
[ "$ran" -gt 0 ] || { echo "bench.sh: no benchmark scripts found" >&2; exit 1; }
