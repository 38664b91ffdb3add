#!/usr/bin/env python3
"""Priorities and tenant fairness in the router queues (issue 12 parts 1, 2
and 4; docs/config.md "Priorities, tenants and deadlines").

The replica is a gated upstream in this process (harness.GatedUpstream): a
request carrying `X-Gate: NAME` is answered only once the test releases NAME,
so the order in which the replica gets queued requests is observed one by
one, not guessed from delays. Each case runs on --shards 1 and --shards 2.

* order: (and with queue_order "edf", by deadline) with the one slot held, three priority-0 requests queue, then three
  of priority 3; freed one at a time, the replica gets the three high ones
  first, then the low ones, each group in arrival order (on 2 shards the
  requests are enqueued 20 ms apart, four times the 5 ms cross-shard
  tolerance of docs/ARCHITECTURE.md "Queued requests"). /v1/queues shows
  them by priority and the oldest wait.
* eviction: max_queued_requests 3 full of priority 0: another priority 0 gets
  503 queue_full; a priority 2 takes the place of the youngest priority 0
  (on one shard exactly that one; on two shards the youngest of a shard),
  which gets 503 evicted; the priority 2 is served first; the queue never
  holds more than 3 (/v1/queues); the reasons are counted in /metrics.
* shedding: a priority -1 request is served while a slot is free and gets
  503 shed at once (with Retry-After) while none is.
* fairness: a flooding tenant queues 6 requests before a normal tenant queues
  3: the normal tenant's requests are served in alternation with the
  flood's (one shard: exactly f n f n f n f f f; two shards: all three of
  them among the first seven served), not after the flood.
* max_queued_per_tenant 2: the flood's third queued request gets 503
  tenant_queue_full at once, process-wide; another tenant still queues; a
  priority 1 of the flood takes the place of the flood's own youngest
  priority 0 (503 evicted), never another tenant's.
* reports: --report-url POSTs and `ringroutectl queues` show the waiters by
  priority and the oldest wait.
"""

import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, build_request, endpoint  # noqa: E402


class Gated(harness.GatedUpstream):
    """A replica answering {"id", "path"} as JSON."""

    def answer(self, req):
        body = json.dumps({"id": self.id, "path": req["target"]}).encode()
        return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)) + body


class PrioCase(harness.RRTestCase):
    SHARDS = 1
    SPACING = 0.0   # between enqueues on 2 shards: beyond the 5 ms tolerance

    def start(self, ep=None, extra=(), **bkw):
        self.up = self.upstream(Gated("g1"))
        kw = dict(max_ongoing_requests=1, max_queued_requests=100, queue_timeout_ms=10000)
        kw.update(bkw)
        cfg = {"backends": {"b": backend({"g1": self.up.addr}, **kw)},
               "endpoints": {"e": endpoint("/", {"b": 1.0}, **(ep or {}))}}
        self.rr = self.ringroute(cfg, shards=self.SHARDS, admin=True, extra=list(extra))
        return self.rr

    def queues(self):
        r = harness.http_once(self.rr.admin_port, "GET", "/v1/queues")
        self.assertEqual(r.status, 200, r)
        return r.json()["backends"]["b"]

    def wait_queued(self, n, timeout=5.0):
        seen = []

        def check():
            seen.append(self.queues()["queued"])
            return seen[-1] == n
        try:
            harness.wait_for(check, timeout, "queued == %d" % n, interval=0.005)
        except AssertionError:
            raise AssertionError("queued stayed %r, expected %d" % (seen[-1:], n))

    def metric(self, name, **labels):
        r = harness.http_once(self.rr.admin_port, "GET", "/metrics")
        total = 0.0
        for n, l, v in harness.parse_metrics(r.body.decode()):
            if n == name and all(l.get(k) == x for k, x in labels.items()):
                total += v
        return total

    def rejected(self, reason):
        return self.metric("ringroute_rejected_requests_total", backend="b", reason=reason)

    def send(self, path, gate=True, headers=()):
        c = self.client(self.rr.port, timeout=15)
        hs = list(headers)
        if gate:
            hs.append(("X-Gate", path))
        c.send(build_request("GET", path, hs))
        return c

    def hold(self):
        """Takes the only slot with a gated request; returns its client."""
        n = len(self.up.requests)
        c = self.send("/hold")
        self.up.wait_requests(n + 1)
        return c

    def queue(self, path, n_after, headers=()):
        c = self.send(path, headers=headers)
        self.wait_queued(n_after)
        if self.SPACING:
            time.sleep(self.SPACING)  # deliberate spacing, not synchronisation
        return c

    def serve_in_order(self, count):
        """Releases the replica's requests one at a time (after /hold);
        returns the paths in the order it got them."""
        self.up.release("/hold")
        order = []
        for k in range(count):
            p = self.up.wait_requests(k + 2)[k + 1]
            order.append(p)
            self.up.release(p)
        return order

    def assertOK(self, c, path):
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["path"], path, r)

    def assert503(self, r, reason_text):
        self.assertErrorJSON(r, 503, "e")
        self.assertRegex(r.header("retry-after") or "", r"^\d+$", r)
        self.assertIn(reason_text, r.json()["error"], r)


