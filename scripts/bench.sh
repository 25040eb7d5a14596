#!/usr/bin/env bash
# Performance figures (docs/performance.md): Go benchmarks of the event store, the
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
echo "== go test -bench (projections: catch-up, commit to visible, rebuild)"
go test -run '^$' -bench 'CatchUp' -benchtime 20000x ./projections/
go test -run '^$' -bench 'CommitToVisible' -benchtime 10000x ./projections/
go test -run '^$' -bench 'Rebuild' -benchtime 100000x ./projections/

echo "== pgbench: single-row INSERT per transaction, ${SECONDS_EACH}s per run"
scripts/pgbench-inserts.sh "$DATABASE_URL" "$SECONDS_EACH"
