#!/usr/bin/env bash
# Checks, in the Temporal Web UI itself (headless Chromium driven by
# playwright-core), that an operator reads a saga at a glance: each run's
# static summary (customer, lines, total) and its current details (outcome,
# step, reason). Runs `orderflow dev` in a scratch directory on ports of its
# own, places a fulfilled and an out-of-stock order, and checks both runs.
# Screenshots are left in $UI_CHECK_OUT when set. Usage: scripts/ui-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=$(mktemp -d /tmp/orderflow-ui-XXXXXX)
chmod 755 "$WORK"
BIN=$WORK/orderflow
export ORDERFLOW_DATA_DIR=$WORK/data ORDERFLOW_HTTP_ADDR=127.0.0.1:18480 ORDERFLOW_OPS_ADDR=127.0.0.1:18481
# (the embedded Temporal also takes the 8 ports after its frontend)
export ORDERFLOW_TEMPORAL_DEV_ADDR=127.0.0.1:18482 ORDERFLOW_TEMPORAL_UI_ADDR=127.0.0.1:18470 ORDERFLOW_CARRIER_LATENCY=50ms
unset DATABASE_URL TEMPORAL_ADDRESS
API=http://$ORDERFLOW_HTTP_ADDR UI=http://$ORDERFLOW_TEMPORAL_UI_ADDR
DEV_PID=
cleanup() {
  [ -n "$DEV_PID" ] && { kill -INT "$DEV_PID" 2>/dev/null || true; wait "$DEV_PID" 2>/dev/null || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "ui-check.sh: failed at line $LINENO" >&2; tail -20 "$WORK/dev.log" >&2' ERR

(cd scripts/ui && npm ci --no-audit --no-fund --silent)
go build -o "$BIN" ./cmd/orderflow
"$BIN" dev >"$WORK/dev.log" 2>&1 &
DEV_PID=$!
for _ in $(seq 1 240); do curl -fs "$API/readyz" >/dev/null 2>&1 && curl -fs "$UI" >/dev/null 2>&1 && break; sleep 0.5; done

OPS="authorization: Bearer $("$BIN" token -role operator 2>/dev/null | tail -1)"
C1="authorization: Bearer $("$BIN" token -role customer -customer c-ui 2>/dev/null | tail -1)"
post() { curl -fs -XPOST "$API$1" -H 'content-type: application/json' -H "$2" -d "$3"; }
post /wallets "$OPS" '{"wallet_id":"w-ui","customer_id":"c-ui","currency":"EUR"}' >/dev/null
curl -fs -XPUT "$API/products/sku-ui/price" -H 'content-type: application/json' -H "$OPS" -d '{"unit_price":1250,"currency":"EUR"}' >/dev/null
post /products/sku-ui/stock "$OPS" '{"quantity":3}' >/dev/null
# The customer pays through the simulated provider; its webhook credits the wallet.
post /wallets/w-ui/payments "$C1" '{"amount":100000}' >/dev/null
for _ in $(seq 1 60); do curl -fs "$API/wallets/w-ui" -H "$C1" | grep -q '"balance":100000' && break; sleep 0.5; done
order() {
  post /orders "$C1" "{\"customer_id\":\"c-ui\",\"wallet_id\":\"w-ui\",\"currency\":\"EUR\",\"lines\":[{\"sku\":\"sku-ui\",\"quantity\":$1,\"unit_price\":1250}],
    \"shipping_address\":{\"name\":\"Ada\",\"line1\":\"1 Main St\",\"city\":\"Paris\",\"postal_code\":\"75001\",\"country\":\"FR\"}}" |
    grep -o '"stream_id":"[^"]*"' | cut -d'"' -f4
}
settled() { # wait until the saga of order $1 has finished with status $2
  for _ in $(seq 1 120); do
    curl -fs "$API/orders/$1/saga" -H "$OPS" 2>/dev/null | grep -q "\"status\":\"$2\"" && return 0
    sleep 0.5
  done
  echo "the saga of $1 did not reach $2"; return 1
}
fulfilled=$(order 1) refused=$(order 50)
settled "$fulfilled" COMPLETED
settled "$refused" COMPENSATED
sleep 1 # the UI reads the run's current details from the worker

shot() { [ -n "${UI_CHECK_OUT:-}" ] && echo "$UI_CHECK_OUT/$1.png" || true; }
node scripts/ui/check.mjs "$UI" "order-fulfilment:$fulfilled" "customer c-ui · 1 line(s) · 1250 EUR" "COMPLETED at done" "$(shot completed)"
node scripts/ui/check.mjs "$UI" "order-fulfilment:$refused" "customer c-ui · 1 line(s) · 62500 EUR" "COMPENSATED at compensated" "$(shot compensated)"
# dev's own /metrics, as Prometheus would scrape it, through the real promtool
if command -v promtool >/dev/null 2>&1; then
  curl -fs "http://$ORDERFLOW_OPS_ADDR/metrics" | promtool check metrics
  echo "promtool check metrics on dev's /metrics: OK"
fi
echo "ui-check: OK — the Temporal UI shows each saga's summary and current details (completed and compensated)"
