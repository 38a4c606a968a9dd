-- Shared done() hook: one JSON line (prefixed WRKJSON) that benchmarks/_common.py parses.
-- Latencies are wrk's per-request histogram, in microseconds. `non2xx` is wrk's
-- errors.status (responses with status > 399); socket errors are connect/read/write/timeout.
function report(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "WRKJSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d," ..
      "\"non2xx\":%d,\"socket_errors\":%d,\"connect\":%d,\"read\":%d,\"write\":%d,\"timeout\":%d," ..
      "\"mean_us\":%.1f,\"max_us\":%d,\"p50_us\":%d,\"p90_us\":%d,\"p95_us\":%d,\"p99_us\":%d}\n",
      summary.requests, summary.duration, summary.bytes,
      e.status, e.connect + e.read + e.write + e.timeout, e.connect, e.read, e.write, e.timeout,
      latency.mean, latency.max,
      latency:percentile(50.0), latency:percentile(90.0), latency:percentile(95.0),
      latency:percentile(99.0)))
end
