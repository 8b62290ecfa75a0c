-- wrk script: prints one machine-readable summary line after the run,
-- with the p99.9 latency that `wrk --latency` does not show.
-- Latencies are in microseconds.
done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "WRKSTATS requests=%d duration_us=%d socket_errors=%d non2xx=%d p50=%d p99=%d p999=%d\n",
      summary.requests, summary.duration,
      e.connect + e.read + e.write + e.timeout, e.status,
      latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
