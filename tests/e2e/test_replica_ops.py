#!/usr/bin/env python3
"""Replica operations (issue "Replicas that fail, move and multiply", part 6;
docs/operations.md "Replica operations", docs/config.md "replicas").

* drain: `ringroutectl replica drain B ID` keeps the replica in the config
  and sends it nothing new while its request in flight finishes 200; stats
  shows it draining; the state file holds the drain and a restart from it
  keeps it drained; `replica enable` brings it back.
* weight: 1:3 gives 25% / 75% for p2c and round robin.
* slow_start_ms: a new replica's early share is well below its steady one,
  and so is that of a replica back from unhealthy or from ejection.
* bad values of the object form are refused with the path and the reason.
"""

import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint  # noqa: E402


def ctl_bin():
    return os.environ.get("RR_RINGROUTECTL") or os.path.join(harness.BUILD, "ringroutectl")


class ReplicaOpsBase(harness.RRTestCase):

    def start(self, cfg, shards=1, state=None):
        self.sock = harness.control_sock_path()
        extra = ["--control", self.sock]
        if state:
            extra += ["--state", state]
        self.rr = self.ringroute(cfg, shards=shards, extra=extra)
        return self.rr

    def run_ctl(self, *args):
        argv = [ctl_bin(), "--socket", self.sock] + list(args)
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def ctl_ok(self, *args):
        rc, out, err = self.run_ctl(*args)
        self.assertEqual(rc, 0, "ringroutectl %s: rc %d\n%s%s" % (" ".join(args), rc, out, err))
        return out

    def stats_state(self, backend_name, rid):
        """The STATE column of `ringroutectl stats` for one replica."""
        lines = self.ctl_ok("stats").splitlines()
        col = lines[0].split().index("STATE")
        for ln in lines[1:]:
            f = ln.split()
            if f[0] == backend_name and f[1] == rid:
                return f[col]
        self.fail("no stats line for %s %s: %r" % (backend_name, rid, lines))

    def count(self, port, n, path="/e"):
        """n requests one at a time; the replicas' ids that answered."""
        got = collections.Counter()
        with harness.Client(port, timeout=15) as c:
            for i in range(n):
                r = c.request("GET", "%s/%d" % (path, i))
                self.assertEqual(r.status, 200, r)
                got[r.json()["id"]] += 1
        return got


class DrainTest(ReplicaOpsBase):

    def test_drain_enable_persisted(self):
        m1 = self.mock("r1")
        m2 = self.mock("r2")
        state = os.path.join(tempfile.mkdtemp(dir=harness._TMPDIR), "state.json")
        cfg = {"backends": {"b": backend([m1, m2], max_ongoing_requests=8)},
               "endpoints": {"e": endpoint("/e", {"b": 1.0})}}
        rr = self.start(cfg, shards=2, state=state)
        self.assertEqual(set(self.count(rr.port, 40)), {"r1", "r2"})

        # Two slow requests at once: p2c puts the second on the idle replica,
        # so one runs on each while r2 is drained.
        results = []

        def slow(k):
            with harness.Client(rr.port, timeout=20) as c:
                r = c.request("GET", "/e/slow%d" % k, headers={"X-Mock-Delay-Ms": "1500"})
                results.append((r.status, r.json()["id"] if r.status == 200 else r))
        ts = [threading.Thread(target=slow, args=(k,)) for k in range(2)]
        for t in ts:
            t.start()
            time.sleep(0.2)
        harness.wait_for(lambda: self.stats_ongoing("b", "r2") == 1, 5, "slow request on r2")
        out = self.ctl_ok("replica", "drain", "b", "r2")
        self.assertIn("r2", out)
        self.assertEqual(self.stats_state("b", "r2"), "draining")
        got = self.count(rr.port, 30)
        self.assertEqual(dict(got), {"r1": 30}, "a drained replica gets nothing new")
        for t in ts:
            t.join(20)
        self.assertEqual(sorted(results), [(200, "r1"), (200, "r2")],
                         "the request in flight on the drained replica finished")

        # The config keeps it, drained; so does the state file.
        doc = json.loads(self.ctl_ok("--json", "config", "get"))
        rep = doc["backends"]["b"]["replicas"]["r2"]
        self.assertEqual(rep, {"address": m2.addr, "weight": 1, "drain": True})
        with open(state) as f:
            self.assertEqual(json.load(f)["backends"]["b"]["replicas"]["r2"], rep)

        # A restart from the state file keeps it drained.
        rr.stop()
        rr = self.start(harness.write_config(cfg), shards=2, state=state)
        self.assertEqual(self.stats_state("b", "r2"), "draining")
        self.assertEqual(dict(self.count(rr.port, 20)), {"r1": 20})

        # enable: it serves again, and the entry is the string form again.
        self.ctl_ok("replica", "enable", "b", "r2")
        self.assertEqual(self.stats_state("b", "r2"), "ok")
        self.assertGreater(self.count(rr.port, 40)["r2"], 0)
        doc = json.loads(self.ctl_ok("--json", "config", "get"))
        self.assertEqual(doc["backends"]["b"]["replicas"]["r2"], m2.addr)
        with open(state) as f:
            self.assertEqual(json.load(f)["backends"]["b"]["replicas"]["r2"], m2.addr)

    def stats_ongoing(self, backend_name, rid):
        lines = self.ctl_ok("stats").splitlines()
        col = lines[0].split().index("ONGOING")
        for ln in lines[1:]:
            f = ln.split()
            if f[0] == backend_name and f[1] == rid:
                return int(f[col])
        return None

    def test_drain_unknown_replica(self):
        m1 = self.mock("r1")
        self.start({"backends": {"b": backend([m1])},
                    "endpoints": {"e": endpoint("/e", {"b": 1.0})}})
        rc, out, err = self.run_ctl("replica", "drain", "b", "nope")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("backends.b.replicas.nope: no such replica", err)
        rc, out, err = self.run_ctl("replica", "enable", "x", "r1")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("backends.x: no such backend", err)


