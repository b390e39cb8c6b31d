# Sourced by scripts that need a throwaway PostgreSQL 15 cluster on loopback (the demo and the
# benchmark comparison). Defines:
#   throwaway_pg_start   sets PG_BIN, PG_WORK, PG_PORT, PG_PASSWORD and starts the cluster
#   throwaway_pg_psql    psql as postgres against it (arguments passed on)
#   throwaway_pg_stop    stops it and removes its directory (installed as an EXIT trap)
# The password is handed to psql through PGPASSWORD, never as an argument.

PG_BIN=/usr/lib/postgresql/15/bin

throwaway_pg_start() {
  PG_WORK="$(mktemp -d -t litemaas-pg.XXXXXX)"
  PG_RUN_AS=()
  if [ "$(id -u)" = 0 ]; then chown postgres "$PG_WORK"; PG_RUN_AS=(runuser -u postgres --); fi
  trap throwaway_pg_stop EXIT
  PG_PASSWORD="pw-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
  printf '%s' "$PG_PASSWORD" >"$PG_WORK/pw"
  [ "$(id -u)" = 0 ] && chown postgres "$PG_WORK/pw"
  PG_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "${PG_RUN_AS[@]}" "$PG_BIN/initdb" -D "$PG_WORK/data" -U postgres --auth-host=scram-sha-256 \
    --auth-local=trust --pwfile="$PG_WORK/pw" -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
  rm -f "$PG_WORK/pw"
  "${PG_RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_WORK/data" -w -l "$PG_WORK/log" \
    -o "-p $PG_PORT -k $PG_WORK -c listen_addresses=127.0.0.1 ${PG_EXTRA_OPTS:-}" start >/dev/null
}

throwaway_pg_psql() {
  PGPASSWORD="$PG_PASSWORD" "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"
}

throwaway_pg_stop() {
  if [ -n "${PG_WORK:-}" ] && [ -d "$PG_WORK" ]; then
    "${PG_RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_WORK/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$PG_WORK"
  fi
}
