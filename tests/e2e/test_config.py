#!/usr/bin/env python3
"""Invalid configuration never starts a proxy: ringroute exits non-zero
with `FILE:LINE:COLUMN: reason` (syntax) or `FILE: json.path: reason`."""

import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint  # noqa: E402


def good():
    return {
        "backends": {"b": backend({"r1": "127.0.0.1:9"})},
        "endpoints": {"api": endpoint("/api", {"b": 1.0}, methods=["GET"])},
    }


class ConfigTest(harness.RRTestCase):

    def rejected(self, cfg):
        path = harness.write_config(cfg)
        rc, out, err = harness.run_ringroute_expect_exit(None, config_path=path)
        self.assertNotEqual(rc, 0, "ringroute accepted it: %r" % err)
        self.assertGreater(rc, 0, "ringroute crashed (signal %d): %s" % (-rc, err))
        self.assertNotIn("READY", out, "a rejected config must not start a proxy")
        self.assertNotIn("LISTEN", out)
        self.assertNotRegex(err, r"(AddressSanitizer|runtime error:|LeakSanitizer)")
        return path, err

    def assertPathError(self, cfg, json_path):
        path, err = self.rejected(cfg)
        rx = re.escape(path) + r": " + re.escape(json_path) + r"\S*: \S"
        self.assertRegex(err, rx)
        return err

    def test_syntax_error_line_column(self):
        text = ('{\n'
                '  "backends": {\n'
                '    "b": {"replicas": {"r1": "127.0.0.1:9"}}\n'
                '    "oops": 1\n'
                '  }\n'
                '}\n')
        path, err = self.rejected(text)
        m = re.search(re.escape(path) + r":(\d+):(\d+): \S", err)
        self.assertTrue(m, "no FILE:LINE:COLUMN: reason in %r" % err)
        self.assertEqual(int(m.group(1)), 4, err)
        self.assertGreaterEqual(int(m.group(2)), 1, err)

    def test_syntax_error_truncated(self):
        path, err = self.rejected('{"backends": {')
        self.assertRegex(err, re.escape(path) + r":1:\d+: \S")

    def test_not_json(self):
        path, err = self.rejected("backends = 1\n")
        self.assertRegex(err, re.escape(path) + r":1:\d+: \S")

    def test_unknown_backend_in_traffic(self):
        cfg = good()
        cfg["endpoints"]["api"]["traffic"] = {"b": 0.5, "nope": 0.5}
        err = self.assertPathError(cfg, "endpoints.api.traffic.nope")
        self.assertIn("nope", err)

    def test_unknown_shadow_backend(self):
        cfg = good()
        cfg["endpoints"]["api"]["shadow"] = {"ghost": 0.1}
        self.assertPathError(cfg, "endpoints.api.shadow.ghost")

    def test_bad_replica_address(self):
        cfg = good()
        cfg["backends"]["b"]["replicas"]["r1"] = "not an address"
        self.assertPathError(cfg, "backends.b.replicas.r1")

    def test_bad_route(self):
        cfg = good()
        cfg["endpoints"]["api"]["route"] = "api"
        self.assertPathError(cfg, "endpoints.api.route")

    def test_bad_method(self):
        cfg = good()
        cfg["endpoints"]["api"]["methods"] = ["GET", "FROB"]
        self.assertPathError(cfg, "endpoints.api.methods")

    def test_bad_max_ongoing(self):
        cfg = good()
        cfg["backends"]["b"]["max_ongoing_requests"] = 0
        self.assertPathError(cfg, "backends.b.max_ongoing_requests")
        cfg["backends"]["b"]["max_ongoing_requests"] = "many"
        self.assertPathError(cfg, "backends.b.max_ongoing_requests")

    def test_missing_file(self):
        missing = os.path.join(os.path.dirname(harness.write_config("{}")), "nope.json")
        rc, out, err = harness.run_ringroute_expect_exit(None, config_path=missing)
        self.assertGreater(rc, 0, err)
        self.assertNotIn("READY", out)
        self.assertIn(missing, err)

    def test_good_config_starts(self):
        r = self.ringroute(json.loads(json.dumps(good())))
        c = self.client(r.port)
        resp = c.request("GET", "/nothing")
        self.assertErrorJSON(resp, 404)


if __name__ == "__main__":
    harness.main()
