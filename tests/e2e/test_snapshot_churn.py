#!/usr/bin/env python3
"""Snapshot churn (issue 4, must-have 3): 1000 changes through the control
socket (weight shifts, replica add/remove, endpoint add/remove, backend
add/remove) while clients keep requests going on two shards, some of them slow
enough to span many snapshots. Every request gets its replica's correct
answer; SIGTERM then exits 0, and under the sanitizer build (RR_BUILD=
build-asan) ASan/LSan report nothing: every old snapshot was freed exactly
once, by the last shard to drop it, and none after use."""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint  # noqa: E402

CHANGES = 1000
CLIENTS = 4
PER_CYCLE = 8   # requests the clients complete between two cycles of 8 changes


class SnapshotChurnTest(harness.RRTestCase):

    def client_loop(self, cid):
        """GET/POST on /a and /split over one keep-alive connection; every
        third request asks the replica to take 5-40 ms, so it is in flight
        across several changes."""
        c = harness.Client(self.rr.port, timeout=10)
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                base = ("/a", "/split")[n % 2]
                path = "%s/c%d/%d" % (base, cid, n)
                hs = [("X-Mock-Delay-Ms", str(5 + (n * 7 + cid) % 36))] if n % 3 == 0 else []
                body = None
                method = "GET"
                if n % 4 == 1:
                    method, body = "POST", b"x" * (n % 300)
                try:
                    r = c.request(method, path, hs, body)
                except Exception as e:  # noqa: BLE001  (recorded, reported at the end)
                    self.failed(method, path, "no response: %s: %s" % (type(e).__name__, e))
                    c.close()
                    c = harness.Client(self.rr.port, timeout=10)
                    continue
                ok = r.status == 200
                if ok:
                    try:
                        j = json.loads(r.body)
                        ok = (j.get("path") == path and j.get("method") == method and
                              j.get("body_len") == (len(body) if body else 0) and
                              j.get("id") in self.allowed[base])
                    except ValueError:
                        ok = False
                if not ok:
                    self.failed(method, path, repr(r.raw()[:600]))
                else:
                    with self.lock:
                        self.answered += 1
                        self.cv.notify_all()
        finally:
            c.close()

    def failed(self, method, path, why):
        with self.lock:
            self.nfailed += 1
            self.cv.notify_all()
            if len(self.failures) < 20:
                self.failures.append("%s %s -> %s" % (method, path, why))

    def test_1000_changes(self):
        m1, m2, m3 = self.mock("m1"), self.mock("m2"), self.mock("m3")
        cfg = {
            "backends": {"A": backend([m1, m2]), "B": backend([m3])},
            "endpoints": {"a": endpoint("/a", {"A": 1.0}),
                          "split": endpoint("/split", {"A": 0.5, "B": 0.5})},
        }
        sock = harness.control_sock_path()
        self.rr = self.ringroute(cfg, shards=2, extra=["--control", sock])
        self.allowed = {"/a": {"m1", "m2", "m3"}, "/split": {"m1", "m2", "m3"}}
        self.lock = threading.Lock()
        self.cv = threading.Condition(self.lock)
        self.stop = threading.Event()
        self.answered = 0
        self.nfailed = 0
        self.failures = []
        ctl = self.unix_client(sock)
        v0 = ctl.request("GET", "/v1/queues").json()["version"]

        ts = [threading.Thread(target=self.client_loop, args=(i,), daemon=True)
              for i in range(CLIENTS)]
        for t in ts:
            t.start()
        # A cycle of 8 changes that leaves the config as it found it, except
        # for the weights; 125 cycles = 1000 changes.
        t0 = time.monotonic()
        done = 0
        try:
            for i in range(CHANGES // 8):
                a = (i % 9) / 8.0
                ops = [
                    ("PUT", "/v1/endpoints/split", endpoint("/split", {"A": a, "B": 1.0 - a})),
                    ("PUT", "/v1/backends/A/replicas/x%d" % i, m3.addr),
                    ("PUT", "/v1/backends/T%d" % i, backend({"t": m1.addr})),
                    ("PUT", "/v1/endpoints/tmp%d" % i, endpoint("/tmp%d" % i, {"T%d" % i: 1.0})),
                    ("DELETE", "/v1/backends/A/replicas/%s" % ("m2" if i % 2 == 0 else "x%d" % i),
                     None),
                    ("DELETE", "/v1/endpoints/tmp%d" % i, None),
                    ("DELETE", "/v1/backends/T%d" % i, None),
                    # Put m2 back / drop x: A is {m1, m2} again every other cycle.
                    ("PUT", "/v1/backends/A",
                     backend({"m1": m1.addr, "m2": m2.addr},
                             max_ongoing_requests=(1, 2, 100)[i % 3])),
                ]
                for method, path, body in ops:
                    r = ctl.request(method, path, None, harness.json_body(body))
                    self.assertEqual(r.status, 200, "change %d: %s %s -> %r"
                                     % (done + 1, method, path, r))
                    done += 1
                    self.assertEqual(r.json()["version"], v0 + done, r)
                # Pace: the clients complete a few requests per cycle, so the
                # changes interleave with traffic instead of racing past it.
                with self.cv:
                    want = self.answered + PER_CYCLE
                    self.assertTrue(self.cv.wait_for(
                        lambda: self.answered >= want or self.nfailed, 10),
                        "clients stalled at %d answers" % self.answered)
        finally:
            self.stop.set()
            for t in ts:
                t.join(15)
        elapsed = time.monotonic() - t0
        doc = ctl.request("GET", "/v1/config").json()
        self.assertEqual(sorted(doc["backends"]), ["A", "B"], doc)
        self.assertEqual(sorted(doc["endpoints"]), ["a", "split"], doc)
        summary = ("%d changes in %.1f s; %d requests answered correctly, %d failed"
                   % (done, elapsed, self.answered, self.nfailed))
        print("\n  " + summary, file=sys.stderr)
        self.assertEqual(self.failures, [], summary)
        self.assertGreaterEqual(self.answered, PER_CYCLE * CHANGES // 8, summary)
        ctl.close()
        rc = self.rr.stop(timeout=15)
        self.assertEqual(rc, 0, "SIGTERM: exit status %s\n%s" % (rc, self.rr.stderr_tail()))
        self.assertIsNone(self.rr.sanitizer_report())


if __name__ == "__main__":
    harness.main()
