#!/usr/bin/env bash
# bench/run.sh - Keybrake against an nginx proxy_pass baseline, on loopback.
#
# Starts, all on 127.0.0.1 and under one mktemp -d work dir:
#   upstream  nginx returning a fixed ~300-byte JSON body (checks the injected
#             Authorization header, so both proxies must inject it to get 200)
#   baseline  nginx proxy_pass to it: keepalive pool of 1024, HTTP/1.1,
#             Authorization injection, keepalive_requests raised everywhere
#   keybrake  build/keybrake serve with a generic vendor "bench" pointing at
#             the upstream, one vault key issued through the admin API
# then runs wrk against baseline and Keybrake in alternation, measures key
# issuance, revocation latency and memory per live key, prints a summary and
# writes it to bench/last-run.md. See bench/README.md for every knob.
#
# Every process it starts is stopped by pid on exit; the work dir is removed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T_START=$(date +%s)

scripts/deps.sh bench

# ---- settings ---------------------------------------------------------------
KEYBRAKE_BIN=${KEYBRAKE_BIN:-$ROOT/build/keybrake}
WORKERS=${BENCH_WORKERS:-1}            # nginx worker_processes = KEYBRAKE_WORKERS
THREADS=${BENCH_THREADS:-2}            # wrk threads
CONNS=${BENCH_CONNS:-"64 256"}         # closed-loop connection levels
LIGHT_CONNS=${BENCH_LIGHT_CONNS:-8}    # low-concurrency latency check
PACE_DELAY_MS=${BENCH_PACE_DELAY_MS:-10}
if [ "${BENCH_QUICK:-0}" = 1 ]; then
    ROUNDS=${BENCH_ROUNDS:-1}
    DURATION=${BENCH_DURATION:-3}
    LAT_DURATION=${BENCH_LAT_DURATION:-2}
    NKEYS=${BENCH_KEYS:-500}
    LIVE_KEYS=${BENCH_LIVE_KEYS:-10000}
    REVOKE_TRIALS=${BENCH_REVOKE_TRIALS:-5}
    WARMUP=1
else
    ROUNDS=${BENCH_ROUNDS:-3}
    DURATION=${BENCH_DURATION:-10}
    LAT_DURATION=${BENCH_LAT_DURATION:-5}
    NKEYS=${BENCH_KEYS:-2000}
    LIVE_KEYS=${BENCH_LIVE_KEYS:-100000}
    REVOKE_TRIALS=${BENCH_REVOKE_TRIALS:-20}
    WARMUP=2
fi
[ "${BENCH_MILLION:-0}" = 1 ] && LIVE_KEYS=1000000
OUT_MD=${BENCH_OUT:-$ROOT/bench/last-run.md}
PROFILE=${BENCH_PROFILE:-0}
PATH_REQ=/bench/v1/things

die() { echo "bench: $*" >&2; exit 1; }
[ -x "$KEYBRAKE_BIN" ] || die "no binary at $KEYBRAKE_BIN (run 'make build' or set KEYBRAKE_BIN)"
for t in nginx wrk curl python3; do
    command -v $t >/dev/null || die "$t is missing (scripts/deps.sh bench installs nginx-light and wrk)"
done
NGINX=$(command -v nginx)
CLK_TCK=$(getconf CLK_TCK)

