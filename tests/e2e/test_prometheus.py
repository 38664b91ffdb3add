#!/usr/bin/env python3
"""/metrics follows the Prometheus exposition format exactly (issue 4 part 4).

Real mocks, upstreams scripted in this process and a real ringroute
(--admin 127.0.0.1:0, --control, 2 shards). The test provokes every kind of
outcome: 200 (with a shadow copy each), 404 (no route), 405, 413, 502 from a
replica that refuses connections (retried), one that sends an invalid
response, one that closes without answering, one that never accepts the
connection, 504 from one that never answers, 503 queue_full and
queue_timeout; a refused and an applied control-API change, a good and a
bad SIGHUP reload; and an endpoint whose name holds a double quote and a
backslash. Then it fetches /metrics from the admin port and:

(a) `promtool check metrics` (stdin) prints nothing and exits 0;
(b) prometheus_client.parser.text_string_to_metric_families reads every
    ringroute_* and process_* family with its declared type (none
    "unknown", which is what a family whose samples are interleaved with
    another's becomes), each family once, and the label escaping round-trips;
(c) the counters equal what was sent: requests by endpoint and code (the
    unrouted ones under endpoint=""), histogram counts (the queue wait that
    timed out observed too), rejections by reason, retries, upstream errors
    by kind, shadow copies, config version and changes by result, client
    connections, build info; process_* agree with /proc.
It also runs `promtool check rules` on packaging/prometheus/ringroute-rules.yml
and checks that every ringroute series the rules use is exposed.

promtool comes from Debian's `prometheus` package and the parser from
`python3-prometheus-client`, both installed by tools/deps. Missing, the test
fails (it never passes silently); it exits 77 (skipped) only when apt has no
such package to install.
"""

import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, build_request, endpoint, free_port, wait_for  # noqa: E402

RULES = os.path.join(harness.REPO, "packaging", "prometheus", "ringroute-rules.yml")
QUOTED = 'q"uo\\te'          # an endpoint name the label escaping must carry
QUEUE_TIMEOUT_MS = 1000

N_OK, N_NOROUTE, N_405, N_DEAD, N_BAD, N_RESET = 5, 3, 2, 2, 2, 1


def load_parser():
    """prometheus_client's text parser, or None. Debian's package lives in
    the system Python's dist-packages, which a python3 that is not Debian's
    (pyenv, a venv) does not search: the package is pure Python, so it is
    loaded from there too."""
    try:
        from prometheus_client import parser
        return parser
    except ImportError:
        pass
    d = "/usr/lib/python3/dist-packages"
    if os.path.isdir(os.path.join(d, "prometheus_client")):
        sys.path.append(d)
        try:
            from prometheus_client import parser
            return parser
        except ImportError:
            pass
    return None


def apt_candidate(pkg):
    """Can apt install pkg here? False when there is no apt or no candidate."""
    if not shutil.which("apt-cache"):
        return False
    try:
        out = subprocess.run(["apt-cache", "policy", pkg], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, timeout=30).stdout.decode()
    except (OSError, subprocess.SubprocessError):
        return False
    m = re.search(r"Candidate:\s*(\S+)", out)
    return bool(m and m.group(1) != "(none)")


PARSER = None


def require_tools():
    global PARSER
    PARSER = load_parser()
    missing = []
    if not shutil.which("promtool"):
        missing.append(("prometheus", "promtool"))
    if PARSER is None:
        missing.append(("python3-prometheus-client", "the prometheus_client module"))
    if not missing:
        return
    what = ", ".join("%s (package %s)" % (w, p) for p, w in missing)
    if all(not apt_candidate(p) for p, _ in missing):
        print("e2e: SKIP: %s missing and apt has no package to install" % what,
              file=sys.stderr)
        sys.exit(harness.SKIP_EXIT)
    print("e2e: FAIL: %s missing: run tools/deps (it installs them with apt)" % what,
          file=sys.stderr)
    sys.exit(1)


