#!/usr/bin/env python3
"""Active health checks: a replica whose health path answers non-2xx gets no
requests; once it answers 2xx again it is used again. rise and fall: a
replica that flaps (two failed probes, one good, over and over) is never
taken out; fall failures in a row take it out, rise successes in a row
bring it back; the last probe's reason shows in /v1/stats."""

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

    def test_rise_fall_and_reason(self):
        mode = ["flap"]
        probes = []  # (mode, status answered)

        def health(req):
            if req["target"] != "/health":
                return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            m = mode[0]
            if m == "flap":
                st = 200 if len([p for p in probes if p[0] == "flap"]) % 3 == 2 else 503
            else:
                st = 503 if m == "down" else 200
            probes.append((m, st))
            return b"HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n" % st

        def count(m):
            return len([p for p in probes if p[0] == m])

        rep = self.upstream(harness.RawUpstream(health))
        dead = "127.0.0.1:%d" % harness.free_port()
        cfg = {"backends": {"b": backend({"rep": rep.addr, "dead": dead},
                                         health_check={"path": "/health", "interval_ms": 100,
                                                       "rise": 2, "fall": 3})},
               "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        rr = self.ringroute(cfg, admin=True)

        def health_of(rid):
            st = harness.http_once(rr.admin_port, "GET", "/v1/stats").json()
            return st["backends"]["b"]["replicas"][rid]["health"]

        # Flapping, 503 503 200 ...: never fall (3) failures in a row.
        harness.wait_for(lambda: count("flap") >= 12, timeout=10, what="12 probes")
        self.assertNotIn("replica b/rep is unhealthy", rr.stderr())
        self.assertTrue(health_of("rep")["healthy"])
        self.assertIn(health_of("rep")["reason"], ("status 503", "ok"))
        # The refused one: out after 3 probes, with why.
        self.assertTrue(wait_stderr(rr, "replica b/dead is unhealthy (connect: Connection refused): "
                                        "3 probes in a row failed"), rr.stderr_tail())
        h = health_of("dead")
        self.assertEqual((h["healthy"], h["reason"]), (False, "connect: Connection refused"), h)
        self.assertIsInstance(h["for_ms"], int)
        # Down for good: out at the third failure in a row, not before.
        mode[0] = "down"
        self.assertTrue(wait_stderr(rr, "replica b/rep is unhealthy (status 503): "
                                        "3 probes in a row failed"), rr.stderr_tail())
        # (the flapping's last 503s may have begun the run)
        run = 0
        for _, st in reversed(probes):
            if st != 503:
                break
            run += 1
        self.assertGreaterEqual(run, 3, probes)
        h = health_of("rep")
        self.assertEqual((h["healthy"], h["reason"]), (False, "status 503"), h)
        # Up again: back at the second success in a row.
        mode[0] = "up"
        self.assertTrue(wait_stderr(rr, "replica b/rep is healthy: 2 probes in a row passed"),
                        rr.stderr_tail())
        self.assertGreaterEqual(count("up"), 2)
        h = health_of("rep")
        self.assertEqual((h["healthy"], h["reason"]), (True, "ok"), h)
        r = harness.http_once(rr.port, "GET", "/x")
        self.assertEqual(r.status, 200, r)


if __name__ == "__main__":
    harness.main()
