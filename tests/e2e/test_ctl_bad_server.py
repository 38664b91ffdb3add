#!/usr/bin/env python3
"""ringroutectl against a broken or hostile server on a Unix socket: sizes
that do not fit (a chunk size or Content-Length of 2^64-1, lengths longer
than what was sent) must end in exit 1 and a clear message, never a crash,
a hang or output made of bytes that were never received."""

import os
import socket
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

HUGE = "ffffffffffffffff"          # 2^64 - 1 as a chunk size
HUGE_DEC = "18446744073709551615"  # 2^64 - 1 as a Content-Length


def ctl_bin():
    return os.environ.get("RR_RINGROUTECTL") or os.path.join(harness.BUILD, "ringroutectl")


class FakeServer:
    """Accepts on a Unix socket, reads one request head, sends `answer`
    (bytes) and closes. Serves any number of connections."""

    def __init__(self, answer):
        self.answer = answer
        self.path = harness.control_sock_path()
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(self.path)
        self.lsock.listen(16)
        self.requests = 0
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self):
        while True:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            with s:
                s.settimeout(10)
                buf = b""
                try:
                    while b"\r\n\r\n" not in buf:
                        d = s.recv(65536)
                        if not d:
                            break
                        buf += d
                    self.requests += 1
                    s.sendall(self.answer)
                except OSError:
                    pass

    def close(self):
        try:
            self.lsock.close()
        finally:
            try:
                os.unlink(self.path)
            except OSError:
                pass


class BadServerTest(harness.RRTestCase):

    def run_ctl(self, answer, *args):
        srv = FakeServer(answer)
        try:
            p = subprocess.run([ctl_bin(), "--socket", srv.path] + list(args),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        finally:
            srv.close()
        self.assertGreater(srv.requests, 0)
        return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")

    def fails_clearly(self, answer, *args, needle="malformed response"):
        rc, out, err = self.run_ctl(answer, *args)
        self.assertEqual(rc, 1, "ringroutectl %s: rc %d (negative: killed by a signal)\n"
                         "stdout: %r\nstderr: %r" % (" ".join(args), rc, out, err))
        self.assertIn(needle, err)
        return err

    def head(self, status="200 OK", extra=""):
        return ("HTTP/1.1 %s\r\nContent-Type: application/json\r\n%s\r\n" % (status, extra)).encode()

    def test_huge_chunk_size(self):
        for size in (HUGE, "fffffffffffffffe", "ffffffffffffffffff", "8000000000000000"):
            ans = self.head(extra="Transfer-Encoding: chunked\r\n") + \
                (size + "\r\n{}\r\n0\r\n\r\n").encode()
            err = self.fails_clearly(ans, "stats")
            self.assertIn("chunk", err)

    def test_chunk_longer_than_received(self):
        ans = self.head(extra="Transfer-Encoding: chunked\r\n") + b"100\r\n{}\r\n"
        self.fails_clearly(ans, "stats")
        # Exactly the data but no CRLF after it: not a whole chunk either.
        ans = self.head(extra="Transfer-Encoding: chunked\r\n") + b"2\r\n{}"
        self.fails_clearly(ans, "stats")

    def test_huge_content_length(self):
        for cl in (HUGE_DEC, "18446744073709551614", "99999999999999999999999", "-1", "12x"):
            ans = self.head(extra="Content-Length: %s\r\n" % cl) + b"{}"
            err = self.fails_clearly(ans, "stats")
            self.assertIn("Content-Length", err)

    def test_sane_answer_still_works(self):
        body = b'{"error": "nope"}'
        ans = self.head("400 Bad Request", "Content-Length: %d\r\n" % len(body)) + body
        rc, out, err = self.run_ctl(ans, "stats")
        self.assertEqual(rc, 1, err)
        self.assertIn("nope", err)
        chunked = self.head("400 Bad Request", "Transfer-Encoding: chunked\r\n") + \
            b"5\r\n{\"err\r\nc\r\nor\": \"nope\"}\r\n0\r\n\r\n"
        rc, out, err = self.run_ctl(chunked, "stats")
        self.assertEqual(rc, 1, err)
        self.assertIn("nope", err)

    def test_watch_huge_chunk_size(self):
        ans = self.head("200 OK", "Transfer-Encoding: chunked\r\n") + \
            (HUGE + "\r\n{\"backends\": {}}\n\r\n").encode()
        err = self.fails_clearly(ans, "queues", "--watch", needle="chunk")
        self.assertNotIn("closed the stream", err)


if __name__ == "__main__":
    harness.main()