class WeightTest(ReplicaOpsBase):
    """Weights 1:3 under load (8 concurrent clients, two shards): the mocks
    count 25% / 75% within 7 points, for p2c and round robin."""

    def shares(self, policy):
        light = self.mock("light", delay_ms=3)
        heavy = self.mock("heavy", delay_ms=3)
        cfg = {"backends": {"b": backend([light], policy=policy, max_ongoing_requests=64)},
               "endpoints": {"e": endpoint("/e", {"b": 1.0})}}
        rr = self.start(cfg, shards=2)
        # the weighted one comes through ringroutectl: the --weight path
        self.ctl_ok("replica", "add", "b", "heavy", heavy.addr, "--weight", "3")
        doc = json.loads(self.ctl_ok("--json", "config", "get"))
        self.assertEqual(doc["backends"]["b"]["replicas"]["heavy"],
                         {"address": heavy.addr, "weight": 3, "drain": False})
        st = json.loads(self.ctl_ok("--json", "stats"))["backends"]["b"]["replicas"]
        self.assertEqual((st["heavy"]["weight"], st["heavy"]["weight_now"]), (3, 3.0), st)
        self.assertEqual((st["light"]["weight"], st["light"]["weight_now"]), (1, 1.0), st)
        nclients, per = 8, 60

        def worker(k):
            with harness.Client(rr.port, timeout=15) as c:
                for i in range(per):
                    r = c.request("GET", "/e/%d/%d" % (k, i))
                    if r.status != 200:
                        return "client %d req %d: %r" % (k, i, r)

        self.run_clients(nclients, worker)
        served = {m.id: m.stats()["served"] for m in (light, heavy)}
        total = nclients * per
        self.assertEqual(sum(served.values()), total)
        share = served["heavy"] / total
        print("%s weight 1:3 shares: %s (heavy %.3f)" % (policy, served, share), file=sys.stderr)
        self.assertGreater(share, 0.68, served)
        self.assertLess(share, 0.82, served)

    def test_weight_p2c(self):
        self.shares("p2c")

    def test_weight_round_robin(self):
        self.shares("round_robin")


