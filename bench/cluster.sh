# bench/cluster.sh - sourced by bench/run.sh: section 8, Keybrake nodes on
# one PostgreSQL beside the SQLite node and nginx, in the same run.
#
# Starts a throwaway PostgreSQL (tests/pg/pg-test.sh, fsync on: commits are
# durable as the SQLite node's are) and two Keybrake nodes on it with the
# SQLite node's settings, issues one key, then in alternating rounds:
#   load  keybrake (the SQLite node), pg1 (one node on PostgreSQL), and
#         pg1+pg2 at once (half the connections each, summed)
#   paced pg1 at half its own median throughput (added latency)
# Targets (docs/cluster.md): a node on PostgreSQL >= 0.5x the SQLite node's
# requests/s, added p99 <= 5 ms at half load.
# Uses run.sh's helpers and variables (W, STARTED, run_wrk, free_port, ...).

PG_NODES=()  # "proxy admin pid" per node
PG_TOKEN=""

node_field() { # target field-index
    local i=${1#pg}
    cut -d' ' -f"$2" <<<"${PG_NODES[$((i - 1))]}"
}
node_addr() { node_field "$1" 1; }
node_admin() { node_field "$1" 2; }
node_pid() { node_field "$1" 3; }
node_alive() {
    local p
    p=$(node_pid "$1")
    kill -0 "$p" 2>/dev/null || { tail -20 "$W/$1/stderr" >&2; die "$1 died (see above)"; }
}

start_pg_node() { # name
    local n=$1 ready="" pid
    mkdir -p "$W/$n/data"
    chmod 700 "$W/$n/data"
    KEYBRAKE_DATA_DIR="$W/$n/data" KEYBRAKE_PROXY_LISTEN=127.0.0.1:0 \
        KEYBRAKE_ADMIN_LISTEN=127.0.0.1:0 KEYBRAKE_ADMIN_TOKEN="$ADMIN_TOKEN" \
        KEYBRAKE_WORKERS="$WORKERS" KEYBRAKE_LOG_LEVEL=warn KEYBRAKE_STORE_URL="$PG_URL" \
        KEYBRAKE_SERVER_KEY="$PG_SERVER_KEY" KEYBRAKE_NODE_ID="bench-$n" \
        "$KEYBRAKE_BIN" serve --config "$W/kb/keybrake.ini" >"$W/$n/stdout" 2>"$W/$n/stderr" &
    pid=$!
    STARTED+=("$pid")
    for _ in $(seq 200); do
        ready=$(grep -m1 '^keybrake: ready ' "$W/$n/stdout" 2>/dev/null || true)
        [ -n "$ready" ] && break
        kill -0 "$pid" 2>/dev/null || { cat "$W/$n/stderr" >&2; die "$n exited at start"; }
        sleep 0.1
    done
    [ -n "$ready" ] || die "$n did not print its ready line"
    PG_NODES+=("$(sed -n 's/.* proxy=\([^ ]*\).*/\1/p' <<<"$ready") $(sed -n 's/.* admin=\([^ ]*\).*/\1/p' <<<"$ready") $pid")
}

# Both nodes at once, conns/2 each; one results line, target pg12:
# requests summed, the slower run's duration, the worse percentiles.
run_wrk_pair() { # kind conns dur round
    local kind=$1 conns=$2 dur=$3 round=$4 half=$(($2 / 2)) c0 c1 t=$THREADS
    [ "$half" -lt "$t" ] && t=$half
    local p1 p2
    p1=$(node_pid pg1)
    p2=$(node_pid pg2)
    c0=$(cpu_ticks "$p1" "$p2")
    BENCH_DELAY_MS=0 wrk -t"$t" -c"$half" -d"${dur}s" --latency --timeout 10s \
        -H "Authorization: Bearer $PG_TOKEN" -s bench/wrk-report.lua \
        "http://$(node_addr pg1)$PATH_REQ" >"$W/wrk1.out" 2>&1 &
    local w1=$!
    BENCH_DELAY_MS=0 wrk -t"$t" -c"$half" -d"${dur}s" --latency --timeout 10s \
        -H "Authorization: Bearer $PG_TOKEN" -s bench/wrk-report.lua \
        "http://$(node_addr pg2)$PATH_REQ" >"$W/wrk2.out" 2>&1 &
    local w2=$!
    wait "$w1" || { cat "$W/wrk1.out" >&2; die "wrk (pg1) failed"; }
    wait "$w2" || { cat "$W/wrk2.out" >&2; die "wrk (pg2) failed"; }
    c1=$(cpu_ticks "$p1" "$p2")
    node_alive pg1
    node_alive pg2
    python3 - "$W/wrk1.out" "$W/wrk2.out" >"$W/pair.out" <<'PY'
import sys
rows = []
for f in sys.argv[1:]:
    line = next(l for l in open(f) if l.startswith("BENCH_RESULT"))
    rows.append({k: float(v) for k, v in (t.split("=") for t in line.split()[1:])})
out = {}
for k in rows[0]:
    if k in ("duration_us",) or k.startswith("p") or k.startswith("max"):
        out[k] = max(r[k] for r in rows)
    else:
        out[k] = sum(r[k] for r in rows)
print(" ".join("%s=%d" % (k, int(v)) for k, v in out.items()))
PY
    echo "kind=$kind target=pg12 conns=$conns round=$round delay_ms=0" \
        "cpu_us=$(((c1 - c0) * 1000000 / CLK_TCK)) up_cpu_us=0 rss_kb=$(rss_kb "$p1" "$p2")" \
        "$(cat "$W/pair.out")" >>"$RESULTS"
    tail -1 "$RESULTS" | awk '{
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        printf "  %-7s %-8s c=%-4s round %s: %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  %5.1f us/req (both nodes)\n",
            v["kind"], v["target"], v["conns"], v["round"], v["requests"] / (v["duration_us"] / 1e6),
            v["p50_us"] / 1000, v["p99_us"] / 1000, v["requests"] ? v["cpu_us"] / v["requests"] : 0 }'
}

