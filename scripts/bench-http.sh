#!/usr/bin/env bash
# Commands over HTTP beside PostgreSQL's own commit rate, in one run on one
# server: `orderflow dev` in a scratch directory, 64 wallets, then wrk sending
# POST /wallets/{id}/top-ups (a random wallet per request, an operator's token)
# from 1 and 32 connections; then the same command through the bus alone
# (BenchmarkDispatch, in a scratch database of dev's PostgreSQL, dev idle
# beside it), and scripts/pgbench-inserts.sh on dev's own PostgreSQL.
# Needs wrk and pgbench (Debian: wrk, postgresql-contrib or postgresql-client).
# Usage: scripts/bench-http.sh [seconds per run]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
WORK=$(mktemp -d /tmp/orderflow-bench-http-XXXXXX)
chmod 755 "$WORK"
BIN=$WORK/orderflow
export ORDERFLOW_DATA_DIR=$WORK/data ORDERFLOW_HTTP_ADDR=127.0.0.1:18680 ORDERFLOW_OPS_ADDR=127.0.0.1:18681
export ORDERFLOW_TEMPORAL_DEV_ADDR=127.0.0.1:18682 ORDERFLOW_TEMPORAL_UI_ADDR=
# The command path is measured, not the per-principal rate limit (2,000/s for
# an operator by default), which wrk's one token would hit.
export ORDERFLOW_RATE_OPERATOR=1000000 ORDERFLOW_BURST_OPERATOR=1000000
unset DATABASE_URL TEMPORAL_ADDRESS
API=http://$ORDERFLOW_HTTP_ADDR
DEV_PID=
cleanup() {
  [ -n "$DEV_PID" ] && { kill -INT "$DEV_PID" 2>/dev/null || true; wait "$DEV_PID" 2>/dev/null || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT

go build -o "$BIN" ./cmd/orderflow
"$BIN" dev >"$WORK/dev.log" 2>&1 &
DEV_PID=$!
for _ in $(seq 1 240); do curl -fs "$API/readyz" >/dev/null 2>&1 && break; sleep 0.5; done
TOKEN=$("$BIN" token -role operator -subject ops-bench 2>/dev/null | tail -1)
for i in $(seq 0 63); do
  curl -fs -XPOST "$API/wallets" -H 'content-type: application/json' -H "authorization: Bearer $TOKEN" \
    -d "{\"wallet_id\":\"bench-$i\",\"customer_id\":\"c-bench-$i\",\"currency\":\"EUR\"}" >/dev/null
done
cat >"$WORK/topup.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
wrk.body = '{"amount":1,"reason":"bench: HTTP top-ups"}'
request = function()
  return wrk.format(nil, "/wallets/bench-" .. math.random(0, 63) .. "/top-ups")
end
EOF
for c in 1 32; do
  echo "-- HTTP top-ups, $c connection(s), ${SECS}s"
  wrk -t "$(( c < 2 ? 1 : 2 ))" -c "$c" -d "${SECS}s" --latency -s "$WORK/topup.lua" "$API" | tee "$WORK/wrk-$c" |
    grep -E "Requests/sec|50%|99%|Non-2xx"
done

echo "== the bus alone, 32 clients, on dev's PostgreSQL"
DATABASE_URL="$(cat "$ORDERFLOW_DATA_DIR/database-url")" go test -run '^$' -bench 'Dispatch/clients=32' -benchtime "${SECS}s" ./commands/ |
  tee "$WORK/bus" | grep 'commands/s'
http=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk-32")
bus=$(grep -o '[0-9.]* commands/s' "$WORK/bus" | awk '{print $1}')
if grep -q Non-2xx "$WORK/wrk-32"; then echo "(HTTP had non-2xx answers: the rate above counts them)"; fi
awk -v h="$http" -v b="$bus" 'BEGIN {printf "HTTP / bus at 32: %.0f / %.0f = %.2f\n", h, b, h / b}'

echo "== on dev's own PostgreSQL"
scripts/pgbench-inserts.sh "$(cat "$ORDERFLOW_DATA_DIR/database-url")" "$SECS"