class OrderTest(PrioCase):
    def test_priority_order(self):
        self.start()
        hold = self.hold()
        lows = [("/low/%d" % i, self.queue("/low/%d" % i, i + 1,
                                           [("X-Request-Priority", "0")])) for i in range(3)]
        highs = [("/high/%d" % i, self.queue("/high/%d" % i, i + 4,
                                             [("X-Request-Priority", "3")])) for i in range(3)]
        q = self.queues()
        self.assertEqual(q["by_priority"], {"0": 3, "3": 3}, q)
        self.assertGreaterEqual(q["oldest_wait_ms"], 0, q)
        order = self.serve_in_order(6)
        self.assertOK(hold, "/hold")
        for p, c in highs + lows:
            self.assertOK(c, p)
        self.assertEqual(order, [p for p, _ in highs] + [p for p, _ in lows],
                         "served out of priority order (--shards %d)" % self.SHARDS)
        self.assertEqual(self.queues()["queued"], 0)

    def test_edf(self):
        """queue_order "edf": within a priority, the earliest deadline first."""
        self.start(ep={"queue_order": "edf"})
        hold = self.hold()
        plan = [("/a", "9000"), ("/b", "3000"), ("/c", "6000")]
        conns = [(p, self.queue(p, i + 1, [("X-Request-Timeout-Ms", t)]))
                 for i, (p, t) in enumerate(plan)]
        self.assertEqual(self.serve_in_order(3), ["/b", "/c", "/a"])
        for p, c in [("/hold", hold)] + conns:
            self.assertOK(c, p)

    def test_not_an_integer_is_ignored(self):
        """A priority that is not an integer is the endpoint's (1 here);
        one out of range is clamped (99 -> 10, above 1)."""
        self.start(ep={"priority": 1})
        hold = self.hold()
        a = self.queue("/a", 1, [("X-Request-Priority", "0")])
        b = self.queue("/b", 2, [("X-Request-Priority", "high")])
        c = self.queue("/c", 3, [("X-Request-Priority", "99")])
        self.assertEqual(self.queues()["by_priority"], {"0": 1, "1": 1, "10": 1})
        self.assertEqual(self.serve_in_order(3), ["/c", "/b", "/a"])
        for p, x in (("/hold", hold), ("/a", a), ("/b", b), ("/c", c)):
            self.assertOK(x, p)


