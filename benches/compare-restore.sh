#!/usr/bin/env bash
# Whole restore commands side by side, measured in one run on this machine:
#   limit     psql -f d.sql                                  (the dump already downloaded and decompressed)
#   original  aws s3 cp d.sql.gz; gunzip d.sql.gz; psql -f d.sql   (the original manual steps, timed together;
#             like the original instructions: no ON_ERROR_STOP)
#   ours      litemaas-restore --bucket B --key KEY --yes    (streamed, verified, all or nothing:
#             one transaction over the live database, on one connection)
#   swap-jN   litemaas-restore … --swap --drop-previous --jobs N   (loaded into a new database on N
#             connections — N=1: one transaction —, then swapped in for the live one), for N in JOBS
#   ideal-j2  the floor of any 2-connection loader, not a product: the database recreated, then
#             `pg_dump --section` files made beforehand, one per table (decompressed, on local disk),
#             run by 2 psql side by side — pre-data, each table's data, each table's indexes and
#             constraints, largest first. No loader, no parsing, no download, no decompression:
#             what PostgreSQL itself needs on these cores.
# all restoring the same `pg_dump --clean --if-exists` dump over the same live throwaway PostgreSQL 15
# database (pgbench tables plus a JSONB-heavy table like LiteLLM's spend logs; no partitioned tables, so
# plain `psql -f` works) from the same S3 test server (moto). The backup object is made once, before the
# runs, by `litemaas-backup --bucket` (so it has its integrity record); `original` downloads that same
# object. Every command replaces the database with the dump's content, so each one starts from the same
# state; a CHECKPOINT (not timed) precedes each, and row counts are checked (not timed) after each.
# For each: wall time, CPU time (user+sys of the command and its children; the PostgreSQL backend is not
# counted, it is the same for all), peak RSS of the largest process; medians of RUNS runs; ratios of
# wall times to `psql -f` and to the original flow.
#
#   benches/compare-restore.sh                 # ~500 MB database, 3 runs
#   SIZE_MB=1000 RUNS=1 benches/compare-restore.sh
#   JOBS="1 2 3 4" benches/compare-restore.sh  # the connections tried with --swap (default "1 2 4")
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
SIZE_MB="${SIZE_MB:-500}"
RUNS="${RUNS:-3}"
JOBS="${JOBS:-1 2 4}"
. scripts/lib/throwaway-pg.sh
. scripts/lib/bench-db.sh

scripts/test-deps.sh
cargo build --release --locked -p litemaas-backup-cli -p litemaas-restore-cli
LITEMAAS_TEST_HOME="${LITEMAAS_TEST_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/litemaas-backup}"
VENV="$LITEMAAS_TEST_HOME/venv"
BACKUP="$repo/target/release/litemaas-backup"
OURS="$repo/target/release/litemaas-restore"

moto_pid=
tmp=
cleanup() {
  if [ -n "$moto_pid" ]; then kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; fi
  throwaway_pg_stop
  if [ -n "$tmp" ]; then rm -rf "$tmp"; fi
}

# --- a database of about SIZE_MB of plain dump -----------------------------------------------------
PG_EXTRA_OPTS="-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_wal_size=4GB"
throwaway_pg_start
trap cleanup EXIT
tmp="$(mktemp -d -t litemaas-compare-restore.XXXXXX)"
echo "compare-restore: building a ~${SIZE_MB} MB database" >&2
bench_db_create "$SIZE_MB"
export PGHOST=127.0.0.1 PGPORT="$PG_PORT" PGUSER=postgres PGDATABASE=litemaas PGPASSWORD="$PG_PASSWORD"
PSQL="$PG_BIN/psql"
# Row counts of every table, to check (not timed) that each restore left the same database.
counts() {
  "$PSQL" -X -q -A -t -v ON_ERROR_STOP=1 -c "SELECT string_agg(format('%s=%s', t, (xpath('/row/c/text()',
      query_to_xml(format('SELECT count(*) AS c FROM public.%I', t), false, true, '')))[1]::text), ' ' ORDER BY t)
    FROM (SELECT tablename AS t FROM pg_tables WHERE schemaname = 'public') s"
}
expected_counts="$(counts)"
echo "compare-restore: tables: $expected_counts" >&2

