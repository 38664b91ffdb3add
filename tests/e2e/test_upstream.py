#!/usr/bin/env python3
"""Upstream failures: replicas that close after each response, a down
replica among live ones, all replicas down (502), replica timeout (504),
replica reset (502). Runs against --shards 1 and --shards 2."""

import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, build_request, endpoint, free_port  # noqa: E402


class UpstreamTest(harness.RRTestCase):
    SHARDS = 1

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.closer = cls.mock_cls("closer", close_after=1)
        cls.l1 = cls.mock_cls("live1")
        cls.l2 = cls.mock_cls("live2")
        cls.slow = cls.mock_cls("slow")
        cls.plain = cls.mock_cls("plain")
        cfg = {
            "backends": {
                "closer": backend([cls.closer]),
                "mixed": backend({"down": "127.0.0.1:%d" % free_port(),
                                  "live1": cls.l1.addr, "live2": cls.l2.addr},
                                 retries=2),
                "dead": backend({"d1": "127.0.0.1:%d" % free_port(),
                                 "d2": "127.0.0.1:%d" % free_port()}),
                "slow": backend([cls.slow], request_timeout_ms=300),
                "plain": backend([cls.plain]),
            },
            "endpoints": {
                "closer": endpoint("/closer", {"closer": 1.0}),
                "mixed": endpoint("/mixed", {"mixed": 1.0}),
                "dead": endpoint("/dead", {"dead": 1.0}),
                "slow": endpoint("/slow", {"slow": 1.0}),
                "plain": endpoint("/plain", {"plain": 1.0}),
            },
        }
        cls.rr = cls.ringroute_cls(cfg, shards=cls.SHARDS)

    def test_replica_closes_after_each_response(self):
        self.closer.reset_stats()
        c = self.client(self.rr.port)
        n = 60
        for i in range(n):
            body = b"z" * (i * 10)
            r = c.request("POST", "/closer/%d" % i, body=body)
            self.assertEqual(r.status, 200, "request %d: %r" % (i, r))
            j = r.json()
            self.assertEqual(j["path"], "/closer/%d" % i)
            self.assertEqual(j["body_len"], len(body))
        # pipelined too
        c.send(b"".join(build_request("GET", "/closer/p%d" % i) for i in range(5)))
        for i in range(5):
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["path"], "/closer/p%d" % i)
        # every request reached the replica exactly once
        self.assertEqual(self.closer.stats()["served"], n + 5)

    def test_down_replica_among_live(self):
        c = self.client(self.rr.port)
        seen = collections.Counter()
        for i in range(60):
            body = b"q" * 3000 if i % 2 else None
            r = c.request("POST" if body else "GET", "/mixed/%d" % i, body=body)
            self.assertEqual(r.status, 200, "request %d: %r" % (i, r))
            j = r.json()
            self.assertEqual(j["path"], "/mixed/%d" % i)
            self.assertEqual(j["body_len"], len(body or b""))
            seen[j["id"]] += 1
        self.assertEqual(set(seen), {"live1", "live2"}, seen)
        # fresh connections (possibly on other shards) too
        for i in range(10):
            r = harness.http_once(self.rr.port, "GET", "/mixed/f%d" % i)
            self.assertEqual(r.status, 200, r)

    def test_all_replicas_down_502(self):
        c = self.client(self.rr.port)
        t0 = time.monotonic()
        r = c.request("GET", "/dead/x")
        self.assertErrorJSON(r, 502, "dead")
        self.assertLess(time.monotonic() - t0, 3.0)
        # a complete response: the connection keeps working
        r = c.request("POST", "/dead/y", body=b"abc")
        self.assertErrorJSON(r, 502, "dead")
        r = c.request("GET", "/plain/after")
        self.assertEqual(r.status, 200, r)

    def test_timeout_504(self):
        c = self.client(self.rr.port, timeout=10)
        t0 = time.monotonic()
        r = c.request("GET", "/slow/t", [("X-Mock-Delay-Ms", "3000")])
        dt = time.monotonic() - t0
        self.assertErrorJSON(r, 504, "slow")
        self.assertGreaterEqual(dt, 0.28, "504 before request_timeout_ms (300)")
        self.assertLess(dt, 2.5, "504 took %.2f s (timeout 300 ms, replica delay 3 s)" % dt)
        r = c.request("GET", "/slow/fast")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["id"], "slow")

    def test_delay_within_timeout_ok(self):
        r = harness.http_once(self.rr.port, "GET", "/slow/ok", [("X-Mock-Delay-Ms", "50")])
        self.assertEqual(r.status, 200, r)

    def test_reset_502(self):
        c = self.client(self.rr.port)
        r = c.request("GET", "/plain/reset", [("X-Mock-Reset", "1")])
        self.assertErrorJSON(r, 502, "plain")
        r = c.request("GET", "/plain/after-reset")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["path"], "/plain/after-reset")


class UpstreamShards2Test(UpstreamTest):
    SHARDS = 2


if __name__ == "__main__":
    harness.main()