class EvictTest(PrioCase):
    def test_evict_youngest_lowest(self):
        self.start(max_queued_requests=3)
        hold = self.hold()
        lows = [("/low/%d" % i, self.queue("/low/%d" % i, i + 1)) for i in range(3)]
        # same priority: no eviction, the queue is full
        r = self.client(self.rr.port).request("GET", "/same")
        self.assert503(r, "queue full")
        self.assertEqual(self.rejected("queue_full"), 1)
        high = self.send("/high", headers=[("X-Request-Priority", "2")])
        harness.wait_for(lambda: self.rejected("evicted") == 1, 5, "one eviction")
        # one of the lows got its 503 evicted at once; the queue holds 3
        self.assertEqual(self.queues()["queued"], 3)
        order = self.serve_in_order(3)
        self.assertOK(hold, "/hold")
        self.assertOK(high, "/high")
        self.assertEqual(order[0], "/high", order)
        got = {}
        for p, c in lows:
            r = c.read_response()
            got[p] = r.status
            if r.status == 503:
                self.assert503(r, "evicted")
        self.assertEqual(sorted(got.values()), [200, 200, 503], got)
        victim = [p for p, st in got.items() if st == 503][0]
        self.assertNotIn(victim, order)
        if self.SHARDS == 1:
            self.assertEqual(victim, "/low/2", "the youngest of the lowest priority")
        self.assertEqual(self.rejected("evicted"), 1)
        self.assertEqual(self.queues()["queued"], 0)


class ShedTest(PrioCase):
    def test_sheddable(self):
        self.start()
        # a free slot: served
        r = self.client(self.rr.port).request("GET", "/free",
                                              headers=[("X-Request-Priority", "-1")])
        self.assertEqual(r.status, 200, r)
        hold = self.hold()
        t = time.monotonic()
        r = self.client(self.rr.port).request("GET", "/shed",
                                              headers=[("X-Request-Priority", "-1")])
        self.assert503(r, "shed")
        self.assertLess(time.monotonic() - t, 2.0)
        self.assertEqual(self.rejected("shed"), 1)
        self.assertEqual(self.queues()["queued"], 0)
        self.up.release("/hold")
        self.assertOK(hold, "/hold")


class FairnessTest(PrioCase):
    def test_flood_gets_its_share(self):
        self.start(ep={"fairness_header": "X-Tenant"})
        hold = self.hold()
        conns = []
        for i in range(6):
            p = "/f/%d" % i
            conns.append((p, self.queue(p, i + 1, [("X-Tenant", "flood")])))
        for i in range(3):
            p = "/n/%d" % i
            conns.append((p, self.queue(p, i + 7, [("X-Tenant", "normal")])))
        order = self.serve_in_order(9)
        self.assertOK(hold, "/hold")
        for p, c in conns:
            self.assertOK(c, p)
        tenants = "".join(p[1] for p in order)
        if self.SHARDS == 1:
            self.assertEqual(tenants, "fnfnfnfff", order)
            self.assertEqual([p for p in order if p[1] == "f"], ["/f/%d" % i for i in range(6)])
        else:
            self.assertEqual(tenants[:7].count("n"), 3, order)

    def test_weights(self):
        """tenant_weights {"heavy": 2}: two of heavy's per one of light's."""
        self.start(ep={"fairness_header": "X-Tenant", "tenant_weights": {"heavy": 2}})
        hold = self.hold()
        conns = []
        for i in range(4):
            p = "/l/%d" % i
            conns.append((p, self.queue(p, i + 1, [("X-Tenant", "light")])))
        for i in range(6):
            p = "/h/%d" % i
            conns.append((p, self.queue(p, i + 5, [("X-Tenant", "heavy")])))
        order = self.serve_in_order(9)
        self.assertOK(hold, "/hold")
        tenants = "".join(p[1] for p in order)
        if self.SHARDS == 1:
            # both start at the clock; then heavy's finish moves half as far
            self.assertEqual(tenants[:9], "lhhlhhlhh", order)
        else:
            self.assertGreaterEqual(tenants[:9].count("h"), 5, order)
        self.up.open_all()
        for p, c in conns:
            self.assertOK(c, p)

    def test_per_tenant_bound(self):
        self.start(ep={"fairness_header": "X-Tenant", "max_queued_per_tenant": 2})
        hold = self.hold()
        a = self.queue("/f/0", 1, [("X-Tenant", "flood")])
        b = self.queue("/f/1", 2, [("X-Tenant", "flood")])
        t = time.monotonic()
        r = self.client(self.rr.port).request("GET", "/f/2", headers=[("X-Tenant", "flood")])
        self.assert503(r, "tenant queue full")
        self.assertLess(time.monotonic() - t, 2.0)
        self.assertEqual(self.rejected("tenant_queue_full"), 1)
        n = self.queue("/n/0", 3, [("X-Tenant", "normal")])
        # a higher priority of the tenant at its bound takes the place of its
        # own youngest lower waiter on its shard (on 2 shards that shard may
        # have none of them: tenant_queue_full then)
        hi = self.send("/f/hi", headers=[("X-Tenant", "flood"), ("X-Request-Priority", "1")])
        harness.wait_for(lambda: self.rejected("evicted") + self.rejected("tenant_queue_full") == 2,
                         5, "the flood's priority 1 placed or refused")
        evicted = self.rejected("evicted") == 1
        if self.SHARDS == 1:
            self.assertTrue(evicted, "evicts its own lower waiter")
        self.up.open_all()
        got = {}
        for p, c in (("/hold", hold), ("/f/0", a), ("/f/1", b), ("/n/0", n), ("/f/hi", hi)):
            r = c.read_response()
            got[p] = r.status
        self.assertEqual(got["/n/0"], 200, got)   # never another tenant's place
        if evicted:
            self.assertEqual(got["/f/hi"], 200, got)
            self.assertEqual(sorted([got["/f/0"], got["/f/1"]]), [200, 503], got)
            if self.SHARDS == 1:
                self.assertEqual(got["/f/1"], 503, "the youngest: %r" % got)
        else:
            self.assertEqual(got["/f/hi"], 503, got)
        self.assertEqual(self.queues()["queued"], 0)


