#!/usr/bin/env python3
"""Active health checks: a replica whose health path answers non-2xx gets no
requests; once it answers 2xx again it is used again."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint, wait_stderr  # noqa: E402


class HealthTest(harness.RRTestCase):
    def test_unhealthy_replica_gets_no_requests(self):
        good = self.mock("good")
        bad = self.mock("bad", status=503)
        cfg = {"backends": {"b": backend({"good": good.addr, "bad": bad.addr},
                                         health_check={"path": "/health", "interval_ms": 100})},
               "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        rr = self.ringroute(cfg, shards=2)
        self.assertTrue(wait_stderr(rr, "replica b/bad is unhealthy"), rr.stderr_tail())
        bad.reset_stats()
        c = self.client(rr.port)
        for i in range(60):
            r = c.request("GET", "/x%d" % i)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["id"], "good", r)
        self.assertEqual(bad.stats()["served"], 0)

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
