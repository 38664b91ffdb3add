#!/usr/bin/env python3
"""Before/after table for outlier ejection (bench/RESULTS.md "Outlier
ejection"): for each fault of one replica of three (resetting every
connection, blackholed, killed, slow past its request timeout), ringroute
with outlier_detection off (consecutive_failures 0) and on (the defaults),
the bad replica's share of the exchanges ringroute started and the errors
clients saw, in the first requests (where the fault is found out) and in
the rest.

The faults and the load are tests/e2e/test_outlier.py's (one piece of code
for both); this only runs them and prints the table.

    RR_BUILD=build python3 bench/outlier_faults.py [--threads 8] [--warm 5] [--requests 40]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import harness  # noqa: E402
import test_outlier  # noqa: E402


class Starter:
    """mock()/upstream()/ringroute() as RRTestCase has them; stop() ends all."""

    def __init__(self):
        self.procs, self.ups = [], []

    def mock(self, id, **opts):
        m = harness.Mock(id, **opts)
        self.procs.append(m)
        return m

    def upstream(self, u):
        self.ups.append(u)
        return u

    def ringroute(self, cfg, **kw):
        r = harness.Ringroute(cfg, **kw)
        self.procs.append(r)
        return r

    def stop(self):
        for p in reversed(self.procs):
            p.stop()
        for u in self.ups:
            u.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--warm", type=int, default=5, help="first requests per thread")
    ap.add_argument("--requests", type=int, default=40, help="then this many per thread")
    ap.add_argument("--faults", default="resetting,blackholed,killed,slow")
    a = ap.parse_args()
    harness.probe()
    rows = []
    for kind in a.faults.split(","):
        for od in (test_outlier.OFF, {}):
            st = Starter()
            try:
                res = test_outlier.fault_run(st, kind, od, a.threads, a.warm, a.requests)
            finally:
                st.stop()
            test_outlier.report(res)
            rows.append(res)
    print("%d client threads; first %d requests each, then %d each; 3 replicas, 1 bad\n"
          % (a.threads, a.warm, a.requests))
    print("%-10s %-8s %11s %-21s %10s %-21s %7s %9s"
          % ("fault", "ejection", "bad: first", "client errors: first", "bad: rest",
             "client errors: rest", "req/s", "req/s rest"))
    print("-" * 106)

    def errs(e):
        return ", ".join("%s x%d" % ("cut" if k == 0 else k, v) for k, v in e.items()) or "none"

    for r in rows:
        print("%-10s %-8s %10.1f%% %-21s %9.1f%% %-21s %7.0f %9.0f"
              % (r["kind"], r["ejection"], 100 * r["share_first"], errs(r["errors_first"]),
                 100 * r["share_rest"], errs(r["errors_rest"]), r["rps"], r["rps_rest"]))


if __name__ == "__main__":
    main()
