"""End-to-end test harness for ringroute (Python 3 stdlib only).

Starts real processes (mock-replica, ringroute) on 127.0.0.1 with ephemeral
ports, waits for their READY lines, and gives tests a raw-socket HTTP/1.1
client that reports the exact bytes received.

Environment:
  RR_BUILD         build directory holding ringroute and mock-replica
                   (default: <repo>/build)
  RR_RINGROUTE     override the ringroute binary path
  RR_MOCK_REPLICA  override the mock-replica binary path
  RR_E2E_VERBOSE=1 always print the stderr of started processes at the end

Every started process is killed by PID: explicitly in tearDown/tearDownClass,
at interpreter exit (atexit), and by the kernel if this interpreter dies
(PR_SET_PDEATHSIG), so a ctest timeout never leaves orphans behind.

A test file ends with `harness.main()`: it checks the binaries, probes that
ringroute can start (exits 77 = skipped when ringroute reports that io_uring
is unavailable), runs the unittest tests in the file and exits non-zero if any
failed.
"""

import atexit
import ctypes
import json
import os
import queue
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BUILD = os.environ.get("RR_BUILD") or os.path.join(REPO, "build")

SKIP_EXIT = 77
STARTUP_TIMEOUT = float(os.environ.get("RR_E2E_STARTUP_TIMEOUT", "15"))
IO_TIMEOUT = 5.0

_TMPDIR = tempfile.mkdtemp(prefix="rr-e2e-")
_PROCS = []          # every Proc started, for atexit cleanup and log dumps
_LOGS = []           # (label, path) of stderr logs of started processes


def _binary(env, name):
    p = os.environ.get(env)
    if p:
        return p
    return os.path.join(BUILD, name)


def ringroute_bin():
    return _binary("RR_RINGROUTE", "ringroute")


def mock_bin():
    return _binary("RR_MOCK_REPLICA", "mock-replica")


class Unsupported(Exception):
    """The kernel lacks something ringroute needs (io_uring): skip, exit 77."""


class StartError(Exception):
    pass


# --------------------------------------------------------------------------
# processes

_libc = None


def _set_pdeathsig():
    # Runs in the child between fork and exec: die with the parent.
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


_IOURING_UNAVAILABLE = re.compile(
    r"io_uring.*(unavailable|not available|not supported|unsupported|disabled|"
    r"ENOSYS|EPERM|not permitted|not implemented|Function not implemented|"
    r"Operation not permitted)", re.I)
_SANITIZER = re.compile(r"(ERROR: (Address|Leak|Thread|Memory)Sanitizer|"
                        r"runtime error:|SUMMARY: (Address|Leak|Undefined)"
                        r"(Behavior)?Sanitizer)")