# ---- processes and cleanup ---------------------------------------------------
W=$(mktemp -d /tmp/keybrake-bench.XXXXXX)
chmod 755 "$W" # nginx workers may run as nobody
STARTED=()     # pids we started, stopped in reverse order on exit
cleanup() {
    local rc=$?
    set +e
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
        local p=${STARTED[i]}
        kill -0 "$p" 2>/dev/null || continue
        kill -TERM "$p" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "bench: work dir kept: $W"
    else
        rm -rf "$W"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# children of a pid (nginx master -> workers)
children() { cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep . || true; }

# utime+stime in clock ticks, summed over pids (whole process: all threads)
cpu_ticks() {
    local sum=0 p f
    for p in "$@"; do
        f=$(cut -d')' -f2- /proc/"$p"/stat 2>/dev/null) || continue
        set -- $f
        sum=$((sum + ${12} + ${13}))
    done
    echo $sum
}

rss_kb() {
    local sum=0 p v
    for p in "$@"; do
        v=$(awk '/^VmRSS:/ {print $2}' /proc/"$p"/status 2>/dev/null || echo 0)
        sum=$((sum + ${v:-0}))
    done
    echo $sum
}

wait_http() { # url [header]: until it answers anything
    for _ in $(seq 100); do
        curl -s -o /dev/null --max-time 1 "$1" && return 0
        sleep 0.1
    done
    die "nothing answers at $1"
}

# ---- upstream nginx ----------------------------------------------------------
CHAT='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}'
CHUNK='{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini"'
SSE="data: $CHUNK,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},\"finish_reason\":null}]}

data: $CHUNK,\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":5,\"total_tokens\":17}}

data: [DONE]

"
BODY='{"object":"list","url":"/v1/things","has_more":false,"data":[{"id":"thing_0001","object":"thing","amount":1000,"currency":"usd","status":"succeeded","created":1700000000},{"id":"thing_0002","object":"thing","amount":2500,"currency":"usd","status":"pending","created":1700000100}],"request":"bench-fixed-body-0123456789abcdef"}'
UP_PORT=$(free_port)
mkdir -p "$W"/up "$W"/px
nginx_common() { # prefix: the per-instance temp paths nginx would otherwise put under /var
    cat <<EOF
daemon off;
master_process on;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 8192; multi_accept on; }
EOF
}
{
    nginx_common "$W/up"
    cat <<EOF
worker_processes 1;
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path $W/up/client_body;
    proxy_temp_path $W/up/proxy;
    fastcgi_temp_path $W/up/fastcgi;
    uwsgi_temp_path $W/up/uwsgi;
    scgi_temp_path $W/up/scgi;
    server {
        listen 127.0.0.1:$UP_PORT backlog=4096;
        location /v1/ {
            if (\$http_authorization != "Bearer sk_bench") { return 401; }
            default_type application/json;
            return 200 '$BODY';
        }
        # an OpenAI chat completion (bench/runs.js): JSON, or SSE when asked
        location = /v1/chat/completions {
            if (\$http_authorization != "Bearer sk_bench") { return 401; }
            if (\$http_accept ~* event-stream) { rewrite ^ /sse last; }
            default_type application/json;
            return 200 '$CHAT';
        }
        location = /sse {
            internal;
            default_type text/event-stream;
            return 200 '$SSE';
        }
        location / { return 404; }
    }
}
EOF
} >"$W/up/nginx.conf"

PX_PORT=$(free_port)
{
    nginx_common "$W/px"
    cat <<EOF
worker_processes $WORKERS;
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path $W/px/client_body;
    proxy_temp_path $W/px/proxy;
    fastcgi_temp_path $W/px/fastcgi;
    uwsgi_temp_path $W/px/uwsgi;
    scgi_temp_path $W/px/scgi;
    upstream bench_upstream {
        server 127.0.0.1:$UP_PORT max_fails=0;
        keepalive 1024;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:$PX_PORT backlog=4096;
        location /bench/ {
            proxy_pass http://bench_upstream/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer sk_bench";
        }
        location /openai/ {
            proxy_pass http://bench_upstream/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer sk_bench";
            proxy_buffering off;
        }
        location / { return 404; }
    }
}
EOF
} >"$W/px/nginx.conf"

