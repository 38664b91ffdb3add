#!/usr/bin/env python3
"""Metrics and queue-length reports on the admin port (issue 3, "Metrics" and
"Queue-length reports").

GET /metrics on --admin 127.0.0.1:0 is Prometheus text:
* ringroute_requests_total{endpoint, code} equals what was sent, by code
  (a replica's 404 passed through counts under its endpoint with code 404;
  requests that matched no route count under endpoint="");
* latency histograms (request duration, queue wait, time to first byte) per
  endpoint: buckets cumulative, `le` increasing up to 300 s, the last
  le="+Inf" equal to _count; request duration's _count equals the
  endpoint's requests;
* per backend ringroute_backend_queued_requests (1 while one request waits,
  0 after);
* per replica ongoing requests, requests (equal to what each mock-replica
  served) and errors (a replica with nothing listening counts its failures,
  as kind="connect_failed" in ringroute_upstream_errors_total).
The exposition format itself (promtool, the Python client) is
test_prometheus.py's.
GET /v1/queues is {"backends": {name: {queued, ongoing, replicas}}, ...} and
with ?watch=1 an NDJSON stream of such snapshots every report interval.

If ringroute has no control plane yet (--admin rejected at start), the file
exits 77 (skipped) with the reason.
"""

import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, build_request, endpoint, free_port  # noqa: E402
from harness import parse_metrics, wait_for  # noqa: E402

REPORT_MS = 100


def select(ms, name, **labels):
    return [(l, v) for n, l, v in ms
            if n == name and all(l.get(k) == want for k, want in labels.items())]


def value(ms, name, **labels):
    rows = select(ms, name, **labels)
    if len(rows) != 1:
        raise AssertionError("%s%r: %d series: %r" % (name, labels, len(rows), rows))
    return rows[0][1]


