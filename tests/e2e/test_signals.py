#!/usr/bin/env python3
"""Signals: SIGTERM drains (requests in flight complete, exit 0, no new
connections); SIGHUP reloads --config as one change; a bad file on SIGHUP
changes nothing."""

import json
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint, wait_stderr  # noqa: E402


class SignalTest(harness.RRTestCase):
    def test_sigterm_drains_in_flight(self):
        m = self.mock("slow")
        cfg = {"backends": {"b": backend([m])}, "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        for shards in (1, 2):
            rr = self.ringroute(cfg, shards=shards)
            results = []
            clients = [self.client(rr.port) for _ in range(4)]
            for i, c in enumerate(clients):
                c.send(harness.build_request("GET", "/drain%d" % i,
                                             headers={"X-Mock-Delay-Ms": "400"}))
            # The replica has all four in flight before we signal.
            deadline = time.monotonic() + 5
            while m.stats()["inflight"] < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            self.assertEqual(m.stats()["inflight"], 4)
            os.kill(rr.pid, signal.SIGTERM)

            def read(c):
                results.append(c.read_response())
            threads = [threading.Thread(target=read, args=(c,)) for c in clients]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            self.assertEqual(sorted(r.status for r in results), [200] * 4)
            self.assertEqual(sorted(r.json()["path"] for r in results),
                             ["/drain%d" % i for i in range(4)])
            self.assertEqual(rr.p.wait(timeout=10), 0, rr.stderr_tail())
            with self.assertRaises(OSError):
                socket.create_connection(("127.0.0.1", rr.port), timeout=2).recv(1)
            m.reset_stats()

    def test_sighup_reloads_config(self):
        a = self.mock("a")
        b = self.mock("b")
        cfg = {"backends": {"a": backend([a]), "b": backend([b])},
               "endpoints": {"e": endpoint("/", {"a": 1.0})}}
        rr = self.ringroute(cfg, shards=2)
        c = self.client(rr.port)
        self.assertEqual(c.request("GET", "/1").json()["id"], "a")
        # A broken file is refused and changes nothing.
        with open(rr.config_path, "w") as f:
            f.write('{"backends": {')
        os.kill(rr.pid, signal.SIGHUP)
        self.assertTrue(wait_stderr(rr, "reload refused"), rr.stderr_tail())
        self.assertEqual(c.request("GET", "/2").json()["id"], "a")
        cfg["endpoints"]["e"] = endpoint("/", {"b": 1.0})
        with open(rr.config_path, "w") as f:
            json.dump(cfg, f)
        os.kill(rr.pid, signal.SIGHUP)
        self.assertTrue(wait_stderr(rr, "SIGHUP: reloaded"), rr.stderr_tail())
        # Both shards switched: new connections land on either.
        for i in range(20):
            self.assertEqual(self.client(rr.port).request("GET", "/n%d" % i).json()["id"], "b")
        self.assertEqual(c.request("GET", "/3").json()["id"], "b")


if __name__ == "__main__":
    harness.main()
