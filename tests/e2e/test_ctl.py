#!/usr/bin/env python3
"""ringroutectl against a live ringroute: exit codes (2 usage with the usage
line, 1 with the server's message, 0 success), help, readable tables and
--json (errors included), set merging, every config field settable."""

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

# Every command, as its words.
COMMANDS = [
    ("config", "get"), ("config", "apply"),
    ("backend", "list"), ("backend", "get"), ("backend", "set"), ("backend", "rm"),
    ("replica", "list"), ("replica", "add"), ("replica", "rm"),
    ("replica", "drain"), ("replica", "enable"),
    ("endpoint", "list"), ("endpoint", "get"), ("endpoint", "set"), ("endpoint", "rm"),
    ("stats",), ("queues",), ("help",),
]

# Every key src/config.c accepts, with the set option that changes it and a
# value that is not the default (path.sub: inside an object).
BACKEND_FLAGS = [
    ("max_ongoing_requests", "--max-ongoing", "7", 7),
    ("max_queued_requests", "--max-queued", "9", 9),
    ("queue_timeout_ms", "--queue-timeout-ms", "333", 333),
    ("connect_timeout_ms", "--connect-timeout-ms", "44", 44),
    ("request_timeout_ms", "--request-timeout-ms", "5555", 5555),
    ("retries", "--retries", "5", 5),
    ("slow_start_ms", "--slow-start-ms", "3000", 3000),
    ("retry_on", "--retry-on", "503,connect-failure", ["connect-failure", "503"]),
    ("retry_budget_percent", "--retry-budget-percent", "35", 35),
    ("policy", "--policy", "round_robin", "round_robin"),
    ("health_check.path", "--health-check", "/-/healthz", "/-/healthz"),
    ("health_check.interval_ms", "--health-interval-ms", "60000", 60000),
    ("health_check.rise", "--health-rise", "4", 4),
    ("health_check.fall", "--health-fall", "5", 5),
    ("outlier_detection.consecutive_failures", "--consecutive-failures", "3", 3),
    ("outlier_detection.base_ejection_ms", "--base-ejection-ms", "1000", 1000),
    ("outlier_detection.max_ejection_ms", "--max-ejection-ms", "9000", 9000),
    ("outlier_detection.max_ejection_percent", "--max-ejection-percent", "34", 34),
    ("outlier_detection.count_5xx", "--count-5xx", "true", True),
    ("queue_when_unavailable", "--queue-when-unavailable", "true", True),
    ("replicas.x", "--replica", None, None),  # value: an address, set per test
]
ENDPOINT_FLAGS = [
    ("route", "--route", "/f", "/f"),
    ("methods", "--methods", "GET,PUT", ["GET", "PUT"]),
    ("traffic", "--traffic", "A=3,B=1", {"A": 3.0, "B": 1.0}),
    ("shadow", "--shadow", "B=0.25", {"B": 0.25}),
    ("call_method", "--call-method", "gen", "gen"),
    ("max_body_bytes", "--max-body-bytes", "12345", 12345),
]


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
        self.assertEqual(err, "")
        # "help" alone is the same full usage, naming every command.
        rc, out2, _ = self.run_ctl("help", sock=False)
        self.assertEqual((rc, out2), (0, out))
        for words in COMMANDS:
            self.assertIn("  " + " ".join(words), out)

    def test_help_per_command(self):
        """help NOUN VERB, NOUN VERB --help and -h print that command's usage
        alone, on stdout, exit 0, without connecting anywhere."""
        for words in COMMANDS:
            name = " ".join(words)
            rc, out, err = self.run_ctl("help", *words, sock=False,
                                        env={"RINGROUTE_SOCKET": "/nonexistent"})
            self.assertEqual((rc, err), (0, ""), name)
            self.assertTrue(out.startswith("usage: ringroutectl " + name), out)
            self.assertNotIn(USAGE, out)
            # alone: no other command's usage line
            others = [" ".join(w) for w in COMMANDS if w != words]
            for o in others:
                self.assertNotIn("usage: ringroutectl " + o + " ", out + " ", name)
            for flag in ("--help", "-h"):
                rc, out2, err2 = self.run_ctl(*(list(words) + [flag]), sock=False)
                self.assertEqual((rc, out2, err2), (0, out, ""), name + " " + flag)
        # arguments before --help are the command's: ignored
        self.assertEqual(self.ok("backend", "set", "A", "--retries", "3", "--help", sock=False),
                         self.ok("help", "backend", "set", sock=False))
        # the option list of set names every config field
        bset = self.ok("help", "backend", "set", sock=False)
        for _, flag, _, _ in BACKEND_FLAGS:
            self.assertIn(flag, bset)
        self.assertIn("none", bset)
        eset = self.ok("help", "endpoint", "set", sock=False)
        for _, flag, _, _ in ENDPOINT_FLAGS:
            self.assertIn(flag, eset)
        self.assertIn("--shadow B=P[,B=P...]|none", eset)
        # a noun alone: every one of its commands, and no other
        out = self.ok("help", "replica", sock=False)
        self.assertEqual(re.findall(r"^usage: ringroutectl (\S+ \S+)", out, re.M),
                         ["replica list", "replica add", "replica rm", "replica drain",
                          "replica enable"])
        self.assertEqual(self.ok("replica", "--help", sock=False), out)

    def test_help_unknown_command_exit_2(self):
        for args in (("help", "frob"), ("help", "backend", "frob"), ("frob", "--help"),
                     ("backend", "eat", "--help")):
            rc, out, err = self.run_ctl(*args, sock=False)
            self.assertEqual(rc, 2, (args, out, err))
            self.assertEqual(out, "", args)
            self.assertIn(USAGE, err)
            self.assertIn("frob" if "frob" in args else "eat", err)

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

    def test_backend_set_merges_one_field(self):
        """set on an existing backend changes the field given and nothing else
        (its other fields, its replicas, the other backends, the endpoints)."""
        self.ok("backend", "set", "A", "--policy", "round_robin", "--max-ongoing", "6",
                "--health-check", "/-/healthz", "--replica", "a2=" + self.m2.addr)
        before = self.config()
        out = self.ok("backend", "set", "A", "--retries", "3")
        self.assertRegex(out, r"^backend A updated \(version \d+\)$")
        after = self.config()
        self.assertEqual(after["backends"]["A"]["retries"], 3)
        before["backends"]["A"]["retries"] = 3
        self.assertEqual(after, before)
        # the same for an endpoint
        self.ok("endpoint", "set", "e", "--methods", "GET", "--call-method", "c1")
        before = self.config()
        self.ok("endpoint", "set", "e", "--max-body-bytes", "100")
        after = self.config()
        before["endpoints"]["e"]["max_body_bytes"] = 100
        self.assertEqual(after, before)

    def test_every_backend_field_settable(self):
        spare = "127.0.0.1:%d" % harness.free_port()
        args = []
        for key, flag, arg, _ in BACKEND_FLAGS:
            args += [flag, arg if arg is not None else "x=" + spare]
        self.ok("backend", "set", "N", *args)
        got = self.config()["backends"]["N"]
        for key, flag, arg, want in BACKEND_FLAGS:
            k, _, sub = key.partition(".")
            v = got[k][sub] if sub else got[k]
            self.assertEqual(v, want if arg is not None else spare, (key, got))
        # Every key config.c writes back has a flag (none was forgotten).
        self.assertEqual(sorted(got), sorted({k.partition(".")[0] for k, *_ in BACKEND_FLAGS}))
        self.assertEqual(sorted(got["health_check"]), ["fall", "interval_ms", "path", "rise"])
        # none removes the health check, and only it.
        self.ok("backend", "set", "N", "--health-check", "none")
        after = self.config()["backends"]["N"]
        self.assertNotIn("health_check", after)
        del got["health_check"]
        self.assertEqual(after, got)
        # an interval alone needs a path: the server says which field
        self.server_fails("backend", "set", "N", "--health-interval-ms", "500",
                          needles=("backends.N.health_check.path",))
        self.usage_fails("backend", "set", "N", "--retries", "-1")
        self.usage_fails("backend", "set", "N", "--connect-timeout-ms", "1x")
        self.usage_fails("backend", "set", "N", "--request-timeout-ms", "4294967296")

    def test_every_endpoint_field_settable(self):
        args = []
        for key, flag, arg, _ in ENDPOINT_FLAGS:
            args += [flag, arg]
        self.ok("endpoint", "set", "f", *args)
        got = self.config()["endpoints"]["f"]
        for key, flag, arg, want in ENDPOINT_FLAGS:
            v = got[key]
            if key == "methods":
                v = sorted(v)
            self.assertEqual(v, want, (key, got))
        self.assertEqual(sorted(got), sorted(k for k, *_ in ENDPOINT_FLAGS))
        # any / none remove methods and call_method
        self.ok("endpoint", "set", "f", "--methods", "any", "--call-method", "none")
        after = self.config()["endpoints"]["f"]
        self.assertNotIn("methods", after)
        self.assertNotIn("call_method", after)
        r = harness.http_once(self.rr.port, "DELETE", "/f")  # any method again
        self.assertEqual(r.status, 200, r)
        self.usage_fails("endpoint", "set", "f", "--max-body-bytes", "lots")
        self.usage_fails("endpoint", "set", "f", "--methods", ",")
        self.usage_fails("endpoint", "set", "f", "--traffic", "none")

    def test_shadow_removal(self):
        """--shadow none removes every shadow copy: in the config, and on the
        data path (the shadow backend's replica stops receiving copies)."""
        self.ok("endpoint", "set", "s", "--route", "/s", "--traffic", "A=1", "--shadow", "B=1")
        self.assertEqual(self.config()["endpoints"]["s"]["shadow"], {"B": 1.0})
        self.m2.reset_stats()
        for _ in range(3):
            self.assertEqual(harness.http_once(self.rr.port, "GET", "/s").status, 200)
        deadline = time.monotonic() + 5
        while self.m2.stats()["served"] < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.m2.stats()["served"], 3)
        out = self.ok("endpoint", "set", "s", "--shadow", "none")
        self.assertRegex(out, r"^endpoint s updated \(version \d+\)$")
        e = self.config()["endpoints"]["s"]
        self.assertNotIn("shadow", e)
        self.assertEqual((e["route"], e["traffic"]), ("/s", {"A": 1.0}))
        self.assertIn("none", self.ok("endpoint", "get", "s"))
        self.m2.reset_stats()
        for _ in range(3):
            self.assertEqual(harness.http_once(self.rr.port, "GET", "/s").status, 200)
        time.sleep(0.3)
        self.assertEqual(self.m2.stats()["served"], 0)
        # B is no longer used by s: it can go once e does not need it either
        self.ok("backend", "rm", "B")

    def test_duplicate_address_refused(self):
        before = self.config()
        port = self.m1.addr.rsplit(":", 1)[1]
        for addr in (self.m1.addr, "localhost:" + port):
            self.server_fails("replica", "add", "A", "x", addr,
                              needles=("backends.A.replicas.x", "same address",
                                       "backends.A.replicas.m1"))
        self.server_fails("backend", "set", "A", "--replica", "a0=" + self.m1.addr,
                          needles=("backends.A.replicas.m1", "backends.A.replicas.a0"))
        rc, out, err = self.run_ctl("--json", "replica", "add", "A", "x", self.m1.addr)
        self.assertEqual((rc, out), (1, ""), err)
        j = json.loads(err)
        self.assertEqual(j["status"], 400)
        self.assertIn("same address", j["error"])
        self.assertEqual(self.config(), before)

    # -- JSON errors --------------------------------------------------------

    def json_fails(self, code, *args, sock=True):
        """Runs with --json expecting exit code, nothing on stdout and one
        JSON object on one line on stderr; returns it."""
        rc, out, err = self.run_ctl("--json", *args, sock=sock)
        self.assertEqual(rc, code, "ringroutectl --json %s: rc %d\nstdout: %s\nstderr: %s"
                         % (" ".join(args), rc, out, err))
        self.assertEqual(out, "", args)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertTrue(err.endswith("\n"), err)
        j = json.loads(err)
        self.assertIsInstance(j["error"], str)
        return j

    def test_json_errors(self):
        # usage errors, whichever the command and wherever --json stands
        j = self.json_fails(2, "backend", "set")
        self.assertIn("expected NAME", j["error"])
        self.assertIn("usage: ringroutectl", j["usage"])
        self.assertIn("backend set NAME", j["usage"])
        self.assertNotIn("status", j)
        j = self.json_fails(2, "frobnicate")
        self.assertIn("frobnicate", j["error"])
        j = self.json_fails(2, "--socket")
        self.assertIn("--socket", j["error"])
        rc, out, err = self.run_ctl("queues", "--wach", "--json")
        self.assertEqual((rc, out), (2, ""))
        self.assertIn("--wach", json.loads(err)["error"])
        j = self.json_fails(2, "help", "frob", sock=False)
        self.assertIn("frob", j["error"])
        # an unknown backend: the server's 404
        for args in (("backend", "get", "nope"), ("replica", "list", "nope"),
                     ("backend", "rm", "nope"), ("replica", "add", "nope", "r", "127.0.0.1:1")):
            j = self.json_fails(1, *args)
            self.assertEqual(j["status"], 404, args)
            self.assertIn("no such backend", j["error"])
        j = self.json_fails(1, "endpoint", "get", "nope")
        self.assertEqual((j["status"], j["error"]), (404, "endpoints.nope: no such endpoint"))
        # a refusal: 400 naming the field, and 409
        j = self.json_fails(1, "backend", "set", "A", "--max-ongoing", "0")
        self.assertEqual(j["status"], 400)
        self.assertIn("backends.A.max_ongoing_requests", j["error"])
        self.assertEqual(self.json_fails(1, "backend", "rm", "A")["status"], 409)
        # an unreachable socket: no status, the path and the reason
        j = self.json_fails(1, "--socket", self.sock + ".nope", "stats", sock=False)
        self.assertNotIn("status", j)
        self.assertIn("cannot connect to " + self.sock + ".nope", j["error"])
        j = self.json_fails(1, "config", "apply", "/nonexistent/file.json")
        self.assertIn("/nonexistent/file.json", j["error"])

    def test_missing_name_exit_1(self):
        for args, needle in ((("backend", "get", "nope"), "backends.nope: no such backend"),
                             (("endpoint", "get", "nope"), "endpoints.nope: no such endpoint"),
                             (("replica", "list", "nope"), "backends.nope: no such backend")):
            err = self.server_fails(*args, needles=(needle,))
            self.assertEqual(err, "ringroutectl: %s\n" % needle)

    # -- lists and gets -----------------------------------------------------

    def rich_config(self):
        """Applies a config with every kind of field; returns it (canonical)."""
        spare = "127.0.0.1:%d" % harness.free_port()
        cfg = {
            "backends": {
                "A": backend({"m1": self.m1.addr, "z9": spare}, policy="round_robin",
                             max_ongoing_requests=3, retries=1,
                             health_check={"path": "/-/healthz", "interval_ms": 60000}),
                "B": backend([self.m2]),
            },
            "endpoints": {
                "e": endpoint("/e", {"A": 1.0}),
                "p": endpoint("/p/q", {"A": 0.9, "B": 0.1}, methods=["POST", "GET"],
                              shadow={"B": 0.05}, call_method="predict",
                              max_body_bytes=1000),
            },
        }
        self.ok("config", "apply", harness.write_config(cfg))
        return self.config()

    def table(self, out):
        """A table's rows as lists of cells (cells never hold spaces)."""
        lines = out.rstrip("\n").split("\n")
        return [l.split() for l in lines]

    def test_backend_list_and_get(self):
        doc = self.rich_config()
        rows = self.table(self.ok("backend", "list"))
        self.assertEqual(rows[0], ["NAME", "REPLICAS", "MAX_ONGOING", "MAX_QUEUED",
                                   "QUEUE_TIMEOUT_MS", "RETRIES", "POLICY", "HEALTH_CHECK"])
        self.assertEqual(rows[1:], [
            ["A", "2", "3", "1024", "5000", "1", "round_robin", "fall=3,interval_ms=60000,path=/-/healthz,rise=2"],
            ["B", "1", "100", "1024", "5000", "2", "p2c", "none"],
        ])
        j = json.loads(self.ok("--json", "backend", "list"))
        self.assertEqual(j["backends"], doc["backends"])
        self.assertIsInstance(j["version"], int)

        rows = self.table(self.ok("backend", "get", "A"))
        a = doc["backends"]["A"]
        fields = rows[:rows.index([])] if [] in rows else rows
        self.assertEqual(fields[0], ["FIELD", "VALUE"])
        got = dict(fields[1:])
        self.assertEqual(got["health_check"], "fall=3,interval_ms=60000,path=/-/healthz,rise=2")
        self.assertEqual(got["outlier_detection"],
                         "base_ejection_ms=30000,consecutive_failures=5,count_5xx=false,"
                         "max_ejection_ms=300000,max_ejection_percent=50")
        for k, v in a.items():
            if k not in ("replicas", "health_check", "outlier_detection"):
                self.assertEqual(got[k], ",".join(v) if isinstance(v, list) else
                                 json.dumps(v) if isinstance(v, bool) else str(v), k)
        self.assertEqual(set(got), set(a) - {"replicas"})
        reps = rows[rows.index([]) + 1:]
        self.assertEqual(reps[0], ["REPLICA", "ADDRESS", "WEIGHT", "DRAIN"])
        self.assertEqual({r[0]: r[1] for r in reps[1:]}, a["replicas"])
        self.assertEqual({tuple(r[2:]) for r in reps[1:]}, {("1", "no")})
        j = json.loads(self.ok("--json", "backend", "get", "A"))
        self.assertEqual((j["name"], j["backend"]), ("A", a))
        self.assertEqual(j["version"], json.loads(self.ok("--json", "backend", "list"))["version"])
        got = dict(self.table(self.ok("backend", "get", "B"))[1:11])
        self.assertEqual(got["health_check"], "none")

    def test_endpoint_list_and_get(self):
        doc = self.rich_config()
        rows = self.table(self.ok("endpoint", "list"))
        self.assertEqual(rows[0], ["NAME", "ROUTE", "METHODS", "TRAFFIC", "SHADOW", "CALL_METHOD"])
        methods = ",".join(doc["endpoints"]["p"]["methods"])
        self.assertEqual(rows[1:], [
            ["e", "/e", "any", "A=1", "none", "none"],
            ["p", "/p/q", methods, "A=0.9,B=0.1", "B=0.05", "predict"],
        ])
        self.assertEqual(sorted(methods.split(",")), ["GET", "POST"])
        j = json.loads(self.ok("--json", "endpoint", "list"))
        self.assertEqual(j["endpoints"], doc["endpoints"])
        rows = self.table(self.ok("endpoint", "get", "p"))
        self.assertEqual(rows[0], ["FIELD", "VALUE"])
        self.assertEqual(rows[1:], [["route", "/p/q"], ["methods", methods],
                                    ["traffic", "A=0.9,B=0.1"], ["shadow", "B=0.05"],
                                    ["call_method", "predict"], ["max_body_bytes", "1000"]])
        j = json.loads(self.ok("--json", "endpoint", "get", "p"))
        self.assertEqual((j["name"], j["endpoint"]), ("p", doc["endpoints"]["p"]))
        rows = self.table(self.ok("endpoint", "get", "e"))
        self.assertEqual(dict(rows[1:])["methods"], "any")

    def test_replica_list(self):
        doc = self.rich_config()
        rows = self.table(self.ok("replica", "list", "A"))
        self.assertEqual(rows[0], ["REPLICA", "ADDRESS", "WEIGHT", "DRAIN"])
        self.assertEqual({r[0]: r[1] for r in rows[1:]}, doc["backends"]["A"]["replicas"])
        self.assertEqual([r[0] for r in rows[1:]], ["m1", "z9"])  # sorted by id
        j = json.loads(self.ok("--json", "replica", "list", "B"))
        self.assertEqual((j["backend"], j["replicas"]), ("B", {"m2": self.m2.addr}))
        self.assertIsInstance(j["version"], int)
        # the object form: its weight and drain in their columns
        self.ok("replica", "add", "B", "w3", "127.0.0.1:%d" % harness.free_port(), "--weight", "3")
        self.ok("replica", "drain", "B", "m2")
        rows = self.table(self.ok("replica", "list", "B"))
        self.assertEqual(rows[1:], [["m2", self.m2.addr, "1", "yes"],
                                    [rows[2][0], rows[2][1], "3", "no"]])
        self.assertEqual(rows[2][0], "w3")
        self.ok("replica", "rm", "B", "w3")
        # empty lists still print their header
        self.ok("endpoint", "rm", "e")
        self.ok("endpoint", "rm", "p")
        self.ok("replica", "rm", "B", "m2")
        self.assertEqual(self.table(self.ok("replica", "list", "B")),
                         [["REPLICA", "ADDRESS", "WEIGHT", "DRAIN"]])
        self.ok("backend", "rm", "A")
        self.ok("backend", "rm", "B")
        self.assertEqual(len(self.table(self.ok("backend", "list"))), 1)
        self.assertEqual(len(self.table(self.ok("endpoint", "list"))), 1)
        self.assertEqual(json.loads(self.ok("--json", "endpoint", "list"))["endpoints"], {})

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
        self.assertEqual(lines[0].split(), ["BACKEND", "QUEUED", "ONGOING", "REPLICAS",
                                            "BY_PRIORITY", "OLDEST_WAIT_MS"], out)
        self.assertEqual(sorted(l.split() for l in lines[1:]),
                         [["A", "0", "0", "1", "-", "0"], ["B", "0", "0", "1", "-", "0"]], out)
        j = json.loads(self.ok("queues", "--json"))  # global option after the noun
        self.assertEqual(j["backends"]["B"], {"queued": 0, "ongoing": 0, "replicas": 1,
                                              "by_priority": {}, "oldest_wait_ms": 0})

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
        self.assertTrue(any(re.match(r"^BACKEND\s+QUEUED\s+ONGOING\s+REPLICAS\s+BY_PRIORITY\s+OLDEST_WAIT_MS$", l)
                            for l in lines), lines)


if __name__ == "__main__":
    harness.main()
