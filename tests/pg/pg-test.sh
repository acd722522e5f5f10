#!/bin/sh
# A throwaway PostgreSQL for the tests, from Debian's packages.
#
#   tests/pg/pg-test.sh start DIR   initdb in DIR (new), start on a free
#                                   127.0.0.1 port, print the server's URL
#   tests/pg/pg-test.sh stop DIR    stop it by the pid in DIR, remove DIR
#   tests/pg/pg-test.sh pause DIR   stop it, keeping its data and port
#   tests/pg/pg-test.sh resume DIR  start it again on the same port
#
# KEYBRAKE_PG_FSYNC=on makes it durable (the benchmark); tests run with
# fsync off. KEYBRAKE_PG_OPTS adds server settings (-c name=value ...): the
# benchmark sizes memory and WAL as docs/cluster.md recommends. Run as root (CI), the server runs as the `postgres` user, which refuses
# to run as root. Trust authentication on loopback only: nothing but this
# machine reaches it, and it lives as long as one test run.
set -eu
cmd=${1:?start|stop}
dir=${2:?directory}
fsync=${KEYBRAKE_PG_FSYNC:-off}
opts=${KEYBRAKE_PG_OPTS:-}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin/initdb" ] || { echo "pg-test: PostgreSQL's server is not installed (apt-get install postgresql)" >&2; exit 1; }
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case $cmd in
start)
    "$0" stop "$dir" # a server a killed run left behind
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    as_pg "$bin/initdb" -D "$dir/data" -A trust -U keybrake -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; exit 1; }
    tries=0
    while :; do
        port=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom) % 40000 ))
        if as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=$fsync -c max_connections=200 -c shared_buffers=32MB $opts" \
            start >/dev/null 2>&1; then
            break
        fi
        tries=$((tries + 1))
        [ $tries -lt 5 ] || { cat "$dir/server.log" >&2; exit 1; }
    done
    echo "$port" >"$dir/port"
    echo "postgres://keybrake@127.0.0.1:$port/postgres"
    ;;
pause) # [immediate]: a crash (no checkpoint; sessions cut at once, mid-commit too)
    as_pg "$bin/pg_ctl" -D "$dir/data" -m "${3:-fast}" -w -t 30 stop >/dev/null
    ;;
resume)
    port=$(cat "$dir/port")
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=$fsync -c max_connections=200 -c shared_buffers=32MB $opts" \
        start >/dev/null || { tail -20 "$dir/server.log" >&2; exit 1; }
    ;;
stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
        pid=$(head -1 "$dir/data/postmaster.pid")
        kill -INT "$pid" 2>/dev/null || true
        # a fast shutdown; wait for the pid to go (bounded)
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start|stop|pause|resume DIR" >&2
    exit 2
    ;;
esac