"$NGINX" -p "$W/up" -c "$W/up/nginx.conf" -e "$W/up/error.log" &
UP_PID=$!
STARTED+=("$UP_PID")
"$NGINX" -p "$W/px" -c "$W/px/nginx.conf" -e "$W/px/error.log" &
NX_PID=$!
STARTED+=("$NX_PID")
wait_http "http://127.0.0.1:$UP_PORT/"
wait_http "http://127.0.0.1:$PX_PORT/"

# ---- keybrake ----------------------------------------------------------------
ADMIN_TOKEN=kbadmin_bench_$(python3 -c 'import secrets; print(secrets.token_hex(16))')
mkdir -p "$W/kb/data"
chmod 700 "$W/kb/data"
cat >"$W/kb/keybrake.ini" <<EOF
[vendor.bench]
base_url = http://127.0.0.1:$UP_PORT
auth = bearer
secret = sk_bench
cost = GET /v1/* 0.000001
[vendor.openai]
base_url = http://127.0.0.1:$UP_PORT
secret = sk_bench
EOF
KEYBRAKE_DATA_DIR="$W/kb/data" KEYBRAKE_PROXY_LISTEN=127.0.0.1:0 \
    KEYBRAKE_ADMIN_LISTEN=127.0.0.1:0 KEYBRAKE_ADMIN_TOKEN="$ADMIN_TOKEN" \
    KEYBRAKE_WORKERS="$WORKERS" KEYBRAKE_LOG_LEVEL=warn \
    "$KEYBRAKE_BIN" serve --config "$W/kb/keybrake.ini" >"$W/kb/stdout" 2>"$W/kb/stderr" &
KB_PID=$!
STARTED+=("$KB_PID")
ready=""
for _ in $(seq 100); do
    ready=$(grep -m1 '^keybrake: ready ' "$W/kb/stdout" 2>/dev/null || true)
    [ -n "$ready" ] && break
    kill -0 "$KB_PID" 2>/dev/null || { cat "$W/kb/stderr" >&2; die "keybrake exited at start"; }
    sleep 0.1
done
[ -n "$ready" ] || die "keybrake did not print its ready line"
KB_PROXY=$(sed -n 's/.* proxy=\([^ ]*\).*/\1/p' <<<"$ready")
KB_ADMIN=$(sed -n 's/.* admin=\([^ ]*\).*/\1/p' <<<"$ready")
case "$KB_PROXY$KB_ADMIN" in 127.0.0.1:*127.0.0.1:*) ;; *) die "unexpected listeners: $ready" ;; esac

issue_key() { # label -> prints the response body
    curl -s --max-time 5 -X POST "http://$KB_ADMIN/v1/keys" \
        -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
        -d "{\"label\":\"$1\",\"vendor\":\"bench\",\"allowed_endpoints\":[\"GET /v1/*\"],\"daily_usd_cap\": 1000000,\"expires_in\":\"1h\"}"
}
KEY_JSON=$(issue_key bench)
TOKEN=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' <<<"$KEY_JSON" 2>/dev/null) ||
    die "key issuance failed: $KEY_JSON"

