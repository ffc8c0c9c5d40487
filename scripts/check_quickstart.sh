#!/usr/bin/env bash
# Follows the README's quick start in a fresh clone, as a new user would: `make run`, check what it printed
# and that the history database has the accuracy of the backfilled weeks, then a second `make run` that must
# ingest nothing again, then `make stop`. Uses its own ports, so a `make run` in this checkout is untouched.
#   scripts/check_quickstart.sh [CLONE_DIR]
set -euo pipefail
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$(mktemp -d)/quickstart}"
git clone -q "$SRC" "$DIR"
cd "$DIR"
export KAFKA_PORT=29192 AIRFLOW__API__PORT=18181 RETRAIN_SERVE_PORT=18501
export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=18893 AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=18894
trap 'make stop >/dev/null 2>&1 || true' EXIT
make run | tee first.log
grep -q "Airflow UI: http://127.0.0.1:18181" first.log
grep -q "Login:      user admin, password " first.log
grep -q "ingested files: 28, rows: 67200" first.log
grep -Eq "^\| 2026-W0[2-5] \| 16800 \|" first.log
grep -q "^Champion:   model 'default'" first.log
grep -q "curl -s http://127.0.0.1:18501/v1/models/default:predict" first.log
grep -q "^Serve:      running at http://127.0.0.1:18501" first.log
# The curl line as printed answers, from the champion version printed above it.
curl_line="$(grep -o "curl -s http://127.0.0.1:18501.*" first.log | head -1)"
answer="$(eval "${curl_line/curl -s/curl -s -D headers.txt}")"
echo "$answer" | grep -q '"predictions":\[{"probability":'
champion="$(sed -n "s/^Champion:   model 'default', version \([0-9]*\).*/\1/p" first.log)"
grep -qi "^x-model-version: $champion" headers.txt
# The default mode learns: the drift of week 3 (ISO week 4) is detected and shown in its week's row.
grep -Eq "^\| 2026-W04 \|.*\| [1-9][0-9]* \(\+[0-9]+ records after the change" first.log
make run | tee second.log
grep -q "ingested files: 28, rows: 67200" second.log
diff <(grep '^| 2026' first.log) <(grep '^| 2026' second.log)
echo "quick start OK in $DIR"
