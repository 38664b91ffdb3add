#!/usr/bin/env python3
"""Resource exhaustion:
 * EMFILE: with a low open-files limit ringroute, at the limit, backs off
   instead of spinning on accept (CPU under 20% of one core over 2 s), and
   serves a new client promptly once connections close.
 * Idle memory: an idle keep-alive client connection costs under 1 KiB of
   ringroute's RSS (its socket slot and a small state only).
 * A big upload to a slow replica that answers and then closes its socket:
   the upload gets its 200 and a new client afterwards gets a complete
   response.
The CPU and memory figures are printed (stderr)."""

import os
import resource
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, build_request, endpoint  # noqa: E402


def log(msg):
    print("  " + msg, file=sys.stderr)


def idle_open(c):
    """No EOF, reset or bytes pending on c (poll, not select: fds > 1024)."""
    p = select.poll()
    p.register(c.sock.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    return not p.poll(0)


def ensure_own_nofile(n):
    """Raise this process's soft RLIMIT_NOFILE to at least n, or skip."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            return False
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))
    return True


class EmfileTest(harness.RRTestCase):
    NOFILE = 64       # ringroute needs 7 descriptors at start-up with --shards 2
    SHARDS = 2
    MAX_CPU = 0.20    # of one core, while at the limit

    def test_emfile_backoff(self):
        m = self.mock("m1")
        cfg = {"backends": {"b": backend([m])},
               "endpoints": {"any": endpoint("/", {"b": 1.0})}}
        rr = self.ringroute(cfg, shards=self.SHARDS, rlimit_nofile=self.NOFILE)
        # fill ringroute's descriptor table with served, idle keep-alive clients
        served, pending = [], None
        for i in range(4 * self.NOFILE):
            c = self.client(rr.port, timeout=1.0)
            c.send(build_request("GET", "/fill/%d" % i))
            try:
                r = c.read_response()
            except (socket.timeout, harness.ConnectionClosed):
                pending = c   # not served: ringroute is at its limit
                break
            self.assertEqual(r.status, 200, r)
            served.append(c)
        self.assertIsNotNone(pending, "never reached the open-files limit (%d served)"
                             % len(served))
        log("at the limit after %d served clients; ringroute holds %d fds"
            % (len(served), harness.proc_open_fds(rr.pid)))
        self.assertTrue(rr.alive(), rr.stderr_tail())

        # CPU while at the limit (a measurement window, not a wait for an event)
        t0, c0 = time.monotonic(), harness.proc_cpu_seconds(rr.pid)
        time.sleep(2.0)
        t1, c1 = time.monotonic(), harness.proc_cpu_seconds(rr.pid)
        share = (c1 - c0) / (t1 - t0)
        log("ringroute CPU at the open-files limit: %.0f%% of one core over %.1f s"
            % (100 * share, t1 - t0))
        self.assertTrue(rr.alive(), rr.stderr_tail())

        # leaving the limit: a new client is served promptly
        for c in served:
            c.close()
        pending.close()
        t_close = time.monotonic()
        c = self.client(rr.port, timeout=2.0)
        try:
            r = c.request("GET", "/after-limit")
        except Exception as e:
            self.fail("no answer within 2 s after the idle connections closed: %s" % e)
        log("new client served %.3f s after the idle connections closed"
            % (time.monotonic() - t_close))
        self.assertEqual(r.status, 200, r)
        self.assertLess(share, self.MAX_CPU,
                        "ringroute used %.0f%% of a core while at the open-files limit"
                        % (100 * share))


class IdleMemoryTest(harness.RRTestCase):
    N = 2000
    WARM = 50
    BUFFERS_PER_GROUP = 1024
    MAX_BYTES_PER_CONN = 1024

    def test_idle_connection_memory(self):
        if not ensure_own_nofile(self.N + self.WARM + 200):
            self.skipTest("RLIMIT_NOFILE hard limit below %d" % (self.N + self.WARM + 200))
        m = self.mock("m1")
        cfg = {"backends": {"b": backend([m])},
               "endpoints": {"any": endpoint("/", {"b": 1.0})}}
        rr = self.ringroute(cfg, shards=1, rlimit_nofile=20000)
        san = harness.sanitizer_of(rr.pid)
        if san:
            # Redzones, the free quarantine or shadow memory make RSS say
            # nothing about what a connection holds: the Release run measures.
            self.skipTest("RSS is not meaningful under the %s sanitizer" % san)
        conns = []

        def open_served(n, tag):
            for i in range(n):
                c = harness.Client(rr.port, timeout=5.0)
                conns.append(c)
                r = c.request("GET", "/%s/%d" % (tag, i))
                self.assertEqual(r.status, 200, r)

        try:
            # warm-up: pools, slabs and the replica connection exist already
            open_served(self.WARM, "warm")
            # The receive buffers are a fixed pool per shard (2 groups x
            # 1024 x 16 KiB, README "Back-pressure"), mapped at start and
            # paged in as the ring first hands each one out; no idle
            # connection holds one. Cycle through every buffer once so that
            # what is measured below is what a connection itself costs.
            for i in range(self.BUFFERS_PER_GROUP + 100):
                r = conns[i % len(conns)].request("GET", "/cycle/%d" % i)
                self.assertEqual(r.status, 200, r)
            before = harness.proc_rss_bytes(rr.pid)
            open_served(self.N, "idle")
            # every connection is still open and idle on ringroute's side
            self.assertTrue(all(idle_open(c) for c in conns[::97]))
            after = harness.proc_rss_bytes(rr.pid)
            per = (after - before) / self.N
            log("RSS %d -> %d bytes with %d more idle keep-alive connections: "
                "%.0f bytes per connection" % (before, after, self.N, per))
            self.assertLess(per, self.MAX_BYTES_PER_CONN,
                            "an idle connection costs %.0f bytes of RSS" % per)
            # and they still work
            for c in conns[::199]:
                r = c.request("GET", "/again")
                self.assertEqual(r.status, 200, r)
        finally:
            for c in conns:
                c.close()


class BigUploadTest(harness.RRTestCase):
    """The upload takes 12 s at 10 MB/s; the other shard is idle meanwhile.
    (At 30 and 60 MB, and at 100 MB with --shards 1, today's build passes;
    what fails is the first connection a shard accepts after being idle
    longer than the 10 s header timeout: see IdleShardTest.)"""
    SIZE = int(os.environ.get("RR_UPLOAD_MB", "120")) * 1000 * 1000
    SHARDS = int(os.environ.get("RR_UPLOAD_SHARDS", "2"))
    NEW_CLIENTS = 8  # connections land on shards by hash: reach both
    RATE = 10 * 1000 * 1000  # bytes/s the replica reads

    def test_big_upload_then_new_client(self):
        def script(conn):
            # one request per connection: read the body slowly, answer
            # (without Connection: close), then close the socket
            req = conn.read_head(timeout=30)
            if req is None:
                return
            body = conn.read_body(req, timeout=60, rate=self.RATE)
            out = b"got:%d" % len(body)
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(out) + out)

        up = self.upstream(harness.ScriptedUpstream(script))
        cfg = {"backends": {"b": backend({"slow": up.addr})},
               "endpoints": {"any": endpoint("/", {"b": 1.0},
                                             max_body_bytes=max(self.SIZE, 1 << 20) * 2)}}
        rr = self.ringroute(cfg, shards=self.SHARDS)
        budget = 2 * self.SIZE / self.RATE + 5
        c = self.client(rr.port, timeout=budget)
        t0 = time.monotonic()
        c.send(build_request("POST", "/upload", [("Content-Length", str(self.SIZE))]))
        chunk = b"u" * (1 << 20)
        left = self.SIZE
        while left:
            n = min(left, len(chunk))
            c.send(chunk[:n])
            left -= n
        r = c.read_response()
        log("%d MB upload answered after %.1f s" % (self.SIZE // 1000000, time.monotonic() - t0))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"got:%d" % self.SIZE, r)
        # new client connections (on either shard) get a complete answer
        outcomes = []
        for i in range(self.NEW_CLIENTS):
            c2 = self.client(rr.port, timeout=5.0)
            try:
                r = c2.request("GET", "/after-upload/%d" % i)
                outcomes.append(r.status if r.body == b"got:0" else repr(r))
            except Exception as e:
                outcomes.append("%s: %s" % (type(e).__name__, e))
        log("new clients after the upload: %r" % outcomes)
        self.assertEqual(outcomes, [200] * self.NEW_CLIENTS, "new clients after the upload")
        # and the upload's own connection too
        r = c.request("GET", "/after-upload/same")
        self.assertEqual(r.body, b"got:0", r)
        self.assertEqual(up.errors, [])


class IdleShardTest(harness.RRTestCase):
    """A shard that has been idle for longer than the header timeout (10 s)
    serves the next connection it accepts like any other (today that first
    connection is closed unanswered: an idle shard's timers are stale)."""
    IDLE = 11.0
    SHARDS = 2
    NEW_CLIENTS = 8

    def test_first_client_after_idle_shard(self):
        m = self.mock("m1")
        cfg = {"backends": {"b": backend([m])},
               "endpoints": {"any": endpoint("/", {"b": 1.0})}}
        rr = self.ringroute(cfg, shards=self.SHARDS)
        time.sleep(self.IDLE)  # the condition under test is elapsed idle time itself
        outcomes = []
        for i in range(self.NEW_CLIENTS):
            c = self.client(rr.port, timeout=5.0)
            try:
                r = c.request("GET", "/after-idle/%d" % i)
                outcomes.append(r.status)
            except Exception as e:
                outcomes.append("%s: %s" % (type(e).__name__, e))
        log("clients after %.0f s idle: %r" % (self.IDLE, outcomes))
        self.assertEqual(outcomes, [200] * self.NEW_CLIENTS)


if __name__ == "__main__":
    harness.main()
