#!/usr/bin/env python3
"""Shadow copies and their slots: every shadow backend of an endpoint gets its
own copy (each with its own probability), and a copy whose client leaves
before the body is complete is cut and gives its slot back (with a cap of 1 on
the shadow backend, a leaked slot would stop every later copy)."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint, wait_for  # noqa: E402


class ShadowSlotsTest(harness.RRTestCase):
    def test_every_shadow_backend_gets_a_copy(self):
        main, s1, s2 = self.mock("main"), self.mock("s1"), self.mock("s2")
        cfg = {"backends": {"m": backend([main]), "s1": backend([s1]), "s2": backend([s2])},
               "endpoints": {"e": endpoint("/", {"m": 1.0}, shadow={"s1": 1.0, "s2": 1.0})}}
        rr = self.ringroute(cfg, shards=2)
        c = self.client(rr.port)
        for i in range(20):
            r = c.request("POST", "/p%d" % i, body=b"abc")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["id"], "main", r)
        wait_for(lambda: s1.stats()["served"] == 20 and s2.stats()["served"] == 20,
                 what="20 copies on each shadow backend (s1 %r, s2 %r)"
                 % (s1.stats(), s2.stats()))

    def test_client_leaving_mid_body_frees_the_shadow_slot(self):
        main, sh = self.mock("main"), self.mock("sh")
        cfg = {"backends": {"m": backend([main]), "s": backend([sh], max_ongoing_requests=1)},
               "endpoints": {"e": endpoint("/", {"m": 1.0}, shadow={"s": 1.0})}}
        rr = self.ringroute(cfg, admin=True)

        def shadow_idle():
            st = json.loads(harness.http_once(rr.admin_port, "GET", "/v1/stats").body)
            return st["backends"]["s"]["replicas"]["sh"]["ongoing"] == 0
        for i in range(6):
            c = harness.Client(rr.port)
            c.send(b"POST /cut%d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\n" % i)
            wait_for(lambda: main.stats()["inflight"] == 1, what="the main copy in flight")
            if i % 2:
                c.close()  # the client goes away mid-body
            else:
                c.send(b"zz\r\n")  # a bad chunk size: 400, and the copies are cut
                r = c.read_response()
                self.assertEqual(r.status, 400, r)
                c.close()
            wait_for(lambda: main.stats()["inflight"] == 0, what="the main copy cut")
        # Every cut copy gave its slot back: complete requests still get copies.
        # One at a time: a copy that finds the shadow's single slot taken by
        # the previous copy is dropped by design (shadows never wait).
        c = self.client(rr.port)
        for i in range(5):
            r = c.request("POST", "/ok%d" % i, body=b"hello")
            self.assertEqual(r.status, 200, r)
            wait_for(lambda: sh.stats()["served"] == i + 1 and shadow_idle(),
                     what="complete copy %d on the shadow (got %r)" % (i + 1, sh.stats()))


if __name__ == "__main__":
    harness.main()
