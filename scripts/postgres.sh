#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests and trials, in a folder of its own:
#   scripts/postgres.sh start DIR   # prints its URL: postgres://ludus:PASSWORD@127.0.0.1:PORT/ludus
#   scripts/postgres.sh stop DIR
# Loopback only, password authentication (scram-sha-256), a free port.
# PostgreSQL comes from the distribution's packages (scripts/setup.sh).
set -euo pipefail
cmd="${1:-}"
dir="${2:-}"
if [ -z "$cmd" ] || [ -z "$dir" ]; then
    echo "usage: scripts/postgres.sh start|stop DIR" >&2
    exit 2
fi
bin=""
for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/pg_ctl" ] && bin="$d"
done
if [ -z "$bin" ]; then
    command -v pg_ctl >/dev/null 2>&1 && bin="$(dirname "$(command -v pg_ctl)")"
fi
if [ -z "$bin" ]; then
    echo "error: PostgreSQL not found: run scripts/setup.sh (it installs the distribution's postgresql)" >&2
    exit 1
fi
# The server refuses to run as root: as root, it runs as `postgres`.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}
case "$cmd" in
start)
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        password="ludus-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
        echo "$password" > "$dir/password"
        [ "$(id -u)" = 0 ] && chown postgres "$dir/password"
        as_owner "$bin/initdb" -D "$dir/data" -U ludus -A scram-sha-256 --pwfile="$dir/password" >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    echo "$port" > "$dir/port"
    password="$(cat "$dir/password")"
    PGPASSWORD="$password" psql -h 127.0.0.1 -p "$port" -U ludus -d postgres -qtAc \
        "SELECT 1 FROM pg_database WHERE datname = 'ludus'" | grep -q 1 \
        || PGPASSWORD="$password" psql -h 127.0.0.1 -p "$port" -U ludus -d postgres -qc "CREATE DATABASE ludus" >/dev/null
    echo "postgres://ludus:$password@127.0.0.1:$port/ludus"
    ;;
stop)
    [ -f "$dir/data/postmaster.pid" ] && as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
*)
    echo "usage: scripts/postgres.sh start|stop DIR" >&2
    exit 2
    ;;
esac
