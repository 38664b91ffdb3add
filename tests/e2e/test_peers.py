#!/usr/bin/env python3
"""--peers dns:NAME:PORT end to end (docs/operations.md "Several
instances"): three instances on 127.0.0.1/127.0.0.2/127.0.0.3 (all of
127/8 is loopback), each bound to its own address and one common port,
resolve a name served by the DNS server of test_discovery.py (test hook
RR_DNS_SERVER). The set changes from 3 peers to 2: the caps are shared
anew (cap 6: 2/2/2 -> 3/3), the replica never has more than 6 requests in
flight, and the instance left out of the set is not ready and has no
share of any cap."""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint  # noqa: E402
from test_discovery import DNSServer, free_port_on  # noqa: E402

ADDRS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
CAP = 6
NAME = "peers.test"


class Load:
    """clients keep-alive connections per address sending GETs back to
    back to (address, port) until stopped; counts statuses."""

    def __init__(self, port, addrs, clients):
        self.stops = {a: threading.Event() for a in addrs}
        self.status = {}
        self.errors = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(a, port), daemon=True)
                        for a in addrs for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self, addr, port):
        try:
            with harness.Client(port, host=addr, timeout=15) as c:
                while not self.stops[addr].is_set():
                    r = c.request("GET", "/p")
                    with self.lock:
                        self.status[r.status] = self.status.get(r.status, 0) + 1
        except Exception as e:  # reported by the test
            with self.lock:
                self.errors.append("%s: %s: %s" % (addr, type(e).__name__, e))

    def stop(self, addr=None):
        for a, ev in self.stops.items():
            if addr is None or a == addr:
                ev.set()

    def join(self):
        self.stop()
        for t in self.threads:
            t.join(20)


