#!/usr/bin/env python3
"""Server-reported load and the least_load policy (docs/config.md
"load_reports", "load_scrape_ms", "policy").

The replicas are small threaded HTTP servers in this process
(LoadReplica): each answers every request with its id, the
endpoint-load-metrics header it is told to send (or none), and serves
/metrics with the Prometheus text it is told to serve; it records the
endpoint-load-metrics-format header of each request and the most requests
it had at once.

* ORCA TEXT: a replica reporting a long queue gets no new request while
  the other has room (every request one at a time, so ongoing is 0 on both
  and the report decides alone); ringroute asks with
  endpoint-load-metrics-format: text and does not pass the report on to
  the client; the stats and /metrics show the reports.
* ORCA JSON: a full KV cache sends the traffic to the other replica.
* Loads in requests, whatever the cap: with a cap of 1000, a queue of 3
  outweighs a KV use of 0.5 (below the 0.9 knee KV use costs nothing).
* Ageing: a replica that stops reporting after a long-queue report gets
  traffic again once load_max_age_ms has passed.
* Bad reports are dropped and counted: both replicas keep getting traffic.
* Scrape: load_scrape_ms reads the gauges named in load_metrics from
  /metrics; traffic follows the scraped queue, and turns when it changes.
* Caps: 16 concurrent clients through 2 shards on 2 replicas of cap 3, one
  reporting a long queue: neither ever has more than 3 at once, the loaded
  one takes the overflow (a full replica is never chosen, however low it
  reports), and every request is answered.
"""

import http.server
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint  # noqa: E402


class LoadReplica:
    def __init__(self, id, delay_s=0.0):
        self.id = id
        self.delay_s = delay_s
        self.report = None        # endpoint-load-metrics value, or None
        self.metrics = ""         # /metrics text
        self.formats = []         # endpoint-load-metrics-format of each request
        self.served = 0
        self.scrapes = 0
        self.now = 0
        self.peak = 0
        self.lock = threading.Lock()
        owner = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # head and body are two writes

            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path == "/metrics":
                    body = owner.metrics.encode()
                    with owner.lock:
                        owner.scrapes += 1
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain; version=0.0.4")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                with owner.lock:
                    owner.now += 1
                    owner.peak = max(owner.peak, owner.now)
                    owner.formats.append(self.headers.get("endpoint-load-metrics-format"))
                    report = owner.report
                if owner.delay_s:
                    time.sleep(owner.delay_s)
                body = json.dumps({"id": owner.id, "path": self.path}).encode()
                with owner.lock:
                    owner.now -= 1
                    owner.served += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if report is not None:
                    self.send_header("endpoint-load-metrics", report)
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.addr = "127.0.0.1:%d" % self.server.server_address[1]
        self._t = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._t.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class LoadTestCase(harness.RRTestCase):
    def replicas(self, *ids, delay_s=0.0):
        out = []
        for i in ids:
            r = LoadReplica(i, delay_s)
            self.addCleanup(r.close)
            out.append(r)
        return out

    def start(self, reps, shards=1, control=None, **kw):
        b = {"policy": "least_load", "max_ongoing_requests": 8}
        b.update(kw)
        cfg = {"backends": {"b": backend({r.id: r.addr for r in reps}, **b)},
               "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        return self.ringroute(cfg, shards=shards, admin=True,
                              extra=["--control", control] if control else [])

    def ctl(self, sock, *args):
        exe = os.path.join(os.path.dirname(harness.ringroute_bin()), "ringroutectl")
        p = subprocess.run([exe, "--socket", sock] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=20)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        return p.stdout.decode()

    def load_stats(self, rr):
        st = harness.http_once(rr.admin_port, "GET", "/v1/stats").json()
        return {rid: ro["load"] for rid, ro in st["backends"]["b"]["replicas"].items()}

    def wait_fresh(self, rr, ids, what):
        return harness.wait_for(
            lambda: all(self.load_stats(rr)[i]["fresh"] for i in ids) and self.load_stats(rr),
            timeout=5.0, what=what)

    def send(self, c, n, tag):
        """n requests one at a time; returns the ids that answered, in order."""
        ids = []
        for i in range(n):
            r = c.request("GET", "/%s/%d" % (tag, i))
            self.assertEqual(r.status, 200, r)
            ids.append(r.json()["id"])
        return ids

    def warm_up(self, rr, c, ids):
        """Requests until every replica in ids has a fresh report."""
        def both():
            self.send(c, 2, "warm")
            st = self.load_stats(rr)
            return all(st[i]["fresh"] for i in ids) and st
        return harness.wait_for(both, timeout=5.0, what="a report from each replica")


