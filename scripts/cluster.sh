#!/usr/bin/env bash
# The production topology, run here without Docker: a PostgreSQL of its own,
# Temporal's server as its own process on that PostgreSQL, `orderflow migrate`,
# then two `api`, two `projector` and two `worker` processes on distinct ports.
# A load is driven across both APIs; one worker and one projector are killed
# with -9 mid-load; `orderflow verify` must pass. It prints how the work was
# shared (orders accepted per API, messages per projector, saga commands per
# worker, read from each process's /metrics) and ends with a one-line summary.
# Exits non-zero on any failure. Usage: scripts/cluster.sh [load seconds]
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_OF_LOAD=${1:-30}
WORK=$(mktemp -d /tmp/orderflow-cluster-XXXXXX)
chmod 755 "$WORK"
BIN=$WORK/orderflow
BASE=${ORDERFLOW_CLUSTER_BASE_PORT:-26000}   # every port below 32768 (Temporal's membership table)
PG_PORT=$((BASE + 1)) TEMPORAL_PORT=$((BASE + 2)) ISSUER=orderflow-cluster
PIDS=()
RESULT="cluster: FAILED"

log() { printf '\n=== %s\n' "$*"; }
pg_as() { if [ "$(id -u)" = 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi; }
PG_BIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | tail -1 || command -v initdb)")
cleanup() {
  for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  sleep 2
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  pg_as "$PG_BIN/pg_ctl" -D "$WORK/pg" stop -m immediate >/dev/null 2>&1 || true
  echo "$RESULT"
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "cluster.sh: failed at line $LINENO" >&2; for f in "$WORK"/*.log; do echo "--- $f"; tail -5 "$f"; done >&2' ERR

# start NAME ARGS...: a process in the background, its output in NAME.log
start() {
  local name=$1; shift
  "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  eval "PID_${name//-/_}=$!"
}

# ready URL: wait until it answers 200
ready() {
  for _ in $(seq 1 240); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "not ready: $1"; return 1
}

log "building"
go build -o "$BIN" ./cmd/orderflow

log "PostgreSQL on 127.0.0.1:$PG_PORT"
mkdir -p "$WORK/pg" && chmod 700 "$WORK/pg"
[ "$(id -u)" = 0 ] && chown nobody "$WORK/pg"
pg_as "$PG_BIN/initdb" -D "$WORK/pg" -U postgres -A trust -E UTF8 --no-locale >/dev/null
pg_as "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg/postgres.log" -w -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$WORK/pg -c max_connections=300" start >/dev/null
"$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres orderflow
export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/orderflow?sslmode=disable"
export TEMPORAL_ADDRESS=127.0.0.1:$TEMPORAL_PORT
export ORDERFLOW_DATA_DIR=$WORK/data ORDERFLOW_CARRIER_LATENCY=100ms

log "Temporal's server, its own process, on PostgreSQL"
start temporal "$BIN" temporal-server -temporal-dev-addr "$TEMPORAL_ADDRESS" -temporal-ui-addr "" -temporal-shards 2
for _ in $(seq 1 240); do (exec 3<>"/dev/tcp/127.0.0.1/$TEMPORAL_PORT") 2>/dev/null && break; sleep 0.5; done

log "migrate"
"$BIN" migrate

# The APIs verify tokens with a key of this run's (as a deployment would).
openssl genpkey -algorithm ed25519 -out "$WORK/signing.pem" 2>/dev/null
openssl pkey -in "$WORK/signing.pem" -pubout -out "$WORK/public.pem"
export ORDERFLOW_JWT_PUBLIC_KEY=$WORK/public.pem ORDERFLOW_JWT_ISSUER=$ISSUER

log "two of each role"
for i in 1 2; do
  start "api$i" "$BIN" api -http-addr "127.0.0.1:$((BASE + 10 + i))" -ops-addr "127.0.0.1:$((BASE + 20 + i))"
  start "projector$i" "$BIN" projector -ops-addr "127.0.0.1:$((BASE + 30 + i))"
  start "worker$i" "$BIN" worker -ops-addr "127.0.0.1:$((BASE + 40 + i))"
done
for port in $((BASE + 21)) $((BASE + 22)) $((BASE + 31)) $((BASE + 32)) $((BASE + 41)) $((BASE + 42)); do
  ready "http://127.0.0.1:$port/readyz"
done
ready "http://127.0.0.1:$((BASE + 11))/readyz"
ready "http://127.0.0.1:$((BASE + 12))/readyz"
TOKEN=$("$BIN" token -key "$WORK/signing.pem" -issuer "$ISSUER" -role operator -subject ops-cluster 2>/dev/null | tail -1)

# metric PORT NAME: the sum of a metric family on one process
metric() {
  curl -fs "http://127.0.0.1:$1/metrics" 2>/dev/null | awk -v m="$2" '$1 ~ "^"m"({|$)" {s += $NF} END {printf "%d", s}'
}
shares() {
  echo "messages handled: projector1 $(metric $((BASE + 31)) orderflow_messages_handled_total), projector2 $(metric $((BASE + 32)) orderflow_messages_handled_total)"
  echo "saga commands:    worker1 $(metric $((BASE + 41)) orderflow_commands_total), worker2 $(metric $((BASE + 42)) orderflow_commands_total)"
}

log "load across both APIs for ${SECONDS_OF_LOAD}s; kill -9 worker1 and projector1 midway"
"$BIN" load -url "http://127.0.0.1:$((BASE + 11)),http://127.0.0.1:$((BASE + 12))" -token "$TOKEN" \
  -duration "${SECONDS_OF_LOAD}s" -rate 8 -concurrency 8 -duplicates 0.1 \
  -out "$WORK/load.json" -report "$WORK/load.html" >"$WORK/load.txt" 2>&1 &
LOAD_PID=$!
sleep $((SECONDS_OF_LOAD / 2))
echo "before the kill:"
shares
P1=$(metric $((BASE + 31)) orderflow_messages_handled_total) W1=$(metric $((BASE + 41)) orderflow_commands_total)
kill -9 "$PID_worker1" "$PID_projector1"
echo "killed worker1 ($PID_worker1) and projector1 ($PID_projector1)"
wait "$LOAD_PID"
grep -v '^placing orders' "$WORK/load.txt"

if command -v promtool >/dev/null 2>&1; then
  for port in $((BASE + 21)) $((BASE + 32)) $((BASE + 42)); do
    curl -fs "http://127.0.0.1:$port/metrics" | promtool check metrics
  done
  echo "promtool check metrics on an api, a projector and a worker: OK"
fi

log "verify"
"$BIN" verify -settle 3m
echo "how the work was shared (the killed processes' counts are from just before the kill):"
echo "orders accepted:  $(grep '^accepted per API' "$WORK/load.txt" | cut -d: -f2-)"
echo "messages handled: projector1 $P1 (killed), projector2 $(metric $((BASE + 32)) orderflow_messages_handled_total)"
echo "saga commands:    worker1 $W1 (killed), worker2 $(metric $((BASE + 42)) orderflow_commands_total)"

accepted=$(grep -o '"accepted": [0-9]*' "$WORK/load.json" | head -1 | grep -o '[0-9]*')
RESULT="cluster: OK — 2 api, 2 projector, 2 worker on Temporal's own process on PostgreSQL; $accepted orders, worker1 and projector1 killed -9 mid-load; verify passed"
