#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what the tests need (PostgreSQL 15, moto
# 5.2.5, the aws CLI, s3rver 3.7.1), starts the S3 test servers for the run, and runs every test, doc test,
# example (run for real by scripts/run-examples.sh) and benchmark (benchmarks once each, as tests). Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/test-deps.sh
LITEMAAS_TEST_HOME="${LITEMAAS_TEST_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/litemaas-backup}"
export LITEMAAS_TEST_HOME
PY="$LITEMAAS_TEST_HOME/venv/bin/python"

# One moto server and one s3rver (a second, independent S3 implementation) for the whole run;
# every test makes its own bucket.
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_listening() { # NAME PORT PID LOG
  for _ in $(seq 1 300); do
    if "$PY" -c "import socket; socket.create_connection(('127.0.0.1', $2), 0.2)" 2>/dev/null; then return 0; fi
    kill -0 "$3" 2>/dev/null || { echo "$1 exited:"; cat "$4"; exit 1; }
    sleep 0.1
  done
  echo "$1 did not listen on port $2 within 30 s:"; cat "$4"; exit 1
}
port=$(free_port)
log="$(mktemp -t litemaas-moto.XXXXXX.log)"
"$PY" -m moto.server -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
s3rver_port=$(free_port)
s3rver_dir="$(mktemp -d -t litemaas-s3rver.XXXXXX)"
"$LITEMAAS_TEST_HOME/s3rver/node_modules/.bin/s3rver" -d "$s3rver_dir/data" -p "$s3rver_port" -a 127.0.0.1 --silent >"$s3rver_dir/log" 2>&1 &
s3rver_pid=$!
trap 'kill "$moto_pid" "$s3rver_pid" 2>/dev/null || true; rm -rf "$log" "$s3rver_dir"' EXIT
wait_listening moto "$port" "$moto_pid" "$log"
wait_listening s3rver "$s3rver_port" "$s3rver_pid" "$s3rver_dir/log"
export LITEMAAS_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
export LITEMAAS_TEST_S3RVER_ENDPOINT="http://127.0.0.1:$s3rver_port"
echo "test: S3 test servers: moto at $LITEMAAS_TEST_S3_ENDPOINT, s3rver at $LITEMAAS_TEST_S3RVER_ENDPOINT" >&2

cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked
# Local-only users build the facade without Kubernetes: keep that build working.
cargo check -p litemaas-backup --no-default-features --all-targets --locked
scripts/run-examples.sh
benches/rss.sh  # peak memory flat from a 100 MB to a 2 GB dump, within 64 MiB (issue 9)
