#!/usr/bin/env python3
"""Chaos: many clients doing everything that can go wrong at once (leaving
mid-body or while queued, bad chunks, replicas that reset or time out, queue
timeouts, shadow copies) against small caps on 2 shards. Afterwards nothing
may be left behind: every replica's ongoing count and every backend's queue
are back to 0 (a leaked slot would cap a replica forever), and each backend
still serves a plain request."""

import json
import os
import random
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint  # noqa: E402

CLIENTS = 24
PER_CLIENT = 30


def queues(rr):
    r = harness.http_once(rr.admin_port, "GET", "/v1/stats")
    return json.loads(r.body)


class NoLeaksTest(harness.RRTestCase):
    def test_chaos_leaves_nothing_behind(self):
        m1, m2, sh = self.mock("m1"), self.mock("m2"), self.mock("sh")
        cfg = {"backends": {
                   "b": backend([m1, m2], max_ongoing_requests=2, queue_timeout_ms=150,
                                max_queued_requests=20, request_timeout_ms=200),
                   "s": backend([sh], max_ongoing_requests=1)},
               "endpoints": {"e": endpoint("/", {"b": 1.0}, shadow={"s": 0.5})}}
        rr = self.ringroute(cfg, shards=2, admin=True)
        errors = []

        def one(rng, i):
            kind = rng.choice(["ok", "ok", "slow", "timeout", "reset", "leave_body",
                               "leave_queued", "bad_chunk", "post"])
            s = socket.create_connection(("127.0.0.1", rr.port), timeout=5)
            try:
                if kind == "ok":
                    s.sendall(b"GET /ok%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
                elif kind == "slow":
                    s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Mock-Delay-Ms: 30\r\n\r\n")
                elif kind == "timeout":
                    s.sendall(b"GET /t HTTP/1.1\r\nHost: x\r\nX-Mock-Delay-Ms: 400\r\n\r\n")
                elif kind == "reset":
                    s.sendall(b"GET /r HTTP/1.1\r\nHost: x\r\nX-Mock-Reset: 1\r\n\r\n")
                elif kind == "post":
                    s.sendall(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
                elif kind == "leave_body":
                    s.sendall(b"POST /lb HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
                    time.sleep(rng.random() * 0.02)
                    return
                elif kind == "leave_queued":
                    s.sendall(b"GET /lq HTTP/1.1\r\nHost: x\r\nX-Mock-Delay-Ms: 20\r\n\r\n")
                    time.sleep(rng.random() * 0.02)
                    return
                elif kind == "bad_chunk":
                    s.sendall(b"POST /bc HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"3\r\nabc\r\nzz\r\n")
                data = b""
                while b"\r\n\r\n" not in data:
                    d = s.recv(65536)
                    if not d:
                        break
                    data += d
                status = int(data.split(b" ")[1]) if data else 0
                allowed = {"bad_chunk": {400, 503}, "reset": {502, 503},
                           "timeout": {504, 503}}.get(kind, {200, 503})
                if status not in allowed:
                    errors.append((kind, data[:200]))
            finally:
                s.close()

        def worker(seed):
            rng = random.Random(seed)
            for i in range(PER_CLIENT):
                try:
                    one(rng, i)
                except OSError as e:
                    errors.append(("oserror", repr(e)))

        ts = [threading.Thread(target=worker, args=(k,)) for k in range(CLIENTS)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        self.assertEqual([(k, d[:60]) for k, d in errors], [])

        def settled():
            st = queues(rr)
            busy = {(b, r): v["ongoing"] for b, be in st["backends"].items()
                    for r, v in be["replicas"].items() if v["ongoing"]}
            queued = {b: be["queued"] for b, be in st["backends"].items() if be["queued"]}
            return (not busy and not queued), (busy, queued)
        deadline = time.monotonic() + 5
        ok, last = settled()
        while not ok and time.monotonic() < deadline:
            time.sleep(0.02)
            ok, last = settled()
        self.assertTrue(ok, "left behind (ongoing, queued): %r" % (last,))
        # Both backends still take their full cap.
        c = self.client(rr.port)
        for i in range(10):
            r = c.request("GET", "/after%d" % i)
            self.assertEqual(r.status, 200, r)


if __name__ == "__main__":
    harness.main()