class SlowStartTest(ReplicaOpsBase):
    """slow_start_ms 3000: a replica added next to a warm one of the same
    weight gets well below its steady half in the first second (its weight
    ramps from a tenth), and about half once the window is over."""

    def load(self, port, seconds):
        stop = time.monotonic() + seconds

        def worker(k):
            with harness.Client(port, timeout=15) as c:
                i = 0
                while time.monotonic() < stop:
                    r = c.request("GET", "/e/%d/%d" % (k, i))
                    if r.status != 200:
                        return "client %d req %d: %r" % (k, i, r)
                    i += 1
        self.run_clients(4, worker)

    def test_slow_start_share(self):
        for policy in ("p2c", "round_robin"):
            warm = self.mock("warm-" + policy, delay_ms=2)
            cold = self.mock("cold-" + policy, delay_ms=2)
            cfg = {"backends": {"b": backend([warm], policy=policy, slow_start_ms=3000)},
                   "endpoints": {"e": endpoint("/e", {"b": 1.0})}}
            rr = self.start(cfg, shards=2)
            time.sleep(3.1)  # the warm one's own ramp (it is new at start) is over
            self.ctl_ok("replica", "add", "b", cold.id, cold.addr)
            added = time.monotonic()
            st = json.loads(self.ctl_ok("--json", "stats"))["backends"]["b"]["replicas"]
            self.assertLess(st[cold.id]["weight_now"], 0.5, st)  # ramping from 0.1
            self.assertEqual(st[warm.id]["weight_now"], 1.0, st)
            self.load(rr.port, 0.8)
            early = {m.id: m.stats()["served"] for m in (warm, cold)}
            early_share = early[cold.id] / sum(early.values())
            time.sleep(max(0, added + 3.1 - time.monotonic()))
            warm.reset_stats()
            cold.reset_stats()
            self.load(rr.port, 0.8)
            late = {m.id: m.stats()["served"] for m in (warm, cold)}
            late_share = late[cold.id] / sum(late.values())
            print("%s slow start: first 0.8 s %s (new %.3f), after the window %s (new %.3f)"
                  % (policy, early, early_share, late, late_share), file=sys.stderr)
            self.assertLess(early_share, 0.30, early)
            self.assertGreater(late_share, 0.40, late)
            self.assertLess(late_share, 0.60, late)
            rr.stop()

    def test_slow_start_after_recovery(self):
        """A replica that went unhealthy (its server stopped) and is healthy
        again (restarted on the same port) ramps up like a new one: in the
        first part of its slow_start_ms window a clearly smaller share
        than the warm one, an equal one after it."""
        warm = self.mock("warm", delay_ms=2)
        cold = self.mock("cold", delay_ms=2)
        port = cold.port
        cfg = {"backends": {"b": backend([warm, cold], slow_start_ms=3000,
                                         health_check={"path": "/-/healthz",
                                                       "interval_ms": 100})},
               "endpoints": {"e": endpoint("/e", {"b": 1.0})}}
        rr = self.start(cfg)
        time.sleep(3.1)  # both ramps from the start are over
        cold.stop()
        self.assertTrue(harness.wait_stderr(rr, "replica b/cold is unhealthy"), rr.stderr_tail())
        cold = self.mock("cold", delay_ms=2, listen="127.0.0.1:%d" % port)
        self.assertTrue(harness.wait_stderr(rr, "replica b/cold is healthy"), rr.stderr_tail())
        back = time.monotonic()
        warm.reset_stats()
        self.load(rr.port, 0.8)
        early = {m.id: m.stats()["served"] for m in (warm, cold)}
        early_share = early["cold"] / sum(early.values())
        time.sleep(max(0, back + 3.2 - time.monotonic()))
        warm.reset_stats()
        cold.reset_stats()
        self.load(rr.port, 0.8)
        late = {m.id: m.stats()["served"] for m in (warm, cold)}
        late_share = late["cold"] / sum(late.values())
        print("slow start after recovery: first 0.8 s %s (recovered %.3f), after the window "
              "%s (recovered %.3f)" % (early, early_share, late, late_share), file=sys.stderr)
        self.assertLess(early_share, 0.30, early)
        self.assertGreater(late_share, 0.38, late)
        self.assertLess(late_share, 0.62, late)

    def test_slow_start_after_ejection(self):
        """The same after outlier ejection: a replica ejected (its server
        stopped: refused connects, retried on the other) returns, its
        server restarted on the same port, and ramps up from the end of
        its ejection."""
        warm = self.mock("warm", delay_ms=2)
        cold = self.mock("cold", delay_ms=2)
        port = cold.port
        cfg = {"backends": {"b": backend([warm, cold], slow_start_ms=2000,
                                         outlier_detection={"consecutive_failures": 3,
                                                            "base_ejection_ms": 500})},
               "endpoints": {"e": endpoint("/e", {"b": 1.0})}}
        rr = self.start(cfg)
        time.sleep(2.1)  # both ramps from the start are over
        cold.stop()
        with harness.Client(rr.port, timeout=15) as c:
            for i in range(200):
                r = c.request("GET", "/e/%d" % i)
                self.assertEqual(r.status, 200, r)
                if "replica b/cold ejected" in rr.stderr():
                    break
        self.assertIn("replica b/cold ejected for 500 ms", rr.stderr())
        cold = self.mock("cold", delay_ms=2, listen="127.0.0.1:%d" % port)

        def ejected():
            st = json.loads(self.ctl_ok("--json", "stats"))["backends"]["b"]["replicas"]
            return st["cold"]["ejected"]
        harness.wait_for(lambda: not ejected(), 5, "the ejection over")
        back = time.monotonic()
        warm.reset_stats()
        self.load(rr.port, 0.6)
        early = {m.id: m.stats()["served"] for m in (warm, cold)}
        early_share = early["cold"] / sum(early.values())
        self.assertIn("replica b/cold returns from ejection", rr.stderr())
        time.sleep(max(0, back + 2.1 - time.monotonic()))
        warm.reset_stats()
        cold.reset_stats()
        self.load(rr.port, 0.6)
        late = {m.id: m.stats()["served"] for m in (warm, cold)}
        late_share = late["cold"] / sum(late.values())
        print("slow start after ejection: first 0.6 s %s (returned %.3f), after the window "
              "%s (returned %.3f)" % (early, early_share, late, late_share), file=sys.stderr)
        self.assertLess(early_share, 0.30, early)
        self.assertGreater(late_share, 0.38, late)
        self.assertLess(late_share, 0.62, late)


