#!/usr/bin/env python3
"""systemd (docs/operations.md, "systemd"): the notify protocol as a
service manager sees it, through a NOTIFY_SOCKET this test binds (READY=1
once listening, STATUS= with the config version, RELOADING=1 then READY=1
around SIGHUP, STOPPING=1 on SIGTERM, WATCHDOG=1 only with WATCHDOG_USEC
and only while every shard answers), and `systemd-analyze verify` on the
unit that `cmake --install` writes."""

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint, wait_stderr  # noqa: E402

UNIT = os.path.join(harness.REPO, "packaging", "systemd", "ringroute.service")


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's: every message
    ringroute sends lands in self.q as (monotonic time, {field: value})."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(dir=harness._TMPDIR)
        self.path = os.path.join(self.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.seen = []      # every message so far, in order

    def close(self):
        self.sock.close()

    def next(self, timeout=5.0):
        """The next message, or None after timeout."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return None
        fields = {}
        for line in data.decode().split("\n"):
            if line:
                k, _, v = line.partition("=")
                fields[k] = v
        self.seen.append((time.monotonic(), fields))
        return fields

    def drain(self):
        """Reads every message queued now."""
        while self.next(timeout=0.001) is not None:
            pass

    def wait(self, pred, timeout=5.0, what="message"):
        """Messages until one satisfies pred (returned); fails after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            m = self.next(left) if left > 0 else None
            if m is None:
                raise AssertionError("no %s within %.1f s; seen: %r" %
                                     (what, timeout, [f for _, f in self.seen]))
            if pred(m):
                return m


def has(key, value=None):
    return lambda m: key in m and (value is None or m[key] == value)


class NotifyTest(harness.RRTestCase):
    def setUp(self):
        super().setUp()
        self.ns = NotifySocket()

    def tearDown(self):
        super().tearDown()
        self.ns.close()

    def start(self, cfg, shards=1, env=None, extra=()):
        e = {"NOTIFY_SOCKET": self.ns.path}
        e.update(env or {})
        return self.ringroute(cfg, shards=shards, env=e, extra=list(extra))

    def test_ready_status_reload_stopping(self):
        a = self.mock("a")
        cfg = {"backends": {"b": backend([a])}, "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        rr = self.start(cfg, shards=2)
        # harness.Ringroute returned: LISTEN and READY are on stdout.
        m = self.ns.wait(has("READY", "1"), what="READY=1")
        self.assertEqual(m.get("STATUS"), "config version 1", m)
        self.assertEqual(self.ns.seen[0][1], m, "READY=1 is the first message")
        self.assertEqual(self.client(rr.port).request("GET", "/").status, 200)

        # SIGHUP: RELOADING=1, the new version's STATUS, READY=1.
        cfg["backends"]["b"]["max_ongoing_requests"] = 7
        with open(rr.config_path, "w") as f:
            json.dump(cfg, f)
        os.kill(rr.pid, signal.SIGHUP)
        m = self.ns.wait(has("RELOADING", "1"), what="RELOADING=1")
        self.assertRegex(m.get("MONOTONIC_USEC", ""), r"^\d+$", m)
        n = len(self.ns.seen)
        m = self.ns.wait(has("READY", "1"), what="READY=1 after the reload")
        self.assertEqual(m.get("STATUS"), "config version 2", m)
        between = [f for _, f in self.ns.seen[n:-1]]
        self.assertEqual(between, [{"STATUS": "config version 2"}])

        # A refused reload: still RELOADING=1 then READY=1, and STATUS says why.
        with open(rr.config_path, "w") as f:
            f.write('{"backends": {')
        os.kill(rr.pid, signal.SIGHUP)
        self.ns.wait(has("RELOADING", "1"), what="RELOADING=1")
        m = self.ns.wait(has("READY", "1"), what="READY=1 after the refused reload")
        self.assertRegex(m.get("STATUS", ""), r"^config version 2; last reload refused: .+", m)

        os.kill(rr.pid, signal.SIGTERM)
        m = self.ns.wait(has("STOPPING", "1"), what="STOPPING=1")
        self.assertEqual(m.get("STATUS"), "draining; config version 2", m)
        self.assertEqual(rr.p.wait(timeout=10), 0, rr.stderr_tail())
        self.assertFalse([f for _, f in self.ns.seen if "WATCHDOG" in f],
                         "WATCHDOG=1 without WATCHDOG_USEC")

    def test_status_on_control_change(self):
        a = self.mock("a")
        cfg = {"backends": {"b": backend([a])}, "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        ctl = harness.control_sock_path()
        self.start(cfg, extra=["--control", ctl])
        self.ns.wait(has("READY", "1"), what="READY=1")
        c = self.unix_client(ctl)
        r = c.request("PUT", "/v1/backends/b/replicas/r2", body=b'"127.0.0.1:9"')
        self.assertEqual(r.status, 200, r)
        m = self.ns.wait(has("STATUS"), what="STATUS=")
        self.assertEqual(m, {"STATUS": "config version 2"})

    def test_watchdog(self):
        a = self.mock("a")
        cfg = {"backends": {"b": backend([a])}, "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        # 300 ms: pings every 150 ms, while every shard answers.
        rr = self.start(cfg, shards=2, env={"WATCHDOG_USEC": "300000"})
        self.ns.wait(has("READY", "1"), what="READY=1")
        for _ in range(4):
            self.ns.wait(has("WATCHDOG", "1"), timeout=2, what="WATCHDOG=1")
        times = [t for t, f in self.ns.seen if "WATCHDOG" in f]
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertTrue(all(0.05 < g < 1.0 for g in gaps), gaps)
        self.assertIn("checking the shards every 150 ms", rr.stderr())

        # A shard stopped alone (ptrace stops one thread): the pings stop,
        # and come back once it runs again.
        tid = shard_tid(rr.pid, 1)
        stopper = ThreadStopper(tid)
        if not stopper.stop():
            self.skipTest("cannot ptrace a shard thread here: %s" % stopper.error)
        try:
            t_stop = time.monotonic()
            self.assertTrue(wait_stderr(rr, "watchdog: shard 1 did not answer", timeout=5),
                            rr.stderr_tail())
            # What main sent before it logged that is queued already:
            # read it, then none may come for several periods.
            self.ns.drain()
            quiet_from = time.monotonic()
            while time.monotonic() - quiet_from < 1.0:
                m = self.ns.next(timeout=1.0 - (time.monotonic() - quiet_from))
                if m and "WATCHDOG" in m:
                    self.fail("WATCHDOG=1 %.2f s after shard 1 stopped" %
                              (time.monotonic() - t_stop))
        finally:
            stopper.resume()
        self.ns.wait(has("WATCHDOG", "1"), timeout=3, what="WATCHDOG=1 once the shard runs")
        self.assertTrue(wait_stderr(rr, "watchdog: every shard answers again"), rr.stderr_tail())
        self.assertEqual(self.client(rr.port).request("GET", "/").status, 200)

    def test_no_watchdog_pid_mismatch(self):
        # WATCHDOG_PID names another process: the watchdog is not ours.
        a = self.mock("a")
        cfg = {"backends": {"b": backend([a])}, "endpoints": {"e": endpoint("/", {"b": 1.0})}}
        rr = self.start(cfg, env={"WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"})
        self.ns.wait(has("READY", "1"), what="READY=1")
        # Observe for ten would-be periods (a negative check needs a window).
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            m = self.ns.next(timeout=max(0.01, end - time.monotonic()))
            self.assertFalse(m and "WATCHDOG" in m, m)
        self.assertNotIn("checking the shards", rr.stderr())


def shard_tid(pid, i):
    """The thread id of shard i (threads are named rr-shardN)."""
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                if f.read().strip() == "rr-shard%d" % i:
                    return int(tid)
        except OSError:
            pass
    raise AssertionError("no thread rr-shard%d in %d" % (i, pid))


class ThreadStopper:
    """Stops one thread of another process, the others running on:
    PTRACE_SEIZE + PTRACE_INTERRUPT, and PTRACE_DETACH to resume it."""

    PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT = 17, 0x4206, 0x4207
    WALL = 0x40000000

    def __init__(self, tid):
        self.tid = tid
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.ptrace.restype = ctypes.c_long
        self.libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
                                     ctypes.c_void_p]
        self.error = None
        self.seized = False

    def _call(self, req):
        if self.libc.ptrace(req, self.tid, None, None) != 0:
            self.error = os.strerror(ctypes.get_errno())
            return False
        return True

    def stop(self):
        if not self._call(self.PTRACE_SEIZE):
            return False
        self.seized = True
        if not self._call(self.PTRACE_INTERRUPT):
            self.resume()
            return False
        os.waitpid(self.tid, self.WALL)  # the stop is reported to us
        return True

    def resume(self):
        if self.seized:
            self._call(self.PTRACE_DETACH)
            self.seized = False


def systemd_analyze():
    return shutil.which("systemd-analyze")


class UnitTest(unittest.TestCase):
    def test_verify_installed_unit(self):
        exe = systemd_analyze()
        if not exe:
            self.skipTest("systemd-analyze is not installed (tools/deps installs systemd)")
        prefix = tempfile.mkdtemp(dir=harness._TMPDIR)
        p = subprocess.run(["cmake", "--install", harness.BUILD, "--prefix", prefix],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout.decode())
        unit = os.path.join(prefix, "lib", "systemd", "system", "ringroute.service")
        with open(unit) as f:
            text = f.read()
        self.assertIn("ExecStart=%s/bin/ringroute " % prefix, text)
        # The installed unit is the tree's with only the bindir changed.
        with open(UNIT) as f:
            self.assertEqual(f.read().replace("/usr/bin/", prefix + "/bin/"), text)
        # Documentation=man:ringroute(8) is looked up with man(1).
        env = dict(os.environ, MANPATH=os.path.join(prefix, "share", "man"))
        p = subprocess.run([exe, "verify", unit], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60, env=env)
        out = p.stdout.decode()
        if p.returncode and re.search(r"(System has not been booted|Failed to connect to bus|"
                                      r"Failed to initialize manager)", out):
            self.skipTest("systemd-analyze cannot run here: %s" % out.strip())
        self.assertEqual(p.returncode, 0, out)
        self.assertEqual(out.strip(), "", out)


if __name__ == "__main__":
    harness.main()
