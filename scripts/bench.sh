#!/usr/bin/env bash
# Performance figures for the README: Go benchmarks of the event store, the
# command path and the projections, and beside them PostgreSQL's own insert
# rate at the same concurrency (pgbench, one single-row INSERT per
# transaction into a table shaped like the event table), measured in the
# same run on the same server.
# Usage: DATABASE_URL=postgres://... scripts/bench.sh   (defaults to 127.0.0.1:5432)
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
SECONDS_EACH=${SECONDS_EACH:-10}

echo "== go test -bench (event store, command path)"
go test -run '^$' -bench . -benchtime 3s ./eventstore/ ./commands/
echo "== go test -bench (projections)"
go test -run '^$' -bench . -benchtime 2000x ./projections/

echo "== pgbench: single-row INSERT per transaction, ${SECONDS_EACH}s per run"
db=orderflow_pgbench_$$
psql "$DATABASE_URL" -qc "CREATE DATABASE $db"
trap 'psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
url=$(echo "$DATABASE_URL" | sed -E "s#/[^/?]+(\?|$)#/$db\1#")
psql "$url" -qc "CREATE TABLE bench_events (
  global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
  stream_id text NOT NULL, stream_version bigint NOT NULL, data jsonb NOT NULL,
  UNIQUE (stream_id, stream_version));
  CREATE INDEX ON bench_events (transaction_id, global_position);"
script=$(mktemp)
cat > "$script" <<'SQL'
\set v random(1, 2000000000)
INSERT INTO bench_events (stream_id, stream_version, data) VALUES ('w-' || :client_id || '-' || :v, 1, '{"amount": 100, "currency": "EUR"}');
SQL
for clients in 1 32; do
  echo "-- $clients client(s)"
  pgbench -n -f "$script" -c "$clients" -j 2 -T "$SECONDS_EACH" "$url" 2>&1 | grep -E "tps|latency average|error|abort" || true
done
rm -f "$script"
