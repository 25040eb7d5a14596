#!/usr/bin/env bash
# A clean stop: `orderflow dev` (embedded PostgreSQL and Temporal with its Web
# UI, in a scratch directory on ports of its own) is started, given a little
# work (an operator's request) and a client on its live stream, then sent
# SIGTERM; and again, restarted, SIGINT. Each time it must exit with status 0, log no ERROR line,
# and leave no PostgreSQL running. The time from the signal to the exit is
# printed, not judged (the machine's load decides it); a stop that takes
# longer than two minutes counts as a hang.
# Usage: scripts/stop-check.sh [path to an orderflow binary]
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=$(mktemp -d /tmp/orderflow-stop-XXXXXX)
chmod 755 "$WORK"
BIN=${1:-$WORK/orderflow}
export ORDERFLOW_DATA_DIR=$WORK/data
export ORDERFLOW_HTTP_ADDR=127.0.0.1:18180
export ORDERFLOW_OPS_ADDR=127.0.0.1:18164
export ORDERFLOW_TEMPORAL_DEV_ADDR=127.0.0.1:17333
export ORDERFLOW_TEMPORAL_UI_ADDR=127.0.0.1:18333
unset DATABASE_URL TEMPORAL_ADDRESS
DEV_PID=

pg_as() { if [ "$(id -u)" = 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi; }
cleanup() {
  [ -n "$DEV_PID" ] && kill -9 "$DEV_PID" 2>/dev/null || true
  for ctl in /usr/lib/postgresql/*/bin/pg_ctl; do
    [ -x "$ctl" ] && pg_as "$ctl" -D "$ORDERFLOW_DATA_DIR/postgres/data" stop -m immediate >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "${1:-}" ]; then
  echo "=== building"
  go build -o "$BIN" ./cmd/orderflow
fi

# stop_with SIGNAL: start dev, wait until ready, send SIGNAL, check the exit.
stop_with() {
  local sig=$1 log=$WORK/dev-$1.log
  "$BIN" dev >"$log" 2>&1 &
  DEV_PID=$!
  for _ in $(seq 1 600); do
    curl -fs "http://$ORDERFLOW_HTTP_ADDR/readyz" >/dev/null 2>&1 && break
    kill -0 "$DEV_PID" 2>/dev/null || { echo "dev exited before it was ready:"; tail -20 "$log"; exit 1; }
    sleep 0.5
  done
  curl -fs "http://$ORDERFLOW_HTTP_ADDR/readyz" >/dev/null || { echo "dev did not become ready:"; tail -20 "$log"; exit 1; }
  local token
  token=$("$BIN" token -role operator 2>/dev/null | tail -1)
  curl -fs -o /dev/null -XPOST "http://$ORDERFLOW_HTTP_ADDR/wallets" -H "Authorization: Bearer $token" \
    -H 'content-type: application/json' -d "{\"wallet_id\":\"w-$sig\",\"customer_id\":\"c-$sig\",\"currency\":\"EUR\"}"
  # A client watching the live stream stays connected through the stop.
  curl -sN "http://$ORDERFLOW_HTTP_ADDR/events/updates" -H "Authorization: Bearer $token" >/dev/null 2>&1 &
  local watcher=$!
  sleep 1
  local t0 rc=0 waited=0
  t0=$(date +%s.%N)
  kill "-$sig" "$DEV_PID"
  while kill -0 "$DEV_PID" 2>/dev/null && [ "$waited" -lt 1200 ]; do sleep 0.1; waited=$((waited + 1)); done
  if kill -0 "$DEV_PID" 2>/dev/null; then
    echo "FAIL: dev still running two minutes after SIG$sig"; tail -20 "$log"; exit 1
  fi
  wait "$DEV_PID" || rc=$?
  DEV_PID=
  kill "$watcher" 2>/dev/null || true
  printf 'SIG%s: dev exited with status %d, %.1fs after the signal\n' "$sig" "$rc" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')"
  grep -E 'shutting down|roles stopped|Temporal stopped|PostgreSQL stopped' "$log" | cut -c1-200 | sed 's/^/  /' || true
  if [ "$rc" != 0 ]; then echo "FAIL: exit status $rc"; tail -20 "$log"; exit 1; fi
  if grep -n 'level=ERROR\|"level":"error"\|"level":"ERROR"' "$log"; then echo "FAIL: ERROR lines in dev's log after SIG$sig"; exit 1; fi
  for ctl in /usr/lib/postgresql/*/bin/pg_ctl; do
    if [ -x "$ctl" ] && pg_as "$ctl" -D "$ORDERFLOW_DATA_DIR/postgres/data" status >/dev/null 2>&1; then
      echo "FAIL: dev left its PostgreSQL running after SIG$sig"; exit 1
    fi
  done
}

stop_with TERM
stop_with INT
echo "stop-check: OK"
