#!/usr/bin/env bash
# `make test`: the whole suite. The tests start (and stop) their own broker on a separate port and state
# folder unless KAFKA_BOOTSTRAP_SERVERS is set, so a broker left by `make run` is never touched.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PWD/.venv/bin:$PATH" TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
mkdir -p test-artifacts
exec python -m pytest tests -ra --durations=15 --junitxml=test-artifacts/junit.xml "$@"
