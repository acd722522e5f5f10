#!/usr/bin/env bash
# bench/writer-stalls.sh - where the store writer thread waits, under paced load.
#
#   BENCH_HOLD=1 bench/run.sh >/tmp/hold.out 2>&1 &   # wait for its "holding" line
#   bench/writer-stalls.sh /tmp/hold.out [seconds]     # default 30
#   kill -TERM <the pid run.sh printed>
#
# Drives keybrake with wrk, each of 120 connections pausing 1-19 ms between
# requests, and meanwhile records the writer thread's system calls over 5 ms
# (perf trace) and samples its kernel stack whenever it is in D state
# (uninterruptible: waiting on the disk). Prints the wrk figures, the slow
# calls and the commonest D-state frames. The figures in docs/benchmarks.md,
# "Session 5", come from this. Needs perf; everything stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
hold=${1:?usage: bench/writer-stalls.sh HOLD_OUTPUT [SECONDS]}
secs=${2:-30}
kv() { grep -o "\b$1=[^ ]*" "$hold" | head -1 | cut -d= -f2; }
pid=$(kv KB_PID) proxy=$(kv KB_PROXY) token=$(kv TOKEN)
[ -n "$pid" ] && [ -n "$proxy" ] && [ -n "$token" ] || { echo "no KB_PID/KB_PROXY/TOKEN in $hold" >&2; exit 2; }
# threads in creation order: main, checkpointer, writer, ...
tid=$(ls "/proc/$pid/task" | sort -n | sed -n 3p)
out=$(mktemp -d /tmp/keybrake-stalls.XXXXXX)
trap 'rm -rf "$out"' EXIT

perf trace -t "$tid" -e fsync,fdatasync,pwrite64,pread64,ftruncate --duration 5 \
    -o "$out/trace" 2>/dev/null &
perf_pid=$!
samples=$((secs * 100))
(for _ in $(seq 1 "$samples"); do
    st=$(cut -d' ' -f3 "/proc/$pid/task/$tid/stat" 2>/dev/null) || break
    if [ "$st" = D ]; then echo "=="; cat "/proc/$pid/task/$tid/stack" 2>/dev/null; fi
    sleep 0.01
done >"$out/dstate") &
sampler=$!
sleep 1
BENCH_DELAY_MS=10 wrk -t2 -c120 -d"${secs}s" --latency --timeout 10s \
    -H "Authorization: Bearer $token" -s bench/wrk-report.lua "http://$proxy/bench/v1/things" |
    grep '^BENCH_RESULT' | tr ' ' '\n' | grep -E '^(requests|p50_us|p99_us|max_us)=' | tr '\n' ' '
echo
kill -INT "$perf_pid" 2>/dev/null || :
wait "$perf_pid" 2>/dev/null || :
wait "$sampler" 2>/dev/null || :
slow=$(grep -c . "$out/trace" || :)
total=$({ grep -o '( *[0-9.]* ms)' "$out/trace" || :; } | tr -d '(ms ' | awk '{s += $1} END {printf "%.1f", s}')
echo "writer thread $tid: calls over 5 ms: $slow, $total ms in all; D-state samples: $(grep -c '^==' "$out/dstate" || :)"
sort -t'(' -k2 -rn "$out/trace" | head -10
{ grep -v '^==' "$out/dstate" || :; } | { grep -v 'entry_SYSCALL\|do_syscall' || :; } | sort | uniq -c | sort -rn | head -8
