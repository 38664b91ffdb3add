#!/usr/bin/env python3
"""Global concurrency cap (issue 3, "Global cap"; docs/config.md
"max_ongoing_requests").

max_ongoing_requests holds across all shards: the number of requests in
flight to one replica, counted over the whole process, never exceeds it,
cap 1 included. 64 keep-alive client connections (spread over the shards by
SO_REUSEPORT) send at once through --shards 2 and --shards 4 to two
mock-replicas with 20-40 ms service time; each replica's highest in-flight
count (mock-replica GET /-/stats "max_inflight") must stay <= the cap, every
request must get its own 200, and every request must reach a replica once.
"""

import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint  # noqa: E402

CLIENTS = 64
PER_CLIENT = 2


class CapTest(harness.RRTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mocks = [cls.mock_cls("cap%d" % i, delay_ms=30, jitter_ms=10) for i in (1, 2)]

    def run_cap(self, shards, cap):
        for m in self.mocks:
            m.reset_stats()
        cfg = {"backends": {"b": backend(self.mocks, max_ongoing_requests=cap,
                                         max_queued_requests=4096,
                                         queue_timeout_ms=60000)},
               "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        rr = self.ringroute(cfg, shards=shards)
        conns = [harness.Client(rr.port, timeout=30) for _ in range(CLIENTS)]
        self._clients.extend(conns)
        go = threading.Barrier(CLIENTS)

        def worker(k):
            go.wait(10)
            for i in range(PER_CLIENT):
                path = "/cap/%d/%d/%d" % (cap, k, i)
                r = conns[k].request("GET", path)
                if r.status != 200:
                    return "client %d req %d: %r" % (k, i, r)
                j = r.json()
                if j["path"] != path or j["id"] not in ("cap1", "cap2"):
                    return "client %d req %d: wrong answer %r" % (k, i, r)

        self.run_clients(CLIENTS, worker)
        stats = {m.id: m.stats() for m in self.mocks}
        for id, st in stats.items():
            self.assertLessEqual(st["max_inflight"], cap,
                                 "replica %s saw %d requests at once, cap %d (shards %d): %r"
                                 % (id, st["max_inflight"], cap, shards, stats))
            self.assertEqual(st["inflight"], 0, stats)
        self.assertEqual(sum(st["served"] for st in stats.values()), CLIENTS * PER_CLIENT, stats)
        # the load was enough to reach the cap: the bound above was tested
        self.assertEqual(max(st["max_inflight"] for st in stats.values()), cap, stats)

    def test_shards2_cap1(self):
        self.run_cap(2, 1)

    def test_shards4_cap1(self):
        self.run_cap(4, 1)

    def test_shards2_cap3(self):
        self.run_cap(2, 3)

    def test_shards4_cap3(self):
        self.run_cap(4, 3)


if __name__ == "__main__":
    harness.main()
