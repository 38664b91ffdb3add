#!/usr/bin/env python3
"""Concurrent clients never see each other's responses: two clients
interleaving their bytes, many keep-alive clients at once with responses
finishing out of order. Runs against --shards 2 (and 1)."""

import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, build_request, chunked, endpoint  # noqa: E402


class ConcurrencyTest(harness.RRTestCase):
    SHARDS = 2

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.m1 = cls.mock_cls("c1")
        cls.m2 = cls.mock_cls("c2")
        cfg = {
            "backends": {"b": backend([cls.m1, cls.m2])},
            "endpoints": {"any": endpoint("/", {"b": 1.0})},
        }
        cls.rr = cls.ringroute_cls(cfg, shards=cls.SHARDS)

    def check(self, r, path, body_len=0, method="GET"):
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual(j["path"], path, r)
        self.assertEqual(j["method"], method, r)
        self.assertEqual(j["body_len"], body_len, r)
        self.assertIn(j["id"], ("c1", "c2"))

    def test_two_clients_interleaving_bytes(self):
        rng = random.Random(7)
        for rnd in range(6):
            a = self.client(self.rr.port)
            b = self.client(self.rr.port)
            reqs = {}
            for name, c in (("a", a), ("b", b)):
                paths = ["/%s/%d/%d" % (name, rnd, i) for i in range(3)]
                data = (build_request("GET", paths[0]) +
                        build_request("POST", paths[1], body=b"%s" % name.encode() * 777) +
                        build_request("POST", paths[2], [("Transfer-Encoding", "chunked")],
                                      chunked(b"x" * 10, b"y" * 20)))
                reqs[name] = (c, paths, data)
            # alternate small pieces of both request streams
            ca, pa, da = reqs["a"]
            cb, pb, db = reqs["b"]
            ia = ib = 0
            while ia < len(da) or ib < len(db):
                if ia < len(da):
                    n = rng.randint(1, 9)
                    ca.send(da[ia:ia + n])
                    ia += n
                if ib < len(db):
                    n = rng.randint(1, 9)
                    cb.send(db[ib:ib + n])
                    ib += n
            for c, paths in ((ca, pa), (cb, pb)):
                self.check(c.read_response(), paths[0])
                self.check(c.read_response(), paths[1], 777, "POST")
                self.check(c.read_response(), paths[2], 30, "POST")
            a.close()
            b.close()

    def test_many_clients(self):
        nclients, nreq = 24, 25

        def worker(k):
            rng = random.Random(k)
            with harness.Client(self.rr.port, timeout=15) as c:
                for i in range(nreq):
                    path = "/many/%d/%d" % (k, i)
                    hs = []
                    if rng.random() < 0.3:  # responses finish out of order
                        hs.append(("X-Mock-Delay-Ms", str(rng.randint(1, 30))))
                    body = None
                    if rng.random() < 0.3:
                        body = os.urandom(rng.randint(1, 20000))
                    r = c.request("POST" if body else "GET", path, hs, body)
                    if r.status != 200:
                        return "client %d req %d: %r" % (k, i, r)
                    j = r.json()
                    if j["path"] != path or j["body_len"] != len(body or b""):
                        return "client %d req %d got someone else's answer: %r" % (k, i, r)

        self.run_clients(nclients, worker)

    def test_many_pipelined_clients(self):
        conns = [self.client(self.rr.port, timeout=15) for _ in range(16)]
        for k, c in enumerate(conns):
            c.send(b"".join(build_request("GET", "/pp/%d/%d" % (k, i),
                                          [("X-Mock-Delay-Ms", str((k * 7 + i * 3) % 20))])
                            for i in range(8)))
        for k, c in enumerate(conns):
            for i in range(8):
                self.check(c.read_response(), "/pp/%d/%d" % (k, i))


class ConcurrencyShards1Test(ConcurrencyTest):
    SHARDS = 1


if __name__ == "__main__":
    harness.main()
