#!/usr/bin/env bash
# The main job on a fresh machine: builds litemaas-backup, starts a throwaway PostgreSQL 15 holding
# a LiteMaaS-like sample database, and backs it up into ./litemaas-backups (the embedded default
# store: a local directory). Then checks the file with plain gunzip and shows its integrity record.
# With a real database you run the binary alone:
#   LITEMAAS_DATABASE_URL=postgres://user:pass@host/db litemaas-backup [--bucket B]
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

scripts/test-deps.sh
cargo build --release --locked -p litemaas-backup-cli
PG_BIN=/usr/lib/postgresql/15/bin

work="$(mktemp -d -t litemaas-demo.XXXXXX)"
run_as=()
if [ "$(id -u)" = 0 ]; then chown postgres "$work"; run_as=(runuser -u postgres --); fi
cleanup() {
  "${run_as[@]}" "$PG_BIN/pg_ctl" -D "$work/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

password="demo-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s' "$password" >"$work/pw"; [ "$(id -u)" = 0 ] && chown postgres "$work/pw"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${run_as[@]}" "$PG_BIN/initdb" -D "$work/data" -U postgres --auth-host=scram-sha-256 --auth-local=trust \
  --pwfile="$work/pw" -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
"${run_as[@]}" "$PG_BIN/pg_ctl" -D "$work/data" -w -l "$work/log" \
  -o "-p $port -k $work -c listen_addresses=127.0.0.1" start >/dev/null
export PGPASSWORD="$password"
"$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -c "CREATE DATABASE litemaas" postgres
"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d litemaas \
  -f crates/testkit/sql/litemaas_sample.sql >/dev/null
unset PGPASSWORD

# The password travels in the environment, never in an argument.
export LITEMAAS_DATABASE_URL="postgres://postgres:$password@127.0.0.1:$port/litemaas"
report=$("$repo/target/release/litemaas-backup" --dest "$repo/litemaas-backups" --pg-dump "$PG_BIN/pg_dump" --json)
key=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])' <<<"$report")
gunzip -t "litemaas-backups/$key"
echo "demo: litemaas-backups/$key is a valid gzip file; its record:" >&2
cat "litemaas-backups/records/$key.json"
echo
