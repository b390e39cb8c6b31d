#!/usr/bin/env bash
# Runs every example for real (the test command calls it): a throwaway PostgreSQL 15 with the
# sample database; pg_dump piped into backup_reader; verify_backup on what it stored;
# restore_into a new database, which must then dump identically to the source.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/throwaway-pg.sh
throwaway_pg_start
work="$(mktemp -d -t litemaas-examples.XXXXXX)"
trap 'rm -rf "$work"; throwaway_pg_stop' EXIT

throwaway_pg_psql -d postgres -c "CREATE DATABASE source" -c "CREATE DATABASE restored" >/dev/null
throwaway_pg_psql -d source -1 -f crates/testkit/sql/litemaas_sample.sql >/dev/null
export PGHOST=127.0.0.1 PGPORT="$PG_PORT" PGUSER=postgres PGPASSWORD="$PG_PASSWORD" PATH="$PG_BIN:$PATH"

cargo build --locked --quiet --examples
ex=target/debug/examples
"$PG_BIN/pg_dump" --clean --if-exists -d source | "$ex/backup_reader" "$work/backups" | tee "$work/stored"
key=$(awk '{print $1; exit}' "$work/stored")
"$ex/verify_backup" "$work/backups" "$key"
LITEMAAS_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/restored" "$ex/restore_into" "$work/backups" "$key"
dump() { "$PG_BIN/pg_dump" --no-owner -d "$1" | grep -v '^\\\(un\)\?restrict'; }
if ! diff <(dump source) <(dump restored) >/dev/null; then
  echo "examples: the restored database differs from the source" >&2
  exit 1
fi
echo "examples: backup_reader, verify_backup and restore_into ran; the restored database is identical"
