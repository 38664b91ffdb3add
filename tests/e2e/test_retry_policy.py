#!/usr/bin/env python3
"""Retries that cannot amplify an outage (docs/ARCHITECTURE.md "Retries",
docs/config.md retry_on, retry_budget_percent), with real processes and
replicas in this process (harness.RawUpstream) that refuse, reset, answer
503 or 429 (with Retry-After), or hold requests:

* a connect failure is retried on another replica;
* a reset before the response is retried for GET, not for POST (it may
  have run);
* retry_on ["503"] / ["429"]: the client gets the other replica's 200 and
  never sees the 503 / 429; without it the replica's answer goes to the
  client as is;
* a replica's Retry-After keeps it out of the choice for that long, then
  it gets requests again;
* at most `retries` tries after the first, each on another replica, spaced
  by the backoff;
* the retry budget: with many concurrent failing requests, retries in
  flight stay within retry_budget_percent of the requests (floor 3), the
  rest get the replica's failure, counted in
  ringroute_retry_budget_exhausted_total and /v1/stats.
Every replica knows an attempt by its X-Request-Id (ringroute forwards the
same one on every try)."""

import collections
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint, free_port, wait_for  # noqa: E402

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-From: %s\r\n\r\nok"


def answer(status, who, extra=b""):
    reason = {200: b"OK", 503: b"Service Unavailable", 429: b"Too Many Requests"}[status]
    body = b"from " + who
    return (b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nX-From: %s\r\n%s\r\n"
            % (status, reason, len(body), who, extra)) + body


class Replica(harness.RawUpstream):
    """A RawUpstream that records (time, X-Request-Id, method) of every
    request and answers with fn(req) (bytes, or None: close unanswered)."""

    def __init__(self, name, fn, hold=0.0):
        self.name = name.encode()
        self.log = []
        self.lock = threading.Lock()
        self.inflight = 0
        self.fn = fn
        self.hold = hold
        super().__init__(self._answer)

    def _answer(self, req):
        with self.lock:
            self.log.append((time.monotonic(), req["hdict"].get("x-request-id"), req["method"]))
            self.inflight += 1
        try:
            if self.hold:
                time.sleep(self.hold)
            return self.fn(req)
        finally:
            with self.lock:
                self.inflight -= 1

    def count(self, method=None):
        with self.lock:
            return sum(1 for e in self.log if method is None or e[2] == method)