class StalledUpstream:
    """A listener whose accept queue is full and never drained: a connect to
    it is never accepted (the kernel drops the SYN), so it times out."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(0)
        self.addr = "127.0.0.1:%d" % self.lsock.getsockname()[1]
        # backlog 0 holds one connection: fill it
        self.fill = [socket.create_connection(self.lsock.getsockname(), timeout=2)]

    def close(self):
        for s in self.fill + [self.lsock]:
            s.close()


class PrometheusTest(harness.RRTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.m_ok = cls.mock_cls("ok1")
        cls.m_sh = cls.mock_cls("sh1")
        cls.bad = harness.RawUpstream(lambda req: b"this is not HTTP\r\n\r\n")
        cls.reset = harness.RawUpstream(lambda req: None)  # closes without a byte
        cls.gated = harness.GatedUpstream()
        cls.silent = harness.GatedUpstream()                # holds X-Gate: never
        cls.stalled = StalledUpstream()
        cls.cfg = {
            "backends": {
                "ok": backend([cls.m_ok]),
                "shadow": backend([cls.m_sh]),
                "dead": backend({"x": "127.0.0.1:%d" % free_port()}, retries=1),
                "bad": backend({"r": cls.bad.addr}),
                "reset": backend({"r": cls.reset.addr}),
                "stalled": backend({"r": cls.stalled.addr}, retries=0, connect_timeout_ms=200),
                "silent": backend({"r": cls.silent.addr}, request_timeout_ms=200),
                "gated": backend({"g": cls.gated.addr}, max_ongoing_requests=1,
                                 max_queued_requests=1, queue_timeout_ms=QUEUE_TIMEOUT_MS),
            },
            "endpoints": {
                "api": endpoint("/api", {"ok": 1.0}, methods=["GET", "POST"],
                                shadow={"shadow": 1.0}, max_body_bytes=1000),
                QUOTED: endpoint("/quote", {"ok": 1.0}),
                "dead": endpoint("/dead", {"dead": 1.0}),
                "bad": endpoint("/bad", {"bad": 1.0}),
                "reset": endpoint("/reset", {"reset": 1.0}),
                "stalled": endpoint("/stalled", {"stalled": 1.0}),
                "silent": endpoint("/silent", {"silent": 1.0}),
                "gated": endpoint("/gated", {"gated": 1.0}),
            },
        }
        cls.sock = harness.control_sock_path()
        cls.t_start = time.time()
        cls.rr = cls.ringroute_cls(cls.cfg, shards=2, admin=True,
                                   extra=["--control", cls.sock])
        cls.t_ready = time.time()

    @classmethod
    def tearDownClass(cls):
        cls.gated.open_all()
        cls.silent.open_all()
        try:
            super().tearDownClass()
        finally:
            for u in (cls.bad, cls.reset, cls.gated, cls.silent, cls.stalled):
                u.close()

    # -- helpers ---------------------------------------------------------------

    def scrape(self):
        r = harness.http_once(self.rr.admin_port, "GET", "/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("content-type"), "text/plain; version=0.0.4; charset=utf-8")
        return r.body.decode("utf-8")

    def families(self, text):
        return {f.name: f for f in PARSER.text_string_to_metric_families(text)}

    def samples(self, fams):
        """{(sample name, frozenset(labels)): value} over every family."""
        out = {}
        for f in fams.values():
            for s in f.samples:
                key = (s.name, frozenset(s.labels.items()))
                self.assertNotIn(key, out, "series twice: %r" % (key,))
                out[key] = s.value
        return out

    def ctl(self, method, path, body=None):
        return self.unix_client(self.sock).request(method, path, None, harness.json_body(body))

    def send_all(self):
        """Every outcome; returns {(endpoint, code): count} of what was sent."""
        sent = {}

        def expect(r, status, ep):
            self.assertEqual(r.status, status, r)
            sent[(ep, str(status))] = sent.get((ep, str(status)), 0) + 1

        c = self.client(self.rr.port)
        for i in range(N_OK):
            expect(c.request("GET", "/api/%d" % i), 200, "api")
        expect(c.request("GET", "/quote"), 200, QUOTED)
        for i in range(N_NOROUTE):
            expect(c.request("GET", "/nowhere/%d" % i), 404, "")
        for i in range(N_405):
            expect(c.request("DELETE", "/api/%d" % i), 405, "api")
        for i in range(N_DEAD):
            expect(c.request("GET", "/dead/%d" % i), 502, "dead")
        for i in range(N_BAD):
            expect(c.request("GET", "/bad/%d" % i), 502, "bad")
        for i in range(N_RESET):
            expect(c.request("GET", "/reset/%d" % i), 502, "reset")
        expect(c.request("GET", "/stalled"), 502, "stalled")
        expect(c.request("GET", "/silent", [("X-Gate", "never")]), 504, "silent")
        # 413 from the declared length: the connection closes after it
        big = self.client(self.rr.port)
        big.send(build_request("POST", "/api/big", [("Content-Length", "2000")]))
        expect(big.read_response(), 413, "api")
        big.close()

        # 503 queue_full and queue_timeout: one request holds the only slot,
        # one waits in the only queue place until it times out, one more
        # finds the queue full.
        hold = self.client(self.rr.port, timeout=15)
        hold.send(build_request("GET", "/gated/hold", [("X-Gate", "hold")]))
        self.gated.wait_requests(1)
        waiter = self.client(self.rr.port, timeout=15)
        t0 = time.monotonic()
        waiter.send(build_request("GET", "/gated/wait"))
        wait_for(lambda: ("ringroute_backend_queued_requests", {"backend": "gated"}, 1.0)
                 in harness.parse_metrics(self.scrape()), 5.0, "one request queued for gated")
        expect(self.client(self.rr.port).request("GET", "/gated/full"), 503, "gated")
        r = waiter.read_response()
        self.assertGreaterEqual(time.monotonic() - t0, QUEUE_TIMEOUT_MS / 1000 - 0.01)
        expect(r, 503, "gated")
        self.gated.release("hold")
        expect(hold.read_response(), 200, "gated")
        return sent

    def value(self, ss, name, **labels):
        key = (name, frozenset(labels.items()))
        if key not in ss:
            near = sorted(dict(l) for n, l in ss if n == name)
            raise AssertionError("no series %s%r; %s has %r" % (name, labels, name, near))
        return ss[key]

    def change_config(self):
        """A refused and an applied API change, a good and a bad SIGHUP."""
        r = self.ctl("PUT", "/v1/backends/spare", b"{not json")
        self.assertEqual(r.status, 400, r)
        r = self.ctl("PUT", "/v1/backends/spare", {"replicas": {"s": self.m_ok.addr},
                                                   "max_ongoing_requests": 0})
        self.assertEqual(r.status, 400, r)  # refused by validation
        r = self.ctl("PUT", "/v1/backends/spare", {"replicas": {"s": self.m_ok.addr}})
        self.assertEqual(r.status, 200, r)
        os.kill(self.rr.pid, signal.SIGHUP)  # the file: spare goes again
        self.assertTrue(harness.wait_stderr(self.rr, "SIGHUP: reloaded"))
        with open(self.rr.config_path) as f:
            good = f.read()
        try:
            with open(self.rr.config_path, "w") as f:
                f.write("{ broken")
            os.kill(self.rr.pid, signal.SIGHUP)
            self.assertTrue(harness.wait_stderr(self.rr, "SIGHUP: reload refused"))
        finally:
            with open(self.rr.config_path, "w") as f:
                f.write(good)
        return {"ok": 2, "error": 3}, 3  # changes by result, the version now

    # -- the test ----------------------------------------------------------------

    def test_exposition(self):
        sent = self.send_all()
        changes, version = self.change_config()
        self.client(self.rr.port)  # two idle client connections at scrape time
        self.client(self.rr.port)
        for c in self._clients[:-2]:
            c.close()

        # the counters are recorded as each request ends: wait for the last
        def settled():
            text = self.scrape()
            ss = self.samples(self.families(text))
            got = {(dict(l)["endpoint"], dict(l)["code"]): v for (n, l), v in ss.items()
                   if n == "ringroute_requests_total"}
            ok = (got == sent and
                  self.value(ss, "ringroute_client_connections") == 2 and
                  self.value(ss, "ringroute_replica_requests_total", backend="shadow",
                             replica="sh1") == N_OK)
            return (text, got) if ok else None
        res = harness.poll(settled, 5.0)
        if not res:
            text = self.scrape()
            ss = self.samples(self.families(text))
            self.fail("requests_total %r, want %r; client connections %r" % (
                {(dict(l)["endpoint"], dict(l)["code"]): v for (n, l), v in ss.items()
                 if n == "ringroute_requests_total"}, sent,
                self.value(ss, "ringroute_client_connections")))
        text = res[0]

        # (a) promtool: not a word, exit 0
        p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual((p.returncode, p.stdout.decode()), (0, ""),
                         "promtool check metrics:\n%s" % p.stdout.decode())

        # (b) every family typed as declared, each family once
        fams = self.families(text)
        declared = {}
        for l in text.splitlines():
            m = re.match(r"^# TYPE (\S+) (\S+)$", l)
            if m:
                self.assertNotIn(m.group(1), declared, "TYPE twice: %s" % m.group(1))
                declared[m.group(1)] = m.group(2)
        names = [f.name for f in PARSER.text_string_to_metric_families(text)]
        self.assertEqual(len(names), len(set(names)), "a family split in two: %r" % names)
        for name, f in fams.items():
            self.assertTrue(name.startswith(("ringroute_", "process_")), name)
            self.assertNotEqual(f.type, "unknown", "%s read as untyped" % name)
            want = declared.get(name) or declared.get(name + "_total")
            self.assertEqual(f.type, want, name)
            self.assertTrue(f.documentation, "%s has no HELP" % name)
        for name in ("process_open_fds", "process_max_fds", "process_resident_memory_bytes",
                     "process_virtual_memory_bytes", "process_start_time_seconds",
                     "process_cpu_seconds"):
            self.assertIn(name, fams)
        want_types = {
            "ringroute_build_info": "gauge", "ringroute_config_version": "gauge",
            "ringroute_config_reloads": "counter", "ringroute_client_connections": "gauge",
            "ringroute_requests": "counter", "ringroute_rejected_requests": "counter",
            "ringroute_retries": "counter", "ringroute_upstream_errors": "counter",
            "ringroute_shadow_requests": "counter", "ringroute_replica_healthy": "gauge",
            "ringroute_replica_max_ongoing_requests": "gauge",
            "ringroute_replica_ongoing_requests": "gauge",
            "ringroute_replica_requests": "counter", "ringroute_replica_errors": "counter",
            "ringroute_backend_queued_requests": "gauge",
            "ringroute_backend_max_queued_requests": "gauge",
            "ringroute_request_duration_seconds": "histogram",
            "ringroute_queue_wait_seconds": "histogram",
            "ringroute_time_to_first_byte_seconds": "histogram",
        }
        for name, t in want_types.items():
            self.assertIn(name, fams)
            self.assertEqual(fams[name].type, t, name)
        for old in ("ringroute_replica_ongoing", "ringroute_backend_queued",
                    "ringroute_first_byte_seconds"):
            self.assertNotIn(old, fams, "the old name is gone")
        ss = self.samples(fams)
        v = lambda name, **l: self.value(ss, name, **l)  # noqa: E731

        # (c) requests by endpoint and code; unrouted under endpoint=""
        self.assertEqual(v("ringroute_requests_total", endpoint="", code="404"), N_NOROUTE)
        self.assertEqual(v("ringroute_requests_total", endpoint=QUOTED, code="200"), 1)
        self.assertIn('endpoint="q\\"uo\\\\te"', text)  # escaped on the wire

        # histograms: _count per endpoint = its requests; buckets to 300 s
        per_ep = {}
        for (ep, code), n in sent.items():
            per_ep[ep] = per_ep.get(ep, 0) + n
        for ep, n in per_ep.items():
            self.assertEqual(v("ringroute_request_duration_seconds_count", endpoint=ep), n, ep)
            les = [dict(l)["le"] for (nm, l) in ss
                   if nm == "ringroute_request_duration_seconds_bucket" and
                   dict(l)["endpoint"] == ep]
            self.assertIn("300", les)
            self.assertIn("+Inf", les)
        self.assertEqual(v("ringroute_time_to_first_byte_seconds_count", endpoint="api"), N_OK)
        # the queue wait that timed out is observed; the queue-full one never waited
        self.assertEqual(v("ringroute_queue_wait_seconds_count", endpoint="gated"), 1)
        self.assertGreaterEqual(v("ringroute_queue_wait_seconds_sum", endpoint="gated"),
                                QUEUE_TIMEOUT_MS / 1000 - 0.01)
        self.assertEqual(v("ringroute_queue_wait_seconds_bucket", endpoint="gated", le="0.5"), 0)
        self.assertEqual(v("ringroute_queue_wait_seconds_bucket", endpoint="gated", le="+Inf"), 1)

        # rejections, retries, upstream errors, shadows
        for b in self.cfg["backends"]:
            for reason in ("queue_full", "queue_timeout"):
                self.assertEqual(v("ringroute_rejected_requests_total", backend=b, reason=reason),
                                 1 if b == "gated" else 0, (b, reason))
            # every replica stays healthy here (test_access_log provokes it)
            self.assertEqual(v("ringroute_rejected_requests_total", backend=b,
                               reason="no_healthy_replica"), 0, b)
            # a GET reset before any response byte is retried (retry_on's
            # default): twice on the only replica (retries 2)
            self.assertEqual(v("ringroute_retries_total", backend=b),
                             {"dead": N_DEAD, "reset": 2 * N_RESET}.get(b, 0), b)
            self.assertEqual(v("ringroute_retry_budget_exhausted_total", backend=b), 0, b)
            self.assertEqual(v("ringroute_backend_queued_requests", backend=b), 0, b)
        self.assertEqual(v("ringroute_backend_max_queued_requests", backend="gated"), 1)
        errors = {("dead", "x", "connect_failed"): 2 * N_DEAD,  # each tried twice
                  ("bad", "r", "bad_response"): N_BAD,
                  ("reset", "r", "reset"): 3 * N_RESET,  # the first try and 2 retries
                  ("stalled", "r", "connect_timeout"): 1,
                  ("silent", "r", "timeout"): 1}
        kinds = ("connect_failed", "connect_timeout", "reset", "timeout", "bad_response")
        for b, bc in self.cfg["backends"].items():
            for rid in bc["replicas"]:
                total = 0
                for k in kinds:
                    want = errors.get((b, rid, k), 0)
                    total += want
                    self.assertEqual(v("ringroute_upstream_errors_total", backend=b,
                                       replica=rid, kind=k), want, (b, rid, k))
                self.assertEqual(v("ringroute_replica_errors_total", backend=b, replica=rid),
                                 total, (b, rid))
                self.assertEqual(v("ringroute_replica_healthy", backend=b, replica=rid), 1)
                self.assertEqual(v("ringroute_replica_ongoing_requests", backend=b, replica=rid),
                                 0, (b, rid))
        self.assertEqual(v("ringroute_replica_max_ongoing_requests", backend="gated",
                           replica="g"), 1)
        self.assertEqual(v("ringroute_replica_max_ongoing_requests", backend="ok",
                           replica="ok1"), 100)
        self.assertEqual(v("ringroute_replica_requests_total", backend="dead", replica="x"),
                         2 * N_DEAD)
        self.assertEqual(v("ringroute_shadow_requests_total", backend="shadow", result="sent"),
                         N_OK)
        for r in ("dropped_no_slot", "dropped_error", "cut_slow", "cut_error", "cut_incomplete"):
            self.assertEqual(v("ringroute_shadow_requests_total", backend="shadow", result=r), 0)
        self.assertFalse([l for (n, l) in ss if n == "ringroute_shadow_requests_total" and
                          dict(l)["backend"] != "shadow"], "only shadow targets have series")

        # configuration, connections, build
        self.assertEqual(v("ringroute_config_version"), version)
        for result, n in changes.items():
            self.assertEqual(v("ringroute_config_reloads_total", result=result), n, result)
        self.assertEqual(v("ringroute_client_connections"), 2)
        out = subprocess.run([harness.ringroute_bin(), "--version"], stdout=subprocess.PIPE,
                             timeout=10).stdout.decode()
        ver = re.match(r"ringroute (\S+)", out).group(1)
        self.assertEqual(v("ringroute_build_info", version=ver), 1)

        # process_*: what /proc says of the same process
        pid = self.rr.pid
        fds = harness.proc_open_fds(pid)
        self.assertLessEqual(abs(v("process_open_fds") - fds), 3, (v("process_open_fds"), fds))
        self.assertGreater(v("process_max_fds"), v("process_open_fds"))
        rss = harness.proc_rss_bytes(pid)
        self.assertLess(abs(v("process_resident_memory_bytes") - rss), rss / 2 + (8 << 20))
        self.assertGreater(v("process_virtual_memory_bytes"), v("process_resident_memory_bytes"))
        # btime has whole seconds, the start tick 1/CLK_TCK: within 2 s
        self.assertGreater(v("process_start_time_seconds"), self.t_start - 2)
        self.assertLess(v("process_start_time_seconds"), self.t_ready + 2)
        cpu = v("process_cpu_seconds_total")
        self.assertTrue(0 <= cpu <= harness.proc_cpu_seconds(pid) + 0.05, cpu)
        self.assertFalse(any(math.isnan(x) for x in ss.values()))

    def test_rules(self):
        """The alert rules of the manual: valid for promtool, and every
        ringroute series they name is exposed."""
        p = subprocess.run(["promtool", "check", "rules", RULES], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        out = p.stdout.decode()
        self.assertEqual(p.returncode, 0, out)
        self.assertIn("SUCCESS", out)
        with open(RULES) as f:
            rules = f.read()
        used = set(re.findall(r"\b(ringroute_[a-z_]+|process_[a-z_]+)", rules))
        self.assertTrue(used)
        exposed = set()
        for l in self.scrape().splitlines():
            m = re.match(r"^([a-z_]+)[{ ]", l)
            if m:
                exposed.add(m.group(1))
        self.assertFalse(used - exposed, "the rules name series /metrics lacks")
        # and the manual shows the same rules, word for word
        with open(os.path.join(harness.REPO, "docs", "operations.md")) as f:
            manual = f.read()
        m = re.search(r"^## Metrics\n.*?^```yaml\n(groups:\n.*?)^```$", manual, re.S | re.M)
        self.assertIsNotNone(m, "docs/operations.md, Metrics: no rules block")
        self.assertEqual(m.group(1), rules[rules.index("groups:"):],
                         "docs/operations.md and %s differ" % os.path.relpath(RULES, harness.REPO))


if __name__ == "__main__":
    require_tools()
    harness.main()
