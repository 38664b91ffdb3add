#!/usr/bin/env python3
"""Request conformance (RFC 9110/9112): requests that ringroute itself must
reject, and never pass to the replica: Host missing/duplicated/malformed,
raw bytes outside visible ASCII in the target, obs-fold, unsupported or
malformed Transfer-Encoding (501/400), chunk-size lines over 4 KiB, bare LF,
the HTTP/2 preface (505) and WebSocket upgrades (501); h2c upgrades are
ignored and served over HTTP/1.1. 400, 501 and 505 close the connection.

The replica is scripted (ScriptedUpstream): it records every request head it
sees, so "never passed to the replica" is checked exactly: after each
rejected request a marker request is sent on a new connection, and the
marker must be the only request the replica saw since. --shards 1."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, build_request, chunked, endpoint  # noqa: E402

PROMPT = 3.0   # every answer here is due at once; no read waits longer


def echo_script(conn):
    """200 with a JSON body naming the target and the forwarded headers."""
    while True:
        req = conn.read_request(timeout=30)
        if req is None:
            return
        body = json.dumps({"target": req["target"], "method": req["method"],
                           "headers": req["headers"],
                           "body_len": len(req["body"])}).encode()
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)


class ConformanceTest(harness.RRTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.up = harness.ScriptedUpstream(echo_script)
        cfg = {"backends": {"b": backend({"r1": cls.up.addr})},
               "endpoints": {"any": endpoint("/", {"b": 1.0})}}
        cls.rr = cls.ringroute_cls(cfg, shards=1)
        cls.marker_n = 0

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.up.close()

    def tearDown(self):
        # whatever the test sent, the proxy still serves new connections
        try:
            r = harness.http_once(self.rr.port, "GET", "/health-after")
            self.assertEqual(r.status, 200, r)
        finally:
            super().tearDown()

    # --- helpers ------------------------------------------------------------

    def seen(self):
        return len(self.up.all_requests())

    def assert_not_forwarded(self, before, what):
        """A marker request on a fresh connection must be the only request
        the replica saw since `before`."""
        ConformanceTest.marker_n += 1
        path = "/marker/%d" % self.marker_n
        r = harness.http_once(self.rr.port, "GET", path, timeout=PROMPT)
        self.assertEqual(r.status, 200, r)
        got = [q["target"] for q in self.up.all_requests()[before:]]
        self.assertEqual(got, [path], "%s: the replica received %r" % (what, got))

    def reject(self, data, status=400, what=None, words=(), close=True, forwarded_ok=False):
        """Send data on a fresh connection: the answer is a JSON error with
        `status` (each of `words` in its error text, case-insensitive), the
        connection closes, and the replica never saw the request. Each call
        is a subTest of its own, so one file run reports every case."""
        what = what or repr(data[:120])
        with self.subTest(what):
            self._reject(data, status, what, words, close, forwarded_ok)

    def _reject(self, data, status, what, words, close, forwarded_ok):
        before = self.seen()
        c = self.client(self.rr.port, timeout=PROMPT)
        c.send(data)
        try:
            r = c.read_response()
        except Exception as e:
            self.fail("%s: no %d: %s" % (what, status, e))
        self.assertEqual(r.status, status, "%s: %r" % (what, r))
        j = self.assertErrorJSON(r, status)
        for w in words:
            self.assertIn(w.lower(), j["error"].lower(), "%s: %r" % (what, r))
        if close:
            try:
                self.assertTrue(c.closed_within(PROMPT))
            except Exception as e:
                self.fail("%s: connection not closed after %d: %s" % (what, status, e))
        if not forwarded_ok:
            self.assert_not_forwarded(before, what)

    def accept(self, data, what=None):
        """The request is forwarded and its 200 comes back; returns the
        replica's view (JSON)."""
        what = what or repr(data[:120])
        c = self.client(self.rr.port, timeout=PROMPT)
        c.send(data)
        r = c.read_response()
        self.assertEqual(r.status, 200, "%s: %r" % (what, r))
        j = r.json()
        self.assertIn("target", j, r)
        return j

    # --- 1. Host ------------------------------------------------------------

    def test_host_missing_400(self):
        self.reject(b"GET /nohost HTTP/1.1\r\n\r\n", what="HTTP/1.1 without Host")
        self.reject(b"GET /nohost HTTP/1.1\r\nUser-Agent: t\r\n\r\n",
                    what="HTTP/1.1 without Host (other header)")

    def test_host_twice_400(self):
        self.reject(b"GET /twohosts HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", what="two Host")
        self.reject(b"GET /twohosts HTTP/1.1\r\nHost: a\r\nX: y\r\nhost: b\r\n\r\n",
                    what="two Host, different")

    def test_host_invalid_400(self):
        for host in (b"user@host", b"host/x", b"a, b", b"a b", b"host:port:x",
                     b"host:99999x", b"host:8x"):
            with self.subTest(host=host):
                self.reject(b"GET /badhost HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
                            what="Host: %r" % host)

    def test_host_valid_forwarded(self):
        for host in (b"example.com", b"example.com:8080", b"127.0.0.1:1", b"[::1]:80",
                     b"EXAMPLE.com", b"a-b.c_d.example"):
            with self.subTest(host=host):
                j = self.accept(b"GET /goodhost HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
                                what="Host: %r" % host)
                self.assertEqual(j["target"], "/goodhost")

    def test_http10_without_host_forwarded(self):
        c = self.client(self.rr.port, timeout=PROMPT)
        c.send(b"GET /old10 HTTP/1.0\r\n\r\n")
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["target"], "/old10")

    # --- 2. request target bytes -------------------------------------------

    def test_target_non_visible_ascii_400(self):
        for b in (0x7F, 0x80, 0xFF, 0x01):
            with self.subTest(byte=hex(b)):
                self.reject(b"GET /a" + bytes([b]) + b"b HTTP/1.1\r\nHost: x\r\n\r\n",
                            what="byte 0x%02X in the target" % b)

    # --- 3. obs-fold --------------------------------------------------------

    def test_obs_fold_400(self):
        self.reject(b"GET /fold HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n",
                    what="obs-fold with SP")
        self.reject(b"GET /fold HTTP/1.1\r\nHost: x\r\nX-A: one\r\n\ttwo\r\n\r\n",
                    what="obs-fold with HTAB")
        self.reject(b"GET /fold HTTP/1.1\r\nHost: x\r\n X-A: one\r\n\r\n",
                    what="first header line starting with SP")

    # --- 4. Transfer-Encoding ----------------------------------------------

    def te(self, value, body=b"5\r\nhello\r\n0\r\n\r\n"):
        return (b"POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + value +
                b"\r\n\r\n" + body)

    def test_te_unsupported_coding_501(self):
        for value, coding in ((b"gzip, chunked", "gzip"), (b"gzip", "gzip"),
                              (b"chunked, gzip", "gzip"), (b"identity", "identity"),
                              (b"deflate, chunked", "deflate")):
            with self.subTest(te=value):
                self.reject(self.te(value), 501, what="Transfer-Encoding: %r" % value,
                            words=(coding,))

    def test_te_malformed_400(self):
        for value in (b"", b"chunked,,", b"chun ked", b"chunked, chunked", b",chunked"):
            with self.subTest(te=value):
                self.reject(self.te(value), 400, what="Transfer-Encoding: %r" % value)

    def test_te_chunked_any_case_ok(self):
        for value in (b"chunked", b"Chunked", b"CHUNKED", b"cHuNkEd"):
            with self.subTest(te=value):
                j = self.accept(self.te(value), what="Transfer-Encoding: %r" % value)
                self.assertEqual(j["body_len"], 5, j)
                self.assertEqual(j["method"], "POST", j)

    # --- 5. long chunk-size line -------------------------------------------

    def test_chunk_size_line_over_4k_400(self):
        head = b"POST /longext HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        # complete line, 5000 bytes of extension
        self.reject(head + b"5;ext=" + b"x" * 5000 + b"\r\nhello\r\n0\r\n\r\n",
                    what="chunk-size line of 5006 bytes", forwarded_ok=True)
        # a line that never ends: the answer must not wait for its CRLF
        self.reject(head + b"5;ext=" + b"x" * 8000,
                    what="unterminated chunk-size line of 8006 bytes", forwarded_ok=True)
        # a long line in a later chunk
        self.reject(head + b"5\r\nhello\r\n3;" + b"y" * 6000 + b"\r\nabc\r\n0\r\n\r\n",
                    what="second chunk-size line of 6002 bytes", forwarded_ok=True)

    def test_chunk_size_line_under_4k_ok(self):
        j = self.accept(b"POST /ext HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5;ext=" + b"x" * 3000 + b"\r\nhello\r\n0\r\n\r\n",
                        what="chunk-size line of 3006 bytes")
        self.assertEqual(j["body_len"], 5, j)

    # --- 6. bare LF ---------------------------------------------------------

    def test_bare_lf_in_head_400(self):
        cases = [
            (b"GET /lf HTTP/1.1\nHost: x\r\n\r\n", "ending the request line"),
            (b"GET /lf HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", "ending a header line"),
            (b"GET /lf HTTP/1.1\r\nHost: x\n\r\n", "ending the last header line"),
            (b"GET /lf HTTP/1.1\r\nHost: x\r\n\n", "ending the head"),
            (b"GET /lf HTTP/1.1\nHost: x\n\n", "everywhere"),
        ]
        for data, where in cases:
            with self.subTest(where=where):
                self.reject(data, what="bare LF " + where)

    def test_bare_lf_in_chunked_body_400(self):
        head = b"POST /lfc HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        cases = [
            (b"5\nhello\r\n0\r\n\r\n", "ending the first chunk-size line"),
            (b"5\r\nhello\n0\r\n\r\n", "ending the first chunk's data"),
            (b"5\r\nhello\r\n0\n\r\n", "ending the last-chunk line"),
            (b"5\r\nhello\r\n0\r\n\n", "ending the chunked body"),
        ]
        for body, where in cases:
            # the head may already have been routed when the body goes wrong;
            # what the client gets is ringroute's 400 (never a replica's 200)
            with self.subTest(where=where):
                self.reject(head + body, what="bare LF " + where, forwarded_ok=True)

    # --- 7. HTTP/2 preface --------------------------------------------------

    def test_h2_preface_505(self):
        c = self.client(self.rr.port, timeout=PROMPT)
        before = self.seen()
        c.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        r = c.read_response()
        self.assertTrue(r.head_raw.startswith(b"HTTP/1.1 505 "), r)
        j = self.assertErrorJSON(r, 505)
        self.assertIn("http/2", j["error"].lower(), r)
        self.assertTrue(c.closed_within(PROMPT))
        self.assert_not_forwarded(before, "HTTP/2 preface")

    # --- 8. Upgrade ---------------------------------------------------------

    def test_websocket_upgrade_501(self):
        self.reject(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                    b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n", 501,
                    what="WebSocket upgrade", words=("websocket",))
        self.reject(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\n"
                    b"Upgrade: WebSocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n", 501,
                    what="WebSocket upgrade (mixed case, keep-alive)", words=("websocket",))

    def test_h2c_upgrade_ignored(self):
        c = self.client(self.rr.port, timeout=PROMPT)
        c.send(b"GET /h2c HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        r = c.read_response(skip_1xx=False)
        self.assertTrue(r.head_raw.startswith(b"HTTP/1.1 200 "), r)
        j = r.json()
        self.assertEqual(j["target"], "/h2c", r)
        names = [k.lower() for k, _ in j["headers"]]
        self.assertNotIn("upgrade", names, j)
        self.assertNotIn("http2-settings", names, j)  # named in Connection: hop-by-hop
        # still HTTP/1.1 on this connection
        r = c.request("GET", "/h2c-after")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["target"], "/h2c-after")


if __name__ == "__main__":
    harness.main()
