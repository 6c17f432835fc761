#!/usr/bin/env bash
# Fuzz the live app with schemathesis: every check, every phase (stateful included).
# Usage: .ci/schemathesis.sh [max-seconds]   (uses .venv; starts and stops its own server)
set -euo pipefail
cd "$(dirname "$0")/.."
max_time="${1:-240}"
work="$(mktemp -d)"
port="${SCHEMATHESIS_PORT:-8765}"
export TRIALBOOK_DATABASE_URL="sqlite:///$work/fuzz.db"
export TRIALBOOK_BOOTSTRAP_ADMIN_KEY="tb_fuzz_admin_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export TRIALBOOK_PORT="$port" TRIALBOOK_HOST=127.0.0.1 TRIALBOOK_WORKERS=1
export TRIALBOOK_CHECK_INTERVAL_SECONDS=0
.venv/bin/trialbook migrate >/dev/null
.venv/bin/trialbook serve >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.2
done
status=0
.venv/bin/schemathesis --config-file .ci/schemathesis.toml run \
  "http://127.0.0.1:$port/openapi.json" \
  -H "Authorization: Bearer $TRIALBOOK_BOOTSTRAP_ADMIN_KEY" \
  --phases examples,coverage,fuzzing,stateful \
  --max-time "$max_time" --request-timeout 30 --no-color \
  --exclude-path-regex '^/(reports)?$' || status=$?
if grep -q "Traceback" "$work/server.log"; then
  echo "server logged tracebacks:"; grep -A 30 "Traceback" "$work/server.log" | head -80
  status=1
fi
exit $status
