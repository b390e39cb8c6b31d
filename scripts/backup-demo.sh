#!/usr/bin/env bash
# The main job on a fresh machine: builds litemaas-backup, starts a throwaway PostgreSQL 15 holding
# a LiteMaaS-like sample database, and backs it up into ./litemaas-backups (the embedded default
# store: a local directory). Then checks the file with plain gunzip and shows its integrity record.
# With a real database you run the binary alone:
#   LITEMAAS_DATABASE_URL=postgres://user:pass@host/db litemaas-backup [--bucket B]
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
. scripts/lib/throwaway-pg.sh

scripts/test-deps.sh
cargo build --release --locked -p litemaas-backup-cli

throwaway_pg_start
throwaway_pg_psql -d postgres -c "CREATE DATABASE litemaas"
throwaway_pg_psql -d litemaas -f crates/testkit/sql/litemaas_sample.sql >/dev/null

# The password travels in the environment, never in an argument.
export LITEMAAS_DATABASE_URL="postgres://postgres:$PG_PASSWORD@127.0.0.1:$PG_PORT/litemaas"
report=$("$repo/target/release/litemaas-backup" --dest "$repo/litemaas-backups" --pg-dump "$PG_BIN/pg_dump" --json)
key=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])' <<<"$report")
gunzip -t "litemaas-backups/$key"
echo "demo: litemaas-backups/$key is a valid gzip file; its integrity record:" >&2
cat "litemaas-backups/records/$key.json"
echo
