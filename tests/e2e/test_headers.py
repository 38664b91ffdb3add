#!/usr/bin/env python3
"""Request/response header rewriting: X-Forwarded-For, X-Request-Id,
X-Serve-Call-Method, X-Serve-Shard-Key, hop-by-hop headers in both
directions. Runs against --shards 1 and --shards 2."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint  # noqa: E402

HOP_BY_HOP = ("connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade")


def scripted_response(req):
    body = b"ok"
    return (b"HTTP/1.1 200 OK\r\n"
            b"Content-Type: text/plain\r\n"
            b"Connection: keep-alive, X-Secret, X-Other-Secret\r\n"
            b"Keep-Alive: timeout=5, max=1000\r\n"
            b"Proxy-Connection: keep-alive\r\n"
            b"Upgrade: h2c\r\n"
            b"Trailer: X-Checksum\r\n"
            b"X-Secret: s3cr3t\r\n"
            b"x-other-secret: s2\r\n"
            b"X-Visible: v\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


class HeadersTest(harness.RRTestCase):
    SHARDS = 1

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.m = cls.mock_cls("h1")
        cls.raw = harness.RawUpstream(scripted_response)
        cfg = {
            "backends": {
                "b": backend([cls.m]),
                "raw": backend({"raw1": cls.raw.addr}),
            },
            "endpoints": {
                "plain": endpoint("/plain", {"b": 1.0}),
                "cm": endpoint("/cm", {"b": 1.0}, call_method="predict"),
                "raw": endpoint("/raw", {"raw": 1.0}),
            },
        }
        cls.rr = cls.ringroute_cls(cfg, shards=cls.SHARDS)

    @classmethod
    def tearDownClass(cls):
        cls.raw.close()
        super().tearDownClass()

    def upstream_headers(self, path, headers, c=None):
        c = c or self.client(self.rr.port)
        r = c.request("GET", path, headers)
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual(j["path"], path)
        h = j["headers"]
        for k in h:
            self.assertEqual(k, k.lower(), "mock lowercases header names")
        return h, r

    def test_x_forwarded_for_added(self):
        h, _ = self.upstream_headers("/plain", [])
        self.assertEqual(h.get("x-forwarded-for"), "127.0.0.1", h)

    def test_x_forwarded_for_appended(self):
        h, _ = self.upstream_headers("/plain", [("X-Forwarded-For", "10.1.2.3")])
        self.assertEqual(h.get("x-forwarded-for"), "10.1.2.3, 127.0.0.1", h)
        h, _ = self.upstream_headers("/plain", [("x-forwarded-for", "10.1.2.3, 10.9.9.9")])
        self.assertEqual(h.get("x-forwarded-for"), "10.1.2.3, 10.9.9.9, 127.0.0.1", h)

    def test_request_id_generated(self):
        c = self.client(self.rr.port)
        ids = set()
        for _ in range(5):
            h, _ = self.upstream_headers("/plain", [], c=c)
            rid = h.get("x-request-id")
            self.assertTrue(rid, h)
            self.assertTrue(all(0x21 <= ord(ch) <= 0x7e for ch in rid), rid)
            ids.add(rid)
        self.assertEqual(len(ids), 5, "request ids must be unique: %s" % ids)

    def test_request_id_kept(self):
        h, _ = self.upstream_headers("/plain", [("X-Request-Id", "client-id-42")])
        self.assertEqual(h.get("x-request-id"), "client-id-42", h)

    def test_call_method(self):
        # endpoint's call_method when the client sends none
        h, _ = self.upstream_headers("/cm", [])
        self.assertEqual(h.get("x-serve-call-method"), "predict", h)
        # the client's value wins
        h, _ = self.upstream_headers("/cm", [("X-Serve-Call-Method", "embed")])
        self.assertEqual(h.get("x-serve-call-method"), "embed", h)
        # passed through where the endpoint has no call_method
        h, _ = self.upstream_headers("/plain", [("X-Serve-Call-Method", "generate")])
        self.assertEqual(h.get("x-serve-call-method"), "generate", h)
        # and absent when neither sets it
        h, _ = self.upstream_headers("/plain", [])
        self.assertNotIn("x-serve-call-method", h)

    def test_shard_key_passed_through(self):
        h, _ = self.upstream_headers("/plain", [("X-Serve-Shard-Key", "tenant-7")])
        self.assertEqual(h.get("x-serve-shard-key"), "tenant-7", h)

    def test_end_to_end_headers_kept(self):
        h, _ = self.upstream_headers("/plain", [("X-Custom", "a b  c"), ("Accept", "*/*"),
                                                ("User-Agent", "e2e/1")])
        self.assertEqual(h.get("x-custom"), "a b  c", h)
        self.assertEqual(h.get("accept"), "*/*", h)
        self.assertEqual(h.get("user-agent"), "e2e/1", h)

    def check_no_hop_by_hop(self, h, dropped):
        for name in HOP_BY_HOP[1:] + tuple(dropped):
            self.assertNotIn(name, h, "hop-by-hop header %r forwarded: %s" % (name, h))
        # the proxy may set its own Connection to the replica, nothing else
        if "connection" in h:
            self.assertIn(h["connection"].lower(), ("keep-alive", "close"), h)

    def test_request_hop_by_hop_dropped(self):
        h, _ = self.upstream_headers("/plain", [
            ("Connection", "keep-alive, X-Drop-Me"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("Upgrade", "h2c"),
            ("X-Drop-Me", "1"),
            ("X-Keep-Me", "2"),
        ])
        self.check_no_hop_by_hop(h, ["x-drop-me"])
        self.assertEqual(h.get("x-keep-me"), "2", h)

    def test_request_hop_by_hop_case_and_lists(self):
        h, _ = self.upstream_headers("/plain", [
            ("CONNECTION", "Keep-Alive ,x-drop-a,  X-DROP-B"),
            ("x-drop-a", "1"),
            ("X-Drop-B", "2"),
            ("KEEP-ALIVE", "max=5"),
            ("proxy-connection", "close"),
            ("X-Keep-Me", "3"),
        ])
        self.check_no_hop_by_hop(h, ["x-drop-a", "x-drop-b"])
        self.assertEqual(h.get("x-keep-me"), "3", h)

    def test_response_hop_by_hop_dropped(self):
        c = self.client(self.rr.port)
        for _ in range(2):  # and the connection stays usable
            r = c.request("GET", "/raw")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, b"ok", r)
            self.assertEqual(r.header("X-Visible"), "v", r)
            names = r.header_names()
            for name in HOP_BY_HOP[1:] + ("x-secret", "x-other-secret"):
                self.assertNotIn(name, names, "response hop-by-hop %r passed: %r" % (name, r))
            for v in r.header_all("connection"):
                self.assertNotIn("secret", v.lower(), r)
        req = self.raw.requests[-1]
        self.assertEqual(req["target"], "/raw")
        self.assertEqual(req["hdict"].get("x-forwarded-for"), "127.0.0.1")


class HeadersShards2Test(HeadersTest):
    SHARDS = 2


if __name__ == "__main__":
    harness.main()