bench_cluster() {
    command -v psql >/dev/null || die "psql is missing (scripts/deps.sh bench installs postgresql)"
    PG_SERVER_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    # memory and WAL sized as docs/cluster.md recommends: with the 1 GB
    # default max_wal_size a WAL-triggered checkpoint lands inside the
    # rounds (measured: p99 12 -> 21 ms, 66 ms max, in a 60 s run)
    PG_URL=$(KEYBRAKE_PG_FSYNC=${BENCH_PG_FSYNC:-on} \
        KEYBRAKE_PG_OPTS=${BENCH_PG_OPTS:-"-c shared_buffers=256MB -c max_wal_size=8GB -c checkpoint_timeout=15min"} \
        tests/pg/pg-test.sh start "$W/pg") || die "PostgreSQL did not start"
    STARTED+=("$(head -1 "$W/pg/data/postmaster.pid")")
    start_pg_node pg1
    start_pg_node pg2
    local body
    body=$(curl -s --max-time 5 -X POST "http://$(node_admin pg1)/v1/keys" \
        -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
        -d '{"label":"bench-pg","vendor":"bench","allowed_endpoints":["GET /v1/*"],"daily_usd_cap":1000000,"expires_in":"1h"}')
    PG_TOKEN=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' <<<"$body" 2>/dev/null) ||
        die "key issuance on pg1 failed: $body"
    local c=${CONNS%% *}
    echo "bench: PostgreSQL: $c connections, $ROUNDS x ${LAT_DURATION}s: the SQLite node, one node on PostgreSQL, two nodes at once, alternating"
    run_wrk warmup pg1 "$c" "$WARMUP" 0 >/dev/null
    for r in $(seq "$ROUNDS"); do
        run_wrk cluster keybrake "$c" "$LAT_DURATION" "$r"
        run_wrk cluster pg1 "$c" "$LAT_DURATION" "$r"
        run_wrk_pair cluster "$c" "$LAT_DURATION" "$r"
    done
    local pg_rps half pace
    pg_rps=$(median_field cluster pg1 "$c" rps)
    half=$(awk -v r="$pg_rps" 'BEGIN { printf "%d", r / 2 }')
    pace=$(awk -v h="$half" -v d="$PACE_DELAY_MS" 'BEGIN { c = int(h * (d + 1) / 1000 + 0.5); if (c < 2) c = 2; print c }')
    echo "bench: PostgreSQL half load: ~$half req/s offered to pg1 ($pace connections), nginx alternating, $ROUNDS x ${LAT_DURATION}s"
    for r in $(seq "$ROUNDS"); do
        run_wrk cluster-paced nginx "$pace" "$LAT_DURATION" "$r" "$PACE_DELAY_MS"
        run_wrk cluster-paced pg1 "$pace" "$LAT_DURATION" "$r" "$PACE_DELAY_MS"
    done
}