# ---- one request through each, checked once ----------------------------------
check() { # name url
    local got
    got=$(curl -s --max-time 5 -w '\n%{http_code}' -H "Authorization: Bearer $TOKEN" "$2")
    local code=${got##*$'\n'} body=${got%$'\n'*}
    [ "$code" = 200 ] || die "$1: GET $2 answered $code, not 200: $body"
    [ "$body" = "$BODY" ] || die "$1: GET $2 did not return the upstream body: $body"
}
check keybrake "http://$KB_PROXY$PATH_REQ"
check nginx "http://127.0.0.1:$PX_PORT$PATH_REQ"
UP_WORKERS=$(children "$UP_PID")
NX_PIDS="$NX_PID $(children "$NX_PID" | tr '\n' ' ')"

NCPU=$(nproc)
cat <<EOF
bench: upstream nginx 127.0.0.1:$UP_PORT (1 worker), baseline nginx 127.0.0.1:$PX_PORT ($WORKERS worker(s)), keybrake proxy=$KB_PROXY admin=$KB_ADMIN ($WORKERS worker(s))
bench: machine has $NCPU cores, shared by wrk ($THREADS threads), the proxy under test and the upstream:
bench: the figures are relative (Keybrake vs nginx on the same box), not absolute capacity.
bench: rounds=$ROUNDS duration=${DURATION}s connections=[$CONNS] light=$LIGHT_CONNS work dir $W
EOF

if [ "${BENCH_HOLD:-0}" = 1 ]; then
    # for profiling by hand: everything stays up until this script is interrupted
    echo "bench: holding; kill -TERM $$ (or Ctrl-C) stops everything"
    echo "KB_PID=$KB_PID KB_PROXY=$KB_PROXY KB_ADMIN=$KB_ADMIN NX_PID=$NX_PID NX_PORT=$PX_PORT UP_PORT=$UP_PORT"
    echo "TOKEN=$TOKEN"
    echo "ADMIN_TOKEN=$ADMIN_TOKEN"
    echo "W=$W"
    while :; do sleep 1; done
fi

RESULTS=$W/results.txt
: >"$RESULTS"

metrics_snapshot() { # file: keybrake's Prometheus text, if the admin API serves it
    curl -s --max-time 5 -H "Authorization: Bearer $ADMIN_TOKEN" "http://$KB_ADMIN/metrics" >"$1" || : >"$1"
}
metrics_snapshot "$W/metrics0.txt"

alive() { kill -0 "$KB_PID" 2>/dev/null || { tail -20 "$W/kb/stderr" >&2; die "keybrake died (see above)"; }; }

# run_wrk kind target conns duration round [delay_ms]
run_wrk() {
    local kind=$1 target=$2 conns=$3 dur=$4 round=$5 delay=${6:-0} url pids tok=$TOKEN
    case $target in
    keybrake) url="http://$KB_PROXY$PATH_REQ" pids=$KB_PID ;;
    pg1 | pg2) # bench/cluster.sh's nodes on PostgreSQL
        url="http://$(node_addr "$target")$PATH_REQ" pids=$(node_pid "$target") tok=$PG_TOKEN ;;
    *) url="http://127.0.0.1:$PX_PORT$PATH_REQ" pids=$NX_PIDS ;;
    esac
    local t=$THREADS
    [ "$conns" -lt "$t" ] && t=$conns
    local c0 u0 c1 u1
    c0=$(cpu_ticks $pids)
    u0=$(cpu_ticks $UP_WORKERS)
    BENCH_DELAY_MS=$delay wrk -t"$t" -c"$conns" -d"${dur}s" --latency --timeout 10s \
        -H "Authorization: Bearer $tok" -s bench/wrk-report.lua "$url" >"$W/wrk.out" 2>&1 ||
        { cat "$W/wrk.out" >&2; die "wrk failed"; }
    c1=$(cpu_ticks $pids)
    u1=$(cpu_ticks $UP_WORKERS)
    local line
    line=$(grep '^BENCH_RESULT' "$W/wrk.out") || { cat "$W/wrk.out" >&2; die "no wrk result"; }
    [ "$target" = keybrake ] && alive
    [ "$target" = pg1 ] || [ "$target" = pg2 ] && node_alive "$target"
    echo "kind=$kind target=$target conns=$conns round=$round delay_ms=$delay" \
        "cpu_us=$(((c1 - c0) * 1000000 / CLK_TCK)) up_cpu_us=$(((u1 - u0) * 1000000 / CLK_TCK))" \
        "rss_kb=$(rss_kb $pids) ${line#BENCH_RESULT }" >>"$RESULTS"
    tail -1 "$RESULTS" | awk '{
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        rps = v["requests"] / (v["duration_us"] / 1e6)
        errs = v["err_connect"] + v["err_read"] + v["err_write"] + v["err_status"] + v["err_timeout"]
        printf "  %-7s %-8s c=%-4s round %s: %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  %5.1f us/req  rss %6.1f MB%s\n",
            v["kind"], v["target"], v["conns"], v["round"], rps, v["p50_us"] / 1000, v["p99_us"] / 1000,
            v["requests"] ? v["cpu_us"] / v["requests"] : 0, v["rss_kb"] / 1024,
            errs ? sprintf("  ERRORS %d", errs) : "" }'
}

