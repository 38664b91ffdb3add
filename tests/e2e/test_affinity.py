#!/usr/bin/env python3
"""Affinity with X-Serve-Shard-Key (issue 3, "Affinity"; README
"Behaviour we chose").

* Backend choice is sticky per key: 50 keys x 5 requests, interleaved, each
  on a fresh connection (so over both shards), always land on one backend,
  and the keys use both backends of a 50/50 split.
* Within the backend the replica follows rendezvous hashing with bounded
  load: every request of a key goes to the same replica while that replica
  has a free slot, and keys spread over the replicas.
* Spill-over: with the key's preferred replica P full (cap 1, a request of
  the same key held there), the key goes at once to another replica Q
  (always the same one: the next in the key's order) instead of waiting;
  with P and Q both full, to the third; once P is free again, back to P.
  With cap 2, one held request leaves P a free slot, so the key stays on P.

The spill-over replicas are gated upstreams in this process: a request with
`X-Gate: NAME` is held until the test releases NAME, so "P is full" is an
observed event, not a delay.
"""

import collections
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, build_request, endpoint  # noqa: E402

KEY = "X-Serve-Shard-Key"


class Gated(harness.GatedUpstream):
    """Answers {"id", "path"} as JSON."""

    def answer(self, req):
        body = json.dumps({"id": self.id, "path": req["target"]}).encode()
        return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)) + body


class StickyTest(harness.RRTestCase):
    def test_sticky_backend_and_replica(self):
        ms = {i: self.mock(i) for i in ("a1", "a2", "b1", "b2")}
        cfg = {"backends": {"A": backend([ms["a1"], ms["a2"]]),
                            "B": backend([ms["b1"], ms["b2"]])},
               "endpoints": {"e": endpoint("/", {"A": 0.5, "B": 0.5})}}
        rr = self.ringroute(cfg, shards=2)
        keys = ["user-%d" % i for i in range(50)]
        seen = collections.defaultdict(list)
        for rnd in range(5):
            for k in keys:
                with harness.Client(rr.port) as c:
                    path = "/k/%s/%d" % (k, rnd)
                    r = c.request("GET", path, [(KEY, k)])
                self.assertEqual(r.status, 200, r)
                j = r.json()
                self.assertEqual(j["path"], path)
                hs = {n.lower(): v for n, v in j["headers"].items()}
                self.assertEqual(hs.get(KEY.lower()), k, "shard key passed through: %r" % r)
                seen[k].append(j["id"])
        backends = {k: {i[0] for i in ids} for k, ids in seen.items()}
        moved = {k: ids for k, ids in seen.items() if len(backends[k]) != 1}
        self.assertEqual(moved, {}, "keys that changed backend")
        replicas_moved = {k: ids for k, ids in seen.items() if len(set(ids)) != 1}
        self.assertEqual(replicas_moved, {}, "keys that changed replica (all slots free)")
        per_backend = collections.Counter(next(iter(b)) for b in backends.values())
        self.assertGreaterEqual(per_backend["a"], 10, per_backend)
        self.assertGreaterEqual(per_backend["b"], 10, per_backend)
        per_replica = collections.Counter(ids[0] for ids in seen.values())
        self.assertEqual(set(per_replica), set(ms), "keys spread over the replicas: %r"
                         % per_replica)


class SpillTest(harness.RRTestCase):
    def setUp(self):
        super().setUp()
        self.ups = [self.upstream(Gated("g%d" % i)) for i in (1, 2, 3)]

    def start(self, cap):
        reps = {u.id: u.addr for u in self.ups}
        cfg = {"backends": {"C": backend(reps, max_ongoing_requests=cap,
                                         queue_timeout_ms=10000)},
               "endpoints": {"e": endpoint("/", {"C": 1.0})}}
        self.rr = self.ringroute(cfg, shards=2)
        self.n = 0

    def get(self, key):
        """One request with the key on a fresh connection: (replica, seconds)."""
        self.n += 1
        path = "/q/%d" % self.n
        t0 = time.monotonic()
        with harness.Client(self.rr.port) as c:
            r = c.request("GET", path, [(KEY, key)])
        took = time.monotonic() - t0
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["path"], path)
        return r.json()["id"], took

    def hold(self, key):
        """Sends a held request with the key; returns (client, gate, replica)."""
        self.n += 1
        path = "/hold/%d" % self.n
        c = self.client(self.rr.port, timeout=15)
        c.send(build_request("GET", path, [(KEY, key), ("X-Gate", path)]))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for u in self.ups:
                if path in u.paths():
                    return c, path, u
            time.sleep(0.002)
        self.fail("held request %s reached no replica" % path)

    def release(self, held):
        c, path, u = held
        u.release(path)
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"id": u.id, "path": path})

    def test_spill_over_cap1(self):
        self.start(cap=1)
        prefs = set()
        for key in ("alpha", "bravo", "charlie", "delta"):
            p, _ = self.get(key)
            self.assertEqual(self.get(key)[0], p, key)
            prefs.add(p)
            h1 = self.hold(key)
            self.assertEqual(h1[2].id, p, "%s: held request not on its preferred replica" % key)
            q, took = self.get(key)
            self.assertNotEqual(q, p, "%s: preferred replica is full" % key)
            self.assertLess(took, 1.0, "%s: spill-over waited %.3f s" % (key, took))
            for _ in range(3):
                self.assertEqual(self.get(key)[0], q, "%s: spill-over target not sticky" % key)
            h2 = self.hold(key)
            self.assertEqual(h2[2].id, q, key)
            r, took = self.get(key)
            self.assertNotIn(r, (p, q), key)
            self.assertLess(took, 1.0, key)
            self.release(h1)
            self.assertEqual(self.get(key)[0], p, "%s: back to the preferred replica" % key)
            self.release(h2)
            self.assertEqual(self.get(key)[0], p, key)

    def test_preferred_while_it_has_a_free_slot_cap2(self):
        self.start(cap=2)
        key = "echo"
        p, _ = self.get(key)
        h1 = self.hold(key)
        self.assertEqual(h1[2].id, p)
        for _ in range(3):
            self.assertEqual(self.get(key)[0], p, "one slot of two taken: stays on P")
        h2 = self.hold(key)
        self.assertEqual(h2[2].id, p, "second slot of P")
        q, took = self.get(key)
        self.assertNotEqual(q, p, "P full: spill over")
        self.assertLess(took, 1.0)
        self.release(h1)
        self.release(h2)
        self.assertEqual(self.get(key)[0], p)


if __name__ == "__main__":
    harness.main()
