#!/usr/bin/env python3
"""Deadlines in the router queues (issue 12 part 3; docs/config.md
"Priorities, tenants and deadlines"), on --shards 1 and --shards 2.

* 504 deadline: a request queued behind a held slot with
  X-Request-Timeout-Ms: 200 (or an endpoint timeout_ms of 200 and no header)
  leaves with 504 when its deadline passes, long before queue_timeout_ms, and
  never reaches the replica.
* deadline_unreachable at once: after a few 400 ms services (mock-replica
  X-Mock-Delay-Ms) the backend's median service time is ~400 ms; with the one
  slot busy and one request waiting, a request with 150 ms left cannot start
  in time (1 ahead x 400 ms / 1 slot): 503 deadline_unreachable with
  Retry-After within a fraction of its deadline; one with 10 s left queues
  and is served.
* not dispatched when late: a request queued with 600 ms left behind a 400 ms
  service would have ~200 ms left when the slot frees, less than the median:
  503 deadline_unreachable instead of a slot; the replica never sees it.
* X-Request-Timeout-Ms reaches the replica (mock-replica echoes the headers
  it got): the remaining time (<= the client's value, > 0, one header only);
  the endpoint's timeout_ms without a header; none without a deadline; a
  custom timeout_header is read and X-Request-Timeout-Ms is what goes on; a
  request routed by its body's model gets the deadline of the endpoint the
  model chose.
* the remaining time bounds the upstream timeout: a replica slower than the
  deadline gets a 504 upstream_timeout at the deadline, not at
  request_timeout_ms.
* caps: a mix of priorities, tenants and deadlines from 24 clients against
  two replicas of max_ongoing_requests 2: every response is a 200 or one of
  the documented refusals, mock /-/stats max_inflight never exceeds 2, the
  queue (max_queued_requests 16, evictions on and across shards) never
  shows more than 16 and is empty at the end.
"""

import os
import random
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint  # noqa: E402


class DeadlineCase(harness.RRTestCase):
    SHARDS = 1

    def start(self, mocks, ep=None, extra=(), **bkw):
        kw = dict(max_ongoing_requests=1, max_queued_requests=100, queue_timeout_ms=10000)
        kw.update(bkw)
        cfg = {"backends": {"b": backend(mocks, **kw)},
               "endpoints": {"e": endpoint("/", {"b": 1.0}, **(ep or {}))}}
        self.rr = self.ringroute(cfg, shards=self.SHARDS, admin=True, extra=list(extra))
        return self.rr

    def queued(self):
        r = harness.http_once(self.rr.admin_port, "GET", "/v1/queues")
        return r.json()["backends"]["b"]["queued"]

    def wait_queued(self, n, timeout=5.0):
        harness.wait_for(lambda: self.queued() == n, timeout, "queued == %d" % n,
                         interval=0.005)

    def rejected(self, reason):
        r = harness.http_once(self.rr.admin_port, "GET", "/metrics")
        for n, l, v in harness.parse_metrics(r.body.decode()):
            if (n == "ringroute_rejected_requests_total" and l.get("backend") == "b"
                    and l.get("reason") == reason):
                return v
        return None

    def send(self, path, headers=()):
        c = self.client(self.rr.port, timeout=15)
        c.send(harness.build_request("GET", path, list(headers)))
        return c

    def busy(self, m, ms):
        """Takes the only slot with a request the mock holds ms; returns its client."""
        c = self.send("/busy", [("X-Mock-Delay-Ms", str(ms)), ("X-Request-Timeout-Ms", "20000")])
        harness.wait_for(lambda: m.stats().get("inflight", 0) >= 1, 5, "busy in flight",
                         interval=0.005)
        return c


