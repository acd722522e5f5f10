#!/bin/bash
# bench/one-node.sh - one Keybrake node, one hot key, a closed loop of wrk;
# for quick A/B of the store path (docs/benchmarks.md, session 10).
#
#   bench/one-node.sh [sqlite|postgres] [connections] [seconds]
#
# Environment: KEYBRAKE_BIN (default build/keybrake), BENCH_PG_FSYNC=on|off
# (postgres; off only to see what the WAL flush costs), KEYBRAKE_STORE_SYNCHRONOUS
# (sqlite: normal|full). Prints one line: req/s, p99, the node's CPU per
# request, requests per commit, and on PostgreSQL the CPU of its server
# processes per request and per commit (utime+stime from /proc).
# Everything runs on 127.0.0.1 under a mktemp dir and is stopped by pid.
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${1:-postgres} C=${2:-64} D=${3:-8}
BIN=${KEYBRAKE_BIN:-build/keybrake}
command -v wrk >/dev/null && command -v nginx >/dev/null || { echo "one-node: needs wrk and nginx (scripts/deps.sh bench)" >&2; exit 1; }
W=$(mktemp -d /tmp/kb-one-node.XXXXXX)
chmod 755 "$W"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -d "$W/pg" ] && tests/pg/pg-test.sh stop "$W/pg" >/dev/null 2>&1 || true
    rm -rf "$W"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port)
mkdir -p "$W/up"
cat >"$W/up/nginx.conf" <<NG
daemon off; master_process on; pid $W/up/nginx.pid; error_log $W/up/error.log warn;
events { worker_connections 8192; }
worker_processes 1;
http { access_log off; keepalive_requests 100000000;
 client_body_temp_path $W/up/cb; proxy_temp_path $W/up/p; fastcgi_temp_path $W/up/f;
 uwsgi_temp_path $W/up/u; scgi_temp_path $W/up/s;
 server { listen 127.0.0.1:$UP; location /v1/ { default_type application/json; return 200 '{"ok":true}'; } } }
NG
nginx -p "$W/up" -c "$W/up/nginx.conf" -e "$W/up/error.log" &
PIDS+=($!)
printf '[vendor.bench]\nbase_url = http://127.0.0.1:%s\nauth = bearer\nsecret = sk_bench\ncost = GET /v1/* 0.000001\n' "$UP" >"$W/kb.ini"
TOK=kbadmin_one_$(python3 -c 'import secrets; print(secrets.token_hex(16))')
if [ "$STORE" = postgres ]; then
    export KEYBRAKE_STORE_URL=$(KEYBRAKE_PG_FSYNC=${BENCH_PG_FSYNC:-on} \
        KEYBRAKE_PG_OPTS=${BENCH_PG_OPTS:-"-c shared_buffers=256MB -c max_wal_size=8GB -c checkpoint_timeout=15min"} \
        tests/pg/pg-test.sh start "$W/pg")
    export KEYBRAKE_SERVER_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))') KEYBRAKE_NODE_ID=one
fi
mkdir -p "$W/data"
chmod 700 "$W/data"
KEYBRAKE_DATA_DIR="$W/data" KEYBRAKE_PROXY_LISTEN=127.0.0.1:0 KEYBRAKE_ADMIN_LISTEN=127.0.0.1:0 \
    KEYBRAKE_ADMIN_TOKEN="$TOK" KEYBRAKE_WORKERS=1 KEYBRAKE_LOG_LEVEL=warn \
    "$BIN" serve --config "$W/kb.ini" >"$W/out" 2>"$W/err" &
KP=$!
PIDS+=("$KP")
for _ in $(seq 100); do grep -q '^keybrake: ready' "$W/out" && break; sleep 0.1; done
R=$(grep -m1 '^keybrake: ready' "$W/out") || { cat "$W/err" >&2; exit 1; }
PX=$(sed -n 's/.* proxy=\([^ ]*\).*/\1/p' <<<"$R")
AD=$(sed -n 's/.* admin=\([^ ]*\).*/\1/p' <<<"$R")
KT=$(curl -s -X POST "http://$AD/v1/keys" -H "Authorization: Bearer $TOK" -H 'Content-Type: application/json' \
    -d '{"label":"one","vendor":"bench","allowed_endpoints":["GET /v1/*"],"daily_usd_cap":1000000,"expires_in":"1h"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
wrk -t1 -c"$C" -d2s -H "Authorization: Bearer $KT" "http://$PX/bench/v1/things" >/dev/null
ticks() { local t=0 p; for p in "$@"; do [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo "$t"; }
commits() { curl -s "http://$AD/metrics" -H "Authorization: Bearer $TOK" | awk '/^keybrake_store_commit_seconds_count/ {print $2}'; }
BK=()
[ "$STORE" = postgres ] && mapfile -t BK < <(ps -eo pid,args | awk '/postgres: keybrake/ && !/awk/ {print $1}')
p0=$(ticks "${BK[@]}") k0=$(ticks "$KP") c0=$(commits)
OUT=$(wrk -t1 -c"$C" -d"${D}s" --latency -H "Authorization: Bearer $KT" "http://$PX/bench/v1/things")
p1=$(ticks "${BK[@]}") k1=$(ticks "$KP") c1=$(commits)
N=$(awk '/requests in/ {print $1}' <<<"$OUT")
awk -v store="$STORE" -v n="$N" -v rps="$(awk '/Requests\/sec/ {print $2}' <<<"$OUT")" \
    -v p99="$(awk '/ 99%/ {print $2}' <<<"$OUT")" -v p=$((p1 - p0)) -v k=$((k1 - k0)) \
    -v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" 'BEGIN {
    printf "%-8s %7.0f req/s  p99 %-8s node %5.1f us/req  %4.1f req/commit", store, rps, p99, k * 1e6 / hz / n, n / c
    if (store == "postgres") printf "  server %5.1f us/req, %4.0f us/commit", p * 1e6 / hz / n, p * 1e6 / hz / c
    printf "\n" }'
