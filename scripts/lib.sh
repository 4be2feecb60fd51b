#!/usr/bin/env bash
# Shared helpers for the demo and test scripts: a throwaway cluster run by
# the non-root user postgres, and the bundled provider emulator.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BIN=$(pg_config --bindir)
RUN_AS=postgres

# Runs a command as the unprivileged cluster owner (or as is, if not root).
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    su "$RUN_AS" -s /bin/bash -c "$(printf '%q ' "$@")"
  else
    "$@"
  fi
}

# A free TCP port on the loopback interface.
free_port() {
  perl -MIO::Socket::INET -e 'my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1", LocalPort => 0) or die; print $s->sockport, "\n";'
}

# Makes a scratch directory owned by the cluster owner.
make_workdir() {
  local d
  d=$(mktemp -d "${TMPDIR:-/tmp}/enrich-$1.XXXXXX")
  chmod 755 "$d"
  [ "$(id -u)" -eq 0 ] && chown "$RUN_AS" "$d"
  echo "$d"
}

# Starts the emulator in $1/emu; sets EMU_HTTP, EMU_HTTPS, EMU_WRONG.
start_emulator() {
  local dir=$1/emu
  as_pg mkdir -p "$dir"
  as_pg bash "$ROOT/test/provider/start.sh" "$dir" >/dev/null
  EMU_HTTP=$(perl -MJSON::PP -e 'local $/; print decode_json(<>)->{http}' "$dir/ports.json")
  EMU_HTTPS=$(perl -MJSON::PP -e 'local $/; print decode_json(<>)->{https}' "$dir/ports.json")
  EMU_WRONG=$(perl -MJSON::PP -e 'local $/; print decode_json(<>)->{wrong_host} // ""' "$dir/ports.json")
  EMU_CA=$dir/ca.pem
  export EMU_HTTP EMU_HTTPS EMU_WRONG EMU_CA
  export EMU_URL="http://127.0.0.1:$EMU_HTTP"
}

stop_emulator() {
  [ -f "$1/emu/ports.json" ] && as_pg bash "$ROOT/test/provider/stop.sh" "$1/emu" || true
}

# Creates and starts a cluster in $1/data on a free port; sets PGPORT, PGHOST.
start_cluster() {
  local dir=$1
  PGPORT=$(free_port)
  PGHOST=$dir
  export PGPORT PGHOST PGUSER=postgres PGDATABASE=postgres
  as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1
  cat >>"$dir/data/postgresql.conf" <<CONF
port = $PGPORT
listen_addresses = ''
unix_socket_directories = '$dir'
shared_preload_libraries = 'enrich'
enrich.database_name = 'postgres'
enrich.leadlex_url = 'https://127.0.0.1:$EMU_HTTPS/functions/v1/api-gateway'
enrich.slintel_url = 'https://127.0.0.1:$EMU_HTTPS'
enrich.ca_file = '$EMU_CA'
enrich.leadlex_api_key = '${ENRICH_LEADLEX_API_KEY:-wbk_test_key}'
enrich.slintel_api_key = '${ENRICH_SLINTEL_API_KEY:-sl_test_key}'
log_min_messages = info
CONF
  as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
}

stop_cluster() {
  [ -f "$1/data/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$1/data" -m fast -w stop >/dev/null 2>&1 || true
}

# Builds and installs the extension into the server's directories; with
# ENRICH_PRIVATE=DIR into a private copy of PostgreSQL in DIR instead
# (scripts/pg-private.sh; ENRICH_MAKE_ARGS are passed to make), whose bin
# directory then comes first in PATH.
build_install() {
  if [ -n "${ENRICH_PRIVATE:-}" ]; then
    # shellcheck disable=SC2086
    PG_BIN=$(bash "$ROOT/scripts/pg-private.sh" "$ENRICH_PRIVATE" ${ENRICH_MAKE_ARGS:-}) || return 1
    export PATH="$PG_BIN:$PATH"
    return 0
  fi
  make -C "$ROOT" -s clean >/dev/null
  make -C "$ROOT" -s 2>&1 | grep -v '^$' || true
  make -C "$ROOT" -s install >/dev/null
}