class QueuedDeadlineTest(DeadlineCase):
    def test_header_deadline_504(self):
        m = self.mock("d1")
        self.start([m])
        busy = self.busy(m, 900)
        t = time.monotonic()
        c = self.send("/late", [("X-Request-Timeout-Ms", "200")])
        r = c.read_response()
        took = time.monotonic() - t
        self.assertErrorJSON(r, 504, "e")
        self.assertIn("deadline", r.json()["error"], r)
        self.assertGreaterEqual(took, 0.18, took)
        self.assertLess(took, 0.8, took)      # before the busy one ends
        self.assertEqual(self.rejected("deadline"), 1)
        self.assertEqual(self.queued(), 0)
        self.assertEqual(busy.read_response().status, 200)
        self.assertEqual(m.stats()["served"], 1)  # /late never reached it

    def test_endpoint_timeout_504(self):
        m = self.mock("d1")
        self.start([m], ep={"timeout_ms": 200})
        busy = self.busy(m, 900)
        t = time.monotonic()
        r = self.send("/late").read_response()
        self.assertErrorJSON(r, 504, "e")
        self.assertLess(time.monotonic() - t, 0.8)
        self.assertEqual(busy.read_response().status, 200)


class UnreachableTest(DeadlineCase):
    def warm(self, n=2, ms=400):
        for i in range(n):
            r = self.client(self.rr.port).request("GET", "/warm/%d" % i,
                                                  headers=[("X-Mock-Delay-Ms", str(ms))])
            self.assertEqual(r.status, 200, r)

    def test_refused_at_once(self):
        m = self.mock("d1")
        self.start([m])
        self.warm()
        busy = self.busy(m, 1000)
        waiter = self.send("/waiter", [("X-Mock-Delay-Ms", "0")])
        self.wait_queued(1)
        t = time.monotonic()
        r = self.client(self.rr.port).request("GET", "/hopeless",
                                              headers=[("X-Request-Timeout-Ms", "150")])
        took = time.monotonic() - t
        self.assertErrorJSON(r, 503, "e")
        self.assertIn("deadline unreachable", r.json()["error"], r)
        self.assertRegex(r.header("retry-after") or "", r"^\d+$", r)
        self.assertLess(took, 0.12, "refused at once, not at its deadline (%.3f s)" % took)
        self.assertEqual(self.rejected("deadline_unreachable"), 1)
        ok = self.send("/patient", [("X-Request-Timeout-Ms", "10000")])
        for c in (busy, waiter, ok):
            self.assertEqual(c.read_response().status, 200)

    def test_not_dispatched_when_late(self):
        m = self.mock("d1")
        self.start([m])
        self.warm()
        busy = self.busy(m, 400)
        c = self.send("/tight", [("X-Request-Timeout-Ms", "600")])
        r = c.read_response()
        self.assertErrorJSON(r, 503, "e")
        self.assertIn("deadline unreachable", r.json()["error"], r)
        self.assertEqual(busy.read_response().status, 200)
        self.assertEqual(m.stats()["served"], 3)  # the warm ones and busy only


