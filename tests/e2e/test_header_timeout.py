#!/usr/bin/env python3
"""A client that sends part of its request head and stops is closed by the
proxy after the header timeout (--header-timeout-ms, default 10000; 500 here),
while a busy client on the same proxy is not disturbed. --shards 2."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint  # noqa: E402

HEADER_TIMEOUT_MS = 500
HEADER_TIMEOUT = HEADER_TIMEOUT_MS / 1000.0
CLOSED_AFTER = 0.4   # not before the timeout (a little slack for the clock)
CLOSED_BEFORE = 3.0  # and not much after it


class HeaderTimeoutTest(harness.RRTestCase):

    def test_partial_head_closed_after_timeout(self):
        m = self.mock("m1")
        rr = self.ringroute({"backends": {"b": backend([m])},
                             "endpoints": {"any": endpoint("/", {"b": 1.0})}}, shards=2,
                            extra=["--header-timeout-ms", str(HEADER_TIMEOUT_MS)])
        partial = [
            b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ",  # mid-header
            b"GET /slow HT",                                        # mid-request-line
            b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n",  # before blank line
        ]
        clients = [self.client(rr.port, timeout=CLOSED_BEFORE + 2) for _ in partial]
        t0 = time.monotonic()
        for c, data in zip(clients, partial):
            c.send(data)
        # a well-behaved client keeps working meanwhile
        busy = self.client(rr.port)
        for i in range(5):
            r = busy.request("GET", "/busy/%d" % i)
            self.assertEqual(r.status, 200, r)
        for c in clients:
            data = c.read_all_until_close(timeout=CLOSED_BEFORE + 2 - (time.monotonic() - t0))
            dt = time.monotonic() - t0
            self.assertGreater(dt, CLOSED_AFTER, "closed after %.2f s" % dt)
            self.assertLess(dt, CLOSED_BEFORE, "closed after %.2f s" % dt)
            # closing silently or with a 408 are both fine; nothing else
            if data:
                self.assertTrue(data.startswith(b"HTTP/1.1 408"), data)


if __name__ == "__main__":
    harness.main()