class RetryPolicyTest(harness.RRTestCase):
    def replica(self, name, fn, hold=0.0):
        return self.upstream(Replica(name, fn, hold))

    def start(self, replicas, **kw):
        reps = {r.name.decode(): r.addr for r in replicas if isinstance(r, Replica)}
        reps.update({k: v for r in replicas if isinstance(r, tuple) for k, v in [r]})
        kw.setdefault("policy", "round_robin")
        # Retries alone: outlier ejection would take the failing replicas
        # out after a few failures (test_outlier.py tests it beside retries).
        kw.setdefault("outlier_detection", {"consecutive_failures": 0})
        cfg = {"backends": {"b": backend(reps, **kw)},
               "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        return self.ringroute(cfg, admin=True)

    def stats(self, rr):
        return harness.http_once(rr.admin_port, "GET", "/v1/stats").json()["backends"]["b"]

    def metric(self, rr, name):
        text = harness.http_once(rr.admin_port, "GET", "/metrics").body.decode()
        for n, labels, v in harness.parse_metrics(text):
            if n == name and labels.get("backend") == "b":
                return v
        self.fail("no %s{backend=b} in /metrics" % name)

    def get(self, rr, method="GET", n=1):
        out = []
        for _ in range(n):
            body = b"x" if method == "POST" else None
            out.append(harness.http_once(rr.port, method, "/p", body=body))
        return out

    def test_connect_failure_retried_on_another_replica(self):
        good = self.replica("good", lambda r: OK % b"good")
        rr = self.start([good, ("dead", "127.0.0.1:%d" % free_port())], retries=2)
        rs = self.get(rr, n=10)
        self.assertEqual([r.status for r in rs], [200] * 10)
        st = self.stats(rr)
        self.assertGreaterEqual(st["retries"], 1, st)  # round robin: half went to dead first
        self.assertEqual(st["retry_budget_exhausted"], 0)
        self.assertEqual(self.metric(rr, "ringroute_retries_total"), st["retries"])

    def test_reset_before_response_get_retried_post_not(self):
        good = self.replica("good", lambda r: OK % b"good")
        reset = self.replica("reset", lambda r: None)
        rr = self.start([good, reset], retries=1)
        rs = self.get(rr, "GET", n=8)
        self.assertEqual([r.status for r in rs], [200] * 8)
        self.assertGreaterEqual(reset.count("GET"), 1)
        rs = self.get(rr, "POST", n=8)
        bad = [r for r in rs if r.status != 200]
        # Every POST that met the reset replica got its failure (502), none
        # was sent again: the replica may have run it.
        self.assertGreaterEqual(reset.count("POST"), 1)
        self.assertEqual(len(bad), reset.count("POST"), [r.status for r in rs])
        self.assertEqual({r.status for r in bad}, {502})
        self.assertEqual(good.count("POST"), 8 - len(bad))

    def check_status_retry(self, status):
        code = str(status)
        good = self.replica("good", lambda r: OK % b"good")
        busy = self.replica("busy", lambda r: answer(status, b"busy"))
        rr = self.start([good, busy], retries=1, retry_on=[code])
        rs = self.get(rr, n=8)
        self.assertEqual([(r.status, r.header("x-from")) for r in rs], [(200, "good")] * 8)
        self.assertGreaterEqual(busy.count(), 1)
        self.assertEqual(self.stats(rr)["retries"], busy.count())
        rr.stop()
        # Without it in retry_on the replica's answer goes to the client as is.
        rr = self.start([good, busy], retries=1)
        rs = self.get(rr, n=8)
        got = collections.Counter((r.status, r.header("x-from")) for r in rs)
        self.assertEqual(set(got), {(200, "good"), (status, "busy")}, got)
        self.assertTrue(all(r.body == b"from busy" for r in rs if r.status == status))
        self.assertEqual(self.stats(rr)["retries"], 0)

    def test_503_retried_only_with_retry_on(self):
        self.check_status_retry(503)

    def test_429_retried_only_with_retry_on(self):
        self.check_status_retry(429)

    def test_retry_after_keeps_replica_out(self):
        first = []

        def slow_down(req):
            if not first:
                first.append(time.monotonic())
                return answer(503, b"a", b"Retry-After: 2\r\n")
            return OK % b"a"

        a = self.replica("a", slow_down)
        b = self.replica("b", lambda r: OK % b"b")
        rr = self.start([a, b], retries=1, retry_on=["503"])
        # The first request to a gets its 503: retried on b.
        wait_for(lambda: self.get(rr)[0].status == 200 and first, what="a's 503")
        out = self.stats(rr)["replicas"]["a"]["retry_after_ms"]
        self.assertGreater(out, 1000)
        self.assertLessEqual(out, 2000)
        # Meanwhile every request goes to b; then a gets one again.
        n_before = b.count()
        sent = 0
        while a.count() < 2:
            r = self.get(rr)[0]
            self.assertEqual(r.status, 200, r)
            sent += 1
            self.assertLess(time.monotonic() - first[0], 10, "a never came back")
        gap = a.log[1][0] - first[0]
        self.assertGreaterEqual(gap, 1.9, "a got a request %.3f s after Retry-After: 2" % gap)
        self.assertLess(gap, 4.0)
        self.assertGreaterEqual(b.count() - n_before, sent - 1)
        self.assertEqual(self.stats(rr)["replicas"]["a"]["retry_after_ms"], 0)

    def test_at_most_retries_tries_each_on_another_replica_spaced(self):
        reps = [self.replica("r%d" % i, lambda r, i=i: answer(503, b"r%d" % i)) for i in range(4)]
        rr = self.start(reps, retries=2, retry_on=["503"])
        rs = self.get(rr, n=6)
        self.assertEqual({r.status for r in rs}, {503})  # the last try's answer
        tries = collections.defaultdict(list)
        for rep in reps:
            for t, rid, _ in rep.log:
                tries[rid].append((t, rep.name))
        self.assertEqual(len(tries), 6, tries.keys())
        for rid, ts in tries.items():
            ts.sort()
            self.assertEqual(len(ts), 3, (rid, ts))  # the first try and 2 retries
            self.assertEqual(len({who for _, who in ts}), 3, (rid, ts))  # 3 replicas
            # backoff: RETRY_BACKOFF_BASE_MS (20) * attempt, upper half
            # jittered: at least 10 ms, then 20 ms (a little slack for the
            # timer wheel's millisecond)
            self.assertGreaterEqual(ts[1][0] - ts[0][0], 0.009, ts)
            self.assertGreaterEqual(ts[2][0] - ts[1][0], 0.019, ts)
        self.assertEqual(self.stats(rr)["retries"], 12)

    def test_retry_budget_bounds_retries_in_flight(self):
        n = 30
        # Both replicas hold every request 300 ms, then answer 503.
        reps = [self.replica("r%d" % i, lambda r, i=i: answer(503, b"r%d" % i), hold=0.3)
                for i in range(2)]
        rr = self.start(reps, retries=3, retry_on=["503"], retry_budget_percent=20)
        statuses = []

        def client(k):
            r = harness.http_once(rr.port, "GET", "/p/%d" % k, timeout=30)
            statuses.append(r.status)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(len(statuses), n)
        self.assertEqual(set(statuses), {503})
        # What the replicas saw: every try, by id, in time order.
        events = []
        for rep in reps:
            for t, rid, _ in rep.log:
                events.append((t, rid))
        events.sort()
        by_id = collections.Counter(rid for _, rid in events)
        self.assertEqual(len(by_id), n)
        retries = sum(c - 1 for c in by_id.values())
        st = self.stats(rr)
        self.assertEqual(st["retries"], retries)
        # Retries in flight: a request holds its share of the budget from
        # its first retry to its end; at the replicas that is seen as from
        # its second try's arrival to its last try's answer (0.3 s after
        # it arrived). 20 % of at most 30 in flight is 6 (the floor, 3, is
        # lower): never more at once, however the arrivals spread.
        spans = collections.defaultdict(list)
        for t, rid in events:
            spans[rid].append(t)
        edges = []
        for rid, ts in spans.items():
            if len(ts) > 1:
                edges += [(ts[1], 1), (ts[-1] + 0.3, -1)]
        edges.sort()
        cur = peak = 0
        for _, d in edges:
            cur += d
            peak = max(peak, cur)
        self.assertGreaterEqual(peak, 1)
        self.assertLessEqual(peak, 6, spans)
        self.assertGreaterEqual(st["retry_budget_exhausted"], 1)
        self.assertEqual(self.metric(rr, "ringroute_retry_budget_exhausted_total"),
                         st["retry_budget_exhausted"])
        # The load on the failing backend: far from the 4 x n tries that
        # retries 3 would make without a budget.
        self.assertLess(len(events), 2 * n)
        # Each request that was never retried was refused once.
        self.assertEqual(st["retry_budget_exhausted"],
                         sum(1 for ts in spans.values() if len(ts) == 1))


if __name__ == "__main__":
    harness.main()
