#!/usr/bin/env bash
# Whole commands side by side, measured in one run on this machine:
#   limit     pg_dump > /dev/null
#   original  pg_dump > file; gzip file; aws s3 cp file        (the original bash tool's flow)
#   pipe      pg_dump | gzip | aws s3 cp -
#   ours      litemaas-backup --bucket                          (gzip, the default)
#   ours-zstd litemaas-backup --bucket --compression zstd:1     (the fastest codec we offer)
# all against the same throwaway PostgreSQL 15 database (pgbench tables plus a JSONB-heavy table like
# LiteLLM's spend logs) and the same S3 test server (moto). For each: wall time, CPU time (user+sys of
# the command and its children; the PostgreSQL backend is not counted, it is the same for all), peak
# RSS of the largest process, output size; medians of RUNS runs; ratios are ours / theirs.
#
#   benches/compare.sh                 # ~500 MB database, 3 runs
#   SIZE_MB=1000 RUNS=1 benches/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
SIZE_MB="${SIZE_MB:-500}"
RUNS="${RUNS:-3}"
. scripts/lib/throwaway-pg.sh
. scripts/lib/bench-db.sh

scripts/test-deps.sh
cargo build --release --locked -p litemaas-backup-cli
LITEMAAS_TEST_HOME="${LITEMAAS_TEST_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/litemaas-backup}"
VENV="$LITEMAAS_TEST_HOME/venv"
OURS="$repo/target/release/litemaas-backup"

# --- a database of about SIZE_MB of plain dump -----------------------------------------------------
PG_EXTRA_OPTS="-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_wal_size=4GB"
throwaway_pg_start
echo "compare: building a ~${SIZE_MB} MB database" >&2
bench_db_create "$SIZE_MB"
export PGHOST=127.0.0.1 PGPORT="$PG_PORT" PGUSER=postgres PGDATABASE=litemaas PGPASSWORD="$PG_PASSWORD"
raw_bytes=$("$PG_BIN/pg_dump" --clean --if-exists | wc -c)
echo "compare: plain dump is $raw_bytes bytes" >&2

# --- the S3 test server -----------------------------------------------------------------------------
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$VENV/bin/python" -m moto.server -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true; throwaway_pg_stop' EXIT
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ENDPOINT_URL_S3="http://127.0.0.1:$port" AWS_EC2_METADATA_DISABLED=true
AWS="$VENV/bin/aws"
for _ in $(seq 1 100); do "$AWS" s3 ls >/dev/null 2>&1 && break; sleep 0.2; done
bucket=compare
"$AWS" s3 mb "s3://$bucket" >/dev/null

# --- the runs ---------------------------------------------------------------------------------------
tmp="$(mktemp -d -t litemaas-compare.XXXXXX)"
results="$tmp/results.tsv"
measure() { # name, size-command, command...
  local name=$1 size_cmd=$2; shift 2
  /usr/bin/time -f '%e %U %S %M' -o "$tmp/time" bash -c "$*"
  printf '%s\t%s\t%s\n' "$name" "$(cat "$tmp/time")" "$(bash -c "$size_cmd")" >>"$results"
}
export LITEMAAS_DATABASE_URL="postgres://postgres:$PG_PASSWORD@127.0.0.1:$PG_PORT/litemaas"
for run in $(seq 1 "$RUNS"); do
  echo "compare: run $run of $RUNS" >&2
  measure limit "echo $raw_bytes" "'$PG_BIN/pg_dump' --clean --if-exists > /dev/null"
  measure original "stat -c %s '$tmp/d.sql.gz'" \
    "'$PG_BIN/pg_dump' --clean --if-exists > '$tmp/d.sql' && gzip '$tmp/d.sql' && '$AWS' s3 cp --only-show-errors '$tmp/d.sql.gz' s3://$bucket/original/d.sql.gz"
  rm -f "$tmp/d.sql.gz"
  measure pipe "'$AWS' s3api head-object --bucket $bucket --key pipe/d.sql.gz --query ContentLength --output text" \
    "set -o pipefail; '$PG_BIN/pg_dump' --clean --if-exists | gzip | '$AWS' s3 cp --only-show-errors - s3://$bucket/pipe/d.sql.gz"
  measure ours "python3 -c 'import json; print(json.load(open(\"$tmp/ours.json\"))[\"bytes\"])'" \
    "'$OURS' --bucket $bucket --prefix ours-$run --pg-dump '$PG_BIN/pg_dump' --json > '$tmp/ours.json'"
  measure ours-zstd "python3 -c 'import json; print(json.load(open(\"$tmp/ours-zstd.json\"))[\"bytes\"])'" \
    "'$OURS' --bucket $bucket --prefix ours-zstd-$run --pg-dump '$PG_BIN/pg_dump' --compression zstd:1 --json > '$tmp/ours-zstd.json'"
  "$AWS" s3 rm --quiet --recursive "s3://$bucket/" >/dev/null
done

python3 - "$results" "$raw_bytes" "$(nproc)" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, times, size = line.rstrip("\n").split("\t")
    wall, user, sys_, rss = times.split()
    rows.setdefault(name, []).append((float(wall), float(user) + float(sys_), int(rss) / 1024, int(size)))
med = {n: [statistics.median(col) for col in zip(*v)] for n, v in rows.items()}
ours = med["ours"]
print(f"plain dump {int(sys.argv[2]) / 1e6:.0f} MB, {len(rows['ours'])} run(s), medians, {sys.argv[3]} cores\n")
print("| command | wall s | CPU s | peak RSS MiB | output MB | ours / this (wall) |")
print("|---|---:|---:|---:|---:|---:|")
labels = {"limit": "`pg_dump > /dev/null` (the limit)", "original": "original: `pg_dump > f; gzip f; aws s3 cp f`",
          "pipe": "`pg_dump \\| gzip \\| aws s3 cp -`", "ours": "`litemaas-backup --bucket`",
          "ours-zstd": "`litemaas-backup --bucket --compression zstd:1`"}
for name in ["limit", "original", "pipe", "ours", "ours-zstd"]:
    wall, cpu, rss, size = med[name]
    print(f"| {labels[name]} | {wall:.1f} | {cpu:.1f} | {rss:.0f} | {size / 1e6:.1f} | {ours[0] / wall:.2f} |")
gz = med["original"][3]
print(f"\nours / gzip -6 output size: {ours[3] / gz:.4f}; zstd:1 / gzip -6: {med['ours-zstd'][3] / gz:.4f}")
print(f"ours / original: {ours[0] / med['original'][0]:.2f}; ours / limit: {ours[0] / med['limit'][0]:.2f}")
PY
rm -rf "$tmp"