class PeersTest(harness.RRTestCase):

    def setUp(self):
        super().setUp()
        self.dns = DNSServer()
        self.env = {"RR_DNS_SERVER": "127.0.0.1:%d" % self.dns.port}

    def tearDown(self):
        super().tearDown()
        self.dns.close()

    def stats(self, rr):
        return harness.http_once(rr.admin_port, "GET", "/v1/stats").json()

    def share(self, rr):
        st = self.stats(rr)
        return st["instance"], st["backends"]["b"]["instance_max_ongoing_requests"]

    def start_set(self, mock, addrs, port):
        cfg = {"backends": {"b": backend([mock], max_ongoing_requests=CAP,
                                         max_queued_requests=1000, queue_timeout_ms=15000)},
               "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        path = harness.write_config(cfg)
        return [self.ringroute(path, admin=True, env=self.env,
                               extra=["--listen", "%s:%d" % (a, port),
                                      "--peers", "dns:%s:%d" % (NAME, port)])
                for a in addrs]

    def test_set_shrinks_caps_reshared(self):
        port = free_port_on(*ADDRS)
        m = self.mock("m", delay_ms=30)
        self.dns.set(NAME, ADDRS)
        rrs = self.start_set(m, ADDRS, port)
        for i, rr in enumerate(rrs):
            self.assertEqual(self.share(rr), ({"index": i, "count": 3}, 2), rr.stderr_tail())
        load = Load(port, ADDRS, 4)  # 12 clients for a cap of 6: always full
        try:
            harness.wait_for(lambda: load.status.get(200, 0) >= 60, 10, "traffic")
            self.assertLessEqual(m.stats()["max_inflight"], CAP)
            # The balancer stops sending to .3 as it leaves the set (a
            # terminating pod), then the name says so.
            load.stop(ADDRS[2])
            harness.wait_for(lambda: sum(r["ongoing"] for r in self.stats(rrs[2])
                                         ["backends"]["b"]["replicas"].values()) == 0, 10,
                             "the third instance idle")
            self.dns.set(NAME, ADDRS[:2])
            for i, rr in enumerate(rrs[:2]):
                harness.wait_for(lambda: self.share(rr) == ({"index": i, "count": 2}, 3), 10,
                                 "instance %d re-shared" % i)
            harness.wait_for(lambda: self.share(rrs[2]) == ({"index": None, "count": 2}, 0), 10,
                             "the third instance out of the set")
            # From here the two take the whole cap between them, no more.
            m.reset_stats()
            n0 = load.status.get(200, 0)
            harness.wait_for(lambda: load.status.get(200, 0) >= n0 + 100, 15, "traffic after")
            after = m.stats()["max_inflight"]
        finally:
            load.join()
        self.assertEqual(load.errors, [])
        self.assertEqual(set(load.status), {200}, load.status)
        self.assertEqual(after, CAP, "the two instances together use exactly the cap")
        out = rrs[2]
        r = harness.http_once(out.admin_port, "GET", "/readyz")
        self.assertEqual(r.status, 503, r.raw())
        self.assertIn(b"not in its peer set", r.raw())
        self.assertEqual(out.stderr().count("none of the 2 peers is this instance"), 1,
                         out.stderr_tail())
        # Sent a request anyway: 503 at once, the replica never sees it.
        served = m.stats()["served"]
        with harness.Client(port, host=ADDRS[2]) as c:
            self.assertEqual(c.request("GET", "/p").status, 503)
        self.assertEqual(m.stats()["served"], served)
        for rr in rrs[:2]:
            self.assertEqual(harness.http_once(rr.admin_port, "GET", "/readyz").status, 200)
        # Back in the set: ready again, caps 2/2/2.
        self.dns.set(NAME, ADDRS)
        harness.wait_for(lambda: self.share(out) == ({"index": 2, "count": 3}, 2), 10,
                         "back in the set")
        self.assertEqual(harness.http_once(out.admin_port, "GET", "/readyz").status, 200)

    def test_not_in_set_at_start(self):
        """An instance whose address is not in its peer set starts not
        ready, with no share of any cap (whole caps would multiply them),
        and says why once."""
        port = free_port_on(*ADDRS)
        m = self.mock("m")
        self.dns.set(NAME, ADDRS[:2])
        rr, = self.start_set(m, ADDRS[2:], port)
        self.assertEqual(self.share(rr), ({"index": None, "count": 2}, 0))
        r = harness.http_once(rr.admin_port, "GET", "/readyz")
        self.assertEqual(r.status, 503, r.raw())
        self.assertIn(b"--peers: this instance is not in its peer set", r.raw())
        with harness.Client(port, host=ADDRS[2]) as c:
            self.assertEqual(c.request("GET", "/p").status, 503)
        self.assertEqual(m.stats()["served"], 0)
        text = ("--peers: none of the 2 peers is this instance (port %d on its --listen "
                "address); not ready, no share of any cap until it is in the set" % port)
        self.assertTrue(harness.wait_stderr(rr, text), rr.stderr_tail())
        m2 = harness.http_once(rr.admin_port, "GET", "/metrics").body.decode()
        self.assertIn('ringroute_instance{index="none",count="2"} 1', m2)
        # The helper thread's next round (2 s; a round that changes nothing
        # leaves no trace to wait on) finds the same: not said again.
        time.sleep(2.5)
        self.assertEqual(rr.stderr().count("none of the 2 peers"), 1, rr.stderr_tail())
        # The name stops resolving: the last shares stay (none), said once.
        self.dns.set(NAME, None)
        self.assertTrue(harness.wait_stderr(rr, "cannot resolve peers.test", timeout=6))
        self.assertEqual(self.share(rr), ({"index": None, "count": 2}, 0))
        # It joins the set: ready, its share.
        self.dns.set(NAME, ADDRS)
        harness.wait_for(lambda: self.share(rr) == ({"index": 2, "count": 3}, 2), 10, "joined")
        self.assertEqual(harness.http_once(rr.admin_port, "GET", "/readyz").status, 200)
        with harness.Client(port, host=ADDRS[2]) as c:
            self.assertEqual(c.request("GET", "/p").status, 200)
        self.assertEqual(rr.stderr().count("none of the 2 peers"), 1)


if __name__ == "__main__":
    harness.main()
