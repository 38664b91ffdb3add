#!/usr/bin/env python3
"""The process log (stderr): every line starts with an RFC 3339 UTC timestamp
and a level (text), or is one JSON object with time, level and msg
(--log-format json); --log-level drops the levels below it; every change
says its new version and what changed; a replica turning unhealthy says why;
bad --log-* values are refused with the flag named."""

import json
import os
import re
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint, wait_stderr  # noqa: E402

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
TEXT_LINE = re.compile(r"^(" + STAMP + r") (error|warn |info |debug) \S")


class ProcessLogTest(harness.RRTestCase):

    def config(self, m):
        return {"backends": {"b": backend([m])},
                "endpoints": {"e": endpoint("/", {"b": 1.0})}}

    def check_text(self, err):
        lines = err.splitlines()
        self.assertTrue(lines)
        for line in lines:
            if harness.sanitizer_line(line):
                continue
            self.assertRegex(line, TEXT_LINE)

    def test_text_lines_changes_and_health(self):
        m = self.mock("m1")
        sock = harness.control_sock_path()
        rr = self.ringroute(self.config(m), extra=["--control", sock])
        ctl = self.unix_client(sock)
        self.assertTrue(wait_stderr(rr, "listening on port"), rr.stderr())
        r = ctl.request("PUT", "/v1/backends/b",
                        None, harness.json_body(backend([m], max_ongoing_requests=7)))
        self.assertEqual(r.status, 200, r)
        self.assertTrue(wait_stderr(rr, "config version 2: backend b changed "
                                        "(max_ongoing_requests)"), rr.stderr())
        dead = harness.free_port()
        r = ctl.request("PUT", "/v1/backends/b/replicas/r9",
                        None, harness.json_body("127.0.0.1:%d" % dead))
        self.assertEqual(r.status, 200, r)
        self.assertTrue(wait_stderr(rr, "config version 3: backend b changed "
                                        "(replicas.r9 added)"), rr.stderr())
        r = ctl.request("PUT", "/v1/endpoints/f", None,
                        harness.json_body(endpoint("/f", {"b": 1.0})))
        self.assertEqual(r.status, 200, r)
        self.assertTrue(wait_stderr(rr, "config version 4: endpoint f added"), rr.stderr())
        self.check_text(rr.stderr())

    def test_unhealthy_says_why(self):
        m = self.mock("m1")
        dead = harness.free_port()
        cfg = {"backends": {"b": backend({"r1": m.addr, "r2": "127.0.0.1:%d" % dead},
                                         health_check={"path": "/", "interval_ms": 100})},
               "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        rr = self.ringroute(cfg)
        self.assertTrue(wait_stderr(rr, "replica b/r2 is unhealthy (connect: Connection refused)"),
                        rr.stderr())
        line = [l for l in rr.stderr().splitlines() if "b/r2 is unhealthy" in l][0]
        self.assertRegex(line, r"^" + STAMP + r" warn  replica b/r2 is unhealthy")
        self.check_text(rr.stderr())

    def test_json_format_and_level(self):
        m = self.mock("m1")
        rr = self.ringroute(self.config(m), extra=["--log-format", "json"])
        self.assertTrue(wait_stderr(rr, "listening on port"), rr.stderr())
        os.kill(rr.pid, signal.SIGHUP)  # reload: "config version 2: nothing changed"
        self.assertTrue(wait_stderr(rr, "nothing changed"), rr.stderr())
        rr.stop()
        n = 0
        for line in rr.stderr().splitlines():
            if harness.sanitizer_line(line):
                continue
            doc = json.loads(line)
            self.assertEqual(list(doc), ["time", "level", "msg"], line)
            self.assertRegex(doc["time"], "^" + STAMP + "$")
            self.assertIn(doc["level"], ("error", "warn", "info", "debug"))
            n += 1
        self.assertGreaterEqual(n, 3)

        # warn: the info lines are gone, a warning stays.
        rr = self.ringroute(self.config(m), extra=["--log-level", "warn"])
        os.kill(rr.pid, signal.SIGHUP)
        os.remove(rr.config_path)
        os.kill(rr.pid, signal.SIGHUP)  # refused (warn): the file is gone
        self.assertTrue(wait_stderr(rr, "reload refused"), rr.stderr())
        rr.stop()
        self.assertNotIn("listening on port", rr.stderr())
        self.assertNotIn("config version 2", rr.stderr())
        self.check_text(rr.stderr())

    def test_bad_log_flags(self):
        for flag, value in (("--log-format", "xml"), ("--log-level", "loud")):
            rc, out, err = harness.run_ringroute_expect_exit(
                {"backends": {}, "endpoints": {}}, extra=[flag, value])
            self.assertEqual(rc, 2, err)
            self.assertIn("%s: expected" % flag, err)
            self.assertIn("'%s'" % value, err)
            self.check_text(err)


if __name__ == "__main__":
    harness.main()
