#!/usr/bin/env bash
# What the request quotas cost: `loadtest --scenario single` against a release node with quotas off
# (INSIGHTS_RATE_LIMIT_ENABLED=false) and on (raised out of reach, so every request runs the limiter and
# none is refused), interleaved twice; then the Redis commands one authenticated request costs, counted by
# a redis-server of its own (INFO commandstats). Loopback only; builds nothing: run
# `cargo build --release --bin insights --example loadtest` first.
#   loadtest/ratelimit.sh [requests] [concurrency]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CARGO_TARGET_DIR:-target}/release
REQ=${1:-20000} CONC=${2:-16}
DIR=$(mktemp -d)
PORT=18443 REDIS_PORT=16379
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/insights_ratebench
export INSIGHTS_JWT_SECRET="ratebench-$(head -c 24 /dev/urandom | base64 -w0)"
export INSIGHTS_DATA_KEY="$(head -c 32 /dev/urandom | base64 -w0)"
export INSIGHTS_ML_ENABLED=false INSIGHTS_DATA_DIR=$DIR INSIGHTS_LISTEN=127.0.0.1:$PORT RUST_LOG=warn
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT INSIGHTS_REDIS_PREFIX=ratebench
redis-server --port $REDIS_PORT --bind 127.0.0.1 --save "" --appendonly no --daemonize yes >/dev/null
trap 'redis-cli -p $REDIS_PORT shutdown nosave >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT
psql -q postgres://postgres@127.0.0.1:5432/postgres -c "DROP DATABASE IF EXISTS insights_ratebench WITH (FORCE)"
"$BIN/insights" migrate >/dev/null
"$BIN/insights" org create --name Bench --admin-email bench@example.com --admin-password bench-password-123 >/dev/null
HIGH=(INSIGHTS_RATE_LIMIT_IP_PER_MIN=100000000 INSIGHTS_RATE_LIMIT_USER_PER_MIN=100000000 INSIGHTS_RATE_LIMIT_AUTH_IP_PER_MIN=100000)

start() {
  env "$@" "$BIN/insights" serve --no-migrate > "$DIR/node.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 50); do curl -sk "https://127.0.0.1:$PORT/healthz" >/dev/null && return; sleep 0.2; done
  echo "node did not start: $(cat "$DIR/node.log")" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" || true; }

for round in 1 2; do
  for mode in off on; do
    if [ $mode = off ]; then start INSIGHTS_RATE_LIMIT_ENABLED=false; else start "${HIGH[@]}"; fi
    echo "== quotas $mode, round $round"
    "$BIN/examples/loadtest" --base "https://localhost:$PORT" --cacert "$DIR/tls/cert.pem" \
      --email bench@example.com --password bench-password-123 --scenario single \
      --requests "$REQ" --concurrency "$CONC" --max-secs 30 | grep '^| single'
    stop
  done
done

start "${HIGH[@]}"
TOKEN=$(curl -sk "https://127.0.0.1:$PORT/api/v1/auth/login" -H 'content-type: application/json' \
  -d '{"email":"bench@example.com","password":"bench-password-123"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])')
curl -sk -o /dev/null "https://127.0.0.1:$PORT/api/v1/me" -H "authorization: Bearer $TOKEN"
redis-cli -p $REDIS_PORT CONFIG RESETSTAT >/dev/null
for _ in $(seq 1 200); do curl -sk -o /dev/null "https://127.0.0.1:$PORT/api/v1/me" -H "authorization: Bearer $TOKEN"; done
echo "== Redis commands for 200 x GET /api/v1/me (GET and SET run inside the script)"
redis-cli -p $REDIS_PORT INFO commandstats | grep -E '^cmdstat_' | cut -d, -f1
stop
