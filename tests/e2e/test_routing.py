#!/usr/bin/env python3
"""Routing: longest prefix, segment boundaries, 404/405, weighted split,
sticky X-Serve-Shard-Key. Runs against --shards 1 and --shards 2."""

import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint  # noqa: E402


class RoutingTest(harness.RRTestCase):
    SHARDS = 1

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        m = {i: cls.mock_cls(i) for i in
             ("pred", "pred2", "api", "post", "split-a", "split-b",
              "sa1", "sa2", "sb1")}
        cls.mocks = m
        cfg = {
            "backends": {
                "pred": backend([m["pred"]]),
                "pred2": backend([m["pred2"]]),
                "api": backend([m["api"]]),
                "post": backend([m["post"]]),
                "A": backend([m["split-a"]]),
                "B": backend([m["split-b"]]),
                "SA": backend([m["sa1"], m["sa2"]]),
                "SB": backend([m["sb1"]]),
            },
            "endpoints": {
                "predict": endpoint("/predict", {"pred": 1.0}),
                "predict_v2": endpoint("/predict/v2", {"pred2": 1.0}),
                "api": endpoint("/api/", {"api": 1.0}),
                "post_only": endpoint("/post", {"post": 1.0}, methods=["POST", "PUT"]),
                "split": endpoint("/split", {"A": 0.8, "B": 0.2}),
                "sticky": endpoint("/sticky", {"SA": 0.5, "SB": 0.5}),
            },
        }
        cls.rr = cls.ringroute_cls(cfg, shards=cls.SHARDS)

    def get(self, path, method="GET", headers=None, body=None, c=None):
        c = c or self.client(self.rr.port)
        return c.request(method, path, headers, body)

    def routed_to(self, path, mock_id, method="GET"):
        r = self.get(path, method)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("X-Mock-Id"), mock_id, r)
        j = r.json()
        self.assertEqual(j["id"], mock_id, r)
        self.assertEqual(j["path"], path, r)
        self.assertEqual(j["method"], method, r)
        return r

    def test_exact_and_subpaths(self):
        self.routed_to("/predict", "pred")
        self.routed_to("/predict/", "pred")
        self.routed_to("/predict/x/y", "pred")
        self.routed_to("/predict?q=1", "pred")

    def test_longest_prefix_wins(self):
        self.routed_to("/predict/v2", "pred2")
        self.routed_to("/predict/v2/models/a", "pred2")
        self.routed_to("/predict/v2?x=1", "pred2")
        # "/predict/v2x" is not under "/predict/v2" but is under "/predict"
        self.routed_to("/predict/v2x", "pred")

    def test_segment_boundary(self):
        for path in ("/predictions", "/predictx", "/pred", "/", "/nothing/here", "/postal"):
            r = self.get(path)
            self.assertErrorJSON(r, 404)

    def test_trailing_slash_route(self):
        self.routed_to("/api/x", "api")
        self.routed_to("/api/", "api")
        r = self.get("/apix")
        self.assertErrorJSON(r, 404)

    def test_404_keeps_connection(self):
        c = self.client(self.rr.port)
        r = c.request("GET", "/nope")
        self.assertErrorJSON(r, 404)
        r = c.request("GET", "/predict")
        self.assertEqual(r.status, 200, r)

    def test_methods(self):
        self.routed_to("/post", "post", method="POST")
        self.routed_to("/post/a", "post", method="PUT")
        c = self.client(self.rr.port)
        for m in ("GET", "DELETE", "PATCH"):
            r = c.request(m, "/post")
            self.assertErrorJSON(r, 405, "post_only")
        # the connection survives a 405
        r = c.request("POST", "/post", body=b"x")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["body_len"], 1)

    def test_weighted_split(self):
        c = self.client(self.rr.port)
        n = 2000
        counts = collections.Counter()
        for i in range(n):
            r = c.request("GET", "/split/%d" % i)
            self.assertEqual(r.status, 200, r)
            counts[r.header("X-Mock-Id")] += 1
        self.assertEqual(set(counts), {"split-a", "split-b"}, counts)
        # 0.8 * 2000 = 1600, sd = sqrt(2000 * .8 * .2) ~ 17.9: +-100 is > 5 sd
        self.assertTrue(1500 <= counts["split-a"] <= 1700, counts)

    def test_shard_key_sticky(self):
        keys = ["user-%d" % i for i in range(60)]
        first = {}
        # three rounds, each on fresh connections (which may land on any shard)
        for rnd in range(3):
            c = self.client(self.rr.port)
            for k in keys:
                r = c.request("GET", "/sticky", {"X-Serve-Shard-Key": k})
                self.assertEqual(r.status, 200, r)
                mid = r.header("X-Mock-Id")
                self.assertEqual(r.json()["id"], mid)
                if rnd == 0:
                    first[k] = mid
                else:
                    self.assertEqual(mid, first[k], "key %s moved: %s -> %s" % (k, first[k], mid))
            c.close()
        seen = set(first.values())
        # 60 keys over a 0.5/0.5 split and 2 replicas in SA: every target is hit
        self.assertEqual(seen, {"sa1", "sa2", "sb1"}, first)


class RoutingShards2Test(RoutingTest):
    SHARDS = 2


if __name__ == "__main__":
    harness.main()
