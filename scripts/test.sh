#!/usr/bin/env bash
# `make test`: the whole suite. The tests start (and stop) their own broker on a separate port and state
# folder unless KAFKA_BOOTSTRAP_SERVERS is set, so a broker left by `make run` is never touched.
#
# With no arguments the suite runs as two pytest sessions at once ("lanes"), each with its own broker, ports,
# JUnit file and report. One session used about 1.5 of the 2 cores (its long tests wait on Airflow's scheduler,
# retry delays, brokers starting and being killed); two at once keep both busy: 57.5 min became 33 min here.
# Lane 2 is the fault-injection suite and the Airflow end-to-end modules listed below; lane 1 is the rest.
# Lane 1 prints as it runs; lane 2's output follows it (also in test-artifacts/lane2.log). The run fails if
# either lane fails. With arguments (`make test PYTEST_ARGS=...`), or TEST_LANES=1, one session runs them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PWD/.venv/bin:$PATH" TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
mkdir -p test-artifacts
common=(-ra --durations=15)

if [ "$#" -gt 0 ] || [ "${TEST_LANES:-2}" = 1 ]; then
    exec python -m pytest "${common[@]}" --junitxml=test-artifacts/junit.xml "$@"
fi

# Lane 2: about half of the suite's time (one session, `--durations=0`: the faults 18 min, these three 14 min).
# Two lanes at once, fresh clone: lane 1 32.9 min, lane 2 31.1 min.
LANE2=(
    tests/faults
    tests/integration/test_backfill_e2e.py
    tests/integration/test_alerts_e2e.py
    tests/integration/test_lifecycle.py
)
ignore=()
for path in "${LANE2[@]}"; do ignore+=("--ignore=$path"); done

port=${TEST_KAFKA_PORT:-19092}
log=test-artifacts/lane2.log
# Lane 2's broker and the ports its fixtures derive from TEST_KAFKA_PORT sit 400 above lane 1's.
# Its own temporary folder too, so neither session's clean-up of old numbered folders meets the other's.
TEST_KAFKA_PORT=$((port + 400)) python -m pytest "${LANE2[@]}" "${common[@]}" \
    --basetemp="${TMPDIR:-/tmp}/retrain-tests-lane2" --junitxml=test-artifacts/junit-lane2.xml >"$log" 2>&1 &
lane2=$!
trap 'kill -INT "$lane2" 2>/dev/null || true' INT TERM  # pytest's teardown stops lane 2's brokers
echo "lane 2 (${LANE2[*]}) runs beside this one; its output follows at the end and is in $log"

set +e
python -m pytest tests "${ignore[@]}" "${common[@]}" --junitxml=test-artifacts/junit.xml
status1=$?
wait "$lane2"
status2=$?
set -e
echo
echo "================================ lane 2 ================================"
cat "$log"
echo "========================================================================"
echo "lane 1: exit $status1; lane 2: exit $status2"
[ "$status1" -eq 0 ] && [ "$status2" -eq 0 ]
