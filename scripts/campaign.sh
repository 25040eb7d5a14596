#!/usr/bin/env bash
# A seeded campaign of hostile customers, operators and faults against the
# production topology (scripts/lib/cluster.sh: PostgreSQL of its own,
# Temporal's server as its own process on it, two api, two projector and two
# worker processes). `orderflow-harness campaign` acts from the seed through every
# door while faults are injected — kill -9 (and restart) of an api, a
# worker, a projector or Temporal's server, PostgreSQL restarted
# (immediate), one process's database connections cut by the campaign's TCP
# proxies (every api, projector and worker reaches PostgreSQL through a proxy
# of its own, so that each committer may lose a COMMIT's answer) —
# then drives every saga to an end and runs verify; `orderflow verify` runs
# once more on its own. Exits non-zero on an invariant violation.
# Usage: scripts/campaign.sh [seed] [seconds of load]
#        scripts/campaign.sh fault KIND   (the campaign's fault injector)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/cluster.sh

# fault KIND: inject one fault into the running cluster in $CAMPAIGN_WORK,
# and return once the service is back.
if [ "${1:-}" = fault ]; then
  WORK=$CAMPAIGN_WORK
  cluster_vars
  kind=$2
  case $kind in
    kill-api* | kill-projector* | kill-worker*)
      name=${kind#kill-}
      kill -9 "$(cat "$WORK/pids/$name")" 2>/dev/null || true
      sleep 1
      start_role "$name"
      role_ready "$name" >/dev/null
      echo "$name restarted (pid $(cat "$WORK/pids/$name"))" ;;
    kill-temporal)
      kill -9 "$(cat "$WORK/pids/temporal")" 2>/dev/null || true
      sleep 1
      start_temporal
      for name in worker1 worker2 api1 api2; do role_ready "$name" >/dev/null; done
      echo "Temporal's server restarted (pid $(cat "$WORK/pids/temporal"))" ;;
    restart-postgres)
      pg_as "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg/postgres.log" -w -m immediate restart >/dev/null
      for name in api1 api2 projector1 projector2 worker1 worker2; do role_ready "$name" >/dev/null; done
      echo "PostgreSQL restarted" ;;
    *) echo "unknown fault $kind" >&2; exit 2 ;;
  esac
  exit 0
fi

SEED=${1:-1}
SECONDS_OF_LOAD=${2:-60}
FAULTS=${CAMPAIGN_FAULTS:-kill-api1,kill-api2,kill-worker1,kill-worker2,kill-projector1,kill-projector2,kill-temporal,restart-postgres,cut-connection}
# The carrier on both sides of the saga's CarrierFastTimeout (1s): to most
# postal codes it is fast (the saga's first call, a local activity, gets the
# parcel); to the slow one it takes 2.5s (the first call gets no answer and
# the regular activity waits, with time for a cancel, a void or a terminate
# while it works). The campaign ships each order to either, by seed.
export ORDERFLOW_CARRIER_LATENCY=${ORDERFLOW_CARRIER_LATENCY:-300ms}
export ORDERFLOW_CARRIER_SLOW_POSTAL_CODE=${ORDERFLOW_CARRIER_SLOW_POSTAL_CODE:-75009}
export ORDERFLOW_CARRIER_SLOW_LATENCY=${ORDERFLOW_CARRIER_SLOW_LATENCY:-2500ms}
# Every process reaches PostgreSQL through a proxy of the campaign's.
export CLUSTER_PROXIED=1
export ORDERFLOW_CLUSTER_BASE_PORT=${ORDERFLOW_CLUSTER_BASE_PORT:-27000}   # beside a cluster.sh run
cluster_init campaign
export CAMPAIGN_WORK=$WORK
cluster_base

ROLES="api1 api2 projector1 projector2 worker1 worker2"
PROXIES=""
for name in $ROLES; do PROXIES="$PROXIES${PROXIES:+,}$name=127.0.0.1:$(proxy_port "$name")"; done

log "campaign: seed $SEED, ${SECONDS_OF_LOAD}s of load, faults: $FAULTS"
# The campaign first: it holds the proxies every process connects through
# (and waits for the APIs to be ready).
start campaign "$HARNESS" campaign -seed "$SEED" -duration "${SECONDS_OF_LOAD}s" \
  -url "http://127.0.0.1:$(api_port 1),http://127.0.0.1:$(api_port 2)" \
  -key "$WORK/signing.pem" -issuer "$ISSUER" -faults "$FAULTS" -fault-every "${CAMPAIGN_FAULT_EVERY:-10s}" \
  -fault-exec "$PWD/scripts/campaign.sh fault" \
  -proxy-listen "$PROXIES" -proxy-upstream "127.0.0.1:$PG_PORT" ${CAMPAIGN_ACTIONS:+-actions "$CAMPAIGN_ACTIONS"}
for _ in $(seq 1 240); do (exec 3<>"/dev/tcp/127.0.0.1/$(proxy_port worker2)") 2>/dev/null && break; sleep 0.5; done

log "two apis, two projectors, two workers, each through its proxy"
for name in $ROLES; do start_role "$name"; done
for name in $ROLES; do role_ready "$name"; done

rc=0
wait "$PID_campaign" || rc=$?
rm -f "$WORK/pids/campaign"
grep -v '^{' "$WORK/campaign.log" | grep -v 'level=' || true
if [ "$rc" != 0 ]; then
  echo "campaign: exit $rc" >&2
  exit "$rc"
fi

log "orderflow verify"
"$BIN" verify -settle 2m
RESULT="campaign: OK — seed $SEED, ${SECONDS_OF_LOAD}s; $(grep -o 'faults injected: [0-9]*' "$WORK/campaign.log" | cut -d' ' -f3) faults; 0 invariant violations"
