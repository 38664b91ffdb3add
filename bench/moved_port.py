#!/usr/bin/env python3
"""Before/after for a replica restarted on another port behind the same
name (bench/RESULTS.md "Outlier ejection", the `moved` row): three replicas
under steady load; one is killed and started again on a NEW port, and DNS
says so.

* before: each replica is a plain `NAME:PORT` (an A record, no port): the
  name still resolves to the same address, the old port is dead, so the
  moved replica is lost (it takes no request again) and clients see errors
  until outlier ejection takes the dead port out.
* after: the backend is one `srv:_http._tcp.NAME`; the SRV answer changes
  to the new port, which is added while the old one drains.

For each: the moved replica's share of the requests after the move (its
new server's count) and the errors clients saw, in the first second after
the kill and in the rest. The DNS server is tests/e2e/test_discovery.py's
(ringroute's test hook RR_DNS_SERVER); the defaults otherwise (retries,
retry budget, outlier ejection on).

    RR_BUILD=build python3 bench/moved_port.py [--threads 6] [--seconds 4]
"""

import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import harness  # noqa: E402
from test_discovery import DNSServer  # noqa: E402

SRV = "_http._tcp.model.test"


def run(mode, threads, seconds):
    dns = DNSServer()
    procs = []

    def mock(id, **kw):
        m = harness.Mock(id, delay_ms=5, **kw)
        procs.append(m)
        return m

    ms = [mock("a"), mock("b"), mock("c")]
    for m in ms:
        dns.set(m.id + ".test", ["127.0.0.1"])
    if mode == "after":
        dns.set_srv(SRV, [(0, 10, m.port, m.id + ".test") for m in ms])
        replicas = {"m": "srv:" + SRV}
    else:
        replicas = {m.id: "%s.test:%d" % (m.id, m.port) for m in ms}
    cfg = {"backends": {"b": {"replicas": replicas}},
           "endpoints": {"e": {"route": "/", "traffic": {"b": 1.0}}},
           "dns_refresh_ms": 200}
    rr = harness.Ringroute(cfg, env={"RR_DNS_SERVER": "127.0.0.1:%d" % dns.port})
    procs.append(rr)
    stop = threading.Event()
    lock = threading.Lock()
    t_kill = [None]
    # (phase, id or status) -> count; phase: pre, first (1 s after the kill), rest
    counts = {}

    def phase():
        if t_kill[0] is None:
            return "pre"
        return "first" if time.monotonic() < t_kill[0] + 1.0 else "rest"

    def worker():
        c = harness.Client(rr.port, timeout=15)
        while not stop.is_set():
            try:
                r = c.request("GET", "/x")
                key = r.json()["id"] if r.status == 200 else "HTTP %d" % r.status
            except Exception as e:
                key = type(e).__name__
                c.close()
                c = harness.Client(rr.port, timeout=15)
            with lock:
                k = (phase(), key)
                counts[k] = counts.get(k, 0) + 1
        c.close()

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    time.sleep(1.0)
    old = ms[2]
    port = old.port
    t_kill[0] = time.monotonic()
    old.stop()
    procs.remove(old)
    new = mock("c2")  # the same replica, restarted on a new port
    dns.set("c2.test", ["127.0.0.1"])
    if mode == "after":
        dns.set_srv(SRV, [(0, 10, m.port, m.id + ".test") for m in ms[:2]] +
                    [(0, 10, new.port, "c2.test")])
    # before: nothing to say. c.test:PORT resolves as before; no A record
    # carries the new port.
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join(20)
    for p in reversed(procs):
        p.stop()
    dns.close()
    out = {}
    for ph in ("first", "rest"):
        tot = sum(v for (p, _), v in counts.items() if p == ph)
        moved = counts.get((ph, "c2"), 0)
        errs = sum(v for (p, k), v in counts.items() if p == ph and k not in ("a", "b", "c2"))
        out[ph] = (tot, moved, errs)
    del port
    bad = {"%s %s" % k: v for k, v in counts.items() if k[1] not in ("a", "b", "c", "c2")}
    print("%s: errors by phase and kind: %s" % (mode, bad or "none"), file=sys.stderr)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=4.0, help="load after the move")
    a = ap.parse_args()
    harness.probe()
    print("| moved replica | requests (1st s / rest) | moved replica's share (1st s / rest) "
          "| client errors (1st s / rest) |")
    print("|---|---|---|---|")
    for mode in ("before", "after"):
        o = run(mode, a.threads, a.seconds)
        f, r = o["first"], o["rest"]
        print("| %s (%s) | %d / %d | %.1f%% / %.1f%% | %d / %d |"
              % (mode, "NAME:PORT" if mode == "before" else "srv:", f[0], r[0],
                 100.0 * f[1] / max(f[0], 1), 100.0 * r[1] / max(r[0], 1), f[2], r[2]))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