class Proc:
    """A started process: stdout lines are read by a thread into a queue,
    stderr goes to a log file (no pipe that could fill up and block it)."""

    def __init__(self, argv, label, preexec=None, env=None):
        self.argv = list(argv)
        self.label = label
        fd, self.log_path = tempfile.mkstemp(prefix=label + "-", suffix=".log",
                                             dir=_TMPDIR)
        self._log = os.fdopen(fd, "wb")
        _LOGS.append((label, self.log_path))
        env = dict(os.environ, **(env or {}))
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        pre = _set_pdeathsig
        if preexec is not None:
            def pre():
                _set_pdeathsig()
                preexec()
        try:
            self.p = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=self._log,
                                      preexec_fn=pre, env=env)
        except OSError as e:
            raise StartError("cannot start %s: %s" % (self.argv[0], e))
        _PROCS.append(self)
        self.lines = queue.Queue()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    @property
    def pid(self):
        return self.p.pid

    def _read_stdout(self):
        for raw in iter(self.p.stdout.readline, b""):
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
        self.lines.put(None)  # EOF

    def expect_line(self, pattern, timeout=STARTUP_TIMEOUT):
        """Wait for a stdout line matching regex pattern; returns the match.
        Raises StartError (or Unsupported) if the process exits first."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StartError("%s: no line matching %r within %.0f s\n%s" %
                                 (self.label, pattern, timeout, self.stderr_tail()))
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                rc = self.p.wait(timeout=5)
                err = self.stderr()
                if rc == SKIP_EXIT or _IOURING_UNAVAILABLE.search(err):
                    raise Unsupported("%s: exited %s: %s" % (self.label, rc, err.strip()[-500:]))
                raise StartError("%s exited with %s before printing %r\n%s" %
                                 (self.label, rc, pattern, self.stderr_tail()))
            m = rx.search(line)
            if m:
                return m

    def stderr(self):
        try:
            self._log.flush()
        except ValueError:
            pass
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stderr_tail(self, n=40):
        lines = self.stderr().splitlines()
        return "\n".join("  [%s] %s" % (self.label, l) for l in lines[-n:])

    def alive(self):
        return self.p.poll() is None

    def stop(self, timeout=5.0):
        """SIGTERM, then SIGKILL after timeout. Returns the exit status."""
        if self.p.poll() is None:
            try:
                os.kill(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(self.p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait()
        self._reader.join(timeout=2)
        try:
            self.p.stdout.close()
        except Exception:
            pass
        try:
            self._log.close()
        except Exception:
            pass
        if self in _PROCS:
            _PROCS.remove(self)
        return self.p.returncode

    def sanitizer_report(self):
        err = self.stderr()
        m = _SANITIZER.search(err)
        if not m:
            return None
        return err[max(0, m.start() - 200):m.start() + 3000]


def _kill_all():
    for p in list(_PROCS):
        try:
            if p.p.poll() is None:
                os.kill(p.p.pid, signal.SIGKILL)
                p.p.wait(timeout=5)
        except Exception:
            pass
    _PROCS.clear()
    shutil.rmtree(_TMPDIR, ignore_errors=True)


atexit.register(_kill_all)


def _on_signal(signum, frame):
    _kill_all()
    os._exit(128 + signum)


for _s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(_s, _on_signal)


class Mock(Proc):
    """mock-replica --listen 127.0.0.1:0 --id ID [options]. listen: another
    address ("[::1]:0", "unix:/path"); addr is what a config names it by
    (port None for a unix socket, so stats() needs a TCP mock)."""

    def __init__(self, id, listen="127.0.0.1:0", **opts):
        argv = [mock_bin(), "--listen", listen, "--id", id]
        for k, v in opts.items():
            if v is True:  # a flag without a value (llm=True: --llm)
                argv.append("--" + k.replace("_", "-"))
            else:
                argv += ["--" + k.replace("_", "-"), str(v)]
        super().__init__(argv, "mock-" + id)
        self.id = id
        self.port = int(self.expect_line(r"^READY (\d+)").group(1))
        if listen.startswith("unix:"):
            self.port = None
            self.addr = listen
        else:
            self.addr = "%s:%d" % (listen.rsplit(":", 1)[0], self.port)

    def stats(self):
        r = http_once(self.port, "GET", "/-/stats")
        return r.json()

    def reset_stats(self):
        http_once(self.port, "POST", "/-/stats/reset")


def write_config(cfg, name="config.json"):
    """Write cfg (dict or str) into a fresh file; returns its path."""
    d = tempfile.mkdtemp(dir=_TMPDIR)
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(cfg if isinstance(cfg, str) else json.dumps(cfg, indent=2) + "\n")
    return path


def rlimit_nofile_preexec(n):
    """A preexec function (runs in the child before exec) that sets the
    soft RLIMIT_NOFILE to n (capped at the hard limit)."""
    import resource

    def pre():
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        lim = n if hard == resource.RLIM_INFINITY else min(n, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lim, hard))
    return pre


class Ringroute(Proc):
    """ringroute --config FILE --listen 127.0.0.1:0 --shards N [extra...].
    preexec: a function run in the child before exec; rlimit_nofile: the soft
    open-files limit ringroute starts with (see rlimit_nofile_preexec); env:
    variables added to its environment."""

    def __init__(self, config, shards=1, admin=False, extra=(), preexec=None,
                 rlimit_nofile=None, env=None):
        self.config_path = config if isinstance(config, str) and os.path.exists(config) \
            else write_config(config)
        argv = [ringroute_bin(), "--config", self.config_path,
                "--listen", "127.0.0.1:0", "--shards", str(shards)]
        if admin:
            argv += ["--admin", "127.0.0.1:0"]
        argv += list(extra)
        if rlimit_nofile is not None:
            lim_pre = rlimit_nofile_preexec(rlimit_nofile)
            if preexec is not None:
                user_pre = preexec

                def preexec():
                    lim_pre()
                    user_pre()
            else:
                preexec = lim_pre
        super().__init__(argv, "ringroute", preexec=preexec, env=env)
        self.port = int(self.expect_line(r"^LISTEN (\d+)").group(1))
        self.admin_port = None
        if admin:
            self.admin_port = int(self.expect_line(r"^ADMIN (\d+)").group(1))
        self.expect_line(r"^READY\b")

    def client(self, timeout=IO_TIMEOUT):
        return Client(self.port, timeout=timeout)


def run_ringroute_expect_exit(config, timeout=15.0, shards=1, config_path=None, extra=()):
    """Run ringroute on a config (or flags, extra) that must be rejected.
    Returns (rc, stdout, stderr)."""
    path = config_path or write_config(config)
    argv = [ringroute_bin(), "--config", path, "--listen", "127.0.0.1:0",
            "--shards", str(shards)] + list(extra)
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout,
                       preexec_fn=_set_pdeathsig, env=env)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def free_port():
    """A loopback port with nothing listening on it (bound then released)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def backend(replicas, **kw):
    """A backend config: replicas is {id: "host:port"} or a list of Mocks."""
    if not isinstance(replicas, dict):
        replicas = {m.id: m.addr for m in replicas}
    b = {"replicas": replicas}
    b.update(kw)
    return b


