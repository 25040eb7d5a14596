#!/usr/bin/env bash
# Fault scenarios, each bounded in time, each ending with `orderflow verify`:
#   1. kill -9 the service in the middle of a load (with duplicate submissions), restart, settle, verify
#   2. restart PostgreSQL in the middle of a load, settle, verify
#   3. a projection fails on one event: it goes to the poison topic, the rest flows;
#      verify fails; after the fix, replaying the poison topic converges and verify passes
#   4. many concurrent orders on one wallet and one product: no overdraw, no negative stock
# Runs `orderflow dev` (embedded PostgreSQL and Temporal) in a scratch directory on
# ports of its own. Usage: scripts/faults.sh [scenario numbers...]
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=$(mktemp -d /tmp/orderflow-faults-XXXXXX)
chmod 755 "$WORK"
BIN=$WORK/orderflow HARNESS=$WORK/orderflow-harness
export ORDERFLOW_DATA_DIR=$WORK/data
export ORDERFLOW_HTTP_ADDR=127.0.0.1:18080
export ORDERFLOW_TEMPORAL_DEV_ADDR=127.0.0.1:17233
export ORDERFLOW_TEMPORAL_UI_ADDR=
export ORDERFLOW_CARRIER_LATENCY=100ms
unset DATABASE_URL TEMPORAL_ADDRESS
API=http://$ORDERFLOW_HTTP_ADDR
DEV_PID=

log() { printf '\n=== %s\n' "$*"; }
cleanup() {
  stop_dev 2>/dev/null || true
  # dev leaves PostgreSQL running only after a kill -9; stop it
  for ctl in /usr/lib/postgresql/*/bin/pg_ctl; do
    [ -x "$ctl" ] && pg_as "$ctl" -D "$ORDERFLOW_DATA_DIR/postgres/data" stop -m immediate >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "faults.sh: failed at line $LINENO" >&2; tail -40 "$WORK/dev.log" >&2' ERR

pg_as() { if [ "$(id -u)" = 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi; }

start_dev() {
  local try
  for try in 1 2 3; do
    start_dev_once && return 0
    echo "dev did not start (attempt $try); retrying"
  done
  tail -20 "$WORK/dev.log"; exit 1
}

start_dev_once() {
  env -u DATABASE_URL -u TEMPORAL_ADDRESS "$BIN" dev >>"$WORK/dev.log" 2>&1 &
  DEV_PID=$!
  for _ in $(seq 1 120); do
    if curl -fs "$API/readyz" >/dev/null 2>&1; then
      export DATABASE_URL TEMPORAL_ADDRESS=$ORDERFLOW_TEMPORAL_DEV_ADDR
      DATABASE_URL=$(cat "$ORDERFLOW_DATA_DIR/database-url")
      return 0
    fi
    kill -0 "$DEV_PID" 2>/dev/null || { tail -3 "$WORK/dev.log" | cut -c1-300; DEV_PID=; return 1; }
    sleep 0.5
  done
  echo "dev did not become healthy"; stop_dev; return 1
}

stop_dev() {
  [ -n "$DEV_PID" ] || return 0
  kill -INT "$DEV_PID" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$DEV_PID" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$DEV_PID" 2>/dev/null || true
  wait "$DEV_PID" 2>/dev/null || true
  DEV_PID=
  unset DATABASE_URL TEMPORAL_ADDRESS
}

verify() { "$BIN" verify -settle 2m; }

load() { "$HARNESS" load -url "$API" -out "$WORK/load-$1.json" -report "$WORK/load-$1.html" "${@:2}"; }

scenario_1() {
  log "1. kill -9 the service mid-load"
  start_dev
  load kill -duration 20s -rate 5 -concurrency 8 -duplicates 0.1 > "$WORK/load-kill.txt" 2>&1 &
  local load_pid=$!
  sleep 8
  kill -9 "$DEV_PID"; wait "$DEV_PID" 2>/dev/null || true; DEV_PID=
  echo "killed dev; restarting"
  start_dev
  wait "$load_pid" || true
  cat "$WORK/load-kill.txt" | grep -v '^placing orders' || true
  verify
  stop_dev
}

scenario_2() {
  log "2. restart PostgreSQL mid-load"
  start_dev
  load pgrestart -duration 20s -rate 5 -concurrency 8 > "$WORK/load-pg.txt" 2>&1 &
  local load_pid=$!
  sleep 8
  local ctl; ctl=$(ls /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | tail -1 || command -v pg_ctl)
  pg_as "$ctl" -D "$ORDERFLOW_DATA_DIR/postgres/data" restart -m fast -w >/dev/null
  echo "PostgreSQL restarted"
  wait "$load_pid" || true
  grep -v '^placing orders' "$WORK/load-pg.txt" || true
  verify
  stop_dev
}

scenario_3() {
  log "3. a projection fails on one event"
  local w=w-poison-$RANDOM
  ORDERFLOW_FAULT_FAIL_EVENT=$w:2 start_dev
  local auth; auth="authorization: Bearer $("$BIN" token -role operator -subject ops-faults 2>/dev/null | tail -1)"
  curl -fs -XPOST "$API/wallets" -H 'content-type: application/json' -H "$auth" -d "{\"wallet_id\":\"$w\",\"customer_id\":\"c\",\"currency\":\"EUR\"}" >/dev/null
  curl -fs -XPOST "$API/wallets/$w/top-ups" -H 'content-type: application/json' -H "$auth" -d '{"amount":500,"reason":"faults: funds"}' >/dev/null
  curl -fs -XPOST "$API/wallets/$w/top-ups" -H 'content-type: application/json' -H "$auth" -d '{"amount":7,"reason":"faults: funds"}' >/dev/null
  load poison -orders 30 -concurrency 4 | grep -v '^placing orders'
  "$BIN" poison list -unresolved
  if "$BIN" verify -settle 10s; then echo "verify passed with a poisoned event"; exit 1; fi
  echo "verify failed as it should; fixing the handler (restart without the fault) and replaying"
  stop_dev
  start_dev
  "$BIN" poison replay -all
  verify
  stop_dev
}

scenario_4() {
  log "4. one hot wallet and one hot product"
  start_dev
  load hot -hot -orders 120 -rate 10 -concurrency 16 -duplicates 0.2 | grep -v '^placing orders'
  verify
  stop_dev
}

log "building"
go build -o "$BIN" ./cmd/orderflow
go build -o "$HARNESS" ./cmd/orderflow-harness
start=$(date +%s)
for s in "${@:-1 2 3 4}"; do
  for n in $s; do "scenario_$n"; done
done
log "all fault scenarios passed in $(( $(date +%s) - start ))s"
