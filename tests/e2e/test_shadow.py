#!/usr/bin/env python3
"""Shadow traffic (issue 3, "Shadow traffic"; docs/config.md "Shadow probabilities").

* The proportion holds: shadow {"sh": 0.25} over 2400 requests puts
  0.25 +- 0.05 of them on the shadow backend (the binomial standard deviation
  is 0.009 here, so the band is more than 5 sigma wide), counted by the shadow
  mock-replica's "served" and by ringroute's per-replica counter.
* The copy carries the same method, path, headers and body: the shadow
  backend is a recording upstream in this process (harness.RawUpstream), and
  what it saw is compared with what the main replica echoed (headers) and
  with what the client sent (body).
* It takes a slot of the shadow backend like any request: a slow shadow
  replica behind a cap of 2 never sees more than 2 at once.
* A slow (500 ms), failing (500s, or connection closed unanswered) or absent
  (nothing listening) shadow backend never changes the client's status or
  body, and adds nothing to its latency: p50 stays within 50 ms of the
  unshadowed endpoint's and no request takes 400 ms or more.

Shadows finish after their client responses; "all shadows done" is read
from the admin port (ringroute_replica_ongoing_requests of the shadow replicas
== 0), not waited out.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, chunked, endpoint, free_port  # noqa: E402
from harness import parse_metrics, wait_for  # noqa: E402

PROPORTION = 0.25
TOLERANCE = 0.05
N_PROPORTION = 2400


def p50(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


class ShadowCase(harness.RRTestCase):
    def metrics(self, rr):
        r = harness.http_once(rr.admin_port, "GET", "/metrics")
        self.assertEqual(r.status, 200, r)
        return parse_metrics(r.body.decode())

    def wait_shadows_done(self, rr, backends, mocks=(), timeout=10.0):
        """Until no request is in flight to the replicas of backends (as
        ringroute counts them) nor inside the given mocks."""
        def idle():
            busy = [(l, v) for n, l, v in self.metrics(rr)
                    if n == "ringroute_replica_ongoing_requests"
                    and l.get("backend") in backends and v]
            if busy:
                return False
            return all(m.stats()["inflight"] == 0 for m in mocks)
        wait_for(idle, timeout, "shadow requests to finish")


class ShadowProportionTest(ShadowCase):
    def test_proportion(self):
        main = self.mock("main")
        sh = self.mock("sh")
        cfg = {"backends": {"main": backend([main]), "sh": backend([sh])},
               "endpoints": {"e": endpoint("/", {"main": 1.0}, shadow={"sh": PROPORTION})}}
        rr = self.ringroute(cfg, shards=2, admin=True)
        nthreads = 8
        per = N_PROPORTION // nthreads

        def worker(k):
            with harness.Client(rr.port, timeout=15) as c:
                for i in range(per):
                    path = "/p/%d/%d" % (k, i)
                    r = c.request("GET", path)
                    if r.status != 200 or r.json()["path"] != path or \
                            r.header("x-mock-id") != "main":
                        return "client %d req %d: %r" % (k, i, r)

        self.run_clients(nthreads, worker)
        self.wait_shadows_done(rr, ("sh",), (sh,))
        n = nthreads * per
        self.assertEqual(main.stats()["served"], n)
        got = sh.stats()["served"]
        frac = got / n
        print("shadowed %d of %d requests (%.3f)" % (got, n, frac), file=sys.stderr)
        self.assertGreaterEqual(frac, PROPORTION - TOLERANCE,
                                "%d of %d requests shadowed (%.3f)" % (got, n, frac))
        self.assertLessEqual(frac, PROPORTION + TOLERANCE,
                             "%d of %d requests shadowed (%.3f)" % (got, n, frac))
        reqs = {l["replica"]: v for name, l, v in self.metrics(rr)
                if name == "ringroute_replica_requests_total" and l.get("backend") == "sh"}
        self.assertEqual(reqs, {"sh": got}, "ringroute's count of shadow requests")


class ShadowCopyTest(ShadowCase):
    def test_copy_is_identical(self):
        main = self.mock("main")
        rec = harness.RawUpstream(
            lambda req: b"HTTP/1.1 299 Shadow\r\nContent-Length: 6\r\nX-From: shadow\r\n\r\nshadow")
        self.addCleanup(rec.close)
        cfg = {"backends": {"main": backend([main]), "rec": backend({"rec": rec.addr})},
               "endpoints": {"e": endpoint("/", {"main": 1.0}, shadow={"rec": 1.0})}}
        rr = self.ringroute(cfg, shards=2, admin=True)
        c = self.client(rr.port)
        sent = {}
        cases = [
            ("GET", [], None),
            ("POST", [("Content-Type", "application/json")], b'{"inputs": [1, 2, 3]}'),
            ("PUT", [("Content-Type", "application/octet-stream")], os.urandom(70000)),
            ("POST", [("Transfer-Encoding", "chunked")], None),  # chunked body below
            ("DELETE", [], None),
            ("POST", [("X-Serve-Shard-Key", "user-17"), ("X-Request-Id", "rid-given-1")],
             b"keyed"),
        ]
        for i, (method, hs, body) in enumerate(cases):
            path = "/copy/%d?q=%d&x=y" % (i, i)
            hs = hs + [("X-Test-Tag", "tag-%d" % i), ("Accept", "*/*"),
                       ("X-Serve-Call-Method", "predict_%d" % i)]
            raw_body = body
            if method == "POST" and body is None:
                body = b"hello, shadow" * 100
                raw_body = chunked(body[:500], body[500:])
            r = c.request(method, path, hs, raw_body)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("x-mock-id"), "main", r)
            self.assertIsNone(r.header("x-from"), r)
            j = r.json()
            self.assertEqual(j["path"], path)
            self.assertEqual(j["method"], method)
            self.assertEqual(j["body_len"], len(body or b""))
            sent[path] = (method, body or b"", {k.lower(): v for k, v in j["headers"].items()},
                          dict((k.lower(), v) for k, v in hs))
        self.wait_shadows_done(rr, ("rec",))
        seen = {q["target"]: q for q in rec.requests}
        self.assertEqual(sorted(seen), sorted(sent), "one shadow copy per request")
        self.assertEqual(len(rec.requests), len(sent))
        for path, (method, body, main_headers, client_headers) in sent.items():
            q = seen[path]
            self.assertEqual(q["method"], method, path)
            self.assertEqual(q["body"], body, path)
            shadow_headers = {}
            for k, v in q["headers"]:
                k = k.lower()
                shadow_headers[k] = shadow_headers[k] + ", " + v if k in shadow_headers else v
            # the same header block the main replica got (X-Request-Id and
            # X-Forwarded-For included: one request, two destinations)
            self.assertEqual(shadow_headers, main_headers, path)
            for k, v in client_headers.items():
                self.assertEqual(shadow_headers.get(k), v, "%s: header %s" % (path, k))


class ShadowSlotTest(ShadowCase):
    def test_shadow_takes_a_slot(self):
        main = self.mock("main")
        sh = self.mock("slowsh", delay_ms=300)
        cfg = {"backends": {"main": backend([main]),
                            "sh": backend([sh], max_ongoing_requests=2)},
               "endpoints": {"e": endpoint("/", {"main": 1.0}, shadow={"sh": 1.0})}}
        rr = self.ringroute(cfg, shards=2, admin=True)
        lat = []
        for i in range(20):
            c = self.client(rr.port)  # new connections: both shards
            t0 = time.monotonic()
            r = c.request("GET", "/s/%d" % i)
            lat.append(time.monotonic() - t0)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["path"], "/s/%d" % i)
            c.close()
        self.wait_shadows_done(rr, ("sh",), (sh,))
        st = sh.stats()
        self.assertLessEqual(st["max_inflight"], 2, st)
        self.assertGreaterEqual(st["served"], 2, st)
        self.assertEqual(main.stats()["served"], 20)
        self.assertLess(max(lat), 0.3, "client waited for a shadow slot: %r" % lat)


class ShadowFailureTest(ShadowCase):
    """Client view with a slow, failing, resetting or absent shadow backend."""

    N = 30

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.main = cls.mock_cls("main")
        cls.slow = cls.mock_cls("slow", delay_ms=500)
        cls.err = cls.mock_cls("err", status=500)
        cls.reset = harness.RawUpstream(lambda req: None)  # closes, never answers
        cfg = {
            "backends": {
                "main": backend([cls.main]),
                "slow": backend([cls.slow]),
                "err": backend([cls.err]),
                "reset": backend({"reset": cls.reset.addr}),
                "down": backend({"down": "127.0.0.1:%d" % free_port()}),
            },
            "endpoints": {
                "base": endpoint("/base", {"main": 1.0}),
                "slow": endpoint("/slow", {"main": 1.0}, shadow={"slow": 1.0}),
                "err": endpoint("/err", {"main": 1.0}, shadow={"err": 1.0}),
                "reset": endpoint("/reset", {"main": 1.0}, shadow={"reset": 1.0}),
                "down": endpoint("/down", {"main": 1.0}, shadow={"down": 1.0}),
            },
        }
        cls.rr = cls.ringroute_cls(cfg, shards=2, admin=True)

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.reset.close()

    def latencies(self, prefix):
        c = self.client(self.rr.port)
        lat = []
        for i in range(self.N):
            path = "%s/%d" % (prefix, i)
            body = b"b" * (i * 37)
            t0 = time.monotonic()
            r = c.request("POST", path, [("X-Tag", prefix)], body)
            lat.append(time.monotonic() - t0)
            self.assertEqual(r.status, 200, "%s: %r" % (path, r))
            self.assertEqual(r.header("x-mock-id"), "main", r)
            j = r.json()
            self.assertEqual((j["id"], j["method"], j["path"], j["body_len"]),
                             ("main", "POST", path, len(body)), r)
        return lat

    def check(self, prefix):
        base = p50(self.latencies("/base"))
        lat = self.latencies(prefix)
        self.assertLess(p50(lat), base + 0.05,
                        "%s: client p50 %.1f ms vs %.1f ms unshadowed"
                        % (prefix, p50(lat) * 1e3, base * 1e3))
        self.assertLess(max(lat), 0.4, "%s: a client waited for its shadow: max %.1f ms"
                        % (prefix, max(lat) * 1e3))
        return lat

    def test_slow_shadow(self):
        self.check("/slow")
        self.wait_shadows_done(self.rr, ("slow",), (self.slow,))
        self.assertGreater(self.slow.stats()["served"], 0)

    def test_failing_shadow(self):
        self.check("/err")
        self.wait_shadows_done(self.rr, ("err",), (self.err,))
        self.assertGreater(self.err.stats()["served"], 0)

    def test_resetting_shadow(self):
        self.check("/reset")
        self.assertGreater(len(self.reset.requests), 0)

    def test_absent_shadow(self):
        self.check("/down")


if __name__ == "__main__":
    harness.main()
