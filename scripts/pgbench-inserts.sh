#!/usr/bin/env bash
# PostgreSQL's own commit rate, the bound the command path is measured
# against: pgbench with one single-row INSERT per transaction into a table
# shaped like events (identity key, xid8 column and its index, a unique
# (stream, version), jsonb), from 1 and 32 clients, in a database of its own
# created on URL's server and dropped after.
# Usage: scripts/pgbench-inserts.sh URL [seconds per run]
set -euo pipefail
base=$1 secs=${2:-10}
db=orderflow_pgbench_$$
psql "$base" -qc "CREATE DATABASE $db"
script=$(mktemp)
trap 'psql "$base" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"; rm -f "$script"' EXIT
url=$(echo "$base" | sed -E "s#/[^/?]+(\?|$)#/$db\1#")
psql "$url" -qc "CREATE TABLE bench_events (
  global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
  stream_id text NOT NULL, stream_version bigint NOT NULL, data jsonb NOT NULL,
  UNIQUE (stream_id, stream_version));
  CREATE INDEX ON bench_events (transaction_id, global_position);"
# Each transaction's stream is named by its own transaction id: unique, so
# the script never collides with itself (a random id did, and pgbench
# aborted the 32-client run on a duplicate key).
cat > "$script" <<'SQL'
INSERT INTO bench_events (stream_id, stream_version, data) VALUES ('w-' || pg_current_xact_id()::text, 1, '{"amount": 100, "currency": "EUR"}');
SQL
for clients in 1 32; do
  echo "-- pgbench, $clients client(s), ${secs}s"
  # An aborted or partial run is a failure, never a figure.
  if ! out=$(pgbench -n -f "$script" -c "$clients" -j 2 -T "$secs" "$url" 2>&1) || grep -qiE "abort|incomplete|error" <<<"$out"; then
    echo "$out" >&2
    echo "pgbench-inserts.sh: the $clients-client run failed or was aborted: no figure" >&2
    exit 1
  fi
  grep -E "tps|latency average" <<<"$out"
done
