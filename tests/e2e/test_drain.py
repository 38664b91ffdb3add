#!/usr/bin/env python3
"""Readiness and drain (docs/operations.md, "Readiness and drain"): /readyz
on the admin port, --ready-requires-healthy, and the SIGTERM sequence with
--drain-delay-ms: /readyz 503 at once, new connections still served during
the delay with Connection: close on every response, then the listeners
close while requests in flight finish; a second SIGTERM or SIGINT skips
the delay; --drain-timeout-ms bounds the wait for requests in flight.

"503 before the first config is live" is not observable from outside: the
admin port is bound only after every shard listens with its config, and
only the health (and --watch-config) threads start before the phase turns
live, so no probe reaches it in between; tests/unit/test_service.c checks
that phase."""

import json
import os
import signal
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint, wait_for, wait_stderr  # noqa: E402


def readyz(rr):
    return harness.http_once(rr.admin_port, "GET", "/readyz")


def refused(port):
    """True when a connect to port is refused (nothing listens)."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
    except ConnectionRefusedError:
        return True
    s.close()
    return False


class ReadyzTest(harness.RRTestCase):
    def test_ready_when_live(self):
        m = self.mock("m")
        cfg = {"backends": {"b": backend([m])}, "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        rr = self.ringroute(cfg, admin=True)
        r = readyz(rr)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"ready": True})
        # Liveness is a separate resource and says nothing of readiness.
        self.assertEqual(harness.http_once(rr.admin_port, "GET", "/healthz").json(), {"ok": True})
        self.assertEqual(harness.http_once(rr.admin_port, "HEAD", "/readyz").status, 200)
        self.assertEqual(harness.http_once(rr.admin_port, "POST", "/readyz").status, 405)

    def test_ready_requires_healthy(self):
        state = {"status": 503}

        def respond(req):
            st = state["status"]
            return ("HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n" % st).encode()

        up = self.upstream(harness.RawUpstream(respond))
        hc = {"path": "/health", "interval_ms": 100}
        cfg = {"backends": {"b": backend({"r1": up.addr}, health_check=hc)},
               "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        rr = self.ringroute(cfg, admin=True, extra=["--ready-requires-healthy"])
        plain = self.ringroute(cfg, admin=True)
        self.assertTrue(wait_stderr(rr, "replica b/r1 is unhealthy"), rr.stderr_tail())
        self.assertTrue(wait_stderr(plain, "replica b/r1 is unhealthy"), plain.stderr_tail())
        r = readyz(rr)
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.json(), {"ready": False, "reason": "no endpoint has a healthy replica"})
        # Without the flag, readiness does not look at the replicas.
        self.assertEqual(readyz(plain).status, 200)
        state["status"] = 200
        self.assertTrue(wait_stderr(rr, "replica b/r1 is healthy"), rr.stderr_tail())
        r = readyz(rr)
        self.assertEqual(r.status, 200, r)

    def test_ready_requires_healthy_one_of_two(self):
        good = self.mock("good")
        bad = self.mock("bad", status=500)
        hc = {"path": "/health", "interval_ms": 100}
        cfg = {"backends": {"a": backend([bad], health_check=hc),
                            "b": backend([good, bad], health_check=hc)},
               "endpoints": {"ea": endpoint("/a", {"a": 1.0}), "eb": endpoint("/b", {"b": 1.0})}}
        rr = self.ringroute(cfg, admin=True, extra=["--ready-requires-healthy"])
        self.assertTrue(wait_stderr(rr, "replica b/bad is unhealthy"), rr.stderr_tail())
        self.assertTrue(wait_stderr(rr, "replica a/bad is unhealthy"), rr.stderr_tail())
        # Endpoint ea has nothing healthy, eb has one replica: ready.
        self.assertEqual(readyz(rr).status, 200)

    def test_ready_requires_healthy_no_endpoint(self):
        m = self.mock("m")
        cfg = {"backends": {"b": backend([m])}, "endpoints": {}}
        rr = self.ringroute(cfg, admin=True, extra=["--ready-requires-healthy"])
        r = readyz(rr)
        self.assertEqual(r.status, 503, r)


class DrainTest(harness.RRTestCase):
    DELAY_MS = 2000

    def test_sigterm_drain_sequence(self):
        m = self.mock("m")
        cfg = {"backends": {"b": backend([m])}, "endpoints": {"e": endpoint("/api", {"b": 1.0})}}
        rr = self.ringroute(cfg, shards=2, admin=True,
                            extra=["--drain-delay-ms", str(self.DELAY_MS)])
        keep = self.client(rr.port)
        r = keep.request("GET", "/api/before")
        self.assertEqual(r.status, 200, r)
        self.assertIsNone(r.header("connection"), r)
        # A slow request, in flight across the whole delay and the close.
        slow = self.client(rr.port, timeout=30)
        slow.send(harness.build_request("GET", "/api/slow",
                                        headers={"X-Mock-Delay-Ms": str(self.DELAY_MS + 1500)}))
        wait_for(lambda: m.stats()["inflight"] >= 1, what="the slow request at the replica")

        t0 = time.monotonic()
        os.kill(rr.pid, signal.SIGTERM)
        # /readyz turns 503 at once: well inside the delay.
        r = wait_for(lambda: (lambda x: x if x.status == 503 else None)(readyz(rr)),
                     timeout=self.DELAY_MS / 2000.0, what="/readyz 503")
        self.assertEqual(r.json(), {"ready": False, "reason": "draining"})
        self.assertEqual(harness.http_once(rr.admin_port, "GET", "/healthz").status, 200)

        # New connections are still accepted and served; each response
        # closes its connection.
        for i in range(4):
            c = self.client(rr.port)
            r = c.request("GET", "/api/new%d" % i)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("connection"), "close", r)
            self.assertTrue(c.closed_within(2))
        # Ringroute's own answers too (404: no route).
        c = self.client(rr.port)
        r = c.request("GET", "/nope")
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.header("connection"), "close", r)
        self.assertTrue(c.closed_within(2))
        # The keep-alive connection opened before: its next response says
        # close, and it closes.
        r = keep.request("GET", "/api/after")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("connection"), "close", r)
        self.assertTrue(keep.closed_within(2))
        self.assertLess(time.monotonic() - t0, self.DELAY_MS / 1000.0,
                        "the checks above ran past the delay: make it longer")

        # Then the listeners close: connect is refused, not queued.
        wait_for(lambda: refused(rr.port), timeout=self.DELAY_MS / 1000.0 + 5,
                 what="connection refused", interval=0.02)
        self.assertGreaterEqual(time.monotonic() - t0, self.DELAY_MS / 1000.0 - 0.05)
        # The request in flight finishes, and the process exits 0.
        r = slow.read_response(timeout=20)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["path"], "/api/slow")
        self.assertEqual(r.header("connection"), "close", r)
        self.assertEqual(rr.p.wait(timeout=10), 0, rr.stderr_tail())

    def _second_signal(self, sig):
        m = self.mock("m")
        cfg = {"backends": {"b": backend([m])}, "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        rr = self.ringroute(cfg, admin=True, extra=["--drain-delay-ms", "60000"])
        t0 = time.monotonic()
        os.kill(rr.pid, signal.SIGTERM)
        # The first signal must be taken before the second is sent (two
        # pending SIGTERMs are one): /readyz says so.
        wait_for(lambda: readyz(rr).status == 503, what="/readyz 503")
        self.assertEqual(self.client(rr.port).request("GET", "/x").status, 200)
        os.kill(rr.pid, sig)
        self.assertEqual(rr.p.wait(timeout=10), 0, rr.stderr_tail())
        self.assertLess(time.monotonic() - t0, 15, "exit came after the delay")
        self.assertIn("again: closing the listeners now", rr.stderr())

    def test_second_sigterm_skips_delay(self):
        self._second_signal(signal.SIGTERM)

    def test_sigint_after_sigterm_skips_delay(self):
        self._second_signal(signal.SIGINT)

    def test_drain_timeout(self):
        """Requests still open when the drain times out end as `shutdown`:
        one waiting for its response gets a 503 (with its request id and
        Connection: close), one whose response began is cut; both are
        counted and logged once, and ringroute exits 0."""
        m = self.mock("m")
        cfg = {"backends": {"b": backend([m])}, "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        alog = os.path.join(tempfile.mkdtemp(dir=harness._TMPDIR), "access.log")
        rr = self.ringroute(cfg, admin=True, extra=["--drain-timeout-ms", "500",
                                                    "--access-log", alog,
                                                    "--access-log-format", "json"])
        slow = self.client(rr.port, timeout=30)
        slow.send(harness.build_request("GET", "/stuck", headers={"X-Mock-Delay-Ms": "20000",
                                                                   "X-Request-Id": "rid-stuck"}))
        stream = self.client(rr.port, timeout=30)
        stream.send(harness.build_request("GET", "/stream", headers={
            "X-Mock-Chunks": "100", "X-Mock-Chunk-Interval-Ms": "200",
            "X-Request-Id": "rid-stream"}))
        wait_for(lambda: m.stats()["inflight"] >= 2, what="both requests at the replica")
        # its head (and the first chunk) reached the client: the response began
        head = stream._read_until(b"\r\n\r\n", time.monotonic() + 10)
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
        t0 = time.monotonic()
        os.kill(rr.pid, signal.SIGTERM)
        r = slow.read_response()
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.header("X-Request-Id"), "rid-stuck")
        self.assertEqual(r.header("Connection"), "close")
        self.assertEqual(rr.p.wait(timeout=10), 0, rr.stderr_tail())
        took = time.monotonic() - t0
        self.assertGreaterEqual(took, 0.45)
        self.assertLess(took, 5, "the drain timeout was not honoured")
        self.assertIn("drain timeout: ending the requests still in flight", rr.stderr())
        self.assertNotIn("exiting with shards still running", rr.stderr())
        with open(alog) as f:
            lines = [json.loads(l) for l in f]
        by_id = {l["request_id"]: l for l in lines}
        self.assertEqual(len(lines), 2, lines)
        self.assertEqual((by_id["rid-stuck"]["status"], by_id["rid-stuck"]["reason"]),
                         (503, "shutdown"))
        self.assertEqual(by_id["rid-stream"]["reason"], "shutdown")
        self.assertEqual(by_id["rid-stream"]["path"], "/stream")

    def test_sent_response_not_cut(self):
        """A response that ended at ringroute (its access log line is
        written) but still waits to be sent to a slow reader when SIGTERM
        closes the listeners is sent whole, then the connection closes.
        Before the fix the idle-connection sweep of the drain closed it with
        the bytes still queued (the client got 2.8 of 3 MB)."""
        m = self.mock("m")
        cfg = {"backends": {"b": backend([m])}, "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        alog = os.path.join(tempfile.mkdtemp(dir=harness._TMPDIR), "access.log")
        rr = self.ringroute(cfg, extra=["--access-log", alog])
        # More than the kernel buffers between us while we do not read,
        # less than those plus what ringroute queues: the response ends at
        # ringroute with its tail still queued there.
        size = 3000000
        s = socket.socket()
        self.addCleanup(s.close)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", rr.port))
        s.sendall(harness.build_request("GET", "/big", headers={
            "X-Mock-Size": str(size), "X-Request-Id": "rid-big"}))
        wait_for(lambda: os.path.exists(alog) and "rid-big" in open(alog).read(), 10,
                 "the response's end at ringroute (its access log line)")
        os.kill(rr.pid, signal.SIGTERM)
        s.settimeout(10)
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head[:100])
        self.assertGreaterEqual(len(body), size, "the response was cut")
        self.assertEqual(rr.p.wait(timeout=15), 0, rr.stderr_tail())

    def test_no_delay_by_default(self):
        # Bare use: SIGTERM closes the listeners at once.
        m = self.mock("m")
        cfg = {"backends": {"b": backend([m])}, "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        rr = self.ringroute(cfg)
        t0 = time.monotonic()
        os.kill(rr.pid, signal.SIGTERM)
        self.assertEqual(rr.p.wait(timeout=10), 0, rr.stderr_tail())
        self.assertLess(time.monotonic() - t0, 5)


if __name__ == "__main__":
    harness.main()
