#!/usr/bin/env bash
# Creates the secrets docker-compose.yml reads, in ./secrets (a 0700 directory,
# ignored by git; never in an image layer): the Ed25519 key that signs
# bearer tokens and its public half (the API verifies with the public key
# only), and the orderflow database's password with its pgpass line.
# Existing files are kept. Then: docker compose run --rm token -role operator
set -euo pipefail
cd "$(dirname "$0")/.."
umask 077
mkdir -p secrets
[ -f secrets/jwt-signing-key.pem ] || openssl genpkey -algorithm ed25519 -out secrets/jwt-signing-key.pem
openssl pkey -in secrets/jwt-signing-key.pem -pubout -out secrets/jwt-public-key.pem
[ -f secrets/postgres-password ] || openssl rand -base64 24 | tr -d '/+=\n' > secrets/postgres-password
printf 'postgres:5432:orderflow:orderflow:%s\n' "$(cat secrets/postgres-password)" > secrets/pgpass
[ -f secrets/payments.env ] || printf 'ORDERFLOW_PAYMENT_WEBHOOK_SECRET=%s\n' "$(openssl rand -hex 24)" > secrets/payments.env
# The containers run as the image's nonroot user (65532): let it read them.
chmod 0644 secrets/jwt-public-key.pem secrets/pgpass secrets/postgres-password secrets/jwt-signing-key.pem 2>/dev/null || true
echo "secrets written to ./secrets"
