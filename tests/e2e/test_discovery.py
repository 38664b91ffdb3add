#!/usr/bin/env python3
"""Replica addresses beyond IPv4 literals: `[IPV6]:PORT` and `unix:/PATH`
replicas serve requests through real mock-replica processes; malformed
addresses are refused at start with `FILE: json.path: reason`."""

import os
import re
import socket
import sys
import tempfile

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
        self.assertEqual(self.serve_ids(rr, 20), {"v6": 20})

    def test_unix_replica(self):
        path = os.path.join(tempfile.mkdtemp(prefix="rr-disco-"), "m.sock")
        m = self.mock("ux", listen="unix:" + path)
        rr = self.ringroute(config({"r1": m.addr}, health_check={"path": "/-/healthz",
                                                                   "interval_ms": 100}))
        self.assertEqual(self.serve_ids(rr, 20), {"ux": 20})

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
            ("::1:80", "is not an IPv4 address, [IPv6] or localhost"),
            ("unix:", "no path after 'unix:'"),
            ("unix:relative.sock", "must be absolute"),
            ("unix:/" + "x" * 120, "longer than 107 bytes"),
            ("127.0.0.1:0", "port 0 out of range"),
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


if __name__ == "__main__":
    harness.main()
