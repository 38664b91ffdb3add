#!/usr/bin/env python3
"""Load-aware replica choice (issue 3, "Load-aware choice"; docs/config.md
"policy").

* p2c (the default): power of two choices on ongoing/max. Of two fast
  replicas (2 ms) and one ten times slower (20 ms), the slow one receives a
  small share (< 15%) of 600 requests sent by 16 concurrent keep-alive
  clients through --shards 2. (Blind choice would give it a third.)
* round_robin: with requests one at a time (every replica free) through one
  shard, 30 requests over 3 replicas visit them in a fixed cycle, 10 each.
"""

import collections
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint  # noqa: E402


class P2CTest(harness.RRTestCase):
    def test_slow_replica_gets_small_share(self):
        fast1 = self.mock("fast1", delay_ms=2)
        fast2 = self.mock("fast2", delay_ms=2)
        slow = self.mock("slow", delay_ms=20)
        cfg = {"backends": {"b": backend([fast1, slow, fast2], policy="p2c",
                                         max_ongoing_requests=16)},
               "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        rr = self.ringroute(cfg, shards=2)
        nclients, per = 16, 38
        counts = collections.Counter()
        lock = threading.Lock()

        def worker(k):
            with harness.Client(rr.port, timeout=15) as c:
                for i in range(per):
                    path = "/p2c/%d/%d" % (k, i)
                    r = c.request("GET", path)
                    if r.status != 200 or r.json()["path"] != path:
                        return "client %d req %d: %r" % (k, i, r)
                    with lock:
                        counts[r.json()["id"]] += 1

        self.run_clients(nclients, worker)
        total = nclients * per
        self.assertEqual(sum(counts.values()), total)
        served = {m.id: m.stats()["served"] for m in (fast1, fast2, slow)}
        self.assertEqual(served, dict(counts), "replica counters agree with responses")
        share = counts["slow"] / total
        print("p2c shares: %s (slow %.3f)" % (dict(counts), share), file=sys.stderr)
        self.assertLess(share, 0.15, "slow replica got %d of %d requests: %r"
                        % (counts["slow"], total, dict(counts)))


class RoundRobinTest(harness.RRTestCase):
    def test_round_robin_even(self):
        ms = [self.mock("rr%d" % i) for i in (1, 2, 3)]
        cfg = {"backends": {"b": backend(ms, policy="round_robin")},
               "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        rr = self.ringroute(cfg, shards=1)
        c = self.client(rr.port)
        order = []
        for i in range(30):
            r = c.request("GET", "/rr/%d" % i)
            self.assertEqual(r.status, 200, r)
            order.append(r.json()["id"])
        self.assertEqual(collections.Counter(order), {"rr1": 10, "rr2": 10, "rr3": 10}, order)
        cycle = order[:3]
        self.assertEqual(sorted(cycle), ["rr1", "rr2", "rr3"], order)
        self.assertEqual(order, cycle * 10, "not a fixed cycle")
        self.assertEqual({m.id: m.stats()["served"] for m in ms},
                         {"rr1": 10, "rr2": 10, "rr3": 10})


if __name__ == "__main__":
    harness.main()
