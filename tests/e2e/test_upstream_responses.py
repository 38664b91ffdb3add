#!/usr/bin/env python3
"""Replica responses that must not pass as they are: a 204/304 or a response
to HEAD followed by body bytes (the client gets the head only; the replica
connection is closed, never pooled with stray bytes in it), 101 Switching
Protocols (502), and interim 1xx responses (100 Continue forwarded only to a
client that asked for it, other 1xx dropped, more than 8 before the final
response: 502).

The replica is a ScriptedUpstream that writes exact bytes, chosen by the
request target; every connection it accepts is kept, so "ringroute closed
that connection" is an observed EOF, not a guess. --shards 1."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, build_request, endpoint  # noqa: E402

EOF_WAIT = 3.0  # ringroute closes a poisoned replica connection at once

EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
PROCESSING = b"HTTP/1.1 102 Processing\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def ok(target, extra=b""):
    body = b"ok:" + target.encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body) + extra +
            b"\r\n" + body)


def script(conn):
    while True:
        req = conn.read_head(timeout=30)
        if req is None:
            return
        t, m = req["target"], req["method"]
        if t.startswith("/continue"):
            # an interim 100 as soon as the head is in, before the body
            conn.send(CONTINUE)
            body = conn.read_body(req)
            conn.send(ok(t, b"X-Body-Len: %d\r\n" % len(body)))
            continue
        conn.read_body(req)
        if t.startswith("/204"):
            conn.send(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello")
        elif t.startswith("/304"):
            conn.send(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n"
                      b"Content-Length: 5\r\n\r\nhello")
        elif m == "HEAD" and t.startswith("/head"):
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        elif t.startswith("/101"):
            conn.send(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                      b"Upgrade: websocket\r\n\r\n")
            # a replica that switched protocols speaks something else now
            conn.read_head(timeout=30)
            return
        elif t.startswith("/hints"):
            conn.send(EARLY_HINTS + PROCESSING + ok(t))
        elif t.startswith("/interim/"):
            n = int(t.split("/")[2])
            conn.send(EARLY_HINTS * n + ok(t))
        else:
            conn.send(ok(t))


class UpstreamResponsesTest(harness.RRTestCase):

    def setUp(self):
        super().setUp()
        self.up = self.upstream(harness.ScriptedUpstream(script))
        cfg = {"backends": {"b": backend({"r1": self.up.addr})},
               "endpoints": {"any": endpoint("/", {"b": 1.0})}}
        self.rr = self.ringroute(cfg, shards=1)

    def tearDown(self):
        errors = list(self.up.errors)
        super().tearDown()
        self.assertEqual(errors, [], "scripted replica")

    def conn_of(self, target):
        for c in list(self.up.conns):
            if any(r["target"] == target for r in c.requests):
                return c
        self.fail("no replica connection received %s (got %r)" %
                  (target, [r["target"] for r in self.up.all_requests()]))

    def assert_next_ok(self, c, path):
        """The next request on the same client connection gets its own 200."""
        r = c.request("GET", path)
        self.assertTrue(r.head_raw.startswith(b"HTTP/1.1 200 "), r)
        self.assertEqual(r.body, b"ok:" + path.encode(), r)
        self.assertEqual(bytes(c.buf), b"", "stray bytes after %s" % path)
        return r

    def assert_replica_conn_closed(self, target, next_target):
        up = self.conn_of(target)
        self.assertTrue(up.wait_eof(EOF_WAIT),
                        "ringroute kept the replica connection that sent stray bytes after "
                        "the response to %s (it received %r afterwards)" %
                        (target, [r["target"] for r in up.requests]))
        self.assertIsNot(self.conn_of(next_target), up,
                         "%s was sent on the connection with stray bytes" % next_target)

    # --- 1, 2. bodies where none may be --------------------------------------

    def test_204_with_body(self):
        c = self.client(self.rr.port)
        r = c.request("GET", "/204")
        self.assertEqual(r.status, 204, r)
        self.assertIsNone(r.header("content-length"), r)
        self.assertIsNone(r.header("transfer-encoding"), r)
        self.assertEqual(r.body_raw, b"", r)
        self.assert_next_ok(c, "/after-204")
        self.assert_replica_conn_closed("/204", "/after-204")
        self.assertTrue(c.still_open())

    def test_304_with_body(self):
        c = self.client(self.rr.port)
        r = c.request("GET", "/304", [("If-None-Match", "\"v1\"")])
        self.assertEqual(r.status, 304, r)
        self.assertEqual(r.header("etag"), "\"v1\"", r)
        self.assertIsNone(r.header("transfer-encoding"), r)
        self.assertEqual(r.body_raw, b"", r)
        self.assert_next_ok(c, "/after-304")
        self.assert_replica_conn_closed("/304", "/after-304")

    def test_head_with_body(self):
        c = self.client(self.rr.port)
        r = c.request("HEAD", "/head")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("content-length"), "5", r)  # kept: it describes GET
        self.assertEqual(r.body_raw, b"", r)
        self.assert_next_ok(c, "/after-head")
        self.assert_replica_conn_closed("/head", "/after-head")

    def test_204_with_body_pipelined(self):
        # the stray bytes must not become the answer to a request queued behind
        c = self.client(self.rr.port)
        c.send(build_request("GET", "/204p") + build_request("GET", "/after-204p"))
        r = c.read_response()
        self.assertEqual(r.status, 204, r)
        self.assertIsNone(r.header("content-length"), r)
        r = c.read_response()
        self.assertTrue(r.head_raw.startswith(b"HTTP/1.1 200 "), r)
        self.assertEqual(r.body, b"ok:/after-204p", r)
        self.assert_replica_conn_closed("/204p", "/after-204p")

    # --- 3. 101 ---------------------------------------------------------------

    def test_101_from_replica_502(self):
        c = self.client(self.rr.port)
        r = c.request("GET", "/101")
        self.assertTrue(r.head_raw.startswith(b"HTTP/1.1 502 "), r)
        self.assertErrorJSON(r, 502, "any")
        self.assertNotIn(b"101", bytes(c.received[:12]), c.received)
        r = harness.http_once(self.rr.port, "GET", "/after-101")
        self.assertEqual(r.body, b"ok:/after-101", r)

    # --- 4. interim responses ----------------------------------------------

    def test_100_continue_forwarded_when_expected(self):
        c = self.client(self.rr.port)
        c.send(b"POST /continue/x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
               b"Content-Length: 5\r\n\r\n")
        r = c.read_response(skip_1xx=False)
        self.assertEqual(r.head_raw, b"HTTP/1.1 100 Continue\r\n\r\n", r)
        c.send(b"hello")
        r = c.read_response(skip_1xx=False)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"ok:/continue/x", r)
        self.assertEqual(r.header("x-body-len"), "5", r)
        self.assert_next_ok(c, "/after-continue")

    def test_100_continue_not_forwarded_unasked(self):
        c = self.client(self.rr.port)
        r = c.request("POST", "/continue/y", body=b"hello")
        self.assertTrue(c.received.startswith(b"HTTP/1.1 200 "),
                        "client that sent no Expect got %r" % bytes(c.received[:200]))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-body-len"), "5", r)
        self.assert_next_ok(c, "/after-continue-y")

    def test_other_1xx_dropped(self):
        for expect in (False, True):
            with self.subTest(expect_100=expect):
                c = self.client(self.rr.port)
                hs = [("Expect", "100-continue")] if expect else []
                c.send(build_request("GET", "/hints/%d" % expect, hs))
                r = c.read_response(skip_1xx=False)
                self.assertTrue(c.received.startswith(b"HTTP/1.1 200 "),
                                "client got %r" % bytes(c.received[:300]))
                self.assertEqual(r.body, b"ok:/hints/%d" % expect, r)
                self.assert_next_ok(c, "/after-hints/%d" % expect)

    def test_8_interim_ok(self):
        c = self.client(self.rr.port)
        c.send(build_request("GET", "/interim/8"))
        r = c.read_response(skip_1xx=False)
        self.assertTrue(c.received.startswith(b"HTTP/1.1 200 "),
                        "client got %r" % bytes(c.received[:300]))
        self.assertEqual(r.body, b"ok:/interim/8", r)

    def test_9_interim_502(self):
        c = self.client(self.rr.port)
        c.send(build_request("GET", "/interim/9"))
        r = c.read_response(skip_1xx=False)
        self.assertTrue(c.received.startswith(b"HTTP/1.1 502 "),
                        "client got %r" % bytes(c.received[:300]))
        self.assertErrorJSON(r, 502, "any")
        r = harness.http_once(self.rr.port, "GET", "/after-interim")
        self.assertEqual(r.body, b"ok:/after-interim", r)


if __name__ == "__main__":
    harness.main()
