#!/usr/bin/env bash
# Installs, idempotently, what the test suite needs: PostgreSQL 15 (Debian packages), a Python
# virtualenv holding moto[server]==5.2.5 (the S3 test server) and the aws CLI, and s3rver 3.7.1
# (npm; a second, independent S3 implementation) under $LITEMAAS_TEST_HOME/s3rver.
# Safe to run again: each step checks first. Prints where things are; changes nothing else.
set -euo pipefail

LITEMAAS_TEST_HOME="${LITEMAAS_TEST_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/litemaas-backup}"
VENV="$LITEMAAS_TEST_HOME/venv"
MOTO_VERSION="5.2.5"   # 5.2.1 returns a CompleteMultipartUpload body the Rust SDK rejects
S3RVER_VERSION="3.7.1" # crates/testkit/src/s3.rs names it too
S3RVER_DIR="$LITEMAAS_TEST_HOME/s3rver"
PG_BIN="/usr/lib/postgresql/15/bin"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if [ ! -x "$PG_BIN/initdb" ] || [ ! -x "$PG_BIN/pg_dump" ]; then
  echo "test-deps: installing PostgreSQL 15" >&2
  apt_install postgresql-15 postgresql-client-15
fi
if ! id postgres >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "test-deps: creating user postgres (initdb refuses to run as root)" >&2
  as_root useradd --system --no-create-home --shell /usr/sbin/nologin postgres
fi
if ! command -v kubectl >/dev/null; then
  echo "test-deps: installing kubectl (the independent client the test API server is checked with)" >&2
  apt_install kubectl || { echo "test-deps: kubectl is not in this machine's package sources" >&2; exit 1; }
fi
for tool in gzip gunzip; do
  command -v "$tool" >/dev/null || apt_install gzip
done
# The in-pod dump wrapper is tested with busybox's sh as well as dash (the pod images vary).
command -v busybox >/dev/null || apt_install busybox

# The cron tests run a real crontab. busybox-static's `crontab -c DIR` keeps a scratch spool (Debian's
# busybox has no crontab applet, and busybox-static conflicts with that package, so its binary is
# unpacked under $LITEMAAS_TEST_HOME); Debian's own crontab is tested as root with `-u` on a
# dedicated user, never on a real user's crontab.
BUSYBOX_STATIC="$LITEMAAS_TEST_HOME/busybox-static/busybox"
if ! { [ -x "$BUSYBOX_STATIC" ] && "$BUSYBOX_STATIC" --list | grep -x crontab >/dev/null; }; then
  echo "test-deps: unpacking busybox-static's busybox into $(dirname "$BUSYBOX_STATIC")" >&2
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  bb_tmp="$(mktemp -d)"
  chmod 777 "$bb_tmp" # apt's _apt user downloads into it
  (cd "$bb_tmp" && apt-get download -qq busybox-static && dpkg-deb -x busybox-static_*.deb root)
  mkdir -p "$(dirname "$BUSYBOX_STATIC")"
  cp "$bb_tmp/root/bin/busybox" "$BUSYBOX_STATIC"
  rm -rf "$bb_tmp"
fi
if ! command -v crontab >/dev/null; then
  echo "test-deps: installing cron (Debian's crontab)" >&2
  apt_install cron
fi
if ! id litemaas-crontest >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "test-deps: creating user litemaas-crontest (whose crontab the cron tests use)" >&2
  useradd --system --no-create-home --shell /usr/sbin/nologin litemaas-crontest
fi

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" - <<PY 2>/dev/null
import importlib.metadata as m, sys
sys.exit(0 if m.version("moto") == "$MOTO_VERSION" and m.version("awscli") else 1)
PY
then
  echo "test-deps: creating $VENV with moto[server]==$MOTO_VERSION and awscli" >&2
  mkdir -p "$LITEMAAS_TEST_HOME"
  python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; }
  "$VENV/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION" awscli
fi

s3rver_version() {
  node -p "require('$S3RVER_DIR/node_modules/s3rver/package.json').version" 2>/dev/null
}
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "test-deps: installing Node.js and npm (for s3rver)" >&2
  apt_install nodejs npm
fi
if [ "$(s3rver_version)" != "$S3RVER_VERSION" ] || [ ! -x "$S3RVER_DIR/node_modules/.bin/s3rver" ]; then
  echo "test-deps: installing s3rver@$S3RVER_VERSION into $S3RVER_DIR" >&2
  mkdir -p "$S3RVER_DIR"
  npm install --prefix "$S3RVER_DIR" --no-audit --no-fund --loglevel=error --save-exact "s3rver@$S3RVER_VERSION" >/dev/null
fi

echo "test-deps: PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), kubectl $(kubectl version --client -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'), moto $("$VENV/bin/python" -c 'import moto; print(moto.__version__)'), $("$VENV/bin/aws" --version 2>&1 | cut -d' ' -f1), s3rver $(s3rver_version), $("$BUSYBOX_STATIC" | head -1 | cut -d' ' -f1-2) (static)" >&2
