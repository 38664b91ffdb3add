#!/usr/bin/env python3
"""HTTP/1.1 client side: keep-alive, pipelining, request bodies (Content-Length
and chunked, up to 1 MiB), streamed responses, HEAD/204/304 without body,
Connection: close from either side, HTTP/1.0 clients.
Runs against --shards 1 and --shards 2."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, build_request, chunked, endpoint  # noqa: E402


def events(body):
    """Split an SSE-like body into its `data: ...` events."""
    parts = body.split(b"\n\n")
    if parts[-1] != b"":
        raise AssertionError("stream does not end with a complete event: %r" % body[-200:])
    return parts[:-1]


class HTTP11Test(harness.RRTestCase):
    SHARDS = 1

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.m = cls.mock_cls("m1")
        cls.closer = cls.mock_cls("closer", close_after=1)
        cfg = {
            "backends": {
                "b": backend([cls.m]),
                "closer": backend([cls.closer]),
            },
            "endpoints": {
                "any": endpoint("/", {"b": 1.0}),
                "closer": endpoint("/closer", {"closer": 1.0}),
            },
        }
        cls.rr = cls.ringroute_cls(cfg, shards=cls.SHARDS)

    def c(self, timeout=harness.IO_TIMEOUT):
        return self.client(self.rr.port, timeout=timeout)

    def ok(self, r, path, method="GET", mock_id="m1"):
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.version, "HTTP/1.1", r)
        j = r.json()
        self.assertEqual(j["path"], path, r)
        self.assertEqual(j["method"], method, r)
        self.assertEqual(j["id"], mock_id, r)
        return j

    # --- connection reuse ---------------------------------------------------

    def test_keep_alive(self):
        c = self.c()
        for i in range(20):
            r = c.request("GET", "/ka/%d" % i)
            self.ok(r, "/ka/%d" % i)
            self.assertNotEqual((r.header("connection") or "").lower(), "close", r)
        self.assertTrue(c.still_open())

    def test_pipelining(self):
        c = self.c()
        c.send(b"".join(build_request("GET", "/p/%d" % i) for i in range(3)))
        for i in range(3):
            self.ok(c.read_response(), "/p/%d" % i)
        # mixed methods, bodies and a slow first request: order is kept
        reqs = [("GET", "/q/0", [("X-Mock-Delay-Ms", "150")], None),
                ("POST", "/q/1", [], b"x" * 1000),
                ("HEAD", "/q/2", [], None),
                ("POST", "/q/3", [("Transfer-Encoding", "chunked")], chunked(b"ab", b"cde")),
                ("GET", "/q/4", [], None)]
        c.send(b"".join(build_request(m, p, h, b) for m, p, h, b in reqs))
        for i, (m, p, h, b) in enumerate(reqs):
            r = c.read_response(method=m)
            if m == "HEAD":
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.body_raw, b"", r)
                continue
            j = self.ok(r, p, m)
            self.assertEqual(j["body_len"], {1: 1000, 3: 5}.get(i, 0), r)
        self.assertTrue(c.still_open())

    def test_pipelining_many_connections(self):
        # several connections so that both shards (when SHARDS=2) take part
        conns = [self.c() for _ in range(8)]
        for k, c in enumerate(conns):
            c.send(b"".join(build_request("GET", "/pc/%d/%d" % (k, i)) for i in range(10)))
        for k, c in enumerate(conns):
            for i in range(10):
                self.ok(c.read_response(), "/pc/%d/%d" % (k, i))

    # --- request bodies -----------------------------------------------------

    def test_content_length_body(self):
        c = self.c()
        for n in (0, 1, 1234, 65536 + 7):
            r = c.request("POST", "/cl", body=b"a" * n)
            self.assertEqual(self.ok(r, "/cl", "POST")["body_len"], n, r)

    def test_content_length_body_in_pieces(self):
        c = self.c()
        body = bytes(range(256)) * 40
        req = build_request("PUT", "/pieces", body=body)
        for i in range(0, len(req), 777):
            c.send(req[i:i + 777])
            time.sleep(0.002)  # separate segments (not synchronisation)
        self.assertEqual(self.ok(c.read_response(), "/pieces", "PUT")["body_len"], len(body))

    def test_chunked_body(self):
        c = self.c()
        c.send(build_request("POST", "/ch", [("Transfer-Encoding", "chunked")]))
        for part in (b"hello", b" ", b"world" * 100):
            c.send(b"%x\r\n" % len(part) + part + b"\r\n")
        c.send(b"0\r\n\r\n")
        self.assertEqual(self.ok(c.read_response(), "/ch", "POST")["body_len"], 506)
        # chunk extensions and an empty body
        r = c.request("POST", "/ch2", [("Transfer-Encoding", "chunked")],
                      b"3;ext=1\r\nabc\r\n0\r\n\r\n")
        self.assertEqual(self.ok(r, "/ch2", "POST")["body_len"], 3)
        r = c.request("POST", "/ch3", [("Transfer-Encoding", "chunked")], b"0\r\n\r\n")
        self.assertEqual(self.ok(r, "/ch3", "POST")["body_len"], 0)

    def test_large_bodies(self):
        c = self.c(timeout=20)
        mib = os.urandom(1 << 20)
        r = c.request("POST", "/big", body=mib)
        self.assertEqual(self.ok(r, "/big", "POST")["body_len"], 1 << 20)
        parts = [mib[i:i + 65536] for i in range(0, len(mib), 65536)]
        r = c.request("POST", "/bigc", [("Transfer-Encoding", "chunked")], chunked(*parts))
        self.assertEqual(self.ok(r, "/bigc", "POST")["body_len"], 1 << 20)
        r = c.request("GET", "/after-big")
        self.ok(r, "/after-big")

    def test_large_response(self):
        c = self.c(timeout=20)
        r = c.request("GET", "/size", [("X-Mock-Size", str(3 << 20))])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.body), 3 << 20, r.head_raw)
        r = c.request("GET", "/after")
        self.ok(r, "/after")

    # --- responses ----------------------------------------------------------

    def test_streaming(self):
        c = self.c()
        t_send = time.monotonic()
        r = c.request("GET", "/stream", [("X-Mock-Chunks", "3"),
                                         ("X-Mock-Chunk-Interval-Ms", "300")])
        self.assertEqual(r.status, 200, r)
        evs = events(r.body)
        self.assertEqual(len(evs), 3, r)
        for e in evs:
            self.assertTrue(e.startswith(b"data: {"), r)
        # when was each event complete at the client?
        acc = b""
        done = []
        for t, data in r.chunks:
            acc += data
            while acc.count(b"\n\n") > len(done):
                done.append(t)
        self.assertEqual(len(done), 3, r.chunks)
        first, last = done[0] - r.t_head, done[2] - r.t_head
        self.assertLess(first, 0.25, "first event %.3f s after the response head: buffered?" % first)
        self.assertGreater(last - first, 0.45,
                           "events %.3f s apart: replica did not stream?" % (last - first))
        self.assertLess(r.t_head - t_send, 1.0)
        # the connection is still good
        self.ok(c.request("GET", "/after-stream"), "/after-stream")

    def test_head(self):
        c = self.c()
        r = c.request("HEAD", "/head")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body_raw, b"")
        # nothing stray before the next response
        r2 = c.request("GET", "/head2")
        self.ok(r2, "/head2")
        self.assertTrue(r2.head_raw.startswith(b"HTTP/1.1 200"), r2)

    def test_204_304_no_body(self):
        c = self.c()
        for code in (204, 304):
            r = c.request("GET", "/nb/%d" % code, [("X-Mock-Status", str(code))])
            self.assertEqual(r.status, code, r)
            self.assertEqual(r.body_raw, b"", r)
            self.assertNotIn("chunked", (r.header("transfer-encoding") or "").lower(), r)
            r2 = c.request("GET", "/after/%d" % code)
            self.ok(r2, "/after/%d" % code)
            self.assertTrue(r2.head_raw.startswith(b"HTTP/1.1 200"), r2)

    def test_status_passthrough(self):
        c = self.c()
        for code in (201, 400, 404, 418, 500, 503):
            r = c.request("GET", "/st", [("X-Mock-Status", str(code))])
            self.assertEqual(r.status, code, r)
            self.assertEqual(r.header("X-Mock-Id"), "m1", r)

    # --- connection close ---------------------------------------------------

    def test_client_connection_close(self):
        c = self.c()
        r = c.request("GET", "/bye", [("Connection", "close")])
        self.ok(r, "/bye")
        self.assertTrue(c.closed_within(3.0))

    def test_client_connection_close_pipelined(self):
        # requests after the one with Connection: close are not answered
        c = self.c()
        c.send(build_request("GET", "/c1") +
               build_request("GET", "/c2", [("Connection", "close")]) +
               build_request("GET", "/c3"))
        self.ok(c.read_response(), "/c1")
        self.ok(c.read_response(), "/c2")
        self.assertTrue(c.closed_within(3.0))

    def test_replica_closes_client_stays(self):
        c = self.c()
        for i in range(5):
            r = c.request("GET", "/rc/%d" % i, [("X-Mock-Close", "1")])
            self.ok(r, "/rc/%d" % i)
            self.assertNotEqual((r.header("connection") or "").lower(), "close", r)
        self.ok(c.request("GET", "/rc/end"), "/rc/end")
        self.assertTrue(c.still_open())

    def test_replica_close_after_1(self):
        c = self.c()
        for i in range(10):
            r = c.request("GET", "/closer/%d" % i)
            self.ok(r, "/closer/%d" % i, mock_id="closer")
            self.assertNotEqual((r.header("connection") or "").lower(), "close", r)
        self.assertTrue(c.still_open())

    def test_http10(self):
        c = self.c()
        r = c.request("GET", "/old", version="HTTP/1.0")
        self.assertEqual(r.status, 200, r)
        self.assertIn(r.version, ("HTTP/1.0", "HTTP/1.1"))
        self.assertEqual(r.json()["path"], "/old")
        self.assertTrue(c.closed_within(3.0))

    def test_http10_no_host(self):
        c = self.c()
        c.send(b"GET /oldnohost HTTP/1.0\r\n\r\n")
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["path"], "/oldnohost")
        self.assertTrue(c.closed_within(3.0))

    def test_http10_streamed_not_chunked(self):
        # a 1.0 client cannot parse chunked: the body is close-delimited
        c = self.c()
        r = c.request("GET", "/old-stream", [("X-Mock-Chunks", "3"),
                                             ("X-Mock-Chunk-Interval-Ms", "20")],
                      version="HTTP/1.0")
        self.assertEqual(r.status, 200, r)
        self.assertNotIn("chunked", (r.header("transfer-encoding") or "").lower(), r)
        self.assertEqual(len(events(r.body)), 3, r)
        self.assertTrue(c.closed_within(3.0) if not c.eof else True)


class HTTP11Shards2Test(HTTP11Test):
    SHARDS = 2


if __name__ == "__main__":
    harness.main()