median_field() { # kind target conns field -> median over rounds (field may be rps)
    python3 bench/summarise.py "$RESULTS" --median "$@"
}

# ---- 1. throughput, closed loop, alternating A B A B ---------------------------
echo "bench: warm-up ${WARMUP}s each"
for tgt in nginx keybrake; do
    run_wrk warmup $tgt 64 "$WARMUP" 0 >/dev/null
done
for c in $CONNS; do
    echo "bench: $c connections, $ROUNDS x ${DURATION}s, nginx and keybrake alternating"
    for r in $(seq "$ROUNDS"); do
        run_wrk load nginx "$c" "$DURATION" "$r"
        run_wrk load keybrake "$c" "$DURATION" "$r"
    done
done

# ---- 2. latency below saturation --------------------------------------------------
# wrk2's fixed rate is not available: each connection pauses PACE_DELAY_MS
# after every response, with enough connections for half of Keybrake's
# median 64-connection throughput. Same connections and pause for both.
first_c=${CONNS%% *}
kb_rps=$(median_field load keybrake "$first_c" rps)
half=$(awk -v r="$kb_rps" 'BEGIN { printf "%d", r / 2 }')
# connections = rate x (pause + ~1 ms of latency)
pace_c=$(awk -v h="$half" -v d="$PACE_DELAY_MS" 'BEGIN { c = int(h * (d + 1) / 1000 + 0.5); if (c < 2) c = 2; print c }')
echo "bench: half load: ~$half req/s offered ($pace_c connections, ${PACE_DELAY_MS} ms mean pause), $ROUNDS x ${LAT_DURATION}s"
for r in $(seq "$ROUNDS"); do
    run_wrk paced nginx "$pace_c" "$LAT_DURATION" "$r" "$PACE_DELAY_MS"
    run_wrk paced keybrake "$pace_c" "$LAT_DURATION" "$r" "$PACE_DELAY_MS"
done
echo "bench: light closed loop: $LIGHT_CONNS connections, $ROUNDS x ${LAT_DURATION}s"
for r in $(seq "$ROUNDS"); do
    run_wrk light nginx "$LIGHT_CONNS" "$LAT_DURATION" "$r"
    run_wrk light keybrake "$LIGHT_CONNS" "$LAT_DURATION" "$r"
done

# ---- 3. key issuance rate -------------------------------------------------------
db_bytes() { # the store's files on disk (database + WAL)
    local f n=0
    for f in "$W"/kb/data/keybrake.db "$W"/kb/data/keybrake.db-wal; do
        [ -f "$f" ] && n=$((n + $(stat -c %s "$f")))
    done
    echo $n
}