def endpoint(route, traffic, **kw):
    e = {"route": route, "traffic": traffic}
    e.update(kw)
    return e


def _close_listener(lsock):
    """Wake a thread blocked in accept() on lsock and close it."""
    try:
        lsock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        lsock.close()
    except OSError:
        pass


class RawUpstream:
    """A scripted upstream in this process: a listening socket served by a
    thread. respond(req) -> bytes is called for every request parsed
    (req: dict with method, target, version, headers [(name, value)], body);
    it returns the exact bytes to send; returning None closes the connection
    without answering. After each response the connection stays open for the
    next request unless close_after is set. Every request is kept in
    self.requests. port: the loopback port to listen on (0: any free one)."""

    def __init__(self, respond, close_after=False, port=0):
        self.respond = respond
        self.close_after = close_after
        self.requests = []
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", port))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self._stop = False
        self._conns = []
        self._t = threading.Thread(target=self._accept_loop, daemon=True)
        self._t.start()

    def _accept_loop(self):
        while not self._stop:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            self._conns.append(s)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        buf = bytearray()
        s.settimeout(30)
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = s.recv(65536)
                    if not d:
                        return
                    buf += d
                i = buf.index(b"\r\n\r\n")
                head = bytes(buf[:i]).decode("latin-1")
                del buf[:i + 4]
                lines = head.split("\r\n")
                method, target, version = lines[0].split(" ", 2)
                headers = []
                for l in lines[1:]:
                    k, _, v = l.partition(":")
                    headers.append((k, v.strip()))
                hd = {k.lower(): v for k, v in headers}
                body = b""
                if "chunked" in hd.get("transfer-encoding", "").lower():
                    while True:
                        while b"\r\n" not in buf:
                            d = s.recv(65536)
                            if not d:
                                return
                            buf += d
                        j = buf.index(b"\r\n")
                        size = int(bytes(buf[:j]).split(b";")[0], 16)
                        del buf[:j + 2]
                        while len(buf) < size + 2:
                            d = s.recv(65536)
                            if not d:
                                return
                            buf += d
                        body += bytes(buf[:size])
                        del buf[:size + 2]
                        if size == 0:
                            break  # (no trailers expected)
                else:
                    n = int(hd.get("content-length", "0"))
                    while len(buf) < n:
                        d = s.recv(65536)
                        if not d:
                            return
                        buf += d
                    body = bytes(buf[:n])
                    del buf[:n]
                req = {"method": method, "target": target, "version": version,
                       "headers": headers, "hdict": hd, "body": body}
                self.requests.append(req)
                out = self.respond(req)
                if out is None:
                    return
                s.sendall(out)
                if self.close_after:
                    return
        except OSError:
            return
        finally:
            try:
                s.close()
            except OSError:
                pass

    def close(self):
        self._stop = True
        _close_listener(self.lsock)
        for s in self._conns:
            try:
                s.close()
            except OSError:
                pass


