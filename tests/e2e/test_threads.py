#!/usr/bin/env python3
"""What crosses threads: shards, the control thread and the admin readers.

Two shards serve a steady load while the control socket keeps replacing a
replica with a new one (each new replica gets fresh per-shard pools, created
by a shard on its first request to it) and a reader keeps fetching /metrics,
/v1/stats and /v1/queues from the admin port (the control thread walks every
shard's pools and counters). Every request must get its 200 from an allowed
replica, every admin read a 200.

The test is meant for the ThreadSanitizer build (tools/test runs it in
build-tsan/): there a data race between those threads is reported and the
harness fails the test on the report. Before the fix in upstream.c, a shard
published a new pool through a plain pointer that the control thread read
(ThreadSanitizer: data race in pool_of / replica_counts). In the other builds it
is one more concurrency test."""

import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint  # noqa: E402

WORKERS = 4
SWAPS = 24          # replica replacements
PER_SWAP = 40       # requests the workers complete between two swaps


class ThreadsTest(harness.RRTestCase):

    def worker(self):
        c = self.client(self.rr.port)
        while not self.stop.is_set():
            try:
                r = c.request("GET", "/t")
            except harness.ConnectionClosed:
                try:
                    c = self.client(self.rr.port)
                except OSError as e:  # ringroute is gone (a sanitizer stops it)
                    with self.cv:
                        self.bad.append("connect: %s" % e)
                        self.cv.notify_all()
                    return
                continue
            with self.cv:
                if r.status != 200 or r.header("X-Mock-Id") not in self.ids:
                    self.bad.append(repr(r))
                self.done += 1
                self.cv.notify_all()

    def reader(self):
        n = 0
        while not self.stop.is_set():
            for path in ("/metrics", "/v1/stats", "/v1/queues"):
                try:
                    r = harness.http_once(self.rr.admin_port, "GET", path)
                except (OSError, harness.ConnectionClosed) as e:
                    r = e
                if not isinstance(r, harness.Response) or r.status != 200:
                    with self.cv:
                        self.bad.append("%s: %r" % (path, r))
                        self.cv.notify_all()
                    return
            n += 1
        self.reads = n

    def wait_done(self, n):
        with self.cv:
            target = self.done + n
            ok = self.cv.wait_for(lambda: self.done >= target or self.bad, 30)
        self.assertTrue(ok, "workers stalled at %d requests" % self.done)
        self.assertEqual(self.bad, [])

    def test_swaps_under_load_and_reads(self):
        mocks = [self.mock("m%d" % i) for i in range(3)]
        self.ids = {m.id for m in mocks}
        cfg = {"backends": {"B": backend({"r0": mocks[0].addr})},
               "endpoints": {"t": endpoint("/t", {"B": 1.0})}}
        sock = harness.control_sock_path()
        self.rr = self.ringroute(cfg, shards=2, admin=True, extra=["--control", sock])
        ctl = self.unix_client(sock)
        self.cv = threading.Condition()
        self.done = 0
        self.bad = []
        self.reads = 0
        self.stop = threading.Event()
        threads = [threading.Thread(target=self.worker, daemon=True) for _ in range(WORKERS)]
        threads.append(threading.Thread(target=self.reader, daemon=True))
        for t in threads:
            t.start()
        try:
            self.wait_done(PER_SWAP)
            for i in range(1, SWAPS + 1):
                new, old = "r%d" % i, "r%d" % (i - 1)
                r = ctl.request("PUT", "/v1/backends/B/replicas/" + new,
                                None, harness.json_body(mocks[i % 3].addr))
                self.assertEqual(r.status, 200, r)
                r = ctl.request("DELETE", "/v1/backends/B/replicas/" + old)
                self.assertEqual(r.status, 200, r)
                self.wait_done(PER_SWAP)
        finally:
            self.stop.set()
            for t in threads:
                t.join(30)
        self.assertEqual(self.bad, [])
        self.assertGreater(self.reads, 0)


if __name__ == "__main__":
    harness.main()
