#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on 127.0.0.1 for the distributed (orchestrator) tests.
#
#   bash .ci/start_postgres.sh start DATA_DIR [PORT]   # prints PG_* lines, see below
#   bash .ci/start_postgres.sh stop DATA_DIR
#
# Installs Debian's `postgresql` package when no initdb is found (apt-get, root only).
# The cluster lives in DATA_DIR (created, owned by the `postgres` user when run as root,
# because initdb refuses to run as root), listens only on 127.0.0.1 and on a Unix socket
# inside DATA_DIR, and requires a password over TCP: superuser `postgres`, password from
# $PG_PASSWORD (default `postgres`). PORT defaults to a free port.
# On success it prints, one per line: PG_HOST=, PG_PORT=, PG_USER=, PG_DATA=, PG_URL=.
set -euo pipefail

action="${1:?usage: start_postgres.sh start|stop DATA_DIR [PORT]}"
data_dir="${2:?usage: start_postgres.sh start|stop DATA_DIR [PORT]}"
port="${3:-}"
password="${PG_PASSWORD:-postgres}"

find_bin() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$found" ] && [ -x "$found/initdb" ]; then
    echo "$found"
  fi
}

bin_dir=$(find_bin)
if [ -z "$bin_dir" ]; then
  if [ "$(id -u)" != "0" ]; then
    echo "start_postgres.sh: PostgreSQL is not installed and installing it needs root (apt-get install postgresql)" >&2
    exit 3
  fi
  echo "start_postgres.sh: installing PostgreSQL from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  # A policy-rc.d that denies service starts keeps the package from starting its own
  # cluster on 5432; it is removed again afterwards.
  created_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  apt-get install -y -qq postgresql >&2
  if [ -n "$created_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
  bin_dir=$(find_bin)
  if [ -z "$bin_dir" ]; then
    echo "start_postgres.sh: apt-get installed postgresql but no initdb was found under /usr/lib/postgresql" >&2
    exit 3
  fi
fi

# initdb and postgres refuse to run as root: run them as the `postgres` user.
as_owner() {
  if [ "$(id -u)" = "0" ]; then
    if command -v runuser >/dev/null 2>&1; then
      runuser -u postgres -- "$@"
    else
      su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
    fi
  else
    "$@"
  fi
}

if [ "$(id -u)" = "0" ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

case "$action" in
  stop)
    if [ -f "$data_dir/postmaster.pid" ]; then
      as_owner "$bin_dir/pg_ctl" -D "$data_dir" -m immediate -w stop >&2 || true
    fi
    exit 0
    ;;
  start) ;;
  *) echo "start_postgres.sh: unknown action $action (start or stop)" >&2; exit 2 ;;
esac

if [ -z "$port" ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi

mkdir -p "$data_dir"
if [ "$(id -u)" = "0" ]; then
  chown postgres "$data_dir"
  # The postgres user must be able to reach DATA_DIR.
  parent=$(dirname "$data_dir")
  while [ "$parent" != "/" ]; do chmod o+x "$parent" 2>/dev/null || true; parent=$(dirname "$parent"); done
fi
chmod 700 "$data_dir"

if [ ! -f "$data_dir/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "$password" > "$pwfile"
  chmod 644 "$pwfile"
  as_owner "$bin_dir/initdb" -D "$data_dir" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --pwfile="$pwfile" -E UTF8 --no-instructions >&2
  rm -f "$pwfile"
fi

as_owner "$bin_dir/pg_ctl" -D "$data_dir" -l "$data_dir/server.log" -w -t 60 \
  -o "-h 127.0.0.1 -p $port -k $data_dir -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start >&2

echo "PG_HOST=127.0.0.1"
echo "PG_PORT=$port"
echo "PG_USER=postgres"
echo "PG_DATA=$data_dir"
echo "PG_URL=postgresql://postgres@127.0.0.1:$port/postgres"
