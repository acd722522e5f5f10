-- wrk-report.lua - prints one machine-readable line at the end of a wrk run
-- (read by bench/run.sh), and optionally paces each connection.
--
--   BENCH_DELAY_MS=N   each connection waits on average N ms after a response
--                      before it sends the next request: with C connections
--                      the offered rate is about C*1000/(N + latency)
--                      requests/s. This is how run.sh approximates a
--                      fixed-rate ("half load") run without wrk2; it is not
--                      free of coordinated omission.
--
-- No response() function on purpose: with one defined, wrk parses every
-- response's headers and body and the load generator eats more of the CPU
-- it shares with the proxy under test.

local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0") or 0
if delay_ms > 0 then
  -- uniform in [1, 2*delay-1] ms, mean delay_ms: a fixed pause would
  -- line every connection up on the same millisecond timer tick and turn
  -- the load into bursts
  function init(args)
    math.randomseed(tonumber(tostring({}):match("0x(%x+)") or "1", 16) % 2147483647)
  end
  function delay()
    return math.random(1, math.max(1, 2 * delay_ms - 1))
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d bytes=%d p50_us=%d p90_us=%d p99_us=%d " ..
    "max_us=%d mean_us=%.1f err_connect=%d err_read=%d err_write=%d err_status=%d " ..
    "err_timeout=%d\n",
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