class ReportTest(PrioCase):
    """The queue reports show waiters by priority and the oldest wait:
    --report-url POSTs and `ringroutectl queues` (a table: BY_PRIORITY
    highest first, OLDEST_WAIT_MS)."""

    def test_reports_by_priority(self):
        posts = []

        def respond(req):
            posts.append(json.loads(req["body"]))
            return b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"

        sink = harness.RawUpstream(respond, close_after=True)
        self.addCleanup(sink.close)
        sock = harness.control_sock_path()
        self.start(extra=["--control", sock, "--report-url", "http://127.0.0.1:%d/q" % sink.port,
                          "--report-interval-ms", "100"])
        hold = self.hold()
        conns = [(p, self.queue(p, i + 1, [("X-Request-Priority", pr)]))
                 for i, (p, pr) in enumerate([("/a", "0"), ("/b", "0"), ("/c", "4")])]
        harness.wait_for(lambda: any(j["backends"]["b"].get("by_priority") == {"0": 2, "4": 1}
                                     for j in posts), 5, "a report with the waiters by priority")
        j = [j for j in posts if j["backends"]["b"].get("by_priority") == {"0": 2, "4": 1}][-1]
        self.assertGreaterEqual(j["backends"]["b"]["oldest_wait_ms"], 0, j)
        ctl = os.environ.get("RR_RINGROUTECTL") or os.path.join(harness.BUILD, "ringroutectl")
        out = subprocess.run([ctl, "--socket", sock, "queues"], capture_output=True, text=True,
                             timeout=10)
        self.assertEqual(out.returncode, 0, out)
        rows = [l.split() for l in out.stdout.strip().splitlines()]
        self.assertEqual(rows[0], ["BACKEND", "QUEUED", "ONGOING", "REPLICAS", "BY_PRIORITY",
                                   "OLDEST_WAIT_MS"], out.stdout)
        self.assertEqual(rows[1][:6], ["b", "3", "1", "1", "4:1", "0:2"], out.stdout)
        self.assertRegex(rows[1][6], r"^\d+$", out.stdout)
        self.up.open_all()
        for p, c in [("/hold", hold)] + conns:
            self.assertOK(c, p)


class OrderShards2Test(OrderTest):
    SHARDS = 2
    SPACING = 0.02


class EvictShards2Test(EvictTest):
    SHARDS = 2
    SPACING = 0.02


class ReportShards2Test(ReportTest):
    SHARDS = 2


class ShedShards2Test(ShedTest):
    SHARDS = 2


class FairnessShards2Test(FairnessTest):
    SHARDS = 2
    SPACING = 0.02


if __name__ == "__main__":
    harness.main()
