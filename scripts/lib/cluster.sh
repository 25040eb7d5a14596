# Shared by scripts/cluster.sh and scripts/campaign.sh (sourced, not run):
# the production topology without Docker — a PostgreSQL of its own,
# Temporal's server as its own process on it, `orderflow migrate`, and
# processes of each role on distinct ports. Every process started here has
# a pid file in $WORK/pids, so that a fault injected from another process
# (campaign.sh fault KIND) can kill and restart it, and the cleanup finds
# the restarted ones too.

# cluster_vars: the ports and paths of a cluster whose work directory is $WORK.
cluster_vars() {
  BIN=$WORK/orderflow HARNESS=$WORK/orderflow-harness
  BASE=${ORDERFLOW_CLUSTER_BASE_PORT:-26000}   # every port below 32768 (Temporal's membership table)
  PG_PORT=$((BASE + 1)) TEMPORAL_PORT=$((BASE + 2))  # Temporal takes the 8 ports after its own
  ISSUER=orderflow-cluster
  PG_BIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | tail -1 || command -v initdb)")
  export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/orderflow?sslmode=disable"
  export TEMPORAL_ADDRESS=127.0.0.1:$TEMPORAL_PORT
  export ORDERFLOW_DATA_DIR=$WORK/data ORDERFLOW_CARRIER_LATENCY=${ORDERFLOW_CARRIER_LATENCY:-100ms}
  export ORDERFLOW_JWT_PUBLIC_KEY=$WORK/public.pem ORDERFLOW_JWT_ISSUER=$ISSUER
  # The simulated payment provider signs its webhooks with this secret; every
  # api process checks them with it (and runs the provider's sender).
  [ -f "$WORK/webhook-secret" ] || openssl rand -hex 24 > "$WORK/webhook-secret"
  export ORDERFLOW_PAYMENT_WEBHOOK_SECRET
  ORDERFLOW_PAYMENT_WEBHOOK_SECRET=$(cat "$WORK/webhook-secret")
}

