-- wrk-issue.lua - issues vault keys through the admin API as fast as wrk's
-- connections allow: POST /v1/keys with a fixed body until each wrk thread
-- has seen BENCH_KEYS_PER_THREAD responses, then prints the BENCH_RESULT
-- line of wrk-report.lua plus the count of answers other than 201.
--
--   BENCH_KEYS_PER_THREAD  responses each wrk thread waits for
--   BENCH_ADMIN_TOKEN      admin bearer token
--
-- Run it with -t1: the first thread to reach its quota ends the whole run.
-- A few more keys than asked may be issued: requests already in flight on
-- the other connections when the thread stops still complete.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } kb_timespec;
  int clock_gettime(int clk, kb_timespec *ts);
]]
local ts = ffi.new("kb_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

local quota = tonumber(os.getenv("BENCH_KEYS_PER_THREAD") or "1000")
local token = os.getenv("BENCH_ADMIN_TOKEN") or ""
local threads = {}

wrk.method = "POST"
wrk.path = "/v1/keys"
wrk.headers["Authorization"] = "Bearer " .. token
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"label":"bench/issue","vendor":"bench","allowed_endpoints":["GET /v1/*"],' ..
           '"daily_usd_cap":1000000,"expires_in":"1h"}'

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  seen = 0
  bad = 0
  t0 = now_us()
  elapsed_us = 0
end

function response(status, headers, body)
  seen = seen + 1
  if status ~= 201 then
    bad = bad + 1
  end
  if seen == quota then
    elapsed_us = now_us() - t0
    -- thread:stop() alone does not end the run: wrk's main thread sleeps
    -- for -d regardless. SIGINT to wrk (the shell's parent) wakes it; wrk
    -- then joins its threads and reports as usual. Sent from the
    -- background: system() ignores SIGINT in wrk until the shell returns.
    wrk.thread:stop()
    os.execute("(sleep 0.05; kill -INT $PPID) </dev/null >/dev/null 2>&1 &")
  end
end

function done(summary, latency, requests)
  -- the rate counts the quota over the time to reach it, not wrk's
  -- duration (which includes stopping)
  local nbad, elapsed = 0, 0
  for _, t in ipairs(threads) do
    nbad = nbad + (t:get("bad") or 0)
    elapsed = math.max(elapsed, t:get("elapsed_us") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d bytes=%d p50_us=%d p90_us=%d p99_us=%d " ..
    "max_us=%d mean_us=%.1f err_connect=%d err_read=%d err_write=%d err_status=%d " ..
    "err_timeout=%d non201=%d quota=%d quota_us=%d\n",
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout, nbad, quota * #threads, elapsed))
end
