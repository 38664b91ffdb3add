#!/usr/bin/env python3
"""Control plane: the control socket (--control, Unix, 0600, read-write), the
admin port (--admin, read-only), watch streams, reports, and that every
accepted change reaches the data path while a refused one changes nothing.

Requests go over raw sockets (AF_UNIX for the control socket) so the exact
bytes received are shown when something fails."""

import json
import os
import signal
import socket
import stat
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint  # noqa: E402


class ControlCase(harness.RRTestCase):
    """Starts mocks and a ringroute with --control and --admin per test."""

    REPORT_MS = 200

    def start(self, cfg, extra=(), shards=1):
        self.sock = harness.control_sock_path()
        rr = self.ringroute(cfg, shards=shards, admin=True,
                            extra=["--control", self.sock,
                                   "--report-interval-ms", str(self.REPORT_MS)] + list(extra))
        self.rr = rr
        return rr

    def ctl(self, method, path, body=None, headers=None):
        return self.unix_client(self.sock).request(method, path, headers,
                                                   harness.json_body(body))

    def admin(self, method, path, body=None):
        c = self.client(self.rr.admin_port)
        return c.request(method, path, None, body)

    def assertError(self, r, status, *needles):
        self.assertEqual(r.status, status, r)
        self.assertIn("application/json", (r.header("content-type") or "").lower(), r)
        j = r.json()
        self.assertIsInstance(j.get("error"), str, r)
        for n in needles:
            self.assertIn(n, j["error"], r)
        return j

    def config(self):
        r = self.ctl("GET", "/v1/config")
        self.assertEqual(r.status, 200, r)
        return r

    def version(self):
        r = self.ctl("GET", "/v1/queues")
        self.assertEqual(r.status, 200, r)
        return r.json()["version"]

    def hits(self, path, n, method="GET"):
        """Sends n requests (one connection each) and counts X-Mock-Id."""
        out = {}
        for _ in range(n):
            c = self.client(self.rr.port)
            r = c.request(method, path)
            key = r.header("X-Mock-Id") if r.status == 200 else r.status
            out[key] = out.get(key, 0) + 1
            c.close()
        return out

    def control_stats(self, c=None):
        """The control server's own counters (GET /v1/stats "control"), on
        connection c, else on a connection of its own, closed at once (the
        server takes at most 256: polling must not pile them up)."""
        if c is not None:
            r = c.request("GET", "/v1/stats")
        else:
            with harness.UnixClient(self.sock) as c1:
                r = c1.request("GET", "/v1/stats")
        self.assertEqual(r.status, 200, r)
        return r.json()["control"]

    def eventually(self, fn, timeout=10.0):
        """Retries fn until it returns truthy (changes reach shards over
        MSG_RING, within one loop turn; allow a little time)."""
        return harness.poll(fn, timeout, interval=0.05)