class OrcaTest(LoadTestCase):
    def test_text_queue_moves_traffic(self):
        a, b = self.replicas("a", "b")
        a.report = "TEXT named_metrics.kv_cache_usage_perc=0.1, named_metrics.num_requests_waiting=40"
        b.report = "TEXT named_metrics.kv_cache_usage_perc=0.1, named_metrics.num_requests_waiting=0"
        sock = harness.control_sock_path()
        rr = self.start([a, b], load_reports=True, control=sock)
        c = self.client(rr.port)
        st = self.warm_up(rr, c, ["a", "b"])
        self.assertEqual(st["a"]["queue"], 40, st)
        self.assertAlmostEqual(st["a"]["kv_cache_usage"], 0.1, places=6)
        self.assertEqual(st["b"]["queue"], 0, st)
        ids = self.send(c, 30, "text")
        self.assertEqual(ids, ["b"] * 30, "the replica reporting a queue of 40 got requests")
        # the request asked for the report; the client never sees it
        self.assertEqual(set(a.formats) | set(b.formats), {"text"})
        r = c.request("GET", "/x")
        self.assertIsNone(r.header("endpoint-load-metrics"), r)
        self.assertEqual(r.header("content-length"), str(len(r.body)))
        text = harness.http_once(rr.admin_port, "GET", "/metrics").body.decode()
        self.assertIn('ringroute_replica_reported_queue{backend="b",replica="a"} 40', text)
        self.assertIn('ringroute_replica_reported_load_fresh{backend="b",replica="a"} 1', text)
        self.assertIn('ringroute_replica_load_reports_bad_total{backend="b",replica="a"} 0', text)
        # ringroutectl stats: LOAD is QUEUE/KV_CACHE_USAGE while fresh
        lines = self.ctl(sock, "stats").strip().splitlines()
        col = lines[0].split().index("LOAD")
        rows = {l.split()[1]: l.split()[col] for l in lines[1:]}
        self.assertEqual(rows, {"a": "40/0.10", "b": "0/0.10"}, lines)
        # and the policy is switched off again like any key: p2c ignores reports
        self.ctl(sock, "backend", "set", "b", "--policy", "p2c", "--load-reports", "false")
        harness.wait_for(lambda: not self.load_stats(rr)["a"]["fresh"], timeout=5.0,
                         what="a's report to age out")
        ids = self.send(c, 40, "p2c")
        self.assertGreaterEqual(ids.count("a"), 8, ids)
        r = c.request("GET", "/x")
        self.assertEqual(r.header("endpoint-load-metrics"), a.report if r.json()["id"] == "a"
                         else b.report, "without load_reports the header passes")

    def test_json_full_kv_cache_moves_traffic(self):
        a, b = self.replicas("a", "b")
        a.report = 'JSON {"cpu_utilization": 0.5, "named_metrics": {"kv_cache_usage_perc": 1.0, "num_requests_waiting": 0}}'
        b.report = 'JSON {"named_metrics": {"kv_cache_usage_perc": 0.2, "num_requests_waiting": 0.0}}'
        rr = self.start([a, b], load_reports=True)
        c = self.client(rr.port)
        st = self.warm_up(rr, c, ["a", "b"])
        self.assertEqual(st["a"]["kv_cache_usage"], 1.0, st)
        self.assertEqual(self.send(c, 30, "json"), ["b"] * 30)

    def test_queue_counts_not_kv_below_knee_whatever_the_cap(self):
        # Loads in requests, not fractions of the cap: with a cap of 1000
        # a queue of 3 still outweighs a KV use of 0.5 (below the 0.9 knee
        # KV use costs nothing). The old score, (ongoing + queue) / max +
        # kv, had it the other way round: 0.103 against 0.5.
        a, b = self.replicas("a", "b")
        a.report = "TEXT named_metrics.kv_cache_usage_perc=0.1, named_metrics.num_requests_waiting=3"
        b.report = "TEXT named_metrics.kv_cache_usage_perc=0.5, named_metrics.num_requests_waiting=0"
        rr = self.start([a, b], load_reports=True, max_ongoing_requests=1000)
        c = self.client(rr.port)
        self.warm_up(rr, c, ["a", "b"])
        self.assertEqual(self.send(c, 30, "cap"), ["b"] * 30)

    def test_reports_age_out(self):
        a, b = self.replicas("a", "b")
        a.report = "TEXT named_metrics.num_requests_waiting=40"
        b.report = "TEXT named_metrics.num_requests_waiting=0"
        rr = self.start([a, b], load_reports=True, load_max_age_ms=500)
        c = self.client(rr.port)
        self.warm_up(rr, c, ["a", "b"])
        a.report = None  # a says nothing more: its last report ages out
        self.assertEqual(self.send(c, 5, "fresh"), ["b"] * 5)
        st = harness.wait_for(lambda: not self.load_stats(rr)["a"]["fresh"] and self.load_stats(rr),
                              timeout=5.0, what="a's report to age out")
        self.assertEqual(st["a"]["queue"], 40, "the old report is still shown")
        # b's report says 0, a has none: both score ongoing/max again
        ids = self.send(c, 40, "aged")
        self.assertGreaterEqual(ids.count("a"), 8, ids)
        self.assertGreaterEqual(ids.count("b"), 8, ids)

    def test_bad_reports_fall_back(self):
        a, b = self.replicas("a", "b")
        a.report = "TEXT named_metrics.num_requests_waiting=lots"
        b.report = 'JSON {"named_metrics": {"kv_cache_usage_perc": 7}}'
        rr = self.start([a, b], load_reports=True)
        c = self.client(rr.port)
        ids = self.send(c, 40, "bad")
        self.assertGreaterEqual(ids.count("a"), 8, ids)
        self.assertGreaterEqual(ids.count("b"), 8, ids)
        st = self.load_stats(rr)
        self.assertEqual(st["a"]["bad_reports"], ids.count("a"), st)
        self.assertEqual(st["b"]["bad_reports"], ids.count("b"), st)
        self.assertEqual(st["a"]["reports"], 0, st)
        self.assertIsNone(st["a"]["age_ms"], st)
        self.assertFalse(st["a"]["fresh"], st)
        text = harness.http_once(rr.admin_port, "GET", "/metrics").body.decode()
        self.assertIn('ringroute_replica_load_reports_bad_total{backend="b",replica="a"} %d'
                      % ids.count("a"), text)
        # the first bad report of each replica is logged, once
        log = rr.stderr()
        self.assertEqual(log.count('endpoint-load-metrics "TEXT named_metrics.num_requests_waiting=lots"'
                                   ' is not a load report'), 1, log)
        self.assertEqual(log.count("is not a load report"), 2, log)

    def test_no_header_without_load_reports(self):
        a, b = self.replicas("a", "b")
        a.report = "TEXT named_metrics.num_requests_waiting=40"
        rr = self.start([a, b])  # least_load, but nobody asked for reports
        c = self.client(rr.port)
        r = c.request("GET", "/x", headers=[("endpoint-load-metrics-format", "json")])
        self.assertEqual(r.status, 200)
        self.send(c, 10, "plain")
        # the client's own header passes; none is added
        formats = a.formats + b.formats
        self.assertEqual(formats.count("json"), 1, formats)
        self.assertEqual(formats.count(None), 10, formats)
        st = self.load_stats(rr)
        self.assertEqual(st["a"]["reports"], 0, st)


