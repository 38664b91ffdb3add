#!/usr/bin/env python3
"""bench/compare --ringroute-policy (bench/README.md "What a replica policy
costs"): one contender ringroute-P per policy P, in the same rounds as
ringroute, each started on the scenario's config with "policy": P on every
backend, and a line per policy with its req/s against ringroute's (p2c).

One short tiny run (1 round of 1 s after a 1 s warm-up, three contenders);
skipped (77) without wrk. Also the option's errors."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

COMPARE = os.path.join(harness.REPO, "bench", "compare")


class ComparePolicyTest(harness.RRTestCase):
    def run_compare(self, *args, timeout=90):
        return subprocess.run([sys.executable, COMPARE] + list(args), capture_output=True,
                              text=True, timeout=timeout)

    def test_policy_contenders(self):
        if not shutil.which("wrk"):
            self.skipTest("wrk not installed")
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "out.json")
            r = self.run_compare("--scenario", "tiny", "--only", "ringroute",
                                 "--ringroute-policy", "prefix,least_load", "--rounds", "1",
                                 "--duration", "1", "--warmup", "1", "--connections", "8",
                                 "--threads", "1", "--build", harness.BUILD, "--json", out,
                                 "--keep-tmp")
            tmp = re.search(r"\[compare\] temp dir (\S+)", r.stderr)
            if tmp:
                self.addCleanup(shutil.rmtree, tmp.group(1), True)
            self.assertEqual(r.returncode, 0, r.stderr[-3000:])
            with open(out) as f:
                doc = json.load(f)
        # the three ran, in this order, and answered
        self.assertEqual(list(doc["summary"]), ["ringroute", "ringroute-prefix",
                                                "ringroute-least-load"])
        for name, s in doc["summary"].items():
            self.assertGreater(s["rps_median"], 0, name)
        # each was started on the scenario's config with its policy
        for name, policy in (("ringroute-prefix", "prefix"),
                             ("ringroute-least-load", "least_load")):
            with open(os.path.join(tmp.group(1), name, "ringroute.json")) as f:
                cfg = json.load(f)
            self.assertEqual({b["policy"] for b in cfg["backends"].values()}, {policy})
        with open(os.path.join(tmp.group(1), "ringroute", "ringroute.json")) as f:
            self.assertNotIn("policy", json.load(f)["backends"]["b"])
        for name in ("ringroute-prefix", "ringroute-least-load"):
            self.assertRegex(r.stdout, r"policy: %s / ringroute \(p2c\) req/s x\d+\.\d{3} "
                             r"\(medians\), per round: \d+\.\d{3}; within 5%%: (yes|NO)" % name)
            self.assertIn("%s vs ringroute" % name, r.stdout)

    def test_option_errors(self):
        for args, want in (
                (["--scenario", "tiny", "--ringroute-policy", "fastest"],
                 "--ringroute-policy: ['fastest'] (each once, from p2c, round_robin, "
                 "least_load, prefix)"),
                (["--scenario", "tiny", "--ringroute-policy", "p2c,p2c"],
                 "(each once, from"),
                (["--scenario", "llm", "--ringroute-policy", "prefix"],
                 "--ringroute-policy: not with --scenario llm"),
                (["--scenario", "tiny", "--think-ms", "100"],
                 "--think-ms: only with --scenario llm")):
            r = self.run_compare(*args, timeout=20)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn(want, r.stderr, args)


if __name__ == "__main__":
    harness.main()