# issue_keys kind n conns: POST /v1/keys until n answers came back
issue_keys() {
    local kind=$1 n=$2 conns=$3
    local r0 c0 c1 db0
    r0=$(rss_kb "$KB_PID")
    db0=$(db_bytes)
    c0=$(cpu_ticks "$KB_PID")
    BENCH_KEYS_PER_THREAD=$n BENCH_ADMIN_TOKEN=$ADMIN_TOKEN \
        wrk -t1 -c"$conns" -d600s --timeout 10s -s bench/wrk-issue.lua "http://$KB_ADMIN/v1/keys" \
        >"$W/wrk.out" 2>&1 || { cat "$W/wrk.out" >&2; die "wrk (issuance) failed"; }
    c1=$(cpu_ticks "$KB_PID")
    alive
    local line
    line=$(grep '^BENCH_RESULT' "$W/wrk.out") || { cat "$W/wrk.out" >&2; die "no wrk result"; }
    echo "kind=$kind target=keybrake conns=$conns round=1 delay_ms=0" \
        "cpu_us=$(((c1 - c0) * 1000000 / CLK_TCK)) up_cpu_us=0 rss_before_kb=$r0" \
        "rss_kb=$(rss_kb "$KB_PID") db_before=$db0 db_bytes=$(db_bytes) ${line#BENCH_RESULT }" >>"$RESULTS"
    tail -1 "$RESULTS" | awk '{
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        printf "  %-7s %7d keys: %7.0f keys/s  p99 %6.2f ms  non-201 %d  rss %.1f -> %.1f MB  store files %.1f -> %.1f MB\n",
            v["kind"], v["requests"], v["quota"] / (v["quota_us"] / 1e6),
            v["p99_us"] / 1000, v["non201"] + v["err_status"], v["rss_before_kb"] / 1024, v["rss_kb"] / 1024,
            v["db_before"] / 1048576, v["db_bytes"] / 1048576 }'
}
echo "bench: key issuance, $NKEYS keys, 16 connections"
issue_keys issue "$NKEYS" 16

# ---- 4. revocation latency ------------------------------------------------------
echo "bench: revocation, $REVOKE_TRIALS trials of 4 clients looping requests while the key is deleted"
python3 bench/revoke.py --proxy "$KB_PROXY" --admin "$KB_ADMIN" --admin-token "$ADMIN_TOKEN" \
    --trials "$REVOKE_TRIALS" --clients 4 >"$W/revoke.out" || true
grep -q '^REVOKE_RESULT' "$W/revoke.out" || { cat "$W/revoke.out" >&2; die "revoke.py failed"; }
sed 's/^REVOKE_RESULT /  /' "$W/revoke.out"
alive

# ---- 5. memory per live key --------------------------------------------------------
echo "bench: memory per live key: issuing $LIVE_KEYS more keys (32 connections)$([ "${BENCH_MILLION:-0}" = 1 ] || echo '; BENCH_MILLION=1 for 1M')"
issue_keys live "$LIVE_KEYS" 32
echo "bench: proxy throughput with $LIVE_KEYS+ keys in the store (64 connections, ${LAT_DURATION}s)"
run_wrk after-keys keybrake 64 "$LAT_DURATION" 1

# ---- 6. the key-per-run workload -------------------------------------------------------
# the peer gateway (bench/peer: routing only), on the same upstream
PEER=${BENCH_PEER:-1}
PK_PORT=""
if [ "$PEER" = 1 ]; then
    PK_PORT=$(free_port)
    (cd bench/peer/node_modules/@portkey-ai/gateway/build &&
        exec node start-server.js --port="$PK_PORT" --headless) >"$W/portkey.log" 2>&1 &
    PK_PID=$!
    STARTED+=("$PK_PID")
    wait_http "http://127.0.0.1:$PK_PORT/"