class ScrapeTest(LoadTestCase):
    def test_scraped_queue_moves_traffic(self):
        a, b = self.replicas("a", "b")
        a.metrics = ("# HELP vllm:num_requests_waiting Requests waiting.\n"
                     "# TYPE vllm:num_requests_waiting gauge\n"
                     'vllm:num_requests_waiting{model_name="m"} 30.0\n'
                     'test:kv{engine="0"} 0.5\n')
        b.metrics = 'vllm:num_requests_waiting{model_name="m"} 0.0\ntest:kv 0.25\n'
        rr = self.start([a, b], load_scrape_ms=100, load_metrics={"kv_cache": "test:kv"})
        c = self.client(rr.port)
        st = self.wait_fresh(rr, ["a", "b"], "a scrape of each replica")
        self.assertEqual(st["a"]["queue"], 30, st)
        self.assertEqual(st["a"]["kv_cache_usage"], 0.5, st)
        self.assertEqual(st["b"]["kv_cache_usage"], 0.25, st)
        self.assertEqual(self.send(c, 20, "scraped"), ["b"] * 20)
        self.assertEqual(set(a.formats + b.formats), {None})  # no header asked for
        # the queue moves: so does the traffic
        a.metrics, b.metrics = b.metrics, a.metrics
        harness.wait_for(lambda: self.load_stats(rr)["b"]["queue"] == 30, timeout=5.0,
                         what="the next scrape")
        self.assertEqual(self.send(c, 20, "turned"), ["a"] * 20)
        self.assertGreaterEqual(a.scrapes, 2)
        # a scrape that fails keeps nothing new: a bad gauge is counted
        a.metrics = "vllm:num_requests_waiting oops\n"
        harness.wait_for(lambda: self.load_stats(rr)["a"]["bad_reports"] > 0, timeout=5.0,
                         what="a bad scrape counted")
        self.assertTrue(harness.wait_stderr(rr, "replica b/a: /metrics: a gauge of load_metrics"
                                            " (vllm:num_requests_waiting, test:kv) does not parse"))


class CapTest(LoadTestCase):
    def test_caps_hold_under_least_load(self):
        a, b = self.replicas("a", "b", delay_s=0.02)
        a.report = "TEXT named_metrics.num_requests_waiting=50"
        b.report = "TEXT named_metrics.num_requests_waiting=0"
        rr = self.start([a, b], shards=2, load_reports=True, max_ongoing_requests=3)
        counts = {"a": 0, "b": 0}
        lock = threading.Lock()

        def worker(k):
            with harness.Client(rr.port, timeout=15) as c:
                for i in range(8):
                    r = c.request("GET", "/cap/%d/%d" % (k, i))
                    if r.status != 200:
                        return "client %d: %r" % (k, r)
                    with lock:
                        counts[r.json()["id"]] += 1

        self.run_clients(16, worker)
        self.assertEqual(counts["a"] + counts["b"], 128)
        self.assertLessEqual(a.peak, 3)
        self.assertLessEqual(b.peak, 3)
        self.assertEqual(b.peak, 3, "the unloaded replica was kept full")
        # saturated (16 clients, 6 slots), every freed slot is the only
        # one free: the loaded replica takes its share of the overflow
        self.assertGreater(counts["a"], 0, "the loaded replica took no overflow")


if __name__ == "__main__":
    harness.main()
