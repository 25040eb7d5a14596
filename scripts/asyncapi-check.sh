#!/usr/bin/env bash
# Validates the committed AsyncAPI document (docs/asyncapi.json) with
# AsyncAPI's own CLI: the specification's schema and its governance rules,
# failing on any finding, informational ones included. That the committed
# document is the generated one is checked by go test ./asyncapi.
# Usage: scripts/asyncapi-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

(cd scripts/asyncapi && npm ci --no-audit --no-fund --silent)
# No usage metrics (the CLI sends none with CI=true; its config file stays out of $HOME).
CFG=$(mktemp)
trap 'rm -f "$CFG"' EXIT
echo '{"analyticsEnabled":"false","infoMessageShown":"true","userID":"ci"}' >"$CFG"
CI=true ASYNCAPI_METRICS_CONFIG_PATH="$CFG" scripts/asyncapi/node_modules/.bin/asyncapi validate docs/asyncapi.json --fail-severity=info