class GatedUpstream(RawUpstream):
    """A RawUpstream that holds a request carrying `X-Gate: NAME` until
    release(NAME) (or open_all()), so that "in flight", "queued" and "served
    next" are observed as events, not guessed from delays. answer(req) builds
    the response (override it); a request held 30 s is closed unanswered."""

    def __init__(self, id=None):
        self.id = id
        self._lock = threading.Lock()
        self._gates = {}
        self._open = False
        self.cond = threading.Condition()  # notified as each request arrives
        super().__init__(self._respond)

    def answer(self, req):
        return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    def _gate(self, name):
        with self._lock:
            return self._gates.setdefault(name, threading.Event())

    def _respond(self, req):
        with self.cond:
            self.cond.notify_all()  # req is already in self.requests
        g = req["hdict"].get("x-gate")
        if g and not self._open and not self._gate(g).wait(30):
            return None
        return self.answer(req)

    def release(self, name):
        self._gate(name).set()

    def open_all(self):
        self._open = True
        with self._lock:
            for e in self._gates.values():
                e.set()

    def paths(self):
        return [r["target"] for r in self.requests]

    def wait_requests(self, n, timeout=5.0):
        """Block until at least n requests arrived; returns the paths."""
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.requests) >= n, timeout)
        if not ok:
            raise AssertionError("replica %s: expected %d requests within %.1f s, got %r"
                                 % (self.id, n, timeout, self.paths()))
        return self.paths()


