#!/usr/bin/env python3
"""Zero errors during change (issue 4, must-have 4).

16 client threads keep keep-alive connections to ringroute busy, every request
with a unique path that the mock replica echoes back, while the test changes
the configuration through the control socket: replicas added and removed, an
endpoint's traffic moved 100/0 -> 75/25 -> 50/50 -> 25/75 -> 0/100, a replica
removed while requests are in flight on it (they finish with 200, no new one
reaches it), a backend's max_ongoing_requests changed, backends and endpoints
added and removed. Every request must get a 200 with the replica's correct
body, except a request for an endpoint that was deleted at the time, which gets
ringroute's 404.

Run once with --shards 2 and once with --shards 1. Pacing between changes waits
for the clients to complete a number of requests (a signal), not for time."""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint  # noqa: E402

WORKERS = 16
SLOW_DELAY_MS = 300
SLOW_INFLIGHT = 8
# A change is acknowledged once every shard has been sent the new snapshot; a
# shard swaps at its next loop turn. A 404 for the dynamic endpoint is accepted
# from the moment its DELETE is sent until this long after the PUT that brings
# it back was acknowledged.
PROPAGATION_S = 0.25
# Requests the clients complete between two changes: PACE x 50 (x 3 to x 6).
PACE = int(os.environ.get("RR_LIVE_PACE", "8"))
STEP = 50 * PACE


class Progress:
    """Count of completed data-path requests; wait_more(n) blocks until n more
    have completed (the controller's pacing signal)."""

    def __init__(self):
        self.n = 0
        self.cv = threading.Condition()

    def add(self):
        with self.cv:
            self.n += 1
            self.cv.notify_all()

    def wait_more(self, n, timeout=20.0):
        with self.cv:
            target = self.n + n
            if not self.cv.wait_for(lambda: self.n >= target, timeout):
                raise AssertionError("clients completed only %d of %d requests in %.0f s"
                                     % (self.n - (target - n), n, timeout))


