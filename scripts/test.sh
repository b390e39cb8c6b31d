#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what the tests need (PostgreSQL 15, moto
# 5.2.5, the aws CLI), starts one S3 test server for the run, and runs every test, doc test,
# example (run for real by scripts/run-examples.sh) and benchmark (benchmarks once each, as tests). Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/test-deps.sh
LITEMAAS_TEST_HOME="${LITEMAAS_TEST_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/litemaas-backup}"
export LITEMAAS_TEST_HOME
PY="$LITEMAAS_TEST_HOME/venv/bin/python"

# One moto server for the whole run; every test makes its own bucket.
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log="$(mktemp -t litemaas-moto.XXXXXX.log)"
"$PY" -m moto.server -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 300); do
  if "$PY" -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then break; fi
  kill -0 "$moto_pid" 2>/dev/null || { echo "moto exited:"; cat "$log"; exit 1; }
  sleep 0.1
done
export LITEMAAS_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
echo "test: S3 test server (moto) at $LITEMAAS_TEST_S3_ENDPOINT" >&2

cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked
scripts/run-examples.sh
