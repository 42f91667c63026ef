-- wrk script: prints one machine-readable line with the percentiles wrk's own summary lacks
-- (p99.9) and the error counts. wrk counts a response with status >= 400 as errors.status; the
-- benchmark's requests never meet a 1xx or 3xx, so that count is the non-2xx count.
-- No request()/response() callbacks: they would run Lua per request and slow the load generator.

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d bytes=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d mean_us=%.1f "
         .. "non2xx=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d\n",
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
      latency.max, latency.mean,
      e.status, e.connect, e.read, e.write, e.timeout))
end