class LiveChangeTest(harness.RRTestCase):

    def ctl(self, method, path, body=None):
        with self.ctl_lock:
            return self.ctl_conn.request(method, path, None, harness.json_body(body))

    def change(self, method, path, body=None):
        """One change; must be acknowledged with 200 and a version. Returns the
        monotonic time of the acknowledgement."""
        r = self.ctl(method, path, body)
        self.assertEqual(r.status, 200, "%s %s -> %r" % (method, path, r))
        self.assertIsInstance(r.json().get("version"), int, r)
        self.changes += 1
        return time.monotonic()

    # ------------------------------------------------------------------ workers

    def worker(self, wid):
        """Loops over the endpoints until stop is set, on one keep-alive
        connection (a new one only if ringroute closed it, which is counted
        as a failure by the request that saw it)."""
        c = None
        n = 0
        kinds = ("split", "a", "split", "dyn", "a_post", "split_post", "a", "dyn")
        while not self.stop.is_set():
            kind = kinds[(n + wid) % len(kinds)]
            n += 1
            base = {"split": "/split", "a": "/a", "dyn": "/dyn", "a_post": "/a",
                    "split_post": "/split"}[kind]
            path = "%s/w%d/%d?k=%d" % (base, wid, n, n)
            method, body = "GET", None
            if kind.endswith("_post"):
                method = "POST"
                body = (b"w%d-%d;" % (wid, n)) * (1 + n % 7)
            t0 = time.monotonic()
            r, err = None, None
            try:
                if c is None:
                    c = harness.Client(self.rr.port, timeout=10)
                r = c.request(method, path, [("Content-Type", "text/plain")] if body else None,
                              body)
            except Exception as e:  # noqa: BLE001  (recorded, reported at the end)
                err = "%s: %s" % (type(e).__name__, e)
                if c is not None:
                    c.close()
                c = None
            t1 = time.monotonic()
            self.check(base, method, path, body, r, err, t0, t1)
            self.progress.add()
        if c is not None:
            c.close()

    def check(self, base, method, path, body, r, err, t0, t1):
        """Classifies one exchange; failures keep the request and the bytes."""
        what = "%s %s" % (method, path)
        if err is not None:
            self.fail_req(what, "no response: " + err)
            return
        if r.status == 404 and base == "/dyn":
            try:
                j = r.json()
            except AssertionError as e:
                self.fail_req(what, str(e))
                return
            if j.get("endpoint") is not None or not isinstance(j.get("error"), str):
                self.fail_req(what, "404 without ringroute's error body: %r" % r.raw()[:600])
                return
            with self.lock:
                self.dyn404.append((t0, t1, what, r.raw()[:300]))
                self.totals["404"] += 1
            return
        if r.status != 200:
            self.fail_req(what, "status %s: %r" % (r.status, r.raw()[:600]))
            return
        try:
            j = json.loads(r.body)
        except ValueError:
            self.fail_req(what, "200 with a body that is not the mock's JSON: %r"
                          % r.raw()[:600])
            return
        want_len = len(body) if body else 0
        mid = j.get("id")
        if (j.get("path") != path or j.get("method") != method or
                j.get("body_len") != want_len or mid not in self.allowed[base] or
                r.header("X-Mock-Id") != mid):
            self.fail_req(what, "wrong answer (want path %r method %s body_len %d, a replica "
                          "of %s): %r" % (path, method, want_len, sorted(self.allowed[base]),
                                          r.raw()[:600]))
            return
        with self.lock:
            self.totals["200"] += 1
            if base == "/split":
                self.split_log.append((t0, t1, mid))

    def fail_req(self, what, why):
        with self.lock:
            self.totals["failed"] += 1
            if len(self.failures) < 20:
                self.failures.append("%s -> %s" % (what, why))

    # ------------------------------------------------------------------ slow drain

    def drain_slow_replica(self):
        """Removes replica s1 (the 300 ms mock) of backend S while SLOW_INFLIGHT
        requests are in flight on it: they finish with 200 from it, and no
        request sent afterwards reaches it."""
        results = [None] * SLOW_INFLIGHT

        def one(i):
            path = "/slow/inflight/%d" % i
            try:
                with harness.Client(self.rr.port, timeout=10) as c:
                    results[i] = (path, c.request("GET", path), None)
            except Exception as e:  # noqa: BLE001
                results[i] = (path, None, "%s: %s" % (type(e).__name__, e))

        ts = [threading.Thread(target=one, args=(i,)) for i in range(SLOW_INFLIGHT)]
        for t in ts:
            t.start()
        # Signal: the replica itself says it holds all of them.
        deadline = time.monotonic() + 10
        while self.slow.stats()["inflight"] < SLOW_INFLIGHT:
            self.assertLess(time.monotonic(), deadline,
                            "slow replica never had %d requests in flight: %r"
                            % (SLOW_INFLIGHT, self.slow.stats()))
            time.sleep(0.01)
        # A fast replica joins, then the slow one is removed with 8 in flight.
        self.change("PUT", "/v1/backends/S/replicas/s2", self.a1.addr)
        self.change("DELETE", "/v1/backends/S/replicas/s1")
        st = self.slow.stats()
        self.assertGreater(st["inflight"], 0,
                           "the in-flight requests finished before the removal: %r" % st)
        for t in ts:
            t.join(15)
        for path, r, err in results:
            self.assertIsNone(err, "in-flight request %s on the removed replica: %s"
                              % (path, err))
            self.assertEqual(r.status, 200, "in-flight %s: %r" % (path, r))
            j = r.json()
            self.assertEqual((j["id"], j["path"]), ("slow", path), r)
        st = self.slow.stats()
        self.assertEqual(st["inflight"], 0, st)
        self.assertEqual(st["served"], SLOW_INFLIGHT,
                         "the slow replica served more than the requests in flight at "
                         "its removal: %r" % st)
        # New requests go to s2 only; the removed replica's served stays put.
        for i in range(20):
            path = "/slow/after/%d" % i
            r = harness.http_once(self.rr.port, "GET", path, timeout=10)
            self.assertEqual(r.status, 200, r)
            self.assertEqual((r.json()["id"], r.json()["path"]), ("a1", path), r)
        self.assertEqual(self.slow.stats()["served"], SLOW_INFLIGHT,
                         "a request reached the removed replica")
        self.slow_checked = True

    # ------------------------------------------------------------------ scenario

    def run_scenario(self, shards):
        self.a1 = self.mock("a1")
        self.a2 = self.mock("a2")
        self.b1 = self.mock("b1")
        self.b2 = self.mock("b2")
        self.slow = self.mock("slow", delay_ms=SLOW_DELAY_MS)
        cfg = {
            "backends": {
                "A": backend([self.a1, self.a2], max_ongoing_requests=100),
                "B": backend([self.b1]),
                "C": backend({"c1": self.b2.addr}),
                "S": backend({"s1": self.slow.addr}),
            },
            "endpoints": {
                "a": endpoint("/a", {"A": 1.0}),
                "split": endpoint("/split", {"A": 1.0, "B": 0.0}),
                "dyn": endpoint("/dyn", {"C": 1.0}),
                "slow": endpoint("/slow", {"S": 1.0}),
            },
        }
        self.sock = harness.control_sock_path()
        self.rr = self.ringroute(cfg, shards=shards, extra=["--control", self.sock])
        self.ctl_lock = threading.Lock()
        self.ctl_conn = self.unix_client(self.sock)
        self.allowed = {"/a": {"a1", "a2"}, "/split": {"a1", "a2", "b1", "b2"},
                        "/dyn": {"b2", "a2"}}
        self.lock = threading.Lock()
        self.totals = {"200": 0, "404": 0, "failed": 0}
        self.failures = []
        self.dyn404 = []
        self.split_log = []
        self.dyn_absent = []    # [t_delete_sent, t_put_acked + PROPAGATION_S]
        self.changes = 0
        self.slow_checked = False
        self.progress = Progress()
        self.stop = threading.Event()
        t_start = time.monotonic()
        ws = [threading.Thread(target=self.worker, args=(i,), daemon=True)
              for i in range(WORKERS)]
        for w in ws:
            w.start()
        split_acks = {}
        try:
            p = self.progress
            p.wait_more(6 * STEP)
            split_acks["100/0"] = time.monotonic()
            # Replicas: B gains one, A loses one and gets it back.
            self.change("PUT", "/v1/backends/B/replicas/b2", self.b2.addr)
            p.wait_more(3 * STEP)
            self.change("DELETE", "/v1/backends/A/replicas/a2")
            p.wait_more(3 * STEP)
            # Traffic of /split in steps.
            for a, b in ((0.75, 0.25), (0.5, 0.5), (0.25, 0.75), (0.0, 1.0)):
                split_acks["%d/%d" % (a * 100, b * 100)] = self.change(
                    "PUT", "/v1/endpoints/split", endpoint("/split", {"A": a, "B": b}))
                p.wait_more(4 * STEP)
            self.change("PUT", "/v1/backends/A/replicas/a2", self.a2.addr)
            p.wait_more(3 * STEP)
            # Caps: A down to 1 per replica (requests queue), then back up.
            reps = {"a1": self.a1.addr, "a2": self.a2.addr}
            self.change("PUT", "/v1/backends/A",
                        backend(reps, max_ongoing_requests=1))
            p.wait_more(4 * STEP)
            self.change("PUT", "/v1/backends/A",
                        backend(reps, max_ongoing_requests=3))
            p.wait_more(3 * STEP)
            # Drain a replica with requests in flight (traffic keeps flowing).
            self.drain_slow_replica()
            p.wait_more(2 * STEP)
            # Endpoints: /dyn goes away and comes back twice, on a new backend.
            for rnd in range(2):
                t_del = time.monotonic()
                self.change("DELETE", "/v1/endpoints/dyn")
                p.wait_more(3 * STEP)
                if rnd == 0:
                    self.change("PUT", "/v1/backends/D", backend({"d1": self.a2.addr}))
                    body = endpoint("/dyn", {"D": 1.0})
                else:
                    body = endpoint("/dyn", {"C": 1.0, "D": 1.0})
                t_ack = self.change("PUT", "/v1/endpoints/dyn", body)
                self.dyn_absent.append((t_del, t_ack + PROPAGATION_S))
                p.wait_more(3 * STEP)
            # An endpoint added and removed that no client uses; a backend removed.
            self.change("PUT", "/v1/endpoints/extra", endpoint("/extra", {"B": 1.0}))
            self.change("PUT", "/v1/endpoints/dyn", endpoint("/dyn", {"C": 1.0}))
            self.change("DELETE", "/v1/backends/D")
            self.change("DELETE", "/v1/endpoints/extra")
            p.wait_more(6 * STEP)
        finally:
            self.stop.set()
            for w in ws:
                w.join(15)
        elapsed = time.monotonic() - t_start

        # Every 404 was for /dyn while it was deleted.
        bad404 = [(what, raw) for t0, t1, what, raw in self.dyn404
                  if not any(t0 <= hi and t1 >= lo for lo, hi in self.dyn_absent)]
        # /split: only A before the first step, only B once 0/100 has propagated.
        before = [(t1, m) for t0, t1, m in self.split_log
                  if t1 < split_acks["100/0"] and m not in ("a1", "a2")]
        after = [(t0, m) for t0, t1, m in self.split_log
                 if t0 > split_acks["0/100"] + PROPAGATION_S and m not in ("b1", "b2")]
        # In between, each step's share of B is near its weight (the window
        # runs from one step's acknowledgement to the next's).
        steps = sorted(split_acks.items(), key=lambda kv: kv[1])
        shares = {}
        for (name, lo), (_, hi) in zip(steps, steps[1:]):
            ms = [m for t0, t1, m in self.split_log if lo < t0 and t1 < hi]
            if name != "100/0" and len(ms) >= 100:
                shares[name] = (sum(m in ("b1", "b2") for m in ms) / len(ms), len(ms))
        summary = ("shards %d: %.1f s, %d changes, %d requests: %d x 200, %d x 404 "
                   "(/dyn while deleted), %d failed; /split share of B per step: %s"
                   % (shards, elapsed, self.changes, sum(self.totals.values()),
                      self.totals["200"], self.totals["404"], self.totals["failed"],
                      ", ".join("%s %.2f (n=%d)" % (k, v[0], v[1])
                                for k, v in shares.items())))
        print("\n  " + summary, file=sys.stderr)
        self.assertEqual(self.failures, [], summary)
        self.assertEqual(self.totals["failed"], 0, summary)
        self.assertEqual(bad404, [], "404 for /dyn while it existed; " + summary)
        self.assertEqual(before, [], "/split at 100/0 answered by B")
        self.assertEqual(after, [], "/split at 0/100 answered by A")
        for name, (share, n) in shares.items():
            want = int(name.split("/")[1]) / 100.0
            self.assertLess(abs(share - want), 0.15,
                            "/split at %s: B answered %.2f of %d" % (name, share, n))
        self.assertTrue(self.slow_checked)
        self.assertGreater(self.totals["200"], 2000, summary)
        self.assertEqual(self.rr.stop(), 0, self.rr.stderr_tail())

    def test_shards_2(self):
        self.run_scenario(2)

    def test_shards_1(self):
        self.run_scenario(1)


if __name__ == "__main__":
    harness.main()