class UpstreamConn:
    """One connection accepted by a ScriptedUpstream, handed to its script.
    Reads are bounded (timeout, default 10 s); peer_eof is set once ringroute
    closed (or reset) its side; requests lists the heads read on it."""

    def __init__(self, sock, index, owner=None):
        self.sock = sock
        self.index = index
        self.owner = owner
        self.buf = bytearray()
        self.peer_eof = threading.Event()
        self.requests = []
        self.received = bytearray()

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("upstream conn %d: timed out; buffered %r" %
                                 (self.index, bytes(self.buf[-500:])))
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(262144)
        except ConnectionResetError:
            d = b""
        if not d:
            self.peer_eof.set()
            return False
        self.buf += d
        self.received += d
        return True

    def read_head(self, timeout=10.0):
        """The next request head as a dict (method, target, version, headers,
        hdict), or None at EOF."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                return None
        i = self.buf.index(b"\r\n\r\n")
        head = bytes(self.buf[:i]).decode("latin-1")
        del self.buf[:i + 4]
        lines = head.split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = []
        for l in lines[1:]:
            k, _, v = l.partition(":")
            headers.append((k, v.strip()))
        req = {"method": method, "target": target, "version": version,
               "headers": headers, "hdict": {k.lower(): v for k, v in headers},
               "body": b""}
        self.requests.append(req)
        if self.owner is not None:
            with self.owner.cond:
                self.owner.requests.append(req)
                self.owner.cond.notify_all()
        return req

    def read_exact(self, n, timeout=10.0, rate=None):
        """n bytes; rate (bytes/s) paces the reads like a slow reader."""
        deadline = time.monotonic() + timeout
        out = bytearray()
        t0 = time.monotonic()
        while len(out) < n:
            if not self.buf and not self._fill(deadline):
                raise ConnectionClosed("upstream conn %d: EOF after %d of %d body bytes"
                                       % (self.index, len(out), n))
            take = min(n - len(out), len(self.buf), 65536)
            out += self.buf[:take]
            del self.buf[:take]
            if rate:
                ahead = t0 + len(out) / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)  # pacing a slow reader, not synchronisation
        return bytes(out)

    def read_body(self, req, timeout=10.0, rate=None):
        """The body of req (Content-Length or chunked), stored in req["body"]."""
        deadline = time.monotonic() + timeout
        te = req["hdict"].get("transfer-encoding", "").lower()
        if "chunked" in te:
            body = bytearray()
            while True:
                while b"\r\n" not in self.buf:
                    if not self._fill(deadline):
                        raise ConnectionClosed("upstream conn %d: EOF in chunked body" % self.index)
                j = self.buf.index(b"\r\n")
                size = int(bytes(self.buf[:j]).split(b";")[0], 16)
                del self.buf[:j + 2]
                body += self.read_exact(size + 2, max(0.01, deadline - time.monotonic()), rate)[:-2]
                if size == 0:
                    break
        else:
            n = int(req["hdict"].get("content-length", "0"))
            body = self.read_exact(n, max(0.01, deadline - time.monotonic()), rate)
        req["body"] = bytes(body)
        return req["body"]

    def read_request(self, timeout=10.0):
        req = self.read_head(timeout)
        if req is not None:
            self.read_body(req, timeout)
        return req

    def send(self, data):
        self.sock.sendall(data)

    def wait_eof(self, timeout):
        """True once ringroute closed its side within timeout; bytes that
        arrive meanwhile are kept in buf (and make it return False)."""
        deadline = time.monotonic() + timeout
        while not self.peer_eof.is_set():
            if self.buf:
                return False
            try:
                if not self._fill(deadline):
                    return True
            except socket.timeout:
                return False
            except OSError:
                return self.peer_eof.is_set()
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class ScriptedUpstream:
    """A scripted replica in this process: script(conn) runs on its own
    thread for every accepted connection (conn: UpstreamConn) and writes the
    exact bytes it wants; the connection is closed when the script returns.
    conns lists every connection in accept order; cond is notified as
    connections arrive and scripts finish."""

    def __init__(self, script, backlog=64):
        self.script = script
        self.conns = []
        self.requests = []  # every request head read, over all connections, in order
        self.errors = []
        self.cond = threading.Condition()
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(backlog)
        self.port = self.lsock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self._stop = False
        self._t = threading.Thread(target=self._accept_loop, daemon=True)
        self._t.start()

    def _accept_loop(self):
        while not self._stop:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            with self.cond:
                c = UpstreamConn(s, len(self.conns), self)
                self.conns.append(c)
                self.cond.notify_all()
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            self.script(c)
        except (OSError, ConnectionClosed):
            pass
        except Exception as e:  # reported by the test through self.errors
            self.errors.append("upstream conn %d: %s: %s" % (c.index, type(e).__name__, e))
        finally:
            c.close()
            with self.cond:
                self.cond.notify_all()

    def all_requests(self):
        with self.cond:
            return list(self.requests)

    def wait_conns(self, n, timeout=5.0):
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.conns) >= n, timeout)
        if not ok:
            raise AssertionError("expected %d upstream connections within %.1f s, got %d"
                                 % (n, timeout, len(self.conns)))
        return self.conns[:n]

    def close(self):
        self._stop = True
        _close_listener(self.lsock)
        for c in list(self.conns):
            c.close()


def sanitizer_line(line):
    """True for a stderr line a sanitizer wrote (its report, not ringroute's
    process log): those have no timestamp."""
    return bool(_SANITIZER.search(line)) or line[:1] in ("=", " ", "\t", "#") \
        or line.startswith("SUMMARY:")


def sanitizer_of(pid):
    """The sanitizer a running process was built with: "address" (gcc links
    libasan), "thread" (clang links ThreadSanitizer's runtime statically, so
    the executable holds its symbols) or None."""
    with open("/proc/%d/maps" % pid) as f:
        if "libasan" in f.read():
            return "address"
    with open("/proc/%d/exe" % pid, "rb") as f:
        if b"__tsan_init" in f.read():
            return "thread"
    return None


def proc_cpu_seconds(pid):
    """utime + stime of pid (all its threads), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        st = f.read()
    fields = st[st.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_bytes(pid):
    """VmRSS of pid in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for pid %d" % pid)


def proc_open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


# --------------------------------------------------------------------------
# raw HTTP/1.1 client

class ConnectionClosed(Exception):
    pass


class Response:
    def __init__(self):
        self.version = None
        self.status = None
        self.reason = None
        self.headers = []       # [(name, value)] as received
        self.head_raw = b""     # status line + headers + blank line, exact bytes
        self.body = b""         # decoded body (chunked framing removed)
        self.body_raw = b""     # body bytes exactly as received
        self.chunks = []        # [(monotonic time of arrival, data)] for chunked bodies
        self.t_head = None      # monotonic time the header block was complete
        self.t_done = None

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def header_names(self):
        return [k.lower() for k, _ in self.headers]

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except Exception as e:
            raise AssertionError("response body is not JSON (%s): %r" % (e, self.raw()[:2000]))

    def raw(self):
        return self.head_raw + self.body_raw

    def __repr__(self):
        return "<Response %s %r>" % (self.status, self.raw()[:600])


def build_request(method, path, headers=None, body=None, version="HTTP/1.1", host=True):
    """Request bytes. headers: list of (name, value) or dict. Adds Host and,
    for a bytes body without Transfer-Encoding, Content-Length."""
    hs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = [k.lower() for k, _ in hs]
    if host and "host" not in names:
        hs.insert(0, ("Host", "127.0.0.1"))
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        hs.append(("Content-Length", str(len(body))))
    out = ["%s %s %s\r\n" % (method, path, version)]
    out += ["%s: %s\r\n" % (k, v) for k, v in hs]
    out.append("\r\n")
    data = "".join(out).encode("latin-1")
    if body is not None:
        data += body
    return data


def chunked(*parts, trailer=b""):
    """Chunked-encode the given byte strings (plus the last chunk)."""
    out = b""
    for p in parts:
        if p:
            out += b"%x\r\n" % len(p) + p + b"\r\n"
    return out + b"0\r\n" + trailer + b"\r\n"


class Client:
    """One TCP connection; parses responses out of the exact received bytes."""

    def __init__(self, port, timeout=IO_TIMEOUT, host="127.0.0.1"):
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False
        self.received = bytearray()  # everything ever received, for messages

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        if self.eof:
            raise ConnectionClosed("connection closed; received so far: %r" %
                                   bytes(self.received[-2000:]))
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out; received so far: %r" % bytes(self.received[-2000:]))
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(262144)
        except socket.timeout:
            raise socket.timeout("timed out after %.1f s; received so far: %r" %
                                 (self.timeout, bytes(self.received[-2000:])))
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            raise ConnectionClosed("connection closed; received so far: %r" %
                                   bytes(self.received[-2000:]))
        self.buf += data
        self.received += data
        return len(data)

    def _take(self, n):
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _read_until(self, sep, deadline):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                return self._take(i + len(sep))
            self._fill(deadline)

    def _read_exact(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        return self._take(n)

    def read_response(self, method="GET", timeout=None, skip_1xx=True):
        """Parse one response. method: the request's method (HEAD has no body)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            r = self._read_one(method, deadline)
            if skip_1xx and 100 <= r.status < 200 and r.status != 101:
                continue
            return r

    def _read_one(self, method, deadline):
        r = Response()
        head = self._read_until(b"\r\n\r\n", deadline)
        r.t_head = time.monotonic()
        r.head_raw = head
        lines = head[:-4].split(b"\r\n")
        m = re.match(rb"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise AssertionError("bad status line %r in %r" % (lines[0], head))
        r.version = m.group(1).decode()
        r.status = int(m.group(2))
        r.reason = (m.group(3) or b"").decode("latin-1")
        for l in lines[1:]:
            k, sep, v = l.partition(b":")
            if not sep:
                raise AssertionError("bad header line %r in %r" % (l, head))
            r.headers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
        te = (r.header("transfer-encoding") or "").lower()
        cl = r.header("content-length")
        if method == "HEAD" or r.status in (204, 304) or 100 <= r.status < 200:
            pass
        elif "chunked" in te:
            raw = bytearray()
            body = bytearray()
            while True:
                line = self._read_until(b"\r\n", deadline)
                raw += line
                size_s = line[:-2].split(b";")[0].strip()
                try:
                    size = int(size_s, 16)
                except ValueError:
                    raise AssertionError("bad chunk size line %r" % line)
                if size == 0:
                    while True:  # trailers
                        t = self._read_until(b"\r\n", deadline)
                        raw += t
                        if t == b"\r\n":
                            break
                    break
                data = self._read_exact(size + 2, deadline)
                raw += data
                if data[-2:] != b"\r\n":
                    raise AssertionError("chunk not followed by CRLF: %r" % data[-10:])
                body += data[:-2]
                r.chunks.append((time.monotonic(), data[:-2]))
            r.body_raw = bytes(raw)
            r.body = bytes(body)
        elif cl is not None:
            r.body_raw = r.body = self._read_exact(int(cl), deadline)
        else:
            # delimited by close
            while True:
                try:
                    self._fill(deadline)
                except ConnectionClosed:
                    break
            r.body_raw = r.body = self._take(len(self.buf))
        r.t_done = time.monotonic()
        return r

    def request(self, method, path, headers=None, body=None, version="HTTP/1.1", timeout=None):
        self.send(build_request(method, path, headers, body, version))
        return self.read_response(method, timeout=timeout)

    def read_all_until_close(self, timeout=None):
        """Everything until EOF (or reset). Raises socket.timeout if the peer
        keeps the connection open past the timeout."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                self._fill(deadline)
            except ConnectionClosed:
                return self._take(len(self.buf))

    def closed_within(self, timeout):
        """True if the peer closes the connection (no more bytes expected)
        within timeout; pending bytes are an error."""
        data = self.read_all_until_close(timeout)
        if data:
            raise AssertionError("unexpected bytes before close: %r" % data[:2000])
        return True

    def still_open(self, wait=0.05):
        """True if no EOF/RST and no unexpected bytes arrive within `wait`."""
        r, _, _ = select.select([self.sock], [], [], wait)
        if not r:
            return True
        try:
            self.sock.setblocking(False)
            data = self.sock.recv(65536, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return True
        except ConnectionResetError:
            return False
        finally:
            self.sock.setblocking(True)
        return bool(data)


def http_once(port, method, path, headers=None, body=None, timeout=IO_TIMEOUT):
    with Client(port, timeout=timeout) as c:
        return c.request(method, path, headers, body)


class UnixClient(Client):
    """Client over an AF_UNIX stream socket (the control socket)."""

    def __init__(self, path, timeout=IO_TIMEOUT):
        self.port = None
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = bytearray()
        self.eof = False
        self.received = bytearray()


def control_sock_path():
    """A fresh path for --control, in its own directory under the test tmpdir."""
    return os.path.join(tempfile.mkdtemp(dir=_TMPDIR), "ctl.sock")


def json_body(doc):
    """A control API request body: None and bytes as they are, else JSON."""
    return doc if doc is None or isinstance(doc, bytes) else json.dumps(doc).encode()


def parse_metrics(text):
    """Prometheus text -> [(name, {label: value}, float)] in order."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$', line)
        if not m:
            raise AssertionError("bad metrics line %r" % line)
        labels = dict(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


# --------------------------------------------------------------------------
# bounded waits on observable signals (never a bare sleep)

def poll(fn, timeout, interval=0.01):
    """Calls fn until it returns truthy or timeout passes; returns its last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    return last


def wait_for(fn, timeout=5.0, what="condition", interval=0.01):
    """poll(), raising AssertionError if fn never returned truthy."""
    last = poll(fn, timeout, interval)
    if not last:
        raise AssertionError("timed out after %.1f s waiting for %s (last: %r)"
                             % (timeout, what, last))
    return last


def wait_stderr(proc, text, timeout=10.0):
    """True once proc has logged text (ringroute's own signal that a health
    probe ran or a reload was done)."""
    return bool(poll(lambda: text in proc.stderr(), timeout, 0.02))


# --------------------------------------------------------------------------
# test base and main

class RRTestCase(unittest.TestCase):
    """Helpers; subclasses start processes with self.start_* (stopped in
    tearDown) or cls.start_*_cls in setUpClass (stopped in tearDownClass).
    Stopping ringroute also fails the test if a sanitizer reported anything."""

    maxDiff = 4000

    def setUp(self):
        self._procs = []
        self._clients = []
        self._upstreams = []

    def tearDown(self):
        for u in self._upstreams:
            if isinstance(u, GatedUpstream):
                u.open_all()  # no held request may stall ringroute's exit
        for c in self._clients:
            c.close()
        reports = _stop_all(self._procs)
        for u in self._upstreams:
            u.close()
        if reports:
            self.fail("\n".join(reports))

    @classmethod
    def setUpClass(cls):
        cls._cls_procs = []

    @classmethod
    def tearDownClass(cls):
        reports = _stop_all(cls._cls_procs)
        if reports:
            raise AssertionError("\n".join(reports))

    # per test
    def mock(self, id, **opts):
        m = Mock(id, **opts)
        self._procs.append(m)
        return m

    def ringroute(self, config, shards=1, **kw):
        r = Ringroute(config, shards=shards, **kw)
        self._procs.append(r)
        return r

    def client(self, port, timeout=IO_TIMEOUT):
        c = Client(port, timeout=timeout)
        self._clients.append(c)
        return c

    def unix_client(self, path, timeout=IO_TIMEOUT):
        c = UnixClient(path, timeout=timeout)
        self._clients.append(c)
        return c

    def upstream(self, u):
        """Closes the RawUpstream u after the test's processes are stopped."""
        self._upstreams.append(u)
        return u

    def run_clients(self, n, worker, join_timeout=60.0):
        """Runs worker(k) for k in range(n), each on its own thread, at once.
        worker returns None or an error string (stopping at its first error);
        an exception counts as one. Fails if a client still runs after
        join_timeout (hung) or any reported an error."""
        errors = []

        def run(k):
            try:
                err = worker(k)
            except Exception as e:  # reported below
                err = "client %d: %s: %s" % (k, type(e).__name__, e)
            if err is not None:
                errors.append(err)

        ts = [threading.Thread(target=run, args=(k,)) for k in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(join_timeout)
        self.assertFalse(any(t.is_alive() for t in ts), "clients hung")
        self.assertEqual(errors, [])

    # per class
    @classmethod
    def mock_cls(cls, id, **opts):
        m = Mock(id, **opts)
        cls._cls_procs.append(m)
        return m

    @classmethod
    def ringroute_cls(cls, config, shards=1, **kw):
        r = Ringroute(config, shards=shards, **kw)
        cls._cls_procs.append(r)
        return r

    # assertions
    def assertErrorJSON(self, r, status, endpoint=None):
        self.assertEqual(r.status, status, r)
        j = r.json()
        self.assertIsInstance(j, dict, r)
        self.assertIn("error", j, r)
        self.assertIsInstance(j["error"], str, r)
        self.assertTrue(j["error"], r)
        self.assertIn("endpoint", j, r)
        if endpoint is not None:
            self.assertEqual(j["endpoint"], endpoint, r)
        ct = r.header("content-type") or ""
        self.assertIn("application/json", ct.lower(), r)
        return j


def _stop_all(procs):
    reports = []
    for p in reversed(procs):
        p.stop()
        rep = p.sanitizer_report()
        if rep:
            reports.append("%s (pid %d) sanitizer report:\n%s" % (p.label, p.pid, rep))
    procs.clear()
    return reports


def probe():
    """Start ringroute once on a trivial config: exit 77 if io_uring is
    unavailable, exit 1 with its stderr if it cannot start otherwise."""
    for path in (ringroute_bin(), mock_bin()):
        if not os.access(path, os.X_OK):
            print("e2e: missing binary %s (set RR_BUILD)" % path, file=sys.stderr)
            sys.exit(1)
    cfg = {"backends": {"b": backend({"r1": "127.0.0.1:%d" % free_port()})},
           "endpoints": {"e": endpoint("/", {"b": 1.0})}}
    try:
        r = Ringroute(cfg)
    except Unsupported as e:
        print("e2e: SKIP: io_uring unavailable: %s" % e, file=sys.stderr)
        sys.exit(SKIP_EXIT)
    except StartError as e:
        print("e2e: ringroute does not start:\n%s" % e, file=sys.stderr)
        sys.exit(1)
    r.stop()
    rep = r.sanitizer_report()
    if rep:
        print("e2e: ringroute probe: sanitizer report:\n%s" % rep, file=sys.stderr)
        sys.exit(1)


def main():
    probe()
    prog = unittest.main(exit=False, verbosity=2)
    ok = prog.result.wasSuccessful()
    if not ok or os.environ.get("RR_E2E_VERBOSE"):
        for label, path in _LOGS:
            try:
                with open(path, "rb") as f:
                    lines = f.read().decode("utf-8", "replace").splitlines()
            except OSError:
                continue
            if lines:
                print("---- stderr of %s (%s), last 30 lines" % (label, os.path.basename(path)),
                      file=sys.stderr)
                for l in lines[-30:]:
                    print("  " + l, file=sys.stderr)
    _kill_all()
    sys.exit(0 if ok else 1)
