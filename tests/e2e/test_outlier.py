#!/usr/bin/env python3
"""Passive outlier ejection and fail fast (docs/config.md "outlier_detection",
"queue_when_unavailable"), with real processes and injected faults.

Three replicas, one of them bad: resetting every connection (a RawUpstream
that closes without answering), blackholed (a listening socket whose
connections are never accepted nor read), killed (a mock stopped before the
load) or slow (a mock answering after the request timeout). Client threads
send a fixed number of requests; the bad replica's share is what /v1/stats
counts as exchanges started with it, taken after the first requests (the
ones that find the fault out). The numbers go to stderr.

Also: max_ejection_percent (2 of 3 bad at 50%: one ejected), the ejection
time growing on repeat, the return on probation and the end of probation,
the log lines, /v1/stats, ringroutectl's STATE and the metrics; fail fast
(every replica down: 503 "no healthy replica" at once, with Retry-After)
and queue_when_unavailable (the request waits and succeeds when a replica
comes up).

bench/outlier_faults.py runs the same faults with ejection off and on and
prints the before/after table (bench/RESULTS.md "Outlier ejection")."""

import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint, wait_stderr  # noqa: E402

OK_200 = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

OFF = {"consecutive_failures": 0}


class Blackhole:
    """A replica that accepts (the kernel does, from the backlog) and never
    answers: nothing reads what ringroute sends."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4096)
        self.port = self.lsock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port

    def close(self):
        self.lsock.close()


def resetting():
    """A replica that closes every connection without answering."""
    return harness.RawUpstream(lambda req: None)


# Each fault: (how the bad replica is made from a starter with mock() and
# upstream(), the backend's settings, the bad replica's mock to stop before
# the load or None).
def make_fault(starter, kind):
    """Returns (bad address, backend keyword settings, to_kill)."""
    if kind == "resetting":
        return starter.upstream(resetting()).addr, {}, None
    if kind == "blackholed":
        return (starter.upstream(Blackhole()).addr,
                {"policy": "round_robin", "request_timeout_ms": 2000}, None)
    if kind == "killed":
        m = starter.mock("bad")
        return m.addr, {}, m
    if kind == "slow":
        m = starter.mock("bad", delay_ms=1500)
        return m.addr, {"request_timeout_ms": 1000}, None
    raise ValueError(kind)


def replica_requests(rr, b="b"):
    """{replica: exchanges started} from /v1/stats."""
    j = harness.http_once(rr.admin_port, "GET", "/v1/stats").json()
    return {k: v["requests"] for k, v in j["backends"][b]["replicas"].items()}


def replica_stats(rr, b="b"):
    j = harness.http_once(rr.admin_port, "GET", "/v1/stats").json()
    return j["backends"][b]["replicas"]


def run_load(port, threads, per_thread, path="/x"):
    """threads clients each sending per_thread GETs over keep-alive (a new
    connection after one closes). Returns (statuses [(status, seconds)],
    wall seconds)."""
    out = []
    lock = threading.Lock()

    def worker():
        c = None
        mine = []
        for i in range(per_thread):
            t0 = time.monotonic()
            try:
                if c is None:
                    c = harness.Client(port, timeout=30)
                r = c.request("GET", "%s/%d" % (path, i))
                st = r.status
                if (r.header("connection") or "").lower() == "close":
                    c.close()
                    c = None
            except (harness.ConnectionClosed, OSError):
                st = 0  # cut: counted as an error
                if c:
                    c.close()
                c = None
            mine.append((st, time.monotonic() - t0))
        if c:
            c.close()
        with lock:
            out.extend(mine)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join(300)
    return out, time.monotonic() - t0


def errors_of(statuses):
    """{status: count} of the non-200 answers (0: the connection was cut)."""
    e = {}
    for st, _ in statuses:
        if st != 200:
            e[st] = e.get(st, 0) + 1
    return dict(sorted(e.items()))


def share(before, after, bad="bad"):
    """The bad replica's part of the exchanges between two snapshots, and
    the total."""
    total = sum(after.values()) - sum(before.values())
    return ((after[bad] - before.get(bad, 0)) / total if total else 0.0), total


def fault_run(starter, kind, outlier, threads, warm, per_thread):
    """One run of a fault: 2 good mocks and the bad replica; a first load
    of threads x warm requests (where the fault is found out), then
    threads x per_thread more. Returns the numbers of both phases."""
    good = [starter.mock("g1"), starter.mock("g2")]
    addr, kw, kill = make_fault(starter, kind)
    reps = {m.id: m.addr for m in good}
    reps["bad"] = addr
    # Ejection alone: the retry budget (its own test) would turn some
    # connect failures into 502s while several requests fail at once.
    kw.setdefault("retry_budget_percent", 100)
    cfg = {"backends": {"b": backend(reps, outlier_detection=outlier, **kw)},
           "endpoints": {"e": endpoint("/", {"b": 1.0})}}
    rr = starter.ringroute(cfg, shards=2, admin=True)
    if kill:
        kill.stop()
    first, wall1 = run_load(rr.port, threads, warm)
    mid = replica_requests(rr)
    rest, wall2 = run_load(rr.port, threads, per_thread)
    end = replica_requests(rr)
    s1, n1 = share({}, mid)
    s2, n2 = share(mid, end)
    return {"kind": kind, "ejection": "off" if outlier == OFF else "on",
            "first": len(first), "share_first": s1, "exch_first": n1,
            "errors_first": errors_of(first), "rest": len(rest), "share_rest": s2,
            "exch_rest": n2, "errors_rest": errors_of(rest),
            "rps": (len(first) + len(rest)) / (wall1 + wall2), "rps_rest": len(rest) / wall2,
            "rr": rr}


def report(res):
    sys.stderr.write(
        "outlier %-10s ejection %-3s: first %d requests: bad replica took %5.1f%% of %d "
        "exchanges, client errors %s; next %d: %5.1f%% of %d, client errors %s; %.0f req/s "
        "(%.0f in the next)\n"
        % (res["kind"], res["ejection"], res["first"], 100 * res["share_first"],
           res["exch_first"], res["errors_first"] or "none", res["rest"],
           100 * res["share_rest"], res["exch_rest"], res["errors_rest"] or "none",
           res["rps"], res["rps_rest"]))


def ctl_bin():
    return os.environ.get("RR_RINGROUTECTL") or os.path.join(harness.BUILD, "ringroutectl")


class OutlierTest(harness.RRTestCase):

    def test_resetting_replica_is_ejected(self):
        res = fault_run(self, "resetting", {}, threads=8, warm=5, per_thread=60)
        report(res)
        rr = res["rr"]
        self.assertLess(res["share_rest"], 0.02, res)
        self.assertEqual(res["errors_rest"], {}, res)
        self.assertTrue(wait_stderr(rr, "replica b/bad ejected for 30000 ms after 5 "
                                    "consecutive failures (reset)"), rr.stderr_tail())
        # Only the requests that found the fault out saw it: one failure
        # run's worth and those in flight then.
        self.assertLessEqual(sum(res["errors_first"].values()), 5 + 8, res)
        self.assertEqual(set(res["errors_first"]) - {502}, set(), res)
        st = replica_stats(rr)["bad"]
        self.assertTrue(st["ejected"], st)
        self.assertEqual(st["ejections"], 1, st)
        self.assertEqual(st["last_ejection_reason"], "reset", st)
        self.assertGreater(st["ejected_ms_left"], 0, st)
        self.assertFalse(replica_stats(rr)["g1"]["ejected"])
        self.assertIsNone(replica_stats(rr)["g1"]["last_ejection_reason"])
        m = harness.parse_metrics(harness.http_once(rr.admin_port, "GET", "/metrics").body.decode())
        val = {(n, tuple(sorted(l.items()))): v for n, l, v in m}
        self.assertEqual(val[("ringroute_replica_ejected",
                              (("backend", "b"), ("replica", "bad")))], 1)
        self.assertEqual(val[("ringroute_replica_ejected",
                              (("backend", "b"), ("replica", "g1")))], 0)
        self.assertEqual(val[("ringroute_outlier_ejections_total",
                              (("backend", "b"), ("reason", "reset"), ("replica", "bad")))], 1)
        self.assertEqual(val[("ringroute_outlier_ejections_total",
                              (("backend", "b"), ("reason", "timeout"), ("replica", "bad")))], 0)

    def test_blackholed_replica_stops_costing_a_third(self):
        # round_robin gives the blackhole every third request until it is
        # out; each of those waits request_timeout_ms for its 504.
        good = [self.mock("g1"), self.mock("g2")]
        bh = self.upstream(Blackhole())
        reps = {m.id: m.addr for m in good}
        reps["bad"] = bh.addr
        cfg = {"backends": {"b": backend(reps, policy="round_robin", request_timeout_ms=300)},
               "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        rr = self.ringroute(cfg, shards=2, admin=True)
        warm, _ = run_load(rr.port, 6, 5)
        self.assertTrue(wait_stderr(rr, "replica b/bad ejected for 30000 ms after 5 "
                                    "consecutive failures (timeout)"), rr.stderr_tail())
        before = replica_requests(rr)
        statuses, wall = run_load(rr.port, 6, 40)
        sh, total = share(before, replica_requests(rr))
        sys.stderr.write("outlier blackholed: warm-up errors %s; then the blackhole took "
                         "%.1f%% of %d exchanges, client errors %s, %.0f req/s\n"
                         % (errors_of(warm), 100 * sh, total, errors_of(statuses) or "none",
                            len(statuses) / wall))
        self.assertEqual(sh, 0.0)
        self.assertEqual(errors_of(statuses), {})
        self.assertEqual(set(errors_of(warm)) - {504}, set())

    def test_killed_replica_is_ejected(self):
        # Connect failures are retried on another replica: clients see no
        # error either way, but each one costs a connect attempt until the
        # dead replica is out.
        res = fault_run(self, "killed", {}, threads=8, warm=5, per_thread=30)
        report(res)
        rr = res["rr"]
        self.assertEqual(res["errors_first"], {}, res)
        self.assertEqual(res["errors_rest"], {}, res)
        self.assertEqual(res["share_rest"], 0.0, res)
        self.assertTrue(wait_stderr(rr, "replica b/bad ejected for 30000 ms after 5 "
                                    "consecutive failures (connect_failed)"), rr.stderr_tail())

    def test_slow_replica_is_ejected(self):
        # Answers after its request timeout: each of its requests is a 504
        # until 5 in a row eject it.
        good = [self.mock("g1"), self.mock("g2")]
        slow = self.mock("bad", delay_ms=600)
        cfg = {"backends": {"b": backend(good + [slow], policy="round_robin",
                                         request_timeout_ms=200)},
               "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        rr = self.ringroute(cfg, shards=2, admin=True)
        warm, _ = run_load(rr.port, 6, 5)
        self.assertTrue(wait_stderr(rr, "replica b/bad ejected for 30000 ms after 5 "
                                    "consecutive failures (timeout)"), rr.stderr_tail())
        before = replica_requests(rr)
        statuses, _ = run_load(rr.port, 6, 30)
        sh, total = share(before, replica_requests(rr))
        sys.stderr.write("outlier slow: warm-up errors %s; then it took %.1f%% of %d "
                         "exchanges, client errors %s\n"
                         % (errors_of(warm), 100 * sh, total, errors_of(statuses) or "none"))
        self.assertEqual(sh, 0.0)
        self.assertEqual(errors_of(statuses), {})

    def test_5xx_counts_only_with_count_5xx(self):
        g1, g2 = self.mock("g1"), self.mock("g2")
        e1, e2 = self.mock("e1", status=500), self.mock("e2", status=500)
        od = {"consecutive_failures": 3}
        cfg = {"backends": {
            "on": backend([g1, e1], policy="round_robin",
                          outlier_detection=dict(od, count_5xx=True)),
            "off": backend([g2, e2], policy="round_robin", outlier_detection=od)},
            "endpoints": {"on": endpoint("/on", {"on": 1.0}),
                          "off": endpoint("/off", {"off": 1.0})}}
        rr = self.ringroute(cfg, admin=True)
        for i in range(12):
            harness.http_once(rr.port, "GET", "/on/%d" % i)
            harness.http_once(rr.port, "GET", "/off/%d" % i)
        self.assertTrue(wait_stderr(rr, "replica on/e1 ejected for 30000 ms after 3 "
                                    "consecutive failures (5xx)"), rr.stderr_tail())
        self.assertNotIn("replica off/e2 ejected", rr.stderr())
        self.assertTrue(replica_stats(rr, "on")["e1"]["ejected"])
        self.assertFalse(replica_stats(rr, "off")["e2"]["ejected"])

    def test_max_ejection_percent(self):
        # 2 of 3 replicas resetting, max_ejection_percent 50: one ejected,
        # the other keeps its requests (and its clients their 502s).
        good = self.mock("g1")
        b1 = self.upstream(resetting())
        b2 = self.upstream(resetting())
        cfg = {"backends": {"b": backend({"g1": good.addr, "bad1": b1.addr, "bad2": b2.addr},
                                         policy="round_robin",
                                         outlier_detection={"consecutive_failures": 3})},
               "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        rr = self.ringroute(cfg, admin=True)
        for i in range(30):
            harness.http_once(rr.port, "GET", "/x%d" % i)
        st = replica_stats(rr)
        ejected = sorted(k for k, v in st.items() if v["ejected"])
        self.assertEqual(len(ejected), 1, st)
        self.assertEqual(rr.stderr().count(" ejected for "), 1, rr.stderr_tail())
        other = "bad2" if ejected == ["bad1"] else "bad1"
        self.assertGreater(st[other]["errors"], 3, st)  # it kept failing, still in

    def test_ejection_grows_probation_and_return(self):
        # A replica that fails while mode["bad"] is set. Ejected for 300 ms;
        # back on probation its first failure ejects it for 600 ms; healed,
        # it passes probation (3 successes) and a new failure run ejects it
        # for the base 300 ms again.
        mode = {"bad": True}
        flaky = self.upstream(harness.RawUpstream(lambda req: None if mode["bad"] else OK_200))
        good = self.mock("g1")
        cfg = {"backends": {"b": backend({"g1": good.addr, "flaky": flaky.addr},
                                         policy="round_robin",
                                         outlier_detection={"consecutive_failures": 3,
                                                            "base_ejection_ms": 300})},
               "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        rr = self.ringroute(cfg, admin=True)

        def send_until(text, n=1000):
            for i in range(n):
                if text in rr.stderr():
                    return True
                try:
                    harness.http_once(rr.port, "GET", "/x%d" % i)
                except (harness.ConnectionClosed, OSError):
                    pass
                time.sleep(0.005)
            return text in rr.stderr()

        self.assertTrue(send_until("replica b/flaky ejected for 300 ms after 3 consecutive "
                                   "failures (reset)"), rr.stderr_tail())
        t_ej = time.monotonic()
        self.assertTrue(send_until("replica b/flaky returns from ejection, on probation"),
                        rr.stderr_tail())
        # (the log line is read a little after the ejection itself)
        self.assertGreaterEqual(time.monotonic() - t_ej, 0.2)
        self.assertTrue(send_until("replica b/flaky ejected for 600 ms after 1 consecutive "
                                   "failures (reset)"), rr.stderr_tail())
        st = replica_stats(rr)["flaky"]
        self.assertTrue(st["ejected"], st)
        self.assertEqual(st["ejections"], 2, st)
        self.assertTrue(0 < st["ejected_ms_left"] <= 600, st)
        mode["bad"] = False
        self.assertTrue(send_until("replica b/flaky passed probation"), rr.stderr_tail())
        self.assertEqual(rr.stderr().count("returns from ejection"), 2, rr.stderr_tail())
        mode["bad"] = True
        self.assertTrue(wait_for_count(rr, send_until, "ejected for 300 ms", 2),
                        rr.stderr_tail())
        self.assertEqual(replica_stats(rr)["flaky"]["ejections"], 3)

    def test_ctl_shows_ejected(self):
        good = self.mock("g1")
        bad = self.upstream(resetting())
        sock = harness.control_sock_path()
        cfg = {"backends": {"b": backend({"g1": good.addr, "bad": bad.addr},
                                         policy="round_robin",
                                         outlier_detection={"consecutive_failures": 2})},
               "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        rr = self.ringroute(cfg, extra=["--control", sock])
        for i in range(6):
            try:
                harness.http_once(rr.port, "GET", "/x%d" % i)
            except (harness.ConnectionClosed, OSError):
                pass
        self.assertTrue(wait_stderr(rr, "replica b/bad ejected"), rr.stderr_tail())
        p = subprocess.run([ctl_bin(), "--socket", sock, "stats"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=20)
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.decode().splitlines()
        col = lines[0].split().index("STATE")
        rows = {l.split()[1]: l.split()[col] for l in lines[1:]}
        self.assertEqual(rows, {"g1": "ok", "bad": "ejected"}, p.stdout)
        # backend set takes the new keys (one sub-key changes, the rest stays)
        p = subprocess.run([ctl_bin(), "--socket", sock, "backend", "set", "b",
                            "--max-ejection-percent", "100", "--queue-when-unavailable", "true"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        self.assertEqual(p.returncode, 0, p.stderr)
        p = subprocess.run([ctl_bin(), "--socket", sock, "--json", "backend", "get", "b"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        import json
        b = json.loads(p.stdout)["backend"]
        self.assertEqual(b["outlier_detection"]["max_ejection_percent"], 100, b)
        self.assertEqual(b["outlier_detection"]["consecutive_failures"], 2, b)
        self.assertTrue(b["queue_when_unavailable"], b)
        p = subprocess.run([ctl_bin(), "--socket", sock, "backend", "set", "b",
                            "--count-5xx", "maybe"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        self.assertEqual(p.returncode, 2, p.stderr)

    def test_fail_fast_when_no_replica_is_up(self):
        # Both replicas fail their health check: a request gets 503 "no
        # healthy replica" at once, not after queue_timeout_ms.
        m1, m2 = self.mock("m1"), self.mock("m2")
        cfg = {"backends": {"b": backend([m1, m2], queue_timeout_ms=3000,
                                         health_check={"path": "/health", "interval_ms": 100})},
               "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        rr = self.ringroute(cfg)
        m1.stop()
        m2.stop()
        self.assertTrue(wait_stderr(rr, "replica b/m1 is unhealthy"), rr.stderr_tail())
        self.assertTrue(wait_stderr(rr, "replica b/m2 is unhealthy"), rr.stderr_tail())
        for i in range(3):
            t0 = time.monotonic()
            r = harness.http_once(rr.port, "GET", "/x")
            dt = time.monotonic() - t0
            self.assertEqual(r.status, 503, r)
            self.assertEqual(r.header("retry-after"), "1", r)
            self.assertIn(b"no healthy replica", r.body)
            sys.stderr.write("outlier fail fast: 503 after %.1f ms (queue_timeout_ms 3000)\n"
                             % (dt * 1000))
            self.assertLess(dt, 0.5)

    def test_fail_fast_when_all_are_ejected(self):
        # Killed replicas, max_ejection_percent 100: once both are ejected,
        # requests get 503 at once instead of connect failures.
        port1, port2 = harness.free_port(), harness.free_port()
        cfg = {"backends": {"b": backend({"k1": "127.0.0.1:%d" % port1,
                                          "k2": "127.0.0.1:%d" % port2},
                                         retries=0, queue_timeout_ms=3000,
                                         outlier_detection={"consecutive_failures": 2,
                                                            "max_ejection_percent": 100})},
               "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        rr = self.ringroute(cfg)
        seen = []
        for i in range(12):
            t0 = time.monotonic()
            r = harness.http_once(rr.port, "GET", "/x")
            seen.append((r.status, time.monotonic() - t0))
        self.assertEqual(rr.stderr().count(" ejected for "), 2, rr.stderr_tail())
        self.assertEqual({s for s, _ in seen[-4:]}, {503}, seen)
        self.assertTrue(all(dt < 0.5 for _, dt in seen), seen)
        self.assertEqual(set(s for s, _ in seen) - {502, 503}, set(), seen)

    def test_queue_when_unavailable_waits_for_a_replica(self):
        # Nothing listens on the replica's port: unhealthy. With
        # queue_when_unavailable the request waits; a replica started on
        # that port after it was queued serves it.
        port = harness.free_port()
        cfg = {"backends": {"b": backend({"r": "127.0.0.1:%d" % port}, queue_timeout_ms=5000,
                                         queue_when_unavailable=True,
                                         health_check={"path": "/health", "interval_ms": 100})},
               "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        rr = self.ringroute(cfg, admin=True)
        self.assertTrue(wait_stderr(rr, "replica b/r is unhealthy"), rr.stderr_tail())
        c = self.client(rr.port, timeout=10)
        t0 = time.monotonic()
        c.send(harness.build_request("GET", "/x"))
        harness.wait_for(lambda: harness.http_once(rr.admin_port, "GET", "/v1/stats")
                         .json()["backends"]["b"]["queued"] == 1, 5.0, "the request queued")
        self.upstream(harness.RawUpstream(lambda req: OK_200, port=port))
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"ok")
        self.assertLess(time.monotonic() - t0, 4.5)


def wait_for_count(rr, send_until, text, n):
    """Sends requests (send_until) until text is in rr's log n times."""
    for _ in range(20):
        if rr.stderr().count(text) >= n:
            return True
        send_until("\0never\0", n=10)
    return rr.stderr().count(text) >= n


if __name__ == "__main__":
    harness.main()
