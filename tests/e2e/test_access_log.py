#!/usr/bin/env python3
"""The access log and request ids (docs/operations.md "Access log", "Request
ids").

Real processes: mock replicas, in-process scripted upstreams and a real
ringroute with --access-log. Each test sends a known set of requests, then
reads the log line by line and checks that every request has exactly one
line, found by the X-Request-Id its client got (every response carries one,
ringroute's own errors included), and that every field is right: status,
reason, endpoint, backend, replica, client address, method, path, version,
bytes in (exactly what the client sent, where the request was read whole)
and out (exactly what it received), retries, and durations that are
plausible and ordered (queue_ms <= ttfb_ms <= duration_ms).

The endings provoked: ok (GET, POST with a body, HTTP/1.0), no_route,
method_not_allowed, body_too_large, bad_request (a broken header line, a
broken request line), headers_too_large, not_implemented, http_version,
client_abort (mid-response, and while queued), upstream_bad_response,
upstream_reset, upstream_timeout, queue_full, queue_timeout,
upstream_connect_failed after 2 retries, a connect failure retried on a live
replica, no_healthy_replica. The `shutdown` reason is not produced by this
build (a drain lets requests in flight finish; the drain timeout exits with
them unlogged): test_drain_logs_the_last_request checks that a request that
ends during the drain is logged before ringroute exits.

Also: the JSON format on stdout (--access-log -), SIGUSR1 reopening a
renamed file (no line lost, none twice), and a log that cannot keep up (a
FIFO nobody reads): every request still succeeds, the dropped lines are
counted in /v1/stats, and every line is either written or counted.

Waits are on observable signals (lines in the file, /v1/queues, stderr
lines, the file appearing), never bare sleeps."""

import datetime
import fcntl
import json
import os
import re
import signal
import socket
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, build_request, endpoint, free_port  # noqa: E402

FIELDS = ["time", "client", "method", "path", "version", "status", "endpoint", "backend",
          "replica", "request_id", "bytes_in", "bytes_out", "queue_ms", "ttfb_ms",
          "duration_ms", "retries", "reason"]
TIME_RX = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
GENERATED_RID = re.compile(r"^[0-9a-f]{16}$")
F_SETPIPE_SZ = 1031


def unescape(v):
    """A text field back to its value: "-" is none, \\xHH a byte; the bytes
    are read as UTF-8."""
    if v == "-":
        return None
    b = re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m.group(1), 16)]),
               v.encode("latin-1"))
    return b.decode("utf-8", "surrogateescape")


def parse_text_line(line):
    assert line.endswith("\n"), "line without its end: %r" % line
    parts = line[:-1].split(" ")
    assert len(parts) == len(FIELDS), "%d fields in %r" % (len(parts), line)
    rec = {k: unescape(v) for k, v in zip(FIELDS, parts)}
    for k in ("status", "bytes_in", "bytes_out", "retries"):
        rec[k] = int(rec[k]) if rec[k] is not None else None
    for k in ("queue_ms", "ttfb_ms", "duration_ms"):
        if rec[k] is not None:
            assert re.match(r"^\d+\.\d{3}$", rec[k]), "%s=%r in %r" % (k, rec[k], line)
            rec[k] = float(rec[k])
    return rec


def read_lines(path):
    try:
        with open(path, "r", encoding="latin-1", newline="") as f:
            return f.readlines()
    except FileNotFoundError:
        return []


def wait_lines(path, n, timeout=10.0):
    """The file's lines once it holds at least n (whole ones)."""
    def ready():
        ls = read_lines(path)
        return ls if len(ls) >= n and all(l.endswith("\n") for l in ls) else None
    return harness.wait_for(ready, timeout, "%d lines in %s (have %d)"
                            % (n, path, len(read_lines(path))))


def rid_of(r):
    rid = r.header("x-request-id")
    assert rid, "response without X-Request-Id: %r" % r
    return rid