fi
# What the seeds' middleware does (bench/runs.js): RUNS_CONC runs at once, each
# issuing a key, making 1-5 calls (a quarter of the runs an OpenAI chat, half
# of those streamed), revoking it; the same calls through nginx in alternation.
RUNS_CONC=${BENCH_RUNS:-32}
RUNS_SECONDS=${BENCH_RUNS_SECONDS:-$([ "${BENCH_QUICK:-0}" = 1 ] && echo 3 || echo 6)}
command -v node >/dev/null || die "node is missing (the black-box tests need it too)"
echo "bench: key per run: $RUNS_CONC runs at once, $ROUNDS x ${RUNS_SECONDS}s, nginx, keybrake$([ -n "$PK_PORT" ] && echo " and the peer") alternating, $LIVE_KEYS+ keys in the store"
: >"$W/runs.out"
for r in $(seq "$ROUNDS"); do
    for tgt in nginx keybrake $([ -n "$PK_PORT" ] && echo portkey); do
        case $tgt in
        keybrake) px=$KB_PROXY pids=$KB_PID ;;
        portkey) px=127.0.0.1:$PK_PORT pids=$PK_PID ;;
        *) px=127.0.0.1:$PX_PORT pids=$NX_PIDS ;;
        esac
        c0=$(cpu_ticks $pids)
        node bench/runs.js --target "$tgt" --proxy "$px" --admin "$KB_ADMIN" --admin-token "$ADMIN_TOKEN" \
            --upstream "127.0.0.1:$UP_PORT" --runs "$RUNS_CONC" --seconds "$RUNS_SECONDS" --seed "$r" \
            >"$W/runs1.out" || { cat "$W/runs1.out" >&2; die "runs.js failed"; }
        c1=$(cpu_ticks $pids)
        line=$(grep '^RUNS_RESULT' "$W/runs1.out") || { cat "$W/runs1.out" >&2; die "no runs result"; }
        echo "round=$r cpu_us=$(((c1 - c0) * 1000000 / CLK_TCK)) ${line#RUNS_RESULT }" >>"$W/runs.out"
        python3 - "$r" "$(((c1 - c0) * 1000000 / CLK_TCK))" "${line#RUNS_RESULT }" <<'PY'
import json, sys
r, cpu, d = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
calls = d["calls"] or 1
print("  %-8s round %s: %6.0f runs/s %7.0f calls/s  call p50/p99 us: stripe %s/%s chat %s/%s stream %s/%s  issue %s/%s revoke %s/%s  %.1f us CPU/call  errors %s" % (
    d["target"], r, d["runs_per_s"], d["calls_per_s"], d["stripe"]["p50_us"], d["stripe"]["p99_us"],
    d["chat"]["p50_us"], d["chat"]["p99_us"], d["stream"]["p50_us"], d["stream"]["p99_us"],
    d["issue"]["p50_us"], d["issue"]["p99_us"], d["revoke"]["p50_us"], d["revoke"]["p99_us"], cpu / calls,
    d["errors"] or 0))
PY
        alive
    done
done
metrics_snapshot "$W/metrics-runs.txt"

