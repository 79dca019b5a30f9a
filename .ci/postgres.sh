#!/usr/bin/env bash
# Start a throw-away PostgreSQL cluster for the tests (loopback only, trust auth) and
# print the URL of its maintenance database. Usage: eval "$(bash .ci/postgres.sh)"
# When this script started the server it also exports SPACING_SCP_CI_PGDATA; then
# `bash .ci/postgres.sh stop` stops it (.ci/run does so on exit). A server that was
# already running is left alone.
set -euo pipefail
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
PGDATA=${PGDATA:-/tmp/spacing-scp-pg}
PGPORT=${PGPORT:-55432}
RUNAS=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
  RUNAS=(runuser -u postgres --)
fi
if [ "${1:-}" = stop ]; then
  if "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >&2
  fi
  exit 0
fi
if ! "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
  rm -rf "$PGDATA"
  mkdir -p "$PGDATA"
  [ "$(id -u)" = 0 ] && chown postgres "$PGDATA"
  "${RUNAS[@]}" "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust --no-sync >&2
  "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w \
    -o "-p $PGPORT -c listen_addresses=127.0.0.1 -k /tmp -c fsync=off -c max_connections=200" \
    start >&2
  echo "export SPACING_SCP_CI_PGDATA=$PGDATA"
fi
echo "export SPACING_SCP_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$PGPORT/postgres"
