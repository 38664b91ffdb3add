#!/usr/bin/env python3
"""Active health checks: a replica whose health path answers non-2xx gets no
requests; once it answers 2xx again it is used again."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint, wait_stderr  # noqa: E402


class HealthTest(harness.RRTestCase):
    def test_unhealthy_replica_gets_no_requests(self):
        # "bad" is an in-process replica that keeps every request it gets:
        # the health probes (GET /health) and client requests are told apart
        # by path, so the count holds however long the requests take (the
        # mock's "served" counter would count the probes too).
        good = self.mock("good")
        bad = self.upstream(harness.RawUpstream(
            lambda req: b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"))
        cfg = {"backends": {"b": backend({"good": good.addr, "bad": bad.addr},
                                         health_check={"path": "/health", "interval_ms": 100})},
               "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        rr = self.ringroute(cfg, shards=2)
        self.assertTrue(wait_stderr(rr, "replica b/bad is unhealthy"), rr.stderr_tail())
        pace = float(os.environ.get("RR_TEST_PACE_MS", "0")) / 1000.0
        c = self.client(rr.port)
        for i in range(60):
            if pace:
                time.sleep(pace)
            r = c.request("GET", "/x%d" % i)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["id"], "good", r)
        client_reqs = [q["target"] for q in bad.requests if q["target"] != "/health"]
        self.assertEqual(client_reqs, [])
        # The probes did reach it: the path filter is what makes this hold.
        self.assertTrue(any(q["target"] == "/health" for q in bad.requests), bad.requests)

    def test_all_unhealthy_queues_then_503(self):
        bad = self.mock("bad", status=500)
        cfg = {"backends": {"b": backend({"bad": bad.addr}, queue_timeout_ms=200,
                                         health_check={"path": "/health", "interval_ms": 100})},
               "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        rr = self.ringroute(cfg)
        self.assertTrue(wait_stderr(rr, "replica b/bad is unhealthy"), rr.stderr_tail())
        r = self.client(rr.port).request("GET", "/y")
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.header("retry-after"), "1", r)
        self.assertEqual(r.json()["endpoint"], "e", r)


if __name__ == "__main__":
    harness.main()
