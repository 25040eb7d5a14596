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
. scripts/lib/cluster.sh
cluster_init cluster
cluster_base

log "two of each role"
for i in 1 2; do
  start_role "api$i"
  start_role "projector$i"
  start_role "worker$i"
done
for name in api1 api2 projector1 projector2 worker1 worker2; do
  role_ready "$name"
done
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
"$HARNESS" load -url "http://127.0.0.1:$((BASE + 11)),http://127.0.0.1:$((BASE + 12))" -token "$TOKEN" \
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