class BadValuesTest(ReplicaOpsBase):

    def test_bad_object_form_refused(self):
        cases = [
            ({"address": "127.0.0.1:9", "weight": 0}, "backends.b.replicas.r1.weight: must be an integer >= 1"),
            ({"address": "127.0.0.1:9", "weight": -2}, "backends.b.replicas.r1.weight: must be an integer >= 1"),
            ({"address": "127.0.0.1:9", "weight": 1.5}, "backends.b.replicas.r1.weight: must be an integer >= 1"),
            ({"address": "127.0.0.1:9", "weight": 10001}, "backends.b.replicas.r1.weight: must be an integer <= 10000"),
            ({"address": "127.0.0.1:9", "drain": "yes"}, "backends.b.replicas.r1.drain: must be true or false"),
            ({"address": "127.0.0.1:9", "wieght": 2}, "backends.b.replicas.r1.wieght: unknown key"),
            ({"weight": 2}, "backends.b.replicas.r1.address: must be a string"),
            (7, "backends.b.replicas.r1: must be a string \"host:port\" or an object"),
        ]
        for rep, msg in cases:
            cfg = {"backends": {"b": {"replicas": {"r1": rep}}},
                   "endpoints": {"e": endpoint("/e", {"b": 1.0})}}
            path = harness.write_config(cfg, "routes.json")
            rc, out, err = harness.run_ringroute_expect_exit(cfg, config_path=path)
            self.assertNotEqual(rc, 0, err)
            self.assertIn("%s: %s" % (path, msg), err, rep)
        for bad in (-1, 1.5, "3s"):
            cfg = {"backends": {"b": {"slow_start_ms": bad, "replicas": {}}},
                   "endpoints": {"e": endpoint("/e", {"b": 1.0})}}
            path = harness.write_config(cfg, "routes.json")
            rc, out, err = harness.run_ringroute_expect_exit(cfg, config_path=path)
            self.assertNotEqual(rc, 0, err)
            self.assertIn("%s: backends.b.slow_start_ms: must be an integer >= 0" % path, err)
        # The same through the control API: 400 naming the field.
        m1 = self.mock("r1")
        self.start({"backends": {"b": backend([m1])},
                    "endpoints": {"e": endpoint("/e", {"b": 1.0})}})
        with self.unix_client(self.sock) as c:
            r = c.request("PUT", "/v1/backends/b/replicas/r2", None,
                          harness.json_body({"address": m1.addr, "weight": 0}))
            self.assertEqual(r.status, 400, r)
            self.assertIn("backends.b.replicas.r2.weight: must be an integer >= 1",
                          r.json()["error"])
            r = c.request("PUT", "/v1/backends/b/replicas/r2", None,
                          harness.json_body({"address": m1.addr, "speed": 3}))
            self.assertEqual(r.status, 400, r)
            self.assertIn("body.speed: unknown key", r.json()["error"])


if __name__ == "__main__":
    harness.main()
