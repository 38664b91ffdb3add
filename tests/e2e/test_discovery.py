#!/usr/bin/env python3
"""Replica addresses beyond IPv4 literals: `[IPV6]:PORT` and `unix:/PATH`
replicas serve requests through real mock-replica processes; malformed
addresses are refused at start with `FILE: json.path: reason`. DNS names:
a name with several addresses is one replica per address (`ID/ADDRESS`),
and a change of the set (a server restarted on another address behind the
same name) moves traffic with zero failed requests. The names are served
by a small DNS server in this file, which ringroute is pointed at with its
test hook RR_DNS_SERVER."""

import os
import re
import socket
import struct
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint  # noqa: E402


def have_ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


def config(replicas, **kw):
    return {
        "backends": {"b": backend(replicas, **kw)},
        "endpoints": {"api": endpoint("/api", {"b": 1.0})},
    }


class DNSServer:
    """A UDP DNS server on 127.0.0.1 answering A and AAAA queries from
    names (name -> list of addresses, changed at will) and SRV queries
    from srv (name -> list of (priority, weight, port, target)); other
    names get NXDOMAIN, a known name asked for a type it lacks gets an
    empty answer. TTL 0: every lookup asks again."""

    def __init__(self, names=None):
        self.names = dict(names or {})
        self.srv = {}
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.queries = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def set(self, name, addrs):
        with self.lock:
            if addrs is None:
                self.names.pop(name, None)
            else:
                self.names[name] = list(addrs)

    def set_srv(self, name, records):
        """records: [(priority, weight, port, target)], or None: gone."""
        with self.lock:
            if records is None:
                self.srv.pop(name, None)
            else:
                self.srv[name] = list(records)

    def _answer(self, q):
        (qid, flags, qd) = struct.unpack("!HHH", q[:6])
        i, labels = 12, []
        while q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode("ascii", "replace"))
            i += 1 + q[i]
        qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
        question = q[12:i + 5]
        name = ".".join(labels).lower()
        with self.lock:
            self.queries += 1
            addrs = self.names.get(name)
            srv = self.srv.get(name)
        rcode, answers = 0, b""
        count = 0
        if addrs is None and srv is None:
            rcode = 3  # NXDOMAIN
        elif qtype == 33:
            for prio, weight, port, target in srv or []:
                rd = struct.pack("!HHH", prio, weight, port)
                for label in target.rstrip(".").split("."):
                    rd += bytes([len(label)]) + label.encode("ascii")
                rd += b"\0"
                answers += b"\xc0\x0c" + struct.pack("!HHIH", 33, 1, 0, len(rd)) + rd
                count += 1
        else:
            addrs = addrs or []
            fam, t = (socket.AF_INET, 1) if qtype == 1 else (socket.AF_INET6, 28)
            for a in addrs:
                if (":" in a) != (fam == socket.AF_INET6) or qtype not in (1, 28):
                    continue
                rd = socket.inet_pton(fam, a)
                answers += b"\xc0\x0c" + struct.pack("!HHIH", t, 1, 0, len(rd)) + rd
                count += 1
        head = struct.pack("!HHHHHH", qid, 0x8180 | (flags & 0x0100) | rcode, 1, count, 0, 0)
        return head + question + answers

    def _serve(self):
        while not self.stopping:
            try:
                q, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                self.sock.sendto(self._answer(q), peer)
            except (IndexError, struct.error, OSError):
                pass

    def close(self):
        self.stopping = True
        self.sock.close()


def free_port_on(*hosts):
    """A port free on every one of hosts (loopback addresses)."""
    for _ in range(50):
        s = socket.socket()
        s.bind((hosts[0], 0))
        port = s.getsockname()[1]
        ok = True
        for h in hosts[1:]:
            t = socket.socket()
            try:
                t.bind((h, port))
            except OSError:
                ok = False
            t.close()
        s.close()
        if ok:
            return port
    raise RuntimeError("no common free port")