log() { printf '\n=== %s\n' "$*"; }
pg_as() { if [ "$(id -u)" = 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi; }

# cluster_init NAME: a new work directory, removed (with every process) on exit.
cluster_init() {
  CLUSTER_NAME=$1
  WORK=$(mktemp -d "/tmp/orderflow-$1-XXXXXX")
  chmod 755 "$WORK"
  mkdir -p "$WORK/pids"
  RESULT="$1: FAILED"
  cluster_vars
  set -o errtrace
  trap cluster_cleanup EXIT
  trap "exit 143" TERM INT
  trap 'echo "$CLUSTER_NAME: failed at line $LINENO" >&2; for f in "$WORK"/*.log; do echo "--- $f"; tail -5 "$f"; done >&2' ERR
}

cluster_cleanup() {
  local f
  for f in "$WORK"/pids/*; do [ -e "$f" ] && kill -INT "$(cat "$f")" 2>/dev/null || true; done
  sleep 2
  for f in "$WORK"/pids/*; do [ -e "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true; done
  pg_as "$PG_BIN/pg_ctl" -D "$WORK/pg" stop -m immediate >/dev/null 2>&1 || true
  echo "$RESULT"
  if [ -n "${CLUSTER_KEEP:-}" ] && [ "$RESULT" = "$CLUSTER_NAME: FAILED" ]; then
    echo "kept $WORK (logs, and PostgreSQL's data: pg_ctl -D $WORK/pg start)"
  else
    rm -rf "$WORK"
  fi
}

# start NAME ARGS...: a process in the background, its output appended to
# NAME.log, its pid in $WORK/pids/NAME and $PID_NAME.
start() {
  local name=$1; shift
  "$@" </dev/null >>"$WORK/$name.log" 2>&1 &
  echo $! >"$WORK/pids/$name"
  eval "PID_${name//-/_}=$!"
}

# ready URL: wait until it answers 200
ready() {
  for _ in $(seq 1 240); do curl -fs -m 5 "$1" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "not ready: $1"; return 1
}

cluster_build() {
  log "building"
  go build -o "$BIN" ./cmd/orderflow
  go build -o "$HARNESS" ./cmd/orderflow-harness
}

cluster_postgres() {
  log "PostgreSQL on 127.0.0.1:$PG_PORT"
  mkdir -p "$WORK/pg" && chmod 700 "$WORK/pg"
  [ "$(id -u)" = 0 ] && chown nobody "$WORK/pg"
  pg_as "$PG_BIN/initdb" -D "$WORK/pg" -U postgres -A trust -E UTF8 --no-locale >/dev/null
  pg_as "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg/postgres.log" -w -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$WORK/pg -c max_connections=300" start >/dev/null
  "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres orderflow
}

start_temporal() {
  start temporal "$BIN" temporal-server -temporal-dev-addr "$TEMPORAL_ADDRESS" -temporal-ui-addr "" -temporal-shards 2
  for _ in $(seq 1 240); do (exec 3<>"/dev/tcp/127.0.0.1/$TEMPORAL_PORT") 2>/dev/null && return 0; sleep 0.5; done
  echo "Temporal's server does not listen on $TEMPORAL_ADDRESS"; return 1
}

# cluster_base: PostgreSQL, Temporal's server, the schema and this run's signing key.
cluster_base() {
  cluster_build
  cluster_postgres
  log "Temporal's server, its own process, on PostgreSQL"
  start_temporal
  log "migrate"
  "$BIN" migrate
  # The APIs verify tokens with a key of this run's (as a deployment would).
  openssl genpkey -algorithm ed25519 -out "$WORK/signing.pem" 2>/dev/null
  openssl pkey -in "$WORK/signing.pem" -pubout -out "$WORK/public.pem"
}

# The ports of each role's processes (i = 1, 2).
api_port() { echo $((BASE + 10 + $1)); }
ops_port() {
  case $1 in
    api*) echo $((BASE + 20 + ${1#api})) ;;
    projector*) echo $((BASE + 30 + ${1#projector})) ;;
    worker*) echo $((BASE + 40 + ${1#worker})) ;;
  esac
}

# proxy_port NAME: the port of the process's own proxy to PostgreSQL (the
# campaign's, whose connections it cuts).
proxy_port() {
  case $1 in
    api*) echo $((BASE + 50 + ${1#api})) ;;
    projector*) echo $((BASE + 52 + ${1#projector})) ;;
    worker*) echo $((BASE + 54 + ${1#worker})) ;;
  esac
}

# role_database_url NAME: with CLUSTER_PROXIED set, the process reaches
# PostgreSQL through its own proxy; otherwise directly.
role_database_url() {
  if [ -n "${CLUSTER_PROXIED:-}" ]; then
    echo "postgres://postgres@127.0.0.1:$(proxy_port "$1")/orderflow?sslmode=disable"
  else
    echo "$DATABASE_URL"
  fi
}

# start_role NAME: api1, api2, projector1, ..., worker2.
start_role() {
  local name=$1 ops db
  ops="127.0.0.1:$(ops_port "$name")"
  db=$(role_database_url "$name")
  case $name in
    api*) start "$name" env DATABASE_URL="$db" "$BIN" api -http-addr "127.0.0.1:$(api_port "${name#api}")" -ops-addr "$ops" ;;
    projector*) start "$name" env DATABASE_URL="$db" "$BIN" projector -ops-addr "$ops" ;;
    worker*) start "$name" env DATABASE_URL="$db" "$BIN" worker -ops-addr "$ops" ;;
  esac
}

# role_ready NAME: wait until the process answers /readyz (an API on both ports).
role_ready() {
  ready "http://127.0.0.1:$(ops_port "$1")/readyz"
  case $1 in api*) ready "http://127.0.0.1:$(api_port "${1#api}")/readyz" ;; esac
}
