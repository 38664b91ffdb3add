#!/usr/bin/env python3
"""ringroutectl against a live ringroute: exit codes (2 usage with the usage
line, 1 with the server's message, 0 success), readable tables and --json."""

import json
import os
import re
import select
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint  # noqa: E402

USAGE = "usage: ringroutectl [--socket PATH] [--json] NOUN VERB ..."


def ctl_bin():
    return os.environ.get("RR_RINGROUTECTL") or os.path.join(harness.BUILD, "ringroutectl")


class CtlTest(harness.RRTestCase):

    def setUp(self):
        super().setUp()
        self.m1 = self.mock("m1")
        self.m2 = self.mock("m2")
        self.sock = harness.control_sock_path()
        cfg = {
            "backends": {"A": backend([self.m1]), "B": backend([self.m2])},
            "endpoints": {"e": endpoint("/e", {"A": 1.0})},
        }
        self.rr = self.ringroute(cfg, admin=True,
                                 extra=["--control", self.sock, "--report-interval-ms", "150"])

    def run_ctl(self, *args, env=None, sock=True, stdin=None):
        argv = [ctl_bin()] + (["--socket", self.sock] if sock else []) + list(args)
        e = dict(os.environ)
        e.pop("RINGROUTE_SOCKET", None)
        e.update(env or {})
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20,
                           env=e, input=stdin)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def ok(self, *args, **kw):
        rc, out, err = self.run_ctl(*args, **kw)
        self.assertEqual(rc, 0, "ringroutectl %s: rc %d\nstdout: %s\nstderr: %s" %
                         (" ".join(args), rc, out, err))
        return out

    def usage_fails(self, *args, **kw):
        rc, out, err = self.run_ctl(*args, **kw)
        self.assertEqual(rc, 2, "ringroutectl %s: rc %d\nstdout: %s\nstderr: %s" %
                         (" ".join(args), rc, out, err))
        self.assertIn(USAGE, err)
        return err

    def server_fails(self, *args, needles=(), **kw):
        rc, out, err = self.run_ctl(*args, **kw)
        self.assertEqual(rc, 1, "ringroutectl %s: rc %d\nstdout: %s\nstderr: %s" %
                         (" ".join(args), rc, out, err))
        self.assertNotIn(USAGE, err)
        for n in needles:
            self.assertIn(n, err)
        return err

    def config(self):
        return json.loads(self.ok("--json", "config", "get"))

    # -- exit codes ---------------------------------------------------------

    def test_usage_errors_exit_2(self):
        self.usage_fails()
        self.usage_fails("frobnicate")
        self.usage_fails("config")
        self.usage_fails("config", "apply")
        self.usage_fails("config", "eat")
        self.usage_fails("backend", "set")
        self.usage_fails("backend", "set", "C", "--max-ongoing", "lots")
        self.usage_fails("backend", "set", "C", "--max-ongoing")
        self.usage_fails("backend", "set", "C", "--policy", "fastest")
        self.usage_fails("backend", "set", "C", "--replica", "nohostport")
        self.usage_fails("backend", "set", "C", "--bogus", "1")
        self.usage_fails("backend", "rm")
        self.usage_fails("replica", "add", "A", "r2")
        self.usage_fails("replica", "rm", "A")
        self.usage_fails("endpoint", "set", "x", "--traffic", "A")
        self.usage_fails("endpoint", "set", "x", "--traffic", "A=heavy")
        self.usage_fails("stats", "extra")
        self.usage_fails("queues", "--wach")
        self.usage_fails("--socket")
        # A new endpoint needs --route and --traffic.
        self.usage_fails("endpoint", "set", "x", "--route", "/x")
        self.usage_fails("endpoint", "set", "x", "--traffic", "A=1")
        self.assertNotIn("x", self.config()["endpoints"])

    def test_help_exit_0(self):
        rc, out, err = self.run_ctl("--help", sock=False)
        self.assertEqual(rc, 0, err)
        self.assertIn(USAGE, out)

    def test_server_errors_exit_1(self):
        before = self.config()
        self.server_fails("backend", "rm", "A", needles=("still used by endpoint", '"e"'))
        self.server_fails("backend", "rm", "nope", needles=("no such backend",))
        self.server_fails("replica", "rm", "A", "zz", needles=("no such replica",))
        self.server_fails("replica", "add", "A", "r9", "not-an-address",
                          needles=("backends.A.replicas.r9",))
        self.server_fails("backend", "set", "A", "--max-ongoing", "0",
                          needles=("backends.A.max_ongoing_requests",))
        self.server_fails("endpoint", "set", "x", "--route", "/x", "--traffic", "Q=1",
                          needles=("endpoints.x.traffic.Q", "unknown backend"))
        self.server_fails("endpoint", "rm", "nope", needles=("no such endpoint",))
        bad = harness.write_config('{"backends": {}, "endpoints": {"e": 1}}')
        self.server_fails("config", "apply", bad, needles=("endpoints.e",))
        self.assertEqual(self.config(), before)

    def test_unreachable_socket_exit_1(self):
        rc, out, err = self.run_ctl("--socket", self.sock + ".nope", "stats", sock=False)
        self.assertEqual(rc, 1, err)
        self.assertIn("cannot connect", err)
        self.server_fails("config", "apply", "/nonexistent/file.json",
                          needles=("/nonexistent/file.json",))

    def test_socket_from_env(self):
        out = self.ok("--json", "queues", sock=False, env={"RINGROUTE_SOCKET": self.sock})
        self.assertIn("backends", json.loads(out))

    # -- changes ------------------------------------------------------------

    def test_config_get_and_apply(self):
        out = self.ok("config", "get")
        doc = json.loads(out)  # readable output is still JSON (indented)
        self.assertIn("\n  ", out)
        self.assertEqual(doc, self.config())
        doc["backends"]["B"]["max_ongoing_requests"] = 5
        path = harness.write_config(doc)
        out = self.ok("config", "apply", path)
        self.assertRegex(out, r"version \d+")
        self.assertEqual(self.config()["backends"]["B"]["max_ongoing_requests"], 5)
        out = self.ok("--json", "config", "apply", "-", stdin=json.dumps(doc).encode())
        self.assertIn("version", json.loads(out))

    def test_backend_set_merges(self):
        out = self.ok("backend", "set", "C", "--max-ongoing", "3", "--replica",
                      "c1=" + self.m2.addr, "--queue-timeout-ms", "250")
        self.assertIn("backend C created", out)
        self.assertRegex(out, r"version \d+")
        c = self.config()["backends"]["C"]
        self.assertEqual((c["max_ongoing_requests"], c["queue_timeout_ms"]), (3, 250))
        self.assertEqual(c["replicas"], {"c1": self.m2.addr})
        # set again: named fields change, the others and the replicas stay.
        self.ok("backend", "set", "C", "--policy", "round_robin", "--max-queued", "7",
                "--replica", "c2=" + self.m1.addr)
        c = self.config()["backends"]["C"]
        self.assertEqual(c["policy"], "round_robin")
        self.assertEqual((c["max_ongoing_requests"], c["max_queued_requests"]), (3, 7))
        self.assertEqual(c["replicas"], {"c1": self.m2.addr, "c2": self.m1.addr})
        out = self.ok("--json", "backend", "set", "C", "--max-ongoing=4")
        self.assertEqual(json.loads(out)["backend"]["max_ongoing_requests"], 4)
        self.ok("backend", "rm", "C")
        self.assertNotIn("C", self.config()["backends"])

    def test_replica_add_rm_reaches_data_path(self):
        self.ok("backend", "set", "A", "--policy", "round_robin")
        out = self.ok("replica", "add", "A", "r2", self.m2.addr)
        self.assertRegex(out, r"version \d+")
        self.assertEqual(self.config()["backends"]["A"]["replicas"],
                         {"m1": self.m1.addr, "r2": self.m2.addr})
        self.ok("replica", "rm", "A", "m1")
        deadline = time.monotonic() + 3
        while True:
            r = harness.http_once(self.rr.port, "GET", "/e")
            if r.header("X-Mock-Id") == "m2" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for _ in range(5):
            r = harness.http_once(self.rr.port, "GET", "/e")
            self.assertEqual(r.header("X-Mock-Id"), "m2", r)

    def test_endpoint_set_rm(self):
        out = self.ok("endpoint", "set", "x", "--route", "/x", "--methods", "GET,POST",
                      "--traffic", "A=0,B=1", "--shadow", "A=0.05", "--call-method", "go")
        self.assertIn("endpoint x created", out)
        e = self.config()["endpoints"]["x"]
        self.assertEqual(e["route"], "/x")
        self.assertEqual(sorted(e["methods"]), ["GET", "POST"])
        self.assertEqual(e["traffic"], {"A": 0.0, "B": 1.0})
        self.assertEqual(e["shadow"], {"A": 0.05})
        self.assertEqual(e["call_method"], "go")
        # Existing endpoint: only the given fields change.
        self.ok("endpoint", "set", "x", "--traffic", "A=1")
        e = self.config()["endpoints"]["x"]
        self.assertEqual((e["route"], e["traffic"], e["call_method"]), ("/x", {"A": 1.0}, "go"))
        self.ok("endpoint", "rm", "x")
        self.assertNotIn("x", self.config()["endpoints"])

    # -- views ----------------------------------------------------------------

    def test_stats_table_and_json(self):
        harness.http_once(self.rr.port, "GET", "/e")
        out = self.ok("stats")
        lines = out.strip().splitlines()
        self.assertEqual(lines[0].split()[:6],
                         ["BACKEND", "REPLICA", "ADDRESS", "ONGOING", "REQUESTS", "ERRORS"], out)
        rows = {tuple(l.split()[:2]): l.split() for l in lines[1:]}
        self.assertEqual(set(rows), {("A", "m1"), ("B", "m2")}, out)
        self.assertEqual(rows[("A", "m1")][2], self.m1.addr, out)
        self.assertGreaterEqual(int(rows[("A", "m1")][4]), 1, out)
        self.assertEqual(rows[("B", "m2")][3:6], ["0", "0", "0"], out)
        j = json.loads(self.ok("--json", "stats"))
        self.assertEqual(j["backends"]["A"]["replicas"]["m1"]["address"], self.m1.addr)

    def test_queues_table_and_json(self):
        out = self.ok("queues")
        lines = out.strip().splitlines()
        self.assertEqual(lines[0].split(), ["BACKEND", "QUEUED", "ONGOING", "REPLICAS"], out)
        self.assertEqual(sorted(l.split() for l in lines[1:]),
                         [["A", "0", "0", "1"], ["B", "0", "0", "1"]], out)
        j = json.loads(self.ok("queues", "--json"))  # global option after the noun
        self.assertEqual(j["backends"]["B"], {"queued": 0, "ongoing": 0, "replicas": 1})

    def _watch(self, *args, want):
        p = subprocess.Popen([ctl_bin(), "--socket", self.sock] + list(args),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            lines = []
            deadline = time.monotonic() + 5
            buf = b""
            while len(lines) < want and time.monotonic() < deadline:
                r, _, _ = select.select([p.stdout], [], [], 0.2)
                if not r:
                    continue
                d = os.read(p.stdout.fileno(), 65536)
                if not d:
                    break
                buf += d
                *done, buf = buf.split(b"\n")
                lines += [l.decode() for l in done]
            if p.poll() is not None:
                self.fail("watch exited with %s: %r" % (p.returncode, p.stderr.read()))
            return lines
        finally:
            p.kill()
            p.wait()
            p.stdout.close()
            p.stderr.close()

    def test_queues_watch(self):
        lines = self._watch("--json", "queues", "--watch", want=2)
        self.assertGreaterEqual(len(lines), 2, lines)
        for l in lines[:2]:
            j = json.loads(l)
            self.assertEqual(sorted(j["backends"]), ["A", "B"])
        lines = self._watch("queues", "--watch", want=8)
        heads = [l for l in lines if l.startswith("-- ")]
        self.assertGreaterEqual(len(heads), 2, lines)
        self.assertTrue(any(re.match(r"^BACKEND\s+QUEUED\s+ONGOING\s+REPLICAS$", l)
                            for l in lines), lines)


if __name__ == "__main__":
    harness.main()