class ForwardTest(DeadlineCase):
    def echoed(self, m, ep=None, headers=()):
        self.start([m], ep=ep)
        r = self.client(self.rr.port).request("GET", "/echo", headers=list(headers))
        self.assertEqual(r.status, 200, r)
        return {k.lower(): v for k, v in r.json()["headers"].items()}

    def test_remaining_time_forwarded(self):
        h = self.echoed(self.mock("d1"), headers=[("X-Request-Timeout-Ms", "5000")])
        v = h.get("x-request-timeout-ms")
        self.assertIsNotNone(v, h)
        self.assertRegex(v, r"^\d+$", h)      # one header, our value
        self.assertTrue(4000 < int(v) <= 5000, h)

    def test_endpoint_timeout_forwarded(self):
        h = self.echoed(self.mock("d1"), ep={"timeout_ms": 3000})
        self.assertTrue(2000 < int(h["x-request-timeout-ms"]) <= 3000, h)

    def test_no_deadline_no_header(self):
        h = self.echoed(self.mock("d1"))
        self.assertNotIn("x-request-timeout-ms", h)

    def test_custom_header(self):
        h = self.echoed(self.mock("d1"), ep={"timeout_header": "X-Deadline-Ms"},
                        headers=[("X-Deadline-Ms", "4000"), ("X-Request-Timeout-Ms", "99999")])
        self.assertTrue(3000 < int(h["x-request-timeout-ms"]) <= 4000, h)

    def test_held_body_endpoint_deadline(self):
        """Routed by the body's model (a held body): the deadline is the
        endpoint's the model chose, and its head is closed with the time left."""
        m = self.mock("d1")
        cfg = {"backends": {"b": backend([m])},
               "endpoints": {"em": endpoint("/", {"b": 1.0}, models=["m"], timeout_ms=3000),
                             "any": endpoint("/", {"b": 1.0})}}
        self.rr = self.ringroute(cfg, shards=self.SHARDS, admin=True)
        for model, want in (("m", True), ("other", False)):
            body = ('{"model": "%s", "prompt": "hi"}' % model).encode()
            r = self.client(self.rr.port).request("POST", "/v1/completions", body=body,
                                                  headers=[("Content-Type", "application/json")])
            self.assertEqual(r.status, 200, r)
            h = {k.lower(): v for k, v in r.json()["headers"].items()}
            if want:
                self.assertTrue(2000 < int(h["x-request-timeout-ms"]) <= 3000, h)
            else:
                self.assertNotIn("x-request-timeout-ms", h)
            self.assertEqual(r.json()["body_len"], len(body), r)

    def test_bounds_upstream_timeout(self):
        m = self.mock("d1")
        self.start([m], request_timeout_ms=10000)
        t = time.monotonic()
        r = self.client(self.rr.port).request("GET", "/slow",
                                              headers=[("X-Request-Timeout-Ms", "300"),
                                                       ("X-Mock-Delay-Ms", "3000")])
        took = time.monotonic() - t
        # a 504 at all is the bound: unbounded, the 3 s reply would be a 200
        self.assertErrorJSON(r, 504, "e")
        self.assertGreaterEqual(took, 0.28, took)
        self.assertLess(took, 2.9, took)


class CapMixTest(DeadlineCase):
    CLIENTS = 24
    PER = 3

    def test_caps_hold(self):
        ms = [self.mock("c%d" % i, delay_ms=20, jitter_ms=10) for i in (1, 2)]
        self.start(ms, ep={"fairness_header": "X-Tenant", "max_queued_per_tenant": 20},
                   max_ongoing_requests=2, max_queued_requests=16)
        conns = [harness.Client(self.rr.port, timeout=30) for _ in range(self.CLIENTS)]
        self._clients.extend(conns)
        rnd = random.Random(12)
        plans = [[(rnd.choice(["-1", "0", "1", "5"]), rnd.choice(["a", "b", "c"]),
                   rnd.choice([None, "50", "5000"])) for _ in range(self.PER)]
                 for _ in range(self.CLIENTS)]
        allowed = {200, 503, 504}

        def worker(k):
            for i, (prio, tenant, tmo) in enumerate(plans[k]):
                hs = [("X-Request-Priority", prio), ("X-Tenant", tenant)]
                if tmo:
                    hs.append(("X-Request-Timeout-Ms", tmo))
                r = conns[k].request("GET", "/mix/%d/%d" % (k, i), headers=hs)
                if r.status not in allowed:
                    return "client %d req %d: %r" % (k, i, r)
                if r.status != 200 and r.header("connection") == "close":
                    conns[k] = harness.Client(self.rr.port, timeout=30)
                    self._clients.append(conns[k])

        seen, done = [], threading.Event()

        def watch():  # max_queued_requests holds too, however they are evicted
            while not done.is_set():
                seen.append(self.queued())
        w = threading.Thread(target=watch, daemon=True)
        w.start()
        try:
            self.run_clients(self.CLIENTS, worker)
        finally:
            done.set()
            w.join(10)
        self.assertTrue(seen and max(seen) <= 16, max(seen or [None]))
        for m in ms:
            st = m.stats()
            self.assertLessEqual(st["max_inflight"], 2, (m.id, st))
        self.wait_queued(0)


class QueuedDeadlineShards2Test(QueuedDeadlineTest):
    SHARDS = 2


class UnreachableShards2Test(UnreachableTest):
    SHARDS = 2


class ForwardShards2Test(ForwardTest):
    SHARDS = 2


class CapMixShards2Test(CapMixTest):
    SHARDS = 2


if __name__ == "__main__":
    harness.main()