class ControlSocketTest(ControlCase):
    SHARDS = 1

    def setUp(self):
        super().setUp()
        self.m1 = self.mock("m1")
        self.m2 = self.mock("m2")
        self.cfg = {
            "backends": {
                "A": backend([self.m1], policy="round_robin"),
                "B": backend([self.m2]),
                "spare": backend({"s1": "127.0.0.1:%d" % harness.free_port()}),
            },
            "endpoints": {
                "e": endpoint("/e", {"A": 1.0}),
                "split": endpoint("/split", {"A": 1.0, "B": 0.0}),
            },
        }
        self.start(self.cfg, shards=self.SHARDS)

    # -- socket and basics ------------------------------------------------

    def test_socket_mode_0600(self):
        st = os.stat(self.sock)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600, oct(st.st_mode))

    def test_healthz(self):
        r = self.ctl("GET", "/healthz")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"ok": True})

    def test_keep_alive_and_pipelining(self):
        c = self.unix_client(self.sock)
        r1 = c.request("GET", "/healthz")
        r2 = c.request("GET", "/v1/queues")
        self.assertEqual((r1.status, r2.status), (200, 200), (r1, r2))
        c.send(harness.build_request("GET", "/healthz") +
               harness.build_request("GET", "/v1/stats") +
               harness.build_request("GET", "/nope"))
        rs = [c.read_response() for _ in range(3)]
        self.assertEqual([r.status for r in rs], [200, 200, 404], rs)
        self.assertEqual(rs[0].json(), {"ok": True})
        self.assertIn("backends", rs[1].json())
        # Still open: the same connection answers one more request (not
        # "no EOF within 50 ms", which a slow server passes by luck).
        r = c.request("GET", "/healthz")
        self.assertEqual(r.status, 200, r)

    def test_connection_close(self):
        c = self.unix_client(self.sock)
        r = c.request("GET", "/healthz", headers=[("Connection", "close")])
        self.assertEqual(r.status, 200, r)
        self.assertTrue(c.closed_within(2.0))

    def test_get_config(self):
        r = self.config()
        self.assertIn("application/json", r.header("content-type"), r)
        doc = r.json()
        self.assertEqual(sorted(doc), ["backends", "dns_refresh_ms", "endpoints"], r)
        self.assertEqual(doc["backends"]["A"]["replicas"], {"m1": self.m1.addr}, r)
        self.assertEqual(doc["backends"]["A"]["policy"], "round_robin", r)
        self.assertEqual(doc["endpoints"]["e"]["route"], "/e", r)
        self.assertEqual(doc["endpoints"]["e"]["traffic"], {"A": 1.0}, r)

    def test_put_config(self):
        v0 = self.version()
        doc = self.config().json()
        doc["backends"]["A"]["max_ongoing_requests"] = 7
        r = self.ctl("PUT", "/v1/config", doc)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["version"], v0 + 1, r)
        self.assertEqual(self.config().json()["backends"]["A"]["max_ongoing_requests"], 7)
        self.assertEqual(self.version(), v0 + 1)

    def test_put_config_invalid_changes_nothing(self):
        before = self.config()
        v0 = self.version()
        doc = before.json()
        # A valid part (a new backend) and an invalid part: all or nothing.
        doc["backends"]["new"] = backend({"n1": self.m2.addr})
        doc["endpoints"]["e"]["traffic"] = {"A": 0.5, "b9": 0.5}
        r = self.ctl("PUT", "/v1/config", doc)
        self.assertError(r, 400, "endpoints.e.traffic.b9", "unknown backend")
        after = self.config()
        self.assertEqual(after.body, before.body)
        self.assertEqual(self.version(), v0)
        # Syntax error: line and column of the body.
        r = self.ctl("PUT", "/v1/config", b'{"backends": {,}}')
        j = self.assertError(r, 400)
        self.assertRegex(j["error"], r"1:\d+", r)
        # Wrong type of a field.
        doc = before.json()
        doc["backends"]["B"]["max_queued_requests"] = "lots"
        r = self.ctl("PUT", "/v1/config", doc)
        self.assertError(r, 400, "backends.B.max_queued_requests")
        # Unknown key.
        doc = before.json()
        doc["endpoints"]["e"]["trafic"] = {"A": 1}
        r = self.ctl("PUT", "/v1/config", doc)
        self.assertError(r, 400, "endpoints.e.trafic")
        self.assertEqual(self.config().body, before.body)
        self.assertEqual(self.version(), v0)

    def test_put_config_not_an_object(self):
        # The whole document must be an object: any other JSON value is the
        # client's mistake (400 naming it), never "out of memory" (500).
        before = self.config().body
        v0 = self.version()
        for body in (b"null", b"[]", b"[1, 2]", b"5", b'"a string"', b"true"):
            r = self.ctl("PUT", "/v1/config", body)
            self.assertError(r, 400, "body", "must be a JSON object")
        self.assertEqual(self.config().body, before)
        self.assertEqual(self.version(), v0)

    # -- backends -----------------------------------------------------------

    def test_backend_put(self):
        v0 = self.version()
        r = self.ctl("PUT", "/v1/backends/C",
                     {"max_ongoing_requests": 3, "replicas": {"c1": self.m2.addr}})
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual(j["version"], v0 + 1, r)
        self.assertEqual(j["backend"]["max_ongoing_requests"], 3, r)
        self.assertEqual(j["backend"]["replicas"], {"c1": self.m2.addr}, r)
        doc = self.config().json()
        self.assertEqual(doc["backends"]["C"]["max_ongoing_requests"], 3)
        # Replace (PUT is the whole backend: unnamed fields take defaults).
        r = self.ctl("PUT", "/v1/backends/C", {"replicas": {"c2": self.m1.addr}})
        self.assertEqual(r.status, 200, r)
        doc = self.config().json()
        self.assertEqual(doc["backends"]["C"]["replicas"], {"c2": self.m1.addr})
        self.assertNotEqual(doc["backends"]["C"]["max_ongoing_requests"], 3)

    def test_backend_put_invalid(self):
        before = self.config().body
        r = self.ctl("PUT", "/v1/backends/C", {"max_ongoing_requests": 0, "replicas": {}})
        self.assertError(r, 400, "backends.C.max_ongoing_requests")
        r = self.ctl("PUT", "/v1/backends/A", {"policy": "fastest", "replicas": {}})
        self.assertError(r, 400, "backends.A.policy")
        r = self.ctl("PUT", "/v1/backends/C", {"replicas": {"x": "nowhere"}})
        self.assertError(r, 400, "backends.C.replicas.x")
        r = self.ctl("PUT", "/v1/backends/C", [1, 2])
        self.assertError(r, 400, "body")
        r = self.ctl("PUT", "/v1/backends/C", b"{not json")
        self.assertError(r, 400, "body")
        self.assertEqual(self.config().body, before)

    def test_backend_delete(self):
        v0 = self.version()
        r = self.ctl("DELETE", "/v1/backends/spare")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["version"], v0 + 1, r)
        self.assertNotIn("spare", self.config().json()["backends"])
        r = self.ctl("DELETE", "/v1/backends/spare")
        self.assertError(r, 404, "spare")
        r = self.ctl("DELETE", "/v1/backends/never")
        self.assertError(r, 404, "never")
        self.assertEqual(self.version(), v0 + 1)

    def test_backend_delete_in_use(self):
        before = self.config().body
        r = self.ctl("DELETE", "/v1/backends/A")
        j = self.assertError(r, 409)
        self.assertTrue("\"e\"" in j["error"] or "\"split\"" in j["error"], r)
        # Named only with weight 0 still counts as in use.
        r = self.ctl("DELETE", "/v1/backends/B")
        self.assertError(r, 409, "split")
        # In use as a shadow.
        r = self.ctl("PUT", "/v1/endpoints/sh",
                     endpoint("/sh", {"A": 1.0}, shadow={"spare": 0.5}))
        self.assertEqual(r.status, 200, r)
        r = self.ctl("DELETE", "/v1/backends/spare")
        self.assertError(r, 409, "sh", "shadow")
        self.assertIn("spare", self.config().json()["backends"])
        self.assertNotEqual(before, self.config().body)  # only the endpoint was added

    # -- replicas -----------------------------------------------------------

    def test_replica_put_delete(self):
        v0 = self.version()
        r = self.ctl("PUT", "/v1/backends/A/replicas/r2", self.m2.addr)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["version"], v0 + 1, r)
        spare = "127.0.0.1:%d" % harness.free_port()  # never sent a request
        r = self.ctl("PUT", "/v1/backends/A/replicas/r3", {"address": spare})
        self.assertEqual(r.status, 200, r)
        reps = self.config().json()["backends"]["A"]["replicas"]
        self.assertEqual(reps, {"m1": self.m1.addr, "r2": self.m2.addr, "r3": spare})
        r = self.ctl("DELETE", "/v1/backends/A/replicas/r3")
        self.assertEqual(r.status, 200, r)
        r = self.ctl("DELETE", "/v1/backends/A/replicas/r3")
        self.assertError(r, 404, "r3")
        r = self.ctl("DELETE", "/v1/backends/nope/replicas/r1")
        self.assertError(r, 404, "nope")
        r = self.ctl("PUT", "/v1/backends/nope/replicas/r1", self.m1.addr)
        self.assertError(r, 404, "nope")
        self.assertEqual(self.version(), v0 + 3)

    def test_replica_put_invalid(self):
        before = self.config().body
        r = self.ctl("PUT", "/v1/backends/A/replicas/r9", "not-an-address")
        self.assertError(r, 400, "backends.A.replicas.r9")
        r = self.ctl("PUT", "/v1/backends/A/replicas/r9", "127.0.0.1:99999")
        self.assertError(r, 400, "backends.A.replicas.r9")
        r = self.ctl("PUT", "/v1/backends/A/replicas/r9", 12)
        self.assertError(r, 400, "body")
        r = self.ctl("PUT", "/v1/backends/A/replicas/r9", {"addr": "127.0.0.1:1"})
        self.assertError(r, 400, "addr")
        self.assertEqual(self.config().body, before)

    def test_replica_same_address_refused(self):
        """Two replicas of one backend on one address would double its cap:
        every kind of live edit is refused (400 naming both ids) and
        changes nothing."""
        before = self.config().body
        port = self.m1.addr.rsplit(":", 1)[1]
        for addr in (self.m1.addr, "localhost:" + port):
            r = self.ctl("PUT", "/v1/backends/A/replicas/x9", addr)
            self.assertError(r, 400, "backends.A.replicas.x9", "same address",
                                 "backends.A.replicas.m1")
        r = self.ctl("PUT", "/v1/backends/A",
                     backend({"m1": self.m1.addr, "m0": self.m1.addr}))
        self.assertError(r, 400, "backends.A.replicas.m1", "backends.A.replicas.m0")
        doc = self.config().json()
        doc["backends"]["B"]["replicas"]["again"] = self.m2.addr
        r = self.ctl("PUT", "/v1/config", doc)
        self.assertError(r, 400, "backends.B.replicas", "again", "same address")
        self.assertEqual(self.config().body, before)
        # The same address in another backend is fine.
        r = self.ctl("PUT", "/v1/backends/B/replicas/m1", self.m1.addr)
        self.assertEqual(r.status, 200, r)

    # -- endpoints ----------------------------------------------------------

    def test_endpoint_put_delete(self):
        v0 = self.version()
        r = self.ctl("PUT", "/v1/endpoints/new",
                     endpoint("/new", {"B": 1.0}, methods=["POST"], call_method="go"))
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual(j["version"], v0 + 1, r)
        self.assertEqual(j["endpoint"]["route"], "/new", r)
        self.assertEqual(j["endpoint"]["methods"], ["POST"], r)
        self.assertEqual(self.config().json()["endpoints"]["new"]["call_method"], "go")
        r = self.ctl("DELETE", "/v1/endpoints/new")
        self.assertEqual(r.status, 200, r)
        self.assertNotIn("new", self.config().json()["endpoints"])
        r = self.ctl("DELETE", "/v1/endpoints/new")
        self.assertError(r, 404, "new")

    def test_endpoint_put_invalid(self):
        before = self.config().body
        r = self.ctl("PUT", "/v1/endpoints/x", endpoint("no-slash", {"A": 1.0}))
        self.assertError(r, 400, "endpoints.x.route")
        r = self.ctl("PUT", "/v1/endpoints/x", endpoint("/x", {"zz": 1.0}))
        self.assertError(r, 400, "endpoints.x.traffic.zz")
        r = self.ctl("PUT", "/v1/endpoints/x", endpoint("/e", {"A": 1.0}))
        self.assertError(r, 400, "route")  # duplicate of endpoint e's route
        r = self.ctl("PUT", "/v1/endpoints/x", {"route": "/x"})
        self.assertError(r, 400, "endpoints.x.traffic")
        r = self.ctl("PUT", "/v1/endpoints/x", "just a string")
        self.assertError(r, 400, "body")
        self.assertEqual(self.config().body, before)

    # -- errors ---------------------------------------------------------------

    def test_unknown_resource_and_method(self):
        for path in ("/v1/nope", "/v2/config", "/v1/config/extra", "/", "/v1/backends",
                     "/v1/backends/A/replicas", "/v1/backends/A/other/x"):
            r = self.ctl("GET", path)
            self.assertError(r, 404)
        for method, path in (("PATCH", "/v1/config"), ("POST", "/v1/config"),
                             ("POST", "/v1/stats"), ("DELETE", "/v1/queues"),
                             ("PUT", "/metrics"), ("POST", "/v1/backends/A"),
                             ("GET", "/v1/backends/A/replicas/m1")):
            r = self.ctl(method, path, b"" if method != "GET" else None)
            self.assertError(r, 405)
            self.assertTrue(r.header("Allow"), r)

    def test_body_too_large(self):
        before = self.config().body
        c = self.unix_client(self.sock)
        c.send(b"PUT /v1/config HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
               % (2 << 20))
        r = c.read_response()
        self.assertError(r, 413)
        self.assertEqual(self.config().body, before)
        # Exactly at the limit is read (and then refused as JSON, not size).
        body = b" " * ((1 << 20) - 2) + b"{}"
        r = self.ctl("PUT", "/v1/config", body)
        self.assertError(r, 400)

    def test_malformed_request(self):
        c = self.unix_client(self.sock)
        c.send(b"GARBAGE\r\n\r\n")
        r = c.read_response()
        self.assertError(r, 400)

    # -- views ----------------------------------------------------------------

    def test_stats(self):
        c = self.client(self.rr.port)
        self.assertEqual(c.request("GET", "/e").status, 200)
        r = self.ctl("GET", "/v1/stats")
        self.assertEqual(r.status, 200, r)
        j = r.json()
        rep = j["backends"]["A"]["replicas"]["m1"]
        self.assertEqual(rep["address"], self.m1.addr, r)
        for k in ("ongoing", "requests", "errors"):
            self.assertIsInstance(rep[k], int, r)
        self.assertGreaterEqual(rep["requests"], 1, r)

    def test_queues(self):
        r = self.ctl("GET", "/v1/queues")
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual(set(j), {"backends", "version", "time"}, r)
        self.assertEqual(j["backends"]["A"], {"queued": 0, "ongoing": 0, "replicas": 1,
                                              "by_priority": {}, "oldest_wait_ms": 0}, r)
        self.assertLess(abs(j["time"] - time.time()), 60, r)

    def test_watch_stream(self):
        c = self.unix_client(self.sock)
        c.send(harness.build_request("GET", "/v1/queues?watch=1"))
        head = c._read_until(b"\r\n\r\n", time.monotonic() + 5)
        self.assertIn(b" 200 ", head.split(b"\r\n")[0], head)
        self.assertIn(b"transfer-encoding: chunked", head.lower(), head)
        self.assertIn(b"ndjson", head.lower(), head)
        lines = []
        deadline = time.monotonic() + 5
        pending = b""
        while len(lines) < 3:
            size_line = c._read_until(b"\r\n", deadline)
            size = int(size_line.strip(), 16)
            self.assertGreater(size, 0, "stream ended early")
            data = c._read_exact(size + 2, deadline)[:-2]
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                lines.append(json.loads(line))
        for j in lines:
            self.assertIn("A", j["backends"])
            self.assertIn("version", j)
            self.assertIn("time", j)
        # Changes show up in the stream.
        r = self.ctl("DELETE", "/v1/backends/spare")
        self.assertEqual(r.status, 200, r)
        deadline = time.monotonic() + 5
        while True:
            size = int(c._read_until(b"\r\n", deadline).strip(), 16)
            pending += c._read_exact(size + 2, deadline)[:-2]
            line, _, pending = pending.partition(b"\n")
            j = json.loads(line)
            if "spare" not in j["backends"]:
                break
        # The control socket still answers while the watcher stays.
        self.assertEqual(self.ctl("GET", "/healthz").status, 200)
        self.assertEqual(self.control_stats()["watchers"], 1)
        c.close()
        # The server has seen the watcher go (and freed it), then still serves.
        harness.wait_for(lambda: self.control_stats()["watchers"] == 0,
                         what="the closed watcher to be dropped")
        self.assertEqual(self.ctl("GET", "/healthz").status, 200)

    def test_metrics(self):
        c = self.client(self.rr.port)
        self.assertEqual(c.request("GET", "/e").status, 200)
        for get in (lambda p: self.ctl("GET", p), lambda p: self.admin("GET", p)):
            r = get("/metrics")
            self.assertEqual(r.status, 200, r)
            ct = r.header("content-type")
            self.assertTrue(ct.startswith("text/plain"), r)
            self.assertIn("version=0.0.4", ct, r)
            text = r.body.decode()
            self.assertIn("# TYPE ", text)
            self.assertIn("# HELP ", text)
            samples = [l for l in text.splitlines() if l and not l.startswith("#")]
            self.assertTrue(samples, text)
            for l in samples:
                self.assertRegex(l, r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? \S+$')
            self.assertIn('ringroute_replica_requests_total{backend="A",replica="m1"}', text)

    # -- admin port -------------------------------------------------------------

    def test_admin_read_only(self):
        before = self.config().body
        for method, path in (("PUT", "/v1/config"), ("DELETE", "/v1/backends/spare"),
                             ("PUT", "/v1/backends/A/replicas/x"), ("POST", "/metrics"),
                             ("PUT", "/v1/endpoints/e"), ("DELETE", "/nope")):
            r = self.admin(method, path, b"{}")
            j = self.assertError(r, 405)
            self.assertIn("control socket", j["error"], r)
        for path in ("/v1/config", "/nope", "/v1/backends/A"):
            r = self.admin("GET", path)
            self.assertError(r, 404)
        for path in ("/healthz", "/v1/stats", "/v1/queues", "/metrics"):
            r = self.admin("GET", path)
            self.assertEqual(r.status, 200, r)
        self.assertEqual(self.admin("GET", "/healthz").json(), {"ok": True})
        self.assertEqual(self.config().body, before)

    def test_admin_watch(self):
        c = self.client(self.rr.admin_port)
        c.send(harness.build_request("GET", "/v1/queues?watch=1"))
        head = c._read_until(b"\r\n\r\n", time.monotonic() + 5)
        self.assertIn(b" 200 ", head)
        deadline = time.monotonic() + 5
        got = 0
        while got < 2:
            size = int(c._read_until(b"\r\n", deadline).strip(), 16)
            data = c._read_exact(size + 2, deadline)[:-2]
            got += data.count(b"\n")
        self.assertGreaterEqual(got, 2)

    # -- data path ---------------------------------------------------------------

    def test_add_replica_reaches_it(self):
        self.assertEqual(self.hits("/e", 4), {"m1": 4})
        r = self.ctl("PUT", "/v1/backends/A/replicas/m2", self.m2.addr)
        self.assertEqual(r.status, 200, r)
        got = self.eventually(lambda: (lambda h: h if h.get("m2") else None)(self.hits("/e", 10)))
        self.assertTrue(got and got.get("m2"), got)
        self.assertEqual(set(got), {"m1", "m2"}, got)
        # Remove the first: everything goes to the new one.
        r = self.ctl("DELETE", "/v1/backends/A/replicas/m1")
        self.assertEqual(r.status, 200, r)
        got = self.eventually(lambda: (lambda h: h if set(h) == {"m2"} else None)(self.hits("/e", 5)))
        self.assertEqual(got, {"m2": 5})
        self.assertEqual(self.hits("/e", 10), {"m2": 10})

    def test_traffic_shift(self):
        self.assertEqual(self.hits("/split", 10), {"m1": 10})
        r = self.ctl("PUT", "/v1/endpoints/split", endpoint("/split", {"A": 0.0, "B": 1.0}))
        self.assertEqual(r.status, 200, r)
        got = self.eventually(lambda: (lambda h: h if set(h) == {"m2"} else None)(self.hits("/split", 5)))
        self.assertEqual(got, {"m2": 5})
        self.assertEqual(self.hits("/split", 20), {"m2": 20})
        r = self.ctl("PUT", "/v1/endpoints/split", endpoint("/split", {"A": 1.0, "B": 0.0}))
        self.assertEqual(r.status, 200, r)
        got = self.eventually(lambda: (lambda h: h if set(h) == {"m1"} else None)(self.hits("/split", 5)))
        self.assertEqual(got, {"m1": 5})

    def test_delete_endpoint_gives_404(self):
        self.assertEqual(self.hits("/e", 3), {"m1": 3})
        r = self.ctl("DELETE", "/v1/endpoints/e")
        self.assertEqual(r.status, 200, r)
        got = self.eventually(lambda: (lambda h: h if set(h) == {404} else None)(self.hits("/e", 3)))
        self.assertEqual(got, {404: 3})
        # A new endpoint appears on the data path too.
        r = self.ctl("PUT", "/v1/endpoints/e2", endpoint("/e2", {"B": 1.0}))
        self.assertEqual(r.status, 200, r)
        got = self.eventually(lambda: (lambda h: h if set(h) == {"m2"} else None)(self.hits("/e2", 3)))
        self.assertEqual(got, {"m2": 3})

    def test_refused_change_keeps_routing(self):
        r = self.ctl("PUT", "/v1/endpoints/split", endpoint("/split", {"A": 0.0, "B9": 1.0}))
        self.assertError(r, 400, "endpoints.split.traffic.B9")
        self.assertEqual(self.hits("/split", 10), {"m1": 10})

    def test_concurrent_changes_serialised(self):
        v0 = self.version()
        errors = []

        def worker(i):
            try:
                for k in range(5):
                    # One address each: two replicas on one are refused.
                    # Never contacted: no request is sent to A meanwhile.
                    r = self.ctl("PUT", "/v1/backends/A/replicas/t%d_%d" % (i, k),
                                 "127.1.%d.%d:9" % (i, k + 1))
                    if r.status != 200:
                        errors.append(r)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        reps = self.config().json()["backends"]["A"]["replicas"]
        for i in range(4):
            for k in range(5):
                self.assertIn("t%d_%d" % (i, k), reps)  # no lost update
        self.assertEqual(self.version(), v0 + 20)


class ControlSocketTwoShardsTest(ControlSocketTest):
    """The same against two shards: every change must reach both."""
    SHARDS = 2


class ReloadAndReportTest(ControlCase):
    REPORT_MS = 100

    def test_sighup_reload(self):
        m1 = self.mock("m1")
        cfg = {"backends": {"A": backend([m1])}, "endpoints": {"e": endpoint("/e", {"A": 1.0})}}
        rr = self.start(cfg)
        v0 = self.version()
        cfg["endpoints"]["f"] = endpoint("/f", {"A": 1.0})
        with open(rr.config_path, "w") as f:
            json.dump(cfg, f)
        os.kill(rr.pid, signal.SIGHUP)
        doc = self.eventually(lambda: "f" in self.config().json()["endpoints"])
        self.assertTrue(doc, self.config())
        self.assertEqual(self.version(), v0 + 1)
        # A broken file changes nothing.
        with open(rr.config_path, "w") as f:
            f.write('{"backends": {}, "endpoints": {"x": {"route": "/x", "traffic": {"Q": 1}}}}')
        before = self.config().body
        os.kill(rr.pid, signal.SIGHUP)
        # The refusal is logged once the reload is done: wait for that line,
        # then nothing may have changed.
        self.assertTrue(harness.wait_stderr(rr, "endpoints.x.traffic.Q"), rr.stderr())
        self.assertEqual(self.config().body, before)
        self.assertEqual(self.version(), v0 + 1)

    def test_report_url(self):
        posts = []

        def respond(req):
            posts.append(req)
            return b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"

        up = harness.RawUpstream(respond, close_after=True)
        try:
            m1 = self.mock("m1")
            cfg = {"backends": {"A": backend([m1])},
                   "endpoints": {"e": endpoint("/e", {"A": 1.0})}}
            rr = self.start(cfg, extra=["--report-url", "http://127.0.0.1:%d/q" % up.port])
            harness.wait_for(lambda: self.control_stats()["reports_sent"] >= 3,
                             what="3 reports answered 2xx")
            self.assertGreaterEqual(len(posts), 3, rr.stderr())
            self.assertEqual(self.control_stats()["reports_failed"], 0, rr.stderr())
            req = posts[0]
            self.assertEqual((req["method"], req["target"]), ("POST", "/q"))
            j = json.loads(req["body"])
            self.assertEqual(j["backends"]["A"]["replicas"], 1, req)
            self.assertIn("version", j)
            self.assertIn("application/json", req["hdict"].get("content-type", ""))
            self.assertNotIn("report to", rr.stderr())
        finally:
            up.close()

    def test_report_url_down_logged_rarely(self):
        m1 = self.mock("m1")
        cfg = {"backends": {"A": backend([m1])}, "endpoints": {"e": endpoint("/e", {"A": 1.0})}}
        rr = self.start(cfg, extra=["--report-url",
                                    "http://127.0.0.1:%d/q" % harness.free_port()])
        harness.wait_for(lambda: self.control_stats()["reports_failed"] >= 10,
                         what="10 failed reports")
        self.assertEqual(self.ctl("GET", "/healthz").status, 200)
        n = rr.stderr().count("report to")
        self.assertEqual(n, 1, rr.stderr())

    def test_report_url_blackhole_does_not_block(self):
        # A peer that accepts but never answers: the loop must keep serving.
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(64)
        try:
            m1 = self.mock("m1")
            cfg = {"backends": {"A": backend([m1])},
                   "endpoints": {"e": endpoint("/e", {"A": 1.0})}}
            rr = self.start(cfg, extra=["--report-url",
                                        "http://localhost:%d/q" % lsock.getsockname()[1]])
            # Keep asking while reports hang and time out one after the
            # other: every answer comes quickly, however many there are.
            deadline = time.monotonic() + 10
            c = self.unix_client(self.sock)
            while True:
                t0 = time.monotonic()
                self.assertEqual(c.request("GET", "/healthz").status, 200)
                self.assertLess(time.monotonic() - t0, 0.5)
                if self.control_stats(c)["reports_failed"] >= 3:
                    break
                self.assertLess(time.monotonic(), deadline, "no report timed out")
            self.assertIn("timed out", rr.stderr())
        finally:
            lsock.close()

    def test_stale_socket_replaced_and_removed(self):
        path = harness.control_sock_path()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.close()  # a stale socket file, nobody listening
        m1 = self.mock("m1")
        cfg = {"backends": {"A": backend([m1])}, "endpoints": {"e": endpoint("/e", {"A": 1.0})}}
        rr = self.ringroute(cfg, admin=True, extra=["--control", path])
        self.sock = path
        self.rr = rr
        self.assertEqual(self.ctl("GET", "/healthz").status, 200)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        rr.stop()
        self._procs.remove(rr)
        self.assertIsNone(rr.sanitizer_report())
        self.assertFalse(os.path.exists(path), "control socket left behind on exit")


if __name__ == "__main__":
    harness.main()
