#!/usr/bin/env bash
# Fuzz the live app with schemathesis: every check, every phase (stateful included), every operation,
# with each role's key, against a seeded database.
# Usage: .ci/schemathesis.sh [max-seconds of the admin run]   (uses .venv; starts and stops its own server)
# The database is a fresh SQLite file, or TRIALBOOK_FUZZ_DATABASE_URL (an empty PostgreSQL database).
# The other roles' runs get a quarter of the admin run's time each.
set -euo pipefail
cd "$(dirname "$0")/.."
max_time="${1:-240}"
role_time=$(( max_time / 4 > 20 ? max_time / 4 : 20 ))
work="$(mktemp -d)"
port="${SCHEMATHESIS_PORT:-8765}"
export TRIALBOOK_DATABASE_URL="${TRIALBOOK_FUZZ_DATABASE_URL:-sqlite:///$work/fuzz.db}"
export TRIALBOOK_BOOTSTRAP_ADMIN_KEY="tb_fuzz_admin_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export TRIALBOOK_PORT="$port" TRIALBOOK_HOST=127.0.0.1 TRIALBOOK_WORKERS=1
export TRIALBOOK_CHECK_INTERVAL_SECONDS=0
# The seeded webhooks point at a closed port on 127.0.0.1 (see .ci/fuzz_seed.py); nothing else is allowed
# as a receiver URL in the runs, so no request leaves this machine.
export TRIALBOOK_WEBHOOK_ALLOW_PRIVATE=1
# The runs send thousands of bad keys on purpose (the ignored_auth check): keep the throttle out of the
# way of the roles' own keys.
export TRIALBOOK_AUTH_FAILURE_LIMIT="${TRIALBOOK_AUTH_FAILURE_LIMIT:-1000000}"
echo "database: ${TRIALBOOK_DATABASE_URL%%://*}"
.venv/bin/trialbook migrate >/dev/null
.venv/bin/trialbook serve >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
up=""
for _ in $(seq 1 300); do
  curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && { up=1; break; }
  sleep 0.2
done
[ -n "$up" ] || { echo "the server did not start within 60 s:"; cat "$work/server.log"; exit 1; }
.venv/bin/python .ci/fuzz_seed.py "http://127.0.0.1:$port" "$TRIALBOOK_BOOTSTRAP_ADMIN_KEY" "$work"
cat .ci/schemathesis.toml "$work/seeds.toml" >"$work/schemathesis.toml"
# shellcheck disable=SC1091
source "$work/keys.env"

status=0
hars=()
# Admin runs last: its DELETE /v1/keys/{key_id} may draw the other roles' key ids (a few small ids
# beside the seeded spare keys), which would leave their runs nothing but 401s.
for role in sdk viewer editor admin; do
  var="FUZZ_KEY_${role^^}"
  seconds=$([ "$role" = admin ] && echo "$max_time" || echo "$role_time")
  echo; echo "--- schemathesis as $role (${seconds}s)"
  .venv/bin/schemathesis --config-file "$work/schemathesis.toml" run \
    "http://127.0.0.1:$port/openapi.json" \
    -H "Authorization: Bearer ${!var}" \
    --phases examples,coverage,fuzzing,stateful \
    --max-time "$seconds" --request-timeout 30 --no-color \
    --report har --report-har-path "$work/$role.har" || status=$?
  hars+=("$work/$role.har")
done

# A second, targeted run (admin key, fuzzing with the seeded values) for every operation that no
# request reached yet: on a slow machine the first runs may spend their time in other phases.
mapfile -t missing < <(.venv/bin/python .ci/fuzz_coverage.py --unreached openapi/openapi.json "${hars[@]}")
if [ ${#missing[@]} -gt 0 ]; then
  echo; echo "--- targeted run for ${#missing[@]} operations not reached yet"
  includes=()
  # by name ("METHOD /path"): two operations of one path would repeat an --include-path, which
  # schemathesis refuses
  for op in "${missing[@]}"; do includes+=(--include-name "$op"); done
  .venv/bin/schemathesis --config-file "$work/schemathesis.toml" run \
    "http://127.0.0.1:$port/openapi.json" \
    -H "Authorization: Bearer $FUZZ_KEY_ADMIN" "${includes[@]}" \
    --phases examples,fuzzing --max-examples 60 --max-time "$role_time" \
    --request-timeout 30 --no-color \
    --report har --report-har-path "$work/targeted.har" || status=$?
  [ -f "$work/targeted.har" ] && hars+=("$work/targeted.har")
fi

echo; echo "--- coverage per operation (all roles)"
.venv/bin/python .ci/fuzz_coverage.py openapi/openapi.json "${hars[@]}" || status=1
if grep -q "Traceback" "$work/server.log"; then
  # (sed, not grep | head: under pipefail the SIGPIPE of a cut grep would end the script with 141)
  echo "server logged tracebacks:"; grep -A 30 "Traceback" "$work/server.log" | sed -n 1,120p
  status=1
fi
exit $status