# ---- 7. optional profile ------------------------------------------------------------
PROFILE_MD=""
if [ "$PROFILE" = 1 ]; then
    command -v perf >/dev/null || die "BENCH_PROFILE=1 needs perf (Debian: linux-perf)"
    PROFILE_MD=$ROOT/bench/last-profile.md
    echo "bench: profile: perf record --call-graph dwarf on keybrake, ${DURATION}s at 64 connections"
    perf record -q -F 499 --call-graph dwarf,16384 -p "$KB_PID" -o "$W/perf.data" \
        -- sleep $((DURATION + 1)) >"$W/perf-record.log" 2>&1 &
    PERF_PID=$!
    STARTED+=("$PERF_PID")
    sleep 0.3
    run_wrk profiled keybrake 64 "$DURATION" 1
    wait "$PERF_PID" || { cat "$W/perf-record.log" >&2; die "perf record failed"; }
    prof_line=$(tail -1 "$RESULTS")
    prof_req=$(sed 's/.* requests=\([0-9]*\).*/\1/' <<<"$prof_line")
    prof_cpu=$(sed 's/.* cpu_us=\([0-9]*\).*/\1/' <<<"$prof_line")

    echo "bench: profile: syscalls per request (perf stat) and fsync stalls, ${LAT_DURATION}s each"
    EV=""
    for sc in fcntl pwrite64 pread64 epoll_ctl epoll_wait poll sendto recvfrom writev readv \
        ioctl read write fdatasync fsync futex accept4 close; do
        EV="${EV}syscalls:sys_enter_$sc,"
    done
    EV="${EV}raw_syscalls:sys_enter"
    stat_args=()
    for tgt in nginx keybrake; do
        if [ "$tgt" = keybrake ]; then plist=$KB_PID; else plist=$(tr ' ' ',' <<<"${NX_PIDS% }"); fi
        perf stat -x, -e "$EV" -p "$plist" -o "$W/stat-$tgt.csv" -- sleep $((LAT_DURATION + 1)) \
            >/dev/null 2>&1 &
        SP=$!
        STARTED+=("$SP")
        FP=""
        if [ "$tgt" = keybrake ]; then
            perf record -q -e syscalls:sys_enter_fdatasync -e syscalls:sys_exit_fdatasync \
                -e syscalls:sys_enter_fsync -e syscalls:sys_exit_fsync -p "$KB_PID" \
                -o "$W/fsync.data" -- sleep $((LAT_DURATION + 1)) >/dev/null 2>&1 &
            FP=$!
            STARTED+=("$FP")
        fi
        sleep 0.3
        [ "$tgt" = keybrake ] && metrics_snapshot "$W/metrics-p0.txt"
        run_wrk syscalls "$tgt" 64 "$LAT_DURATION" 1
        [ "$tgt" = keybrake ] && metrics_snapshot "$W/metrics-p1.txt"
        wait "$SP" || true
        [ -n "$FP" ] && { wait "$FP" || true; }
        stat_args+=(--syscalls "$tgt=$W/stat-$tgt.csv:$(sed 's/.* requests=\([0-9]*\).*/\1/' <<<"$(tail -1 "$RESULTS")")")
    done
    perf script -i "$W/fsync.data" -F tid,time,event 2>/dev/null >"$W/fsync.txt" || true
    stat_args+=(--metrics "$W/metrics-p0.txt" "$W/metrics-p1.txt")
    perf script -i "$W/perf.data" 2>/dev/null |
        python3 bench/profile.py --requests "$prof_req" --cpu-us "$prof_cpu" \
            --us-per-req "$(median_field load keybrake "$first_c" cpu_per_req)" \
            "${stat_args[@]}" --fsync "$W/fsync.txt" --fsync-seconds "$LAT_DURATION" >"$PROFILE_MD"
    echo "bench: profile written to ${PROFILE_MD#$ROOT/}"
fi

# ---- 8. two nodes on PostgreSQL ---------------------------------------------------------
if [ "${BENCH_CLUSTER:-1}" = 1 ]; then
    . bench/cluster.sh
    bench_cluster
fi

# ---- summary ---------------------------------------------------------------------------
alive
metrics_snapshot "$W/metrics1.txt"
warns=$(grep -c 'level=warn\|level=error\|"level":"warn"\|"level":"error"' "$W/kb/stderr" || true)
grep 'level=warn\|level=error\|"level":"warn"\|"level":"error"' "$W/kb/stderr" | head -5 >"$W/kb/warn-sample" || true
nginx_errs=$(cat "$W/px/error.log" "$W/up/error.log" 2>/dev/null | grep -c '\[error\]\|\[crit\]\|\[alert\]\|\[emerg\]' || true)
T_END=$(date +%s)
python3 bench/summarise.py "$RESULTS" --revoke "$W/revoke.out" --runs "$W/runs.out" --out "$OUT_MD" \
    --workers "$WORKERS" --threads "$THREADS" --ncpu "$NCPU" --rounds "$ROUNDS" \
    --duration "$DURATION" --lat-duration "$LAT_DURATION" --pace-delay "$PACE_DELAY_MS" \
    --kb-warnings "$warns" --kb-warn-sample "$W/kb/warn-sample" --nginx-errors "$nginx_errs" \
    --elapsed $((T_END - T_START)) --binary "$KEYBRAKE_BIN" --profile "$PROFILE_MD" \
    --metrics "$W/metrics0.txt" "$W/metrics1.txt" --cmd "${BENCH_CMD:-make bench}"