# --- the S3 test server and the backup to restore ---------------------------------------------------
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$VENV/bin/python" -m moto.server -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto_pid=$!
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ENDPOINT_URL_S3="http://127.0.0.1:$port" AWS_EC2_METADATA_DISABLED=true
AWS="$VENV/bin/aws"
for _ in $(seq 1 100); do "$AWS" s3 ls >/dev/null 2>&1 && break; sleep 0.2; done
bucket=compare-restore
"$AWS" s3 mb "s3://$bucket" >/dev/null

export LITEMAAS_DATABASE_URL="postgres://postgres:$PG_PASSWORD@127.0.0.1:$PG_PORT/litemaas"
export LITEMAAS_PSQL="$PSQL"
echo "compare-restore: making the backup with litemaas-backup" >&2
"$BACKUP" --bucket "$bucket" --pg-dump "$PG_BIN/pg_dump" --json >"$tmp/backup.json"
key=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["key"])' "$tmp/backup.json")
gz_bytes=$("$AWS" s3api head-object --bucket "$bucket" --key "$key" --query ContentLength --output text)
# The limit's input: the same dump, downloaded and decompressed beforehand.
"$AWS" s3 cp --only-show-errors "s3://$bucket/$key" - | gunzip >"$tmp/limit.sql"
raw_bytes=$(stat -c %s "$tmp/limit.sql")
echo "compare-restore: s3://$bucket/$key: $gz_bytes bytes, plain dump $raw_bytes bytes" >&2
# The floor's input: each table's data and post-data as their own files, largest first.
mkdir -p "$tmp/ideal"
"$PG_BIN/pg_dump" --section=pre-data >"$tmp/ideal/pre.sql"
tables=$("$PSQL" -X -A -t -c "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
  WHERE schemaname = 'public' ORDER BY pg_total_relation_size(format('%I.%I', schemaname, tablename)::regclass) DESC")
i=0
while IFS= read -r t; do
  i=$((i + 1))
  "$PG_BIN/pg_dump" --section=data -t "$t" >"$tmp/ideal/data-$(printf %03d $i).sql"
  "$PG_BIN/pg_dump" --section=post-data -t "$t" >"$tmp/ideal/post-$(printf %03d $i).sql"
done <<<"$tables"
ideal() { # the database recreated, then the section files on 2 psql side by side
  "$PSQL" -X -q -v ON_ERROR_STOP=1 -d postgres -c "DROP DATABASE litemaas WITH (FORCE)" -c "CREATE DATABASE litemaas" \
    && "$PSQL" -X -q -v ON_ERROR_STOP=1 -f "$tmp/ideal/pre.sql" \
    && ls "$tmp"/ideal/data-*.sql | xargs -P 2 -n 1 "$PSQL" -X -q -v ON_ERROR_STOP=1 -f \
    && ls "$tmp"/ideal/post-*.sql | xargs -P 2 -n 1 "$PSQL" -X -q -v ON_ERROR_STOP=1 -f
}
export -f ideal
export tmp PSQL

# --- the runs ---------------------------------------------------------------------------------------
results="$tmp/results.tsv"
measure() { # name, command...
  local name=$1; shift
  "$PSQL" -X -q -c CHECKPOINT
  /usr/bin/time -f '%e %U %S %M' -o "$tmp/time" bash -c "$*"
  local errors
  errors=$(grep -cE '(^|: )(ERROR|FATAL): ' "$tmp/$name.err" || true)
  if [ "$errors" != 0 ]; then
    echo "compare-restore: $name reported $errors error(s):" >&2
    head -5 "$tmp/$name.err" >&2
  fi
  local got
  got="$(counts)"
  if [ "$got" != "$expected_counts" ]; then
    echo "compare-restore: after $name the row counts differ: $got" >&2
    exit 1
  fi
  printf '%s\t%s\t%s\n' "$name" "$(cat "$tmp/time")" "$errors" >>"$results"
  echo "compare-restore:   $name: $(cut -d' ' -f1 "$tmp/time") s wall" >&2
}
# Other work on the machine (a compiler, say) slows the restores unevenly: the load is printed with the table.
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for run in $(seq 1 "$RUNS"); do
  echo "compare-restore: run $run of $RUNS" >&2
  measure limit "'$PSQL' -X -f '$tmp/limit.sql' > /dev/null 2> '$tmp/limit.err'"
  measure original "'$AWS' s3 cp --only-show-errors 's3://$bucket/$key' '$tmp/d.sql.gz' && gunzip '$tmp/d.sql.gz' \
    && '$PSQL' -X -f '$tmp/d.sql' > /dev/null 2> '$tmp/original.err'"
  rm -f "$tmp/d.sql" "$tmp/d.sql.gz"
  measure ours "'$OURS' --bucket $bucket --key '$key' --yes --json > '$tmp/ours.json' 2> '$tmp/ours.err'"
  for j in $JOBS; do
    measure "swap-j$j" "'$OURS' --bucket $bucket --key '$key' --swap --drop-previous --jobs $j --yes --json > '$tmp/swap-j$j.json' 2> '$tmp/swap-j$j.err'"
  done
  measure ideal-j2 "ideal > /dev/null 2> '$tmp/ideal-j2.err'"
done

python3 - "$results" "$raw_bytes" "$gz_bytes" "$(nproc)" "$load_before" "$(cut -d' ' -f1-3 /proc/loadavg)" "$tmp" <<'PY'
import json, os, statistics, sys
rows, errors = {}, {}
for line in open(sys.argv[1]):
    name, times, errs = line.rstrip("\n").split("\t")
    wall, user, sys_, rss = times.split()
    rows.setdefault(name, []).append((float(wall), float(user) + float(sys_), int(rss) / 1024))
    errors[name] = errors.get(name, 0) + int(errs)
med = {n: [statistics.median(col) for col in zip(*v)] for n, v in rows.items()}
limit, original = med["limit"][0], med["original"][0]
print(f"plain dump {int(sys.argv[2]) / 1e6:.0f} MB ({int(sys.argv[3]) / 1e6:.0f} MB gzipped), "
      f"{len(rows['ours'])} run(s), medians, {sys.argv[4]} cores, "
      f"load average {sys.argv[5]} before the runs, {sys.argv[6]} after\n")
print("| command | wall s | CPU s | peak RSS MiB | this / `psql -f` | this / original |")
print("|---|---:|---:|---:|---:|---:|")
labels = {"limit": "`psql -f d.sql` (the limit: already downloaded and decompressed)",
          "original": "original: `aws s3 cp d.sql.gz; gunzip; psql -f`",
          "ours": "`litemaas-restore --yes` (one transaction, in place)",
          "ideal-j2": "floor of any 2-connection loader: `pg_dump --section` files per table, 2 psql side by side"}
for name in rows:
    if name.startswith("swap-j"):
        j = name[len("swap-j"):]
        labels[name] = f"`litemaas-restore --swap --jobs {j}`" + (" (one transaction)" if j == "1" else "")
for name in rows:
    wall, cpu, rss = med[name]
    print(f"| {labels[name]} | {wall:.1f} | {cpu:.1f} | {rss:.0f} | {wall / limit:.2f} | {wall / original:.2f} |")
for name in rows:
    path = f"{sys.argv[7]}/{name}.json"
    if name.startswith("swap-j") and os.path.exists(path) and "parallel" in json.load(open(path)):
        p = json.load(open(path))["parallel"]["phases"]
        print(f"\n{labels[name]}, last run's phases: before the data {p['pre_data_ms'] / 1000:.1f} s, "
              f"data {p['data_ms'] / 1000:.1f} s, after the data {p['post_data_ms'] / 1000:.1f} s", end="")
print()
bad = {n: e for n, e in errors.items() if e}
if bad:
    print(f"\nERROR lines on stderr (all runs): {bad}")
PY