class MetricsTest(harness.RRTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.m1 = cls.mock_cls("m1")
        cls.m2 = cls.mock_cls("m2")
        cls.gated = harness.GatedUpstream()
        cls.cfg = {
            "backends": {
                "b": backend([cls.m1, cls.m2]),
                "dead": backend({"x": "127.0.0.1:%d" % free_port()}, retries=0),
                "gated": backend({"g": cls.gated.addr}, max_ongoing_requests=1),
            },
            "endpoints": {
                "api": endpoint("/api", {"b": 1.0}),
                "other": endpoint("/other", {"b": 1.0}),
                "dead": endpoint("/dead", {"dead": 1.0}),
                "gated": endpoint("/gated", {"gated": 1.0}),
            },
        }
        cls.rr = cls.ringroute_cls(cls.cfg, shards=2, admin=True,
                                   extra=["--report-interval-ms", str(REPORT_MS)])

    @classmethod
    def tearDownClass(cls):
        cls.gated.open_all()
        try:
            super().tearDownClass()
        finally:
            cls.gated.close()

    def admin(self, path):
        r = harness.http_once(self.rr.admin_port, "GET", path)
        self.assertEqual(r.status, 200, r)
        return r

    def metrics(self):
        r = self.admin("/metrics")
        self.assertIn("text/plain", (r.header("content-type") or "").lower(), r)
        return parse_metrics(r.body.decode())

    def test_1_counts_and_histograms(self):
        c = self.client(self.rr.port)
        n_ok, n_404, n_noroute, n_other = 37, 5, 7, 11
        for i in range(n_ok):
            r = c.request("GET", "/api/%d" % i)
            self.assertEqual(r.status, 200, r)
        for i in range(n_404):
            r = c.request("GET", "/api/missing/%d" % i, [("X-Mock-Status", "404")])
            self.assertEqual(r.status, 404, r)
            self.assertIn(r.header("x-mock-id"), ("m1", "m2"), r)
        for i in range(n_noroute):
            r = c.request("GET", "/nowhere/%d" % i)
            self.assertErrorJSON(r, 404)
        for i in range(n_other):
            r = c.request("POST", "/other/%d" % i, body=b"x" * i)
            self.assertEqual(r.status, 200, r)

        want = {("api", "200"): n_ok, ("api", "404"): n_404, ("other", "200"): n_other}

        def counted():
            ms = self.metrics()
            got = {(l["endpoint"], l["code"]): v
                   for l, v in select(ms, "ringroute_requests_total") if v}
            got = {k: v for k, v in got.items() if k[0] in ("api", "other")}
            return ms if got == want else None
        try:
            ms = wait_for(counted, 3.0, "request counters")
        except AssertionError:
            ms = self.metrics()
            self.fail("ringroute_requests_total: %r, want %r" % (
                select(ms, "ringroute_requests_total"), want))
        # requests with no route count under endpoint=""
        eps = {l.get("endpoint") for l, v in select(ms, "ringroute_requests_total")}
        self.assertLessEqual(eps, set(self.cfg["endpoints"]) | {""}, eps)
        self.assertEqual(value(ms, "ringroute_requests_total", endpoint="", code="404"),
                         n_noroute)
        for l, v in select(ms, "ringroute_requests_total"):
            self.assertEqual(set(l), {"endpoint", "code"}, l)
            self.assertRegex(l["code"], r"^\d{3}$")

        # histograms
        for h in ("ringroute_request_duration_seconds", "ringroute_queue_wait_seconds",
                  "ringroute_time_to_first_byte_seconds"):
            for ep in ("api", "other"):
                buckets = select(ms, h + "_bucket", endpoint=ep)
                self.assertTrue(buckets, "%s{endpoint=%s} has no buckets" % (h, ep))
                les = [l["le"] for l, v in buckets]
                self.assertEqual(les[-1], "+Inf", les)
                bounds = [float(x) for x in les[:-1]]
                self.assertEqual(bounds, sorted(set(bounds)), "%s le not increasing: %r" % (h, les))
                self.assertEqual(bounds[-1], 300.0, "%s: LLM generations run for minutes" % h)
                vals = [v for l, v in buckets]
                self.assertEqual(vals, sorted(vals), "%s{%s} buckets not cumulative: %r"
                                 % (h, ep, list(zip(les, vals))))
                count = value(ms, h + "_count", endpoint=ep)
                self.assertEqual(vals[-1], count, "%s{%s} +Inf != _count" % (h, ep))
                s = value(ms, h + "_sum", endpoint=ep)
                self.assertGreaterEqual(s, 0)
            for ep, n in (("api", n_ok + n_404), ("other", n_other)):
                if h != "ringroute_queue_wait_seconds":
                    self.assertEqual(value(ms, h + "_count", endpoint=ep), n, (h, ep))
        # all requests to the replicas were fast: duration buckets at 1 s hold them all
        self.assertEqual(value(ms, "ringroute_request_duration_seconds_bucket",
                               endpoint="api", le="1"), n_ok + n_404)

        # per replica: requests equal what each mock served, nothing ongoing
        served = {m.id: m.stats()["served"] for m in (self.m1, self.m2)}
        self.assertEqual(sum(served.values()), n_ok + n_404 + n_other)
        for rid, n in served.items():
            self.assertEqual(value(ms, "ringroute_replica_requests_total", backend="b",
                                   replica=rid), n, rid)
            self.assertEqual(value(ms, "ringroute_replica_ongoing_requests", backend="b",
                                   replica=rid), 0)
            self.assertEqual(value(ms, "ringroute_replica_errors_total", backend="b",
                                   replica=rid), 0)

    def test_2_replica_errors(self):
        c = self.client(self.rr.port)
        for i in range(3):
            r = c.request("GET", "/dead/%d" % i)
            self.assertErrorJSON(r, 502, "dead")
        ms = wait_for(lambda: (lambda ms: ms if select(ms, "ringroute_requests_total",
                                                       endpoint="dead", code="502")
                               and value(ms, "ringroute_requests_total", endpoint="dead",
                                         code="502") == 3 else None)(self.metrics()),
                      3.0, "502 counter")
        self.assertGreaterEqual(value(ms, "ringroute_replica_errors_total", backend="dead",
                                      replica="x"), 3)
        self.assertGreaterEqual(value(ms, "ringroute_upstream_errors_total", backend="dead",
                                      replica="x", kind="connect_failed"), 3)

    def test_3_backend_queued(self):
        ms = self.metrics()
        for b in self.cfg["backends"]:
            self.assertEqual(value(ms, "ringroute_backend_queued_requests", backend=b), 0, b)
        hold = self.client(self.rr.port, timeout=15)
        hold.send(build_request("GET", "/gated/hold", [("X-Gate", "hold")]))
        wait_for(lambda: value(self.metrics(), "ringroute_replica_ongoing_requests",
                               backend="gated", replica="g") == 1, 5.0, "gated replica busy")
        waiter = self.client(self.rr.port, timeout=15)
        waiter.send(build_request("GET", "/gated/wait"))
        wait_for(lambda: value(self.metrics(), "ringroute_backend_queued_requests",
                               backend="gated") == 1,
                 5.0, "ringroute_backend_queued_requests == 1")
        q = self.admin("/v1/queues").json()
        self.assertEqual(q["backends"]["gated"]["queued"], 1, q)
        self.assertEqual(q["backends"]["gated"]["ongoing"], 1, q)
        self.gated.release("hold")
        self.assertEqual(hold.read_response().status, 200)
        self.assertEqual(waiter.read_response().status, 200)
        wait_for(lambda: value(self.metrics(), "ringroute_backend_queued_requests",
                               backend="gated") == 0,
                 3.0, "queue drained")
        ms = self.metrics()
        self.assertGreaterEqual(value(ms, "ringroute_queue_wait_seconds_count", endpoint="gated"),
                                1, "the queued request's wait is observed")

    def test_4_queues_view_and_watch(self):
        q = self.admin("/v1/queues").json()
        self.assertEqual(set(q["backends"]), set(self.cfg["backends"]), q)
        for name, b in q["backends"].items():
            self.assertTrue({"queued", "ongoing", "replicas"} <= set(b), (name, b))
        c = self.client(self.rr.admin_port, timeout=5)
        c.send(build_request("GET", "/v1/queues?watch=1"))
        r = c._read_until(b"\r\n\r\n", time.monotonic() + 5)
        self.assertRegex(r, rb"^HTTP/1\.1 200 ")
        # the rest is an NDJSON stream (chunked or close-delimited): read lines
        t0 = time.monotonic()
        data = b""
        lines = []
        chunked = b"transfer-encoding: chunked" in r.lower()
        while len(lines) < 4 and time.monotonic() - t0 < 5:
            c._fill(t0 + 5)
            data += c._take(len(c.buf))
            text = data
            if chunked:
                text = re.sub(rb"(?:^|\r\n)[0-9a-fA-F]+\r\n", b"", data)
            lines = [l for l in text.split(b"\n") if l.strip().startswith(b"{")]
        self.assertGreaterEqual(len(lines), 4, data)
        took = time.monotonic() - t0
        for l in lines[:3]:
            j = json.loads(l)
            self.assertIn("gated", j["backends"], j)
        # one snapshot at once and one per report interval: the fourth line
        # comes after at least two more intervals, and not much later than three
        self.assertGreaterEqual(took, 2 * REPORT_MS / 1000, "snapshots faster than the interval")
        self.assertLess(took, 3 * REPORT_MS / 1000 + 1.5, took)


def probe_admin():
    """Exit 77 if this ringroute has no control plane (--admin rejected)."""
    cfg = {"backends": {"b": backend({"r": "127.0.0.1:%d" % free_port()})},
           "endpoints": {"e": endpoint("/", {"b": 1.0})}}
    try:
        r = harness.Ringroute(cfg, admin=True)
    except harness.StartError as e:
        if re.search(r"control|admin", str(e), re.I):
            print("e2e: SKIP: --admin not available: %s" % str(e).strip()[-300:], file=sys.stderr)
            sys.exit(harness.SKIP_EXIT)
        raise
    r.stop()


if __name__ == "__main__":
    harness.probe()
    probe_admin()
    harness.main()