class AddressFormsTest(harness.RRTestCase):

    def serve_ids(self, rr, n):
        seen = {}
        with rr.client() as c:
            for _ in range(n):
                r = c.request("POST", "/api", body=b"{}")
                self.assertEqual(r.status, 200, r.raw())
                seen[r.json()["id"]] = seen.get(r.json()["id"], 0) + 1
        return seen

    def test_ipv6_replica(self):
        if not have_ipv6_loopback():
            self.skipTest("no ::1 on this machine")
        m = self.mock("v6", listen="[::1]:0")
        self.assertTrue(m.addr.startswith("[::1]:"), m.addr)
        rr = self.ringroute(config({"r1": m.addr}, health_check={"path": "/-/healthz",
                                                                   "interval_ms": 100}))
        time.sleep(0.35)  # a few probes, over IPv6 too
        self.assertEqual(self.serve_ids(rr, 20), {"v6": 20})
        self.assertNotIn("unhealthy", rr.stderr())

    def test_ipv6_listeners(self):
        """--listen and --admin on [::1]: clients over IPv6, their address
        forwarded as X-Forwarded-For."""
        if not have_ipv6_loopback():
            self.skipTest("no ::1 on this machine")
        m = self.mock("v4")
        alog = os.path.join(tempfile.mkdtemp(prefix="rr-disco-"), "access.log")
        rr = self.ringroute(config({"r1": m.addr}), admin=True,
                            extra=["--listen", "[::1]:0", "--admin", "[::1]:0",
                                   "--access-log", alog])
        with harness.Client(rr.port, host="::1") as c:
            r = c.request("POST", "/api", body=b"{}")
            self.assertEqual(r.status, 200, r.raw())
            self.assertEqual(r.json()["headers"]["x-forwarded-for"], "::1")
        s = socket.create_connection(("::1", rr.admin_port), timeout=5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertTrue(s.recv(100).startswith(b"HTTP/1.1 200"))
        s.close()
        harness.wait_for(lambda: os.path.getsize(alog) > 0, 5, "an access log line")
        with open(alog) as f:
            self.assertRegex(f.read().split()[1], r"^\[::1\]:\d+$")
        # IPv4 clients do not reach a listener bound to ::1
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", rr.port), timeout=2).close()

    def test_unix_replica(self):
        path = os.path.join(tempfile.mkdtemp(prefix="rr-disco-"), "m.sock")
        m = self.mock("ux", listen="unix:" + path)
        rr = self.ringroute(config({"r1": m.addr}, health_check={"path": "/-/healthz",
                                                                   "interval_ms": 100}))
        time.sleep(0.35)  # a few probes, over the unix socket too
        self.assertEqual(self.serve_ids(rr, 20), {"ux": 20})
        self.assertNotIn("unhealthy", rr.stderr())
        # The server goes away: the probes say so.
        m.stop()
        harness.wait_stderr(rr, "replica b/r1 is unhealthy")

    def test_unix_and_tcp_together(self):
        """One backend mixing families: both serve, the cap counts each."""
        path = os.path.join(tempfile.mkdtemp(prefix="rr-disco-"), "m.sock")
        u = self.mock("ux", listen="unix:" + path)
        t = self.mock("tcp")
        rr = self.ringroute(config({"u": u.addr, "t": t.addr}, policy="round_robin"))
        seen = self.serve_ids(rr, 20)
        self.assertEqual(seen, {"ux": 10, "tcp": 10})

    def test_unix_replica_gone(self):
        """A unix path with nothing behind it fails like a refused TCP
        connect: 502/503, the proxy keeps running."""
        path = os.path.join(tempfile.mkdtemp(prefix="rr-disco-"), "none.sock")
        rr = self.ringroute(config({"r1": "unix:" + path}, retries=0))
        with rr.client() as c:
            r = c.request("POST", "/api", body=b"{}")
            self.assertIn(r.status, (502, 503), r.raw())
        self.assertTrue(rr.alive())

    def rejected(self, cfg):
        path = harness.write_config(cfg)
        rc, out, err = harness.run_ringroute_expect_exit(None, config_path=path)
        self.assertEqual(rc, 1, err)
        self.assertNotIn("READY", out)
        self.assertNotRegex(err, r"(AddressSanitizer|runtime error:|LeakSanitizer)")
        return path, err

    def test_bad_addresses(self):
        cases = [
            ("[::1", "no ']'"),
            ("[::1]:0", "port 0 out of range 1..65535"),
            ("[::1]", "no ':' between address and port"),
            ("[fe80::zz]:80", "is not an IPv6 address"),
            ("::1:80", "is not an IPv4 address, [IPv6], localhost or a DNS name"),
            ("bad_name!:80", "is not an IPv4 address, [IPv6], localhost or a DNS name"),
            ("model.test:0", "port 0 out of range"),
            ("unix:", "no path after 'unix:'"),
            ("unix:relative.sock", "must be absolute"),
            ("unix:/" + "x" * 120, "longer than 107 bytes"),
            ("127.0.0.1:0", "port 0 out of range"),
            ("srv:model.test", "is not _SERVICE._PROTO.NAME"),
            ("srv:", "no name after 'srv:'"),
        ]
        for addr, why in cases:
            with self.subTest(addr=addr):
                path, err = self.rejected(config({"r1": addr}))
                self.assertRegex(err, re.escape(path) + r": backends\.b\.replicas\.r1: bad address")
                self.assertIn(why, err)

    def test_same_address_other_spelling(self):
        """[::1]:N and [0::1]:N are one server; so are two spellings of one
        unix path given twice."""
        path, err = self.rejected(config({"r1": "[::1]:9001", "r2": "[0:0::1]:9001"}))
        self.assertIn("backends.b.replicas.r2: same address [::1]:9001 as "
                      "backends.b.replicas.r1", err)
        path, err = self.rejected(config({"a": "unix:/tmp/x.sock", "b": "unix:/tmp/x.sock"}))
        self.assertIn("backends.b.replicas.b: same address unix:/tmp/x.sock as "
                      "backends.b.replicas.a", err)


class DNSCase(harness.RRTestCase):
    """Names resolved by ringroute (c-ares) against DNSServer."""

    def setUp(self):
        super().setUp()
        self.dns = DNSServer()
        self.env = {"RR_DNS_SERVER": "127.0.0.1:%d" % self.dns.port}

    def tearDown(self):
        super().tearDown()
        self.dns.close()

    def start(self, replicas, refresh_ms=200, extra=(), **kw):
        cfg = config(replicas, policy="round_robin", **kw)
        cfg["dns_refresh_ms"] = refresh_ms
        self.sock = harness.control_sock_path()
        return self.ringroute(cfg, admin=True, env=self.env,
                              extra=["--control", self.sock] + list(extra))

    def document(self):
        with self.unix_client(self.sock) as c:
            r = c.request("GET", "/v1/config")
            self.assertEqual(r.status, 200, r.raw())
            return r.json()

    def replica_ids(self, rr):
        r = harness.http_once(rr.admin_port, "GET", "/v1/stats")
        self.assertEqual(r.status, 200, r.raw())
        return sorted(r.json()["backends"]["b"]["replicas"])


class DNSTest(DNSCase):
    def test_name_with_two_addresses(self):
        port = free_port_on("127.0.0.2", "127.0.0.3")
        a = self.mock("a", listen="127.0.0.2:%d" % port)
        b = self.mock("b", listen="127.0.0.3:%d" % port)
        self.dns.set("model.test", ["127.0.0.2", "127.0.0.3"])
        rr = self.start({"m": "model.test:%d" % port})
        self.assertEqual(self.replica_ids(rr), ["m/127.0.0.2:%d" % port, "m/127.0.0.3:%d" % port])
        seen = {}
        with rr.client() as c:
            for _ in range(20):
                r = c.request("POST", "/api", body=b"{}")
                self.assertEqual(r.status, 200, r.raw())
                seen[r.json()["id"]] = seen.get(r.json()["id"], 0) + 1
        self.assertEqual(seen, {"a": 10, "b": 10})
        # The document keeps the name as written.
        doc = self.document()
        self.assertEqual(doc["backends"]["b"]["replicas"], {"m": "model.test:%d" % port})
        self.assertEqual(doc["dns_refresh_ms"], 200)
        del a, b

    def test_restarted_on_another_address_under_load(self):
        """The server behind the name moves (old address gone, new one
        added): the new one gets the traffic, the old one drains, and not
        one request fails under steady load."""
        port = free_port_on("127.0.0.2", "127.0.0.3")
        old = self.mock("old", listen="127.0.0.2:%d" % port, delay_ms=20)
        self.dns.set("model.test", ["127.0.0.2"])
        rr = self.start({"m": "model.test:%d" % port})
        stop = threading.Event()
        counts = {}
        failures = []
        lock = threading.Lock()

        def worker(k):
            with rr.client(timeout=10) as c:
                while not stop.is_set():
                    r = c.request("POST", "/api", body=b"{}")
                    with lock:
                        if r.status != 200:
                            failures.append(r.status)
                        else:
                            counts[r.json()["id"]] = counts.get(r.json()["id"], 0) + 1

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for th in threads:
            th.start()
        try:
            harness.wait_for(lambda: counts.get("old", 0) >= 20, 10, "traffic on old")
            new = self.mock("new", listen="127.0.0.3:%d" % port, delay_ms=20)
            self.dns.set("model.test", ["127.0.0.3"])
            harness.wait_stderr(rr, "dns: model.test: now 127.0.0.3 (was 127.0.0.2)")
            harness.wait_for(lambda: self.replica_ids(rr) == ["m/127.0.0.3:%d" % port], 5,
                             "old replica gone from the stats")
            at_switch = counts.get("old", 0)
            time.sleep(0.3)  # what was in flight on old finishes
            after = counts.get("old", 0)
            old.stop()  # the old server goes away: nothing may notice
            harness.wait_for(lambda: counts.get("new", 0) >= 40, 10, "traffic on new")
        finally:
            stop.set()
            for th in threads:
                th.join(15)
        self.assertEqual(failures, [])
        self.assertLessEqual(after - at_switch, 4, "old got new requests after it drained")
        self.assertEqual(counts.get("old", 0), after)
        self.assertGreaterEqual(counts.get("new", 0), 40)
        del new

    def test_name_that_stops_resolving_keeps_its_addresses(self):
        port = free_port_on("127.0.0.2")
        self.mock("a", listen="127.0.0.2:%d" % port)
        self.dns.set("model.test", ["127.0.0.2"])
        rr = self.start({"m": "model.test:%d" % port})
        self.dns.set("model.test", None)
        harness.wait_stderr(rr, "dns: cannot resolve model.test: Domain name not found; "
                                "keeping its last addresses (127.0.0.2)")
        with rr.client() as c:
            r = c.request("POST", "/api", body=b"{}")
            self.assertEqual(r.status, 200, r.raw())
        self.assertEqual(self.replica_ids(rr), ["m/127.0.0.2:%d" % port])
        self.dns.set("model.test", ["127.0.0.2"])
        harness.wait_stderr(rr, "dns: model.test resolves again")

    def test_unresolvable_at_start(self):
        cfg = config({"m": "nosuch.test:9000"})
        path = harness.write_config(cfg)
        env = dict(os.environ, **self.env)
        argv = [harness.ringroute_bin(), "--config", path, "--listen", "127.0.0.1:0"]
        import subprocess
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30, env=env)
        err = p.stderr.decode()
        self.assertEqual(p.returncode, 1, err)
        self.assertIn(path + ": backends.b.replicas.m: cannot resolve nosuch.test: "
                      "Domain name not found", err)

    def test_name_on_a_literal_replicas_address(self):
        """A name resolving to the address another replica of the backend
        already has is the duplicate-address error: at start it stops
        ringroute; found by a refresh, it is logged (once) and the old
        addresses stay."""
        port = free_port_on("127.0.0.2", "127.0.0.3")
        self.dns.set("model.test", ["127.0.0.2"])
        cfg = config({"a": "127.0.0.2:%d" % port, "m": "model.test:%d" % port})
        path = harness.write_config(cfg)
        import subprocess
        p = subprocess.run([harness.ringroute_bin(), "--config", path, "--listen", "127.0.0.1:0"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                           env=dict(os.environ, **self.env))
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(b"backends.b.replicas.m: same address 127.0.0.2:%d as backends.b.replicas.a"
                      % port, p.stderr)
        self.mock("a", listen="127.0.0.2:%d" % port)
        self.mock("m", listen="127.0.0.3:%d" % port)
        self.dns.set("model.test", ["127.0.0.3"])
        rr = self.start({"a": "127.0.0.2:%d" % port, "m": "model.test:%d" % port})
        self.dns.set("model.test", ["127.0.0.2"])
        harness.wait_stderr(rr, "dns: the new addresses make no valid config, kept the old ones")
        time.sleep(0.5)  # two more passes: not said again
        self.assertEqual(rr.stderr().count("make no valid config"), 1)
        self.assertEqual(self.replica_ids(rr), ["a", "m/127.0.0.3:%d" % port])

    def test_edit_with_unresolvable_name_refused(self):
        port = free_port_on("127.0.0.2")
        self.mock("a", listen="127.0.0.2:%d" % port)
        self.dns.set("model.test", ["127.0.0.2"])
        rr = self.start({"m": "model.test:%d" % port})
        with self.unix_client(self.sock) as c:
            r = c.request("PUT", "/v1/backends/b/replicas/x",
                          headers={"Content-Type": "application/json"},
                          body=b'"nosuch.test:9000"')
            self.assertEqual(r.status, 400, r.raw())
            self.assertIn(b"cannot resolve nosuch.test", r.raw())
        self.assertEqual(self.replica_ids(rr), ["m/127.0.0.2:%d" % port])


SRV = "_http._tcp.model.test"


class SRVTest(DNSCase):
    """srv:_SERVICE._PROTO.NAME: one replica per SRV target address and
    port, so a replica restarted on another port behind the same name is
    found (an A record has no port)."""

    def get_ids(self, rr, n):
        seen = {}
        with rr.client() as c:
            for _ in range(n):
                r = c.request("GET", "/api")
                self.assertEqual(r.status, 200, r.raw())
                seen[r.json()["id"]] = seen.get(r.json()["id"], 0) + 1
        return seen

    def test_srv_records(self):
        a = self.mock("a")
        b = self.mock("b")
        c = self.mock("c")  # a backup (priority 1): never used while 0 has records
        self.dns.set("a.test", ["127.0.0.1"])
        self.dns.set("b.test", ["127.0.0.1"])
        self.dns.set("c.test", ["127.0.0.1"])
        self.dns.set_srv(SRV, [(0, 50, a.port, "a.test"), (0, 50, b.port, "b.test"),
                               (1, 50, c.port, "c.test")])
        rr = self.start({"m": "srv:" + SRV})
        self.assertEqual(self.replica_ids(rr), sorted(["m/127.0.0.1:%d" % a.port,
                                                       "m/127.0.0.1:%d" % b.port]))
        self.assertEqual(self.get_ids(rr, 20), {"a": 10, "b": 10})
        self.assertEqual(self.document()["backends"]["b"]["replicas"], {"m": "srv:" + SRV})
        # SRV weights are replica weights: 3:1
        self.dns.set_srv(SRV, [(0, 75, a.port, "a.test"), (0, 25, b.port, "b.test")])
        def put(ws):  # the set as logged: by port
            return ", ".join("127.0.0.1:%d weight %d" % pw for pw in sorted(ws.items()))
        self.assertTrue(harness.wait_stderr(
            rr, "dns: srv:%s: now %s (was %s)" % (SRV, put({a.port: 75, b.port: 25}),
                                                  put({a.port: 50, b.port: 50}))),
            rr.stderr_tail())
        harness.wait_for(lambda: "config version 2" in rr.stderr(), 5, "the rebuild")
        self.assertIn("config version 2: backend b resolved (replicas.m/127.0.0.1:%d weight "
                      "50 -> %d" % (min(a.port, b.port), 75 if a.port < b.port else 25),
                      rr.stderr())
        seen = self.get_ids(rr, 40)
        self.assertEqual(sum(seen.values()), 40)
        self.assertTrue(seen.get("b", 0) >= 5 and seen["a"] >= 2 * seen["b"], seen)
        # the lowest priority group gone: the backup group serves
        self.dns.set_srv(SRV, [(1, 50, c.port, "c.test")])
        harness.wait_for(lambda: self.replica_ids(rr) == ["m/127.0.0.1:%d" % c.port], 5,
                         "the backup group")
        self.assertEqual(self.get_ids(rr, 5), {"c": 5})

    def test_srv_port_moves_under_load(self):
        """A replica killed and started again on a new port; the SRV answer
        changes: the new port gets requests, the old one drains, and every
        client request gets 200."""
        a = self.mock("a", delay_ms=10)
        old = self.mock("old", delay_ms=10)
        self.dns.set("a.test", ["127.0.0.1"])
        self.dns.set("b.test", ["127.0.0.1"])
        self.dns.set_srv(SRV, [(0, 50, a.port, "a.test"), (0, 50, old.port, "b.test")])
        self.alog = os.path.join(tempfile.mkdtemp(prefix="rr-disco-"), "access.log")
        # The kill itself costs retries (in flight on it, sent to it until
        # ejected): every client may be retrying at once, which the
        # default budget (20%, floor 3) would refuse to the fourth.
        rr = self.start({"m": "srv:" + SRV}, extra=["--access-log", self.alog],
                        retry_budget_percent=100)
        old_id = "m/127.0.0.1:%d" % old.port
        stop = threading.Event()
        counts, failures = {}, []
        lock = threading.Lock()

        def worker(k):
            with rr.client(timeout=10) as c:
                while not stop.is_set():
                    r = c.request("GET", "/api")
                    with lock:
                        if r.status != 200:
                            failures.append((r.status, r.raw()[:200]))
                        else:
                            counts[r.json()["id"]] = counts.get(r.json()["id"], 0) + 1

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for th in threads:
            th.start()
        try:
            harness.wait_for(lambda: counts.get("old", 0) >= 20, 10, "traffic on old")
            old.stop()  # killed: what it had in flight is retried elsewhere
            new = self.mock("new", delay_ms=10)
            self.dns.set_srv(SRV, [(0, 50, a.port, "a.test"), (0, 50, new.port, "b.test")])
            harness.wait_stderr(rr, "dns: srv:%s: now" % SRV)
            harness.wait_for(lambda: old_id not in self.replica_ids(rr), 5,
                             "old port drained from the stats")
            at_drain = counts.get("old", 0)
            n0 = counts.get("new", 0)
            harness.wait_for(lambda: counts.get("new", 0) >= n0 + 40, 10, "traffic on new")
        finally:
            stop.set()
            for th in threads:
                th.join(15)
        self.assertEqual(failures, [], rr.stderr_tail())
        self.assertEqual(counts.get("old", 0), at_drain)
        self.assertIn("m/127.0.0.1:%d" % new.port, self.replica_ids(rr))
        self.assertGreaterEqual(counts.get("a", 0), 40)

    def test_srv_unresolvable_at_start(self):
        import subprocess
        path = harness.write_config(config({"m": "srv:_http._tcp.nosuch.test"}))
        p = subprocess.run([harness.ringroute_bin(), "--config", path, "--listen", "127.0.0.1:0"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                           env=dict(os.environ, **self.env))
        err = p.stderr.decode()
        self.assertEqual(p.returncode, 1, err)
        self.assertIn(path + ": backends.b.replicas.m: cannot resolve "
                      "srv:_http._tcp.nosuch.test: Domain name not found", err)
        # records whose targets do not resolve say which
        self.dns.set_srv(SRV, [(0, 1, 9000, "gone.test")])
        path = harness.write_config(config({"m": "srv:" + SRV}))
        p = subprocess.run([harness.ringroute_bin(), "--config", path, "--listen", "127.0.0.1:0"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                           env=dict(os.environ, **self.env))
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("cannot resolve srv:%s: no SRV target resolves (gone.test: Domain name "
                      "not found)" % SRV, p.stderr.decode())

    def test_srv_stops_resolving_keeps_its_set(self):
        a = self.mock("a")
        self.dns.set("a.test", ["127.0.0.1"])
        self.dns.set_srv(SRV, [(0, 1, a.port, "a.test")])
        rr = self.start({"m": "srv:" + SRV})
        self.dns.set_srv(SRV, None)
        self.assertTrue(harness.wait_stderr(
            rr, "dns: cannot resolve srv:%s: Domain name not found; keeping its last "
            "addresses (127.0.0.1:%d weight 1)" % (SRV, a.port)), rr.stderr_tail())
        self.assertEqual(self.get_ids(rr, 3), {"a": 3})
        self.assertEqual(self.replica_ids(rr), ["m/127.0.0.1:%d" % a.port])
        self.dns.set_srv(SRV, [(0, 1, a.port, "a.test")])
        self.assertTrue(harness.wait_stderr(rr, "dns: srv:%s resolves again" % SRV))


if __name__ == "__main__":
    harness.main()