class Gated(harness.GatedUpstream):
    pass


class AccessLogCase(harness.RRTestCase):

    def log_path(self):
        d = tempfile.mkdtemp(dir=harness._TMPDIR)
        return os.path.join(d, "access.log")

    def check_common(self, rec, t0, t1):
        """What every line must satisfy."""
        self.assertRegex(rec["time"], TIME_RX, rec)
        t = datetime.datetime.strptime(rec["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        self.assertTrue(t0 - 1 <= t <= t1 + 1, "time %s outside the test (%f..%f)"
                        % (rec["time"], t0, t1))
        self.assertRegex(rec["client"] or "", r"^127\.0\.0\.1:\d+$", rec)
        self.assertIsNotNone(rec["request_id"], rec)
        self.assertIsNotNone(rec["reason"], rec)
        d = rec["duration_ms"]
        self.assertIsNotNone(d, rec)
        self.assertGreaterEqual(d, 0.0, rec)
        self.assertLess(d, 10000.0, rec)
        self.assertLessEqual(rec["queue_ms"], d, rec)
        if rec["ttfb_ms"] is not None:
            self.assertLessEqual(rec["queue_ms"], rec["ttfb_ms"], rec)
            self.assertLessEqual(rec["ttfb_ms"], d, rec)


class EveryEndingTest(AccessLogCase):
    """One ringroute, every kind of ending, the text format in a file."""

    def test_every_kind_of_ending(self):
        m1 = self.mock("m1")
        rs = self.mock("rs")
        sick = self.mock("sick", status=500)
        gate = self.upstream(Gated("g1"))
        raw = self.upstream(harness.RawUpstream(lambda req: b"garbage\r\n\r\n"))
        path = self.log_path()
        cfg = {
            "backends": {
                "m": backend([m1]),
                "slow": backend({"m1": m1.addr}, request_timeout_ms=300),
                "rst": backend([rs]),
                "raw": backend({"raw1": raw.addr}),
                "gate": backend({"g1": gate.addr}, max_ongoing_requests=1,
                                max_queued_requests=1, queue_timeout_ms=300),
                "dead": backend({"d1": "127.0.0.1:%d" % free_port(),
                                 "d2": "127.0.0.1:%d" % free_port()}, retries=2),
                "mixed": backend({"d1": "127.0.0.1:%d" % free_port(), "m1": m1.addr},
                                 retries=2, policy="round_robin"),
                "sick": backend([sick], queue_timeout_ms=200, queue_when_unavailable=True,
                                health_check={"path": "/health", "interval_ms": 100}),
            },
            "endpoints": {
                # a space and a non-ASCII letter: escaped in the text format
                "ok main\u00e9": endpoint("/ok", {"m": 1.0}, methods=["GET", "POST"],
                                          max_body_bytes=100),
                "slow": endpoint("/slow", {"slow": 1.0}),
                "rst": endpoint("/rst", {"rst": 1.0}),
                "raw": endpoint("/raw", {"raw": 1.0}),
                "gate": endpoint("/gate", {"gate": 1.0}),
                "dead": endpoint("/dead", {"dead": 1.0}),
                "mixed": endpoint("/mixed", {"mixed": 1.0}),
                "sick": endpoint("/sick", {"sick": 1.0}),
            },
        }
        OK = "ok main\u00e9"
        t0 = time.time()
        rr = self.ringroute(cfg, admin=True, extra=["--access-log", path])
        want = {}  # request id -> expected fields (None: not checked)

        def expect(rid, **kw):
            self.assertNotIn(rid, want)
            want[rid] = kw

        def one(method, target, headers=(), body=None, version="HTTP/1.1", raw_bytes=None,
                rid=None, **kw):
            """One request on its own connection; its line must match kw (plus the
            client address, method, path, version and exact bytes unless given)."""
            c = self.client(rr.port, timeout=10)
            hs = list(headers)
            if rid:
                hs.append(("X-Request-Id", rid))
            data = raw_bytes if raw_bytes is not None else \
                build_request(method, target, hs, body, version)
            c.send(data)
            r = c.read_response(method)
            got = rid_of(r)
            if rid:
                self.assertEqual(got, rid, r)
            else:
                self.assertRegex(got, GENERATED_RID, r)
            fields = dict(client="127.0.0.1:%d" % c.sock.getsockname()[1], method=method,
                          path=target, version=version, bytes_in=len(data),
                          bytes_out=len(r.head_raw) + len(r.body_raw))
            fields.update(kw)
            expect(got, **fields)
            c.close()
            return r

        # ---- answered by the replica
        one("GET", "/ok/a?x=1", rid="rid-get", status=200, reason="ok", endpoint=OK,
            backend="m", replica="m1", retries=0)
        one("POST", "/ok/post", body=b"p" * 50, rid="rid-post", status=200, reason="ok",
            endpoint=OK, backend="m", replica="m1", retries=0)
        one("GET", "/ok/old", version="HTTP/1.0", rid="rid-http10", status=200, reason="ok",
            endpoint=OK, backend="m", replica="m1")
        # ---- refused by the router
        one("GET", "/nothing", rid="rid-404", status=404, reason="no_route", endpoint=None,
            backend=None, replica=None)
        one("DELETE", "/ok/x", rid="rid-405", status=405, reason="method_not_allowed",
            endpoint=OK, backend=None, replica=None)
        head413 = build_request("POST", "/ok/big", [("X-Request-Id", "rid-413"),
                                                    ("Content-Length", "1000")])
        one("POST", "/ok/big", raw_bytes=head413 + b"b" * 1000, rid="rid-413", status=413,
            reason="body_too_large", endpoint=OK, backend=None, bytes_in=len(head413))
        # ---- refused by the parser: the id is ours, the bytes up to the fault
        bad = b"GET /ok/m HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"
        one("GET", "/ok/m", raw_bytes=bad, status=400, reason="bad_request", endpoint=None,
            bytes_in=("<=", len(bad)))
        bad_line = b"NOT A REQUEST\r\n\r\n"
        one(None, None, raw_bytes=bad_line, version=None, status=400, reason="bad_request",
            bytes_in=("<=", len(bad_line)))
        big = build_request("GET", "/ok/huge", [("X-Big", "h" * 70000)])
        one("GET", "/ok/huge", raw_bytes=big, status=431, reason="headers_too_large",
            bytes_in=("<=", len(big)))
        te = build_request("POST", "/ok/te", [("Transfer-Encoding", "gzip"),
                                              ("X-Request-Id", "rid-501")])
        one("POST", "/ok/te", raw_bytes=te, rid="rid-501", status=501,
            reason="not_implemented", endpoint=None)
        h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        one(None, None, raw_bytes=h2, version=None, status=505, reason="http_version",
            bytes_in=("<=", len(h2)))
        # ---- the replica fails
        one("GET", "/raw/x", rid="rid-badresp", status=502, reason="upstream_bad_response",
            endpoint="raw", backend="raw", replica="raw1", retries=0)
        one("GET", "/rst/x", headers=[("X-Mock-Reset", "1")], rid="rid-reset", status=502,
            reason="upstream_reset", endpoint="rst", backend="rst", replica="rs",
            retries=2)  # a GET: retried on reset (retry_on's default), on its only replica
        r = one("GET", "/slow/x", headers=[("X-Mock-Delay-Ms", "3000")], rid="rid-504",
                status=504, reason="upstream_timeout", endpoint="slow", backend="slow",
                replica="m1", duration=(">=", 280.0), own_answer=True)
        one("GET", "/dead/x", rid="rid-dead", status=502, reason="upstream_connect_failed",
            endpoint="dead", backend="dead", replica=("in", ("d1", "d2")), retries=2)
        one("GET", "/mixed/1", rid="rid-mixed-1", status=200, reason="ok", endpoint="mixed",
            backend="mixed", replica="m1", retries=("in", (0, 1)))
        one("GET", "/mixed/2", rid="rid-mixed-2", status=200, reason="ok", endpoint="mixed",
            backend="mixed", replica="m1", retries=("in", (0, 1)))
        self.assertTrue(harness.wait_stderr(rr, "replica sick/sick is unhealthy"),
                        rr.stderr_tail())
        one("GET", "/sick/x", rid="rid-sick", status=503, reason="no_healthy_replica",
            endpoint="sick", backend="sick", replica=None, queue=(">=", 150.0))

        # ---- a mid-response client abort: head and a chunk read, then gone
        c = self.client(rr.port, timeout=10)
        c.send(build_request("GET", "/ok/stream", [("X-Request-Id", "rid-abort"),
                                                   ("X-Mock-Chunks", "200"),
                                                   ("X-Mock-Chunk-Interval-Ms", "20")]))
        c._read_until(b"\r\n\r\n", time.monotonic() + 5)
        head_len = len(c.received)
        c.close()
        expect("rid-abort", status=499, reason="client_abort", endpoint=OK, backend="m",
               replica="m1", method="GET", path="/ok/stream", bytes_out=(">=", head_len),
               ttfb=True)

        # ---- the queue: a holds the slot, b waits, c finds it full, b times
        # out, d waits and leaves, then a is answered
        def queued():
            return harness.http_once(rr.admin_port, "GET", "/v1/queues").json()[
                "backends"]["gate"]["queued"]

        ca = self.client(rr.port, timeout=10)
        ca.send(build_request("GET", "/gate/a", [("X-Gate", "a"), ("X-Request-Id", "rid-qa")]))
        gate.wait_requests(1)
        cb = self.client(rr.port, timeout=10)
        tb = time.monotonic()
        cb.send(build_request("GET", "/gate/b", [("X-Request-Id", "rid-qb")]))
        harness.wait_for(lambda: queued() == 1, 5, "b queued")
        one("GET", "/gate/c", rid="rid-qc", status=503, reason="queue_full", endpoint="gate",
            backend="gate", replica=None)
        r = cb.read_response()
        self.assertEqual(r.status, 503, r)
        self.assertGreaterEqual(time.monotonic() - tb, 0.28)
        self.assertEqual(rid_of(r), "rid-qb")
        expect("rid-qb", status=503, reason="queue_timeout", endpoint="gate", backend="gate",
               replica=None, queue=(">=", 280.0), own_answer=True,
               bytes_out=len(r.head_raw) + len(r.body_raw))
        cd = self.client(rr.port, timeout=10)
        cd.send(build_request("GET", "/gate/d", [("X-Request-Id", "rid-qd")]))
        harness.wait_for(lambda: queued() == 1, 5, "d queued")
        cd.close()
        harness.wait_for(lambda: queued() == 0, 5, "d gone from the queue")
        expect("rid-qd", status=499, reason="client_abort", endpoint="gate", backend="gate",
               replica=None, ttfb=False, bytes_out=0, queue=(">", 0.0))
        gate.release("a")
        r = ca.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(rid_of(r), "rid-qa")
        expect("rid-qa", status=200, reason="ok", endpoint="gate", backend="gate",
               replica="g1", bytes_out=len(r.head_raw) + len(r.body_raw))

        # ---- the log: one line per request, every field right
        lines = wait_lines(path, len(want))
        t1 = time.time()
        self.assertEqual(len(lines), len(want), "".join(lines))
        got = {}
        for line in lines:
            rec = parse_text_line(line)
            self.assertNotIn(rec["request_id"], got, "two lines for one request: %r" % line)
            got[rec["request_id"]] = rec
        self.assertEqual(sorted(got), sorted(want))
        for rid, w in want.items():
            rec = got[rid]
            self.check_common(rec, t0, t1)
            for k, v in w.items():
                if k == "own_answer":
                    # ringroute's own answer is the first byte it sent
                    self.assertEqual(rec["ttfb_ms"], rec["duration_ms"], rec)
                elif k == "ttfb":
                    self.assertEqual(rec["ttfb_ms"] is not None, v, rec)
                elif k in ("duration", "queue"):
                    op, x = v
                    val = rec[k + "_ms"]
                    self.assertTrue(val >= x if op == ">=" else val > x,
                                    "%s: %s %r %s %s" % (rid, k, val, op, x))
                elif isinstance(v, tuple):
                    op, x = v
                    if op == "in":
                        self.assertIn(rec[k], x, rec)
                    elif op == "<=":
                        self.assertTrue(0 < rec[k] <= x, "%s: %s=%r not in (0, %r]"
                                        % (rid, k, rec[k], x))
                    else:
                        self.assertGreaterEqual(rec[k], x, rec)
                else:
                    self.assertEqual(rec[k], v, "%s: %s: %r" % (rid, k, rec))
        # round robin over a refused replica and a live one: one of the two
        # went to d1 first and was retried on m1
        self.assertGreaterEqual(got["rid-mixed-1"]["retries"] + got["rid-mixed-2"]["retries"],
                                1, (got["rid-mixed-1"], got["rid-mixed-2"]))
        # the text format escapes the space and the UTF-8 bytes
        raw_line = [l for l in lines if " rid-get " in l][0]
        self.assertIn(" ok\\x20main\\xc3\\xa9 ", raw_line)
        self.assertEqual(got["rid-get"]["endpoint"], OK)


class RequestIdTest(AccessLogCase):
    """X-Request-Id: the client's when sane, else ours; the replica, the
    client and the log see the same one."""

    def test_ids(self):
        m1 = self.mock("m1")
        path = self.log_path()
        cfg = {"backends": {"m": backend([m1])},
               "endpoints": {"e": endpoint("/", {"m": 1.0})}}
        rr = self.ringroute(cfg, extra=["--access-log", path])
        c = self.client(rr.port)
        cases = []
        for sent in ("client-id-7", "a b", "x" * 129, "x" * 128, None):
            hs = [("X-Request-Id", sent)] if sent is not None else []
            r = c.request("GET", "/id", hs)
            self.assertEqual(r.status, 200, r)
            rid = rid_of(r)
            self.assertEqual(r.header_all("x-request-id"), [rid], r)
            seen = r.json()["headers"].get("x-request-id")
            self.assertEqual(seen, rid, "the replica saw %r, the client got %r" % (seen, rid))
            if sent in ("client-id-7", "x" * 128):
                self.assertEqual(rid, sent)
            else:
                self.assertRegex(rid, GENERATED_RID)
            cases.append(rid)
        lines = wait_lines(path, len(cases))
        self.assertEqual([parse_text_line(l)["request_id"] for l in lines], cases)


class JsonStdoutTest(AccessLogCase):
    """--access-log - --access-log-format json: one JSON object per stdout line,
    the fields in the documented order."""

    def test_json_on_stdout(self):
        m1 = self.mock("m1")
        cfg = {"backends": {"m": backend([m1])},
               "endpoints": {"e": endpoint("/v1", {"m": 1.0})}}
        t0 = time.time()
        rr = self.ringroute(cfg, extra=["--access-log", "-", "--access-log-format", "json"])
        sent = {}
        c = self.client(rr.port)
        r = c.request("GET", "/v1/j?q=\"x\"", [("X-Request-Id", "json-1")])
        self.assertEqual(r.status, 200, r)
        sent["json-1"] = (200, "ok", "e", len(r.head_raw) + len(r.body_raw))
        r = c.request("GET", "/none", [("X-Request-Id", "json-2")])
        sent["json-2"] = (404, "no_route", None, len(r.head_raw) + len(r.body_raw))
        c2 = self.client(rr.port)
        c2.send(b"GET /v1 HTTP/1.1\r\nHost: x\r\n\x01bad\r\n\r\n")
        r = c2.read_response()
        sent[rid_of(r)] = (400, "bad_request", None, len(r.head_raw) + len(r.body_raw))
        recs = {}
        while len(recs) < len(sent):
            line = rr.lines.get(timeout=10)
            self.assertIsNotNone(line, "stdout closed")
            doc = json.loads(line)
            self.assertEqual(list(doc), FIELDS, line)
            recs[doc["request_id"]] = doc
        t1 = time.time()
        self.assertEqual(sorted(recs), sorted(sent))
        for rid, (status, reason, ep, nout) in sent.items():
            d = recs[rid]
            self.check_common(d, t0, t1)
            self.assertEqual((d["status"], d["reason"], d["endpoint"], d["bytes_out"]),
                             (status, reason, ep, nout), d)
            for k in ("bytes_in", "bytes_out", "retries", "status"):
                self.assertIsInstance(d[k], int, d)
            for k in ("queue_ms", "duration_ms"):
                self.assertIsInstance(d[k], (int, float), d)
        self.assertEqual(recs["json-1"]["path"], "/v1/j?q=\"x\"")
        self.assertEqual(recs["json-1"]["backend"], "m")
        self.assertEqual(recs["json-1"]["replica"], "m1")
        self.assertIsNone(recs["json-2"]["backend"])
        # The process log stays on stderr, in its own format.
        self.assertNotIn("\"request_id\"", rr.stderr())


class ReopenTest(AccessLogCase):
    """SIGUSR1 after logrotate renamed the file: lines go to a new file at the
    path; each request is in exactly one of the two files."""

    def test_sigusr1_reopens(self):
        m1 = self.mock("m1")
        path = self.log_path()
        cfg = {"backends": {"m": backend([m1])},
               "endpoints": {"e": endpoint("/", {"m": 1.0})}}
        rr = self.ringroute(cfg, extra=["--access-log", path])
        c = self.client(rr.port)

        def send(prefix, n):
            ids = []
            for i in range(n):
                rid = "%s-%d" % (prefix, i)
                r = c.request("GET", "/r/" + rid, [("X-Request-Id", rid)])
                self.assertEqual(r.status, 200, r)
                ids.append(rid)
            return ids

        before = send("before", 5)
        wait_lines(path, 5)
        os.rename(path, path + ".1")
        between = send("between", 5)  # written to the renamed file, or the new one
        os.kill(rr.pid, signal.SIGUSR1)
        harness.wait_for(lambda: os.path.exists(path), 5, "the new file")
        after = send("after", 5)
        self.assertTrue(harness.wait_stderr(rr, "access log %s reopened" % path),
                        rr.stderr_tail())

        def ids_in(p):
            return [parse_text_line(l)["request_id"] for l in read_lines(p)]

        harness.wait_for(lambda: set(after) <= set(ids_in(path)), 5, "after-* in the new file")
        rr.stop()  # every line written
        old, new = ids_in(path + ".1"), ids_in(path)
        self.assertEqual(old[:5], before)
        self.assertTrue(set(after) <= set(new), new)
        self.assertEqual(sorted(old + new), sorted(before + between + after),
                         "lost or doubled lines: old %r new %r" % (old, new))


class DropTest(AccessLogCase):
    """A log that cannot keep up: a FIFO whose reader never reads. Requests
    all succeed at once, the lines that did not fit are dropped and counted
    (/v1/stats access_log_dropped), and ringroute still stops: every line is
    either in the FIFO or counted."""

    def test_full_log_drops_lines_not_requests(self):
        m1 = self.mock("m1")
        d = tempfile.mkdtemp(dir=harness._TMPDIR)
        fifo = os.path.join(d, "fifo")
        os.mkfifo(fifo)
        rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that never reads
        try:
            fcntl.fcntl(rfd, F_SETPIPE_SZ, 4096)
            cfg = {"backends": {"m": backend([m1])},
                   "endpoints": {"e": endpoint("/", {"m": 1.0})}}
            rr = self.ringroute(cfg, admin=True,
                                extra=["--access-log", fifo, "--access-log-buffer", "64"])
            c = self.client(rr.port)
            n = 100
            long_path = "/p/" + "x" * 2000  # ~2 KiB lines: 64 KiB hold about 30
            for i in range(n):
                r = c.request("GET", long_path + str(i))
                self.assertEqual(r.status, 200, r)

            def dropped():
                j = harness.http_once(rr.admin_port, "GET", "/v1/stats").json()
                return j["access_log_dropped"]

            harness.wait_for(lambda: dropped() >= n // 2, 5, "access_log_dropped rising")
            self.assertLessEqual(dropped(), n)
            ms = harness.parse_metrics(
                harness.http_once(rr.admin_port, "GET", "/metrics").body.decode())
            got = [v for name, _, v in ms if name == "ringroute_access_log_dropped_lines_total"]
            self.assertEqual(len(got), 1, got)
            self.assertGreaterEqual(got[0], n // 2)
            self.assertEqual(rr.stop(timeout=10), 0)
            m = re.search(r"access log: (\d+) line\(s\) dropped in all", rr.stderr())
            self.assertTrue(m, rr.stderr_tail())
            total_dropped = int(m.group(1))
            data = b""
            while True:
                try:
                    chunk = os.read(rfd, 65536)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                data += chunk
            written = data.split(b"\n")
            self.assertEqual(written[-1], b"", "a cut line in the FIFO")
            self.assertGreater(len(written) - 1, 0)
            self.assertEqual(len(written) - 1 + total_dropped, n)
        finally:
            os.close(rfd)


class DrainTest(AccessLogCase):
    """SIGTERM while a request is in flight: it finishes during the drain and
    its line is written before ringroute exits."""

    def test_drain_logs_the_last_request(self):
        gate = self.upstream(Gated("g1"))
        path = self.log_path()
        cfg = {"backends": {"g": backend({"g1": gate.addr})},
               "endpoints": {"e": endpoint("/", {"g": 1.0})}}
        rr = self.ringroute(cfg, extra=["--access-log", path])
        c = self.client(rr.port, timeout=10)
        c.send(build_request("GET", "/last", [("X-Gate", "a"), ("X-Request-Id", "rid-last")]))
        gate.wait_requests(1)
        os.kill(rr.pid, signal.SIGTERM)
        self.assertTrue(harness.wait_stderr(rr, "draining"), rr.stderr_tail())
        gate.release("a")
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(rr.stop(timeout=10), 0)
        recs = [parse_text_line(l) for l in read_lines(path)]
        self.assertEqual([(x["request_id"], x["status"], x["reason"]) for x in recs],
                         [("rid-last", 200, "ok")])


class FlagsTest(harness.RRTestCase):
    def test_bad_flags(self):
        cfg = {"backends": {"b": backend({"r1": "127.0.0.1:%d" % free_port()})},
               "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        rc, _, err = harness.run_ringroute_expect_exit(
            cfg, extra=["--access-log", "-", "--access-log-format", "xml"])
        self.assertEqual(rc, 2, err)
        self.assertIn("--access-log-format", err)
        rc, _, err = harness.run_ringroute_expect_exit(
            cfg, extra=["--access-log", "-", "--access-log-buffer", "1"])
        self.assertEqual(rc, 2, err)
        self.assertIn("--access-log-buffer", err)
        rc, _, err = harness.run_ringroute_expect_exit(
            cfg, extra=["--access-log", "/nonexistent-dir/x/access.log"])
        self.assertEqual(rc, 1, err)
        self.assertIn("--access-log /nonexistent-dir/x/access.log", err)


if __name__ == "__main__":
    harness.main()
