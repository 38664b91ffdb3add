#!/usr/bin/env python3
"""Connect retries while the only other replica is at its cap and the queue
is full: the retry finds no slot and no queue room, the request is answered
(503) from inside the retry, and nothing may touch it afterwards (today a
use-after-free: with the ASan build, RR_BUILD=build-asan, ringroute aborts).

Two replicas, one good (mock-replica), one that never accepts: a listening
socket with listen(0) whose accept queue is already full (filled by this
test with connects that are never accepted), so ringroute's connects hang
until connect_timeout_ms. max_ongoing_requests 1, max_queued_requests 1,
connect_timeout_ms 500, retries 2, one shard, 4 concurrent clients: every
client gets one complete response (200 from the good replica, 503 with
Retry-After, 502 or 504), the counts add up to 4, and ringroute stays alive
(answers afterwards, no sanitizer report). Several rounds with different
orderings; the same with a refused port instead (the immediate failure)."""

import collections
import os
import select
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, build_request, endpoint, free_port  # noqa: E402

CLIENT_TIMEOUT = 15.0


class HangingListener:
    """A loopback port where connect() hangs: listen(0), accept queue filled
    with connections that are never accepted. Verified on this kernel: one
    more connect does not complete within `probe` seconds."""

    def __init__(self, probe=0.3, max_fill=8):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(0)
        self.port = self.lsock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.fillers = []
        self.ok = False
        for _ in range(max_fill):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", self.port))
            _, w, _ = select.select([], [s], [], probe)
            self.fillers.append(s)
            if not w:
                self.ok = True  # this connect hangs: the queue is full
                break
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                break  # refused: not the behaviour wanted

    def close(self):
        for s in self.fillers:
            s.close()
        self.lsock.close()


class RetrySafetyTest(harness.RRTestCase):
    ROUNDS = [
        # (name, method, mock delay ms, stagger ms between client starts)
        ("all at once", "GET", 0, 0),
        ("all at once, slow good replica", "GET", 300, 0),
        ("staggered, good replica slower than the connect timeout", "GET", 800, 100),
        ("POST bodies, all at once", "POST", 0, 0),
        ("staggered 30 ms", "GET", 50, 30),
        ("POST bodies, staggered, slow", "POST", 600, 150),
    ]

    def start(self, bad_addr, policy):
        self.good = self.mock("good")
        self.probe_m = self.mock("probe")
        cfg = {
            "backends": {
                "b": backend({"bad": bad_addr, "good": self.good.addr},
                             max_ongoing_requests=1, max_queued_requests=1,
                             connect_timeout_ms=500, retries=2, queue_timeout_ms=3000,
                             policy=policy),
                "probe": backend([self.probe_m]),
            },
            "endpoints": {
                "probe": endpoint("/probe", {"probe": 1.0}),
                "any": endpoint("/", {"b": 1.0}),
            },
        }
        self.rr = self.ringroute(cfg, shards=1)

    def one_round(self, name, method, delay, stagger, n=4):
        results = [None] * n
        barrier = threading.Barrier(n)

        def worker(k):
            barrier.wait(5)
            if stagger:
                time.sleep(k * stagger / 1000.0)  # varies the ordering; not synchronisation
            c = harness.Client(self.rr.port, timeout=CLIENT_TIMEOUT)
            try:
                body = (b"b%d" % k) * 100 if method == "POST" else None
                c.send(build_request(method, "/r/%d" % k,
                                     [("X-Mock-Delay-Ms", str(delay))], body))
                r = c.read_response()
                results[k] = r
                if r.status == 200:
                    if r.json().get("id") != "good":
                        return "client %d: 200 not from the good replica: %r" % (k, r)
                elif r.status == 503:
                    if r.header("retry-after") is None:
                        return "client %d: 503 without Retry-After: %r" % (k, r)
                    self.assertErrorJSON(r, 503)
                elif r.status in (502, 504):
                    self.assertErrorJSON(r, r.status)
                else:
                    return "client %d: unexpected %r" % (k, r)
                return None
            finally:
                c.close()

        errors = []

        def run(k):
            try:
                e = worker(k)
            except Exception as ex:
                e = "client %d: %s: %s" % (k, type(ex).__name__, ex)
            if e:
                errors.append(e)

        ts = [threading.Thread(target=run, args=(k,)) for k in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(CLIENT_TIMEOUT + 10)
        hung = [k for k, t in enumerate(ts) if t.is_alive()]
        counts = collections.Counter(r.status for r in results if r is not None)
        print("round %r: %s" % (name, dict(sorted(counts.items()))), file=sys.stderr)
        rep = self.rr.sanitizer_report()
        self.assertIsNone(rep, "round %r: sanitizer report:\n%s" % (name, rep))
        self.assertTrue(self.rr.alive(), "round %r: ringroute died (rc %s)\n%s" %
                        (name, self.rr.p.poll(), self.rr.stderr_tail()))
        self.assertEqual(hung, [], "round %r: clients hung" % name)
        self.assertEqual(errors, [], "round %r" % name)
        self.assertEqual(sum(counts.values()), n, "round %r: %r" % (name, counts))
        # ringroute still answers
        r = harness.http_once(self.rr.port, "GET", "/probe/after", timeout=5)
        self.assertEqual(r.status, 200, "round %r: after: %r" % (name, r))
        self.assertEqual(r.json()["id"], "probe", r)

    def run_rounds(self, bad_addr, policy):
        self.start(bad_addr, policy)
        for name, method, delay, stagger in self.ROUNDS:
            self.one_round(name, method, delay, stagger)
        err = self.rr.stderr()
        self.assertNotIn("AddressSanitizer", err)
        self.assertNotIn("runtime error", err)

    def hanging(self):
        h = HangingListener()
        self.addCleanup(h.close)
        if not h.ok:
            self.skipTest("cannot make connect() hang on this kernel (listen(0) + full queue)")
        return h

    def test_connect_timeout_retry_p2c(self):
        self.run_rounds(self.hanging().addr, "p2c")

    def test_connect_timeout_retry_round_robin(self):
        self.run_rounds(self.hanging().addr, "round_robin")

    def test_connect_refused_retry_p2c(self):
        self.run_rounds("127.0.0.1:%d" % free_port(), "p2c")

    def test_connect_refused_retry_round_robin(self):
        self.run_rounds("127.0.0.1:%d" % free_port(), "round_robin")


if __name__ == "__main__":
    harness.main()
