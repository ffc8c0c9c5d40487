#!/usr/bin/env bash
# Debian packages the test suite needs beyond the Python environment: headless Chromium and its driver
# for the UI plugin's browser test, PostgreSQL and Redis. Idempotent and fast when everything is present:
# apt-get update runs only when something is missing, and at most once.
#   scripts/system_deps.sh            install what is missing (needs root or sudo)
#   scripts/system_deps.sh --check    exit 1 when something is missing, install nothing
set -euo pipefail

# fonts-dejavu-core: without recommends Chromium brings no fonts, and a page screenshot would show no text.
# postgresql: the history database tests run against a real PostgreSQL server (a private cluster made with initdb),
# and so does the CeleryExecutor stack of `make run-cluster` (infra/postgres/postgres.sh).
# redis-server: that stack's Celery broker (infra/redis/redis.sh).
PACKAGES=(chromium chromium-driver fonts-dejavu-core postgresql redis-server)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  echo "system_deps: missing ${missing[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "system_deps: apt-get not found; install ${missing[*]} with this system's package manager" >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "system_deps: need root to install ${missing[*]}" >&2
    exit 1
  fi
fi

echo "system_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
