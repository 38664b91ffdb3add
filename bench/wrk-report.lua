-- wrk-report.lua: make wrk's summary machine-readable for bench/compare.
--
-- done() prints exactly one line to stdout:
--   RRBENCH {"requests":N,"duration_us":N,"bytes":N,
--            "errors":{"connect":N,"read":N,"write":N,"status":N,"timeout":N},
--            "latency_us":{"min":N,"mean":F,"stdev":F,"max":N,
--                          "p50":N,"p90":N,"p99":N,"p99.9":N}}
-- "requests" counts every completed response (non-2xx/3xx ones too; those are
-- also counted in errors.status). Latencies are wrk's, in microseconds.

done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'RRBENCH {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,' ..
      '"p50":%d,"p90":%d,"p99":%d,"p99.9":%d}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9)))
end
