#!/usr/bin/env python3
"""mock-replica --llm, the LLM replica the `llm` benchmark measures with: the
OpenAI-compatible answers (streamed SSE and whole JSON, request bodies with
Content-Length and chunked), the prefix KV cache (a repeated prompt reports
cached tokens and a shorter time to first token), continuous batching
(--max-batch 2 with 4 concurrent requests: 1 runs its long prefill while 3
wait, then 2 run and the others wait; never more than 2 run), the endpoint-load-metrics header in
its TEXT and JSON forms, GET /metrics, and refused input.

Times are checked against the cost model's lower bounds (a timer never
fires early) and with wide margins upwards (a loaded 2-core box is slow)."""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import build_request, chunked  # noqa: E402

PREFILL_US = 200


def sse_events(body):
    """data: lines of an SSE body -> list of str payloads, checking framing."""
    text = body.decode()
    assert text.endswith("\n\n"), text[-40:]
    events = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        events.append(block[6:])
    return events


def metrics(port):
    r = harness.http_once(port, "GET", "/metrics")
    assert r.status == 200, r.status
    assert r.header("content-type").startswith("text/plain"), r.headers
    return {name: v for name, labels, v in harness.parse_metrics(r.body.decode())}


class Stream:
    """One request on its own connection, read in a thread; times the
    first chunk (TTFT) and the end."""

    def __init__(self, port, path, doc, headers=None):
        self.t0 = time.monotonic()
        self.resp = None
        self.err = None
        self.client = harness.Client(port, timeout=20)
        self.client.send(build_request("POST", path, headers, json.dumps(doc).encode()))
        self.th = threading.Thread(target=self._read, daemon=True)
        self.th.start()

    def _read(self):
        try:
            self.resp = self.client.read_response("POST")
        except Exception as e:  # reported by join()
            self.err = e

    def join(self):
        self.th.join(30)
        self.client.close()
        if self.err:
            raise self.err
        assert self.resp is not None, "no response"
        return self.resp

    def ttft(self):
        return self.resp.chunks[0][0] - self.t0


class MockLLMTest(unittest.TestCase):
    def tearDown(self):
        # a clean exit, and (ASan builds) no leak or error report
        for m in getattr(self, "mocks", []):
            self.assertEqual(m.stop(), 0, m.stderr_tail())
            self.assertIsNone(m.sanitizer_report())

    def mock(self, **opts):
        m = harness.Mock("llm", llm=True, **opts)
        self.mocks = getattr(self, "mocks", []) + [m]
        return m

    def test_completion_whole_json(self):
        m = self.mock(decode_us_per_token=1000)
        prompt = "abcdefgh" * 25 + "xyz"  # 203 bytes = 51 tokens
        r = harness.http_once(m.port, "POST", "/v1/completions",
                              {"Content-Type": "application/json"},
                              json.dumps({"model": "m1", "prompt": prompt,
                                          "max_tokens": 5}).encode())
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.header("content-type"), "application/json")
        self.assertIsNone(r.header("endpoint-load-metrics"))  # not asked for
        doc = r.json()
        self.assertEqual(doc["object"], "text_completion")
        self.assertEqual(doc["model"], "m1")
        self.assertEqual(len(doc["choices"]), 1)
        self.assertEqual(len(doc["choices"][0]["text"]), 20)
        self.assertEqual(doc["choices"][0]["finish_reason"], "length")
        self.assertEqual(doc["usage"], {"prompt_tokens": 51, "completion_tokens": 5,
                                        "total_tokens": 56,
                                        "prompt_tokens_details": {"cached_tokens": 0}})

    def test_chat_streamed_chunked_body(self):
        m = self.mock(decode_us_per_token=1000, max_tokens=4)
        doc = {"messages": [{"role": "system", "content": "You are terse. "},
                            {"role": "user", "content": [{"type": "text", "text": "Hi there"}]}],
               "stream": True, "stream_options": {"include_usage": True}}
        body = json.dumps(doc).encode()
        with harness.Client(m.port) as c:
            c.send(build_request("POST", "/v1/chat/completions",
                                 {"Transfer-Encoding": "chunked"},
                                 chunked(body[:10], body[10:])))
            r = c.read_response("POST")
            self.assertEqual(r.status, 200)
            self.assertEqual(r.header("content-type"), "text/event-stream")
            self.assertEqual(r.header("transfer-encoding"), "chunked")
            ev = sse_events(r.body)
            self.assertEqual(len(r.chunks), 4 + 2)  # one chunk per event
            self.assertEqual(ev[-1], "[DONE]")
            tokens = [json.loads(e) for e in ev[:4]]
            for i, t in enumerate(tokens):
                self.assertEqual(t["object"], "chat.completion.chunk")
                self.assertEqual(t["model"], "mock-llm")
                self.assertEqual(t["id"], tokens[0]["id"])
                delta = t["choices"][0]["delta"]
                self.assertEqual(len(delta["content"]), 4)
                self.assertEqual("role" in delta, i == 0)
                self.assertEqual(t["choices"][0]["finish_reason"], "length" if i == 3 else None)
            usage = json.loads(ev[4])
            self.assertEqual(usage["choices"], [])
            # "You are terse. Hi there" = 23 bytes = 6 tokens
            self.assertEqual(usage["usage"]["prompt_tokens"], 6)
            self.assertEqual(usage["usage"]["completion_tokens"], 4)
            # the connection stays usable: a second request on it
            r = c.request("POST", "/v1/chat/completions", None,
                          json.dumps({"messages": [{"content": "x"}], "max_tokens": 2}).encode())
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()["object"], "chat.completion")
            self.assertEqual(r.json()["choices"][0]["message"]["role"], "assistant")

    def test_prefix_cache_hit_is_faster(self):
        m = self.mock(prefill_us_per_token=PREFILL_US, decode_us_per_token=1000)
        prompt = "".join("w%03d" % (i % 1000) for i in range(2000))  # 8000 bytes, 2000 tokens
        doc = {"prompt": prompt, "max_tokens": 2, "stream": True,
               "stream_options": {"include_usage": True}}

        def run(d):
            s = Stream(m.port, "/v1/completions", d)
            r = s.join()
            self.assertEqual(r.status, 200)
            usage = json.loads(sse_events(r.body)[-2])["usage"]
            return s.ttft(), usage

        cold, u1 = run(doc)
        self.assertEqual(u1["prompt_tokens_details"]["cached_tokens"], 0)
        self.assertGreaterEqual(cold, 2000 * PREFILL_US / 1e6)  # 0.4 s of prefill
        warm, u2 = run(doc)
        # 125 full blocks cached; the last token is always computed
        self.assertEqual(u2["prompt_tokens_details"]["cached_tokens"], 1999)
        self.assertLess(warm, cold / 2, (warm, cold))
        # a prompt sharing the first 1000 tokens: 62 full blocks of 16 hit
        other = dict(doc, prompt=prompt[:4000] + "z" * 4000)
        _, u3 = run(other)
        self.assertEqual(u3["prompt_tokens_details"]["cached_tokens"], 62 * 16)
        # the next turn of a conversation (prompt + the answer + more) hits
        # the answer's blocks too
        turn1 = {"prompt": prompt, "max_tokens": 32}
        r = harness.http_once(m.port, "POST", "/v1/completions", None,
                              json.dumps(turn1).encode(), timeout=10)
        answer = r.json()["choices"][0]["text"]
        turn2 = {"prompt": prompt + answer + "next question", "max_tokens": 1}
        r = harness.http_once(m.port, "POST", "/v1/completions", None,
                              json.dumps(turn2).encode(), timeout=10)
        self.assertEqual(r.json()["usage"]["prompt_tokens_details"]["cached_tokens"],
                         (2000 + 32) // 16 * 16)
        got = metrics(m.port)
        self.assertGreater(got["vllm:prefix_cache_hits_total"], 0)
        self.assertLessEqual(got["vllm:prefix_cache_hits_total"],
                             got["vllm:prefix_cache_queries_total"])

    def test_batching_limit_and_load_header(self):
        m = self.mock(max_batch=2, prefill_us_per_token=PREFILL_US, decode_us_per_token=20000)
        hdr = {"endpoint-load-metrics-format": "text"}
        # a: 8000 uncached tokens, its first step alone takes 1.6 s; b, c, d
        # (and e) arrive meanwhile and wait
        a = Stream(m.port, "/v1/completions",
                   {"prompt": "q" * 32000, "max_tokens": 20, "stream": True}, hdr)
        harness.wait_for(lambda: metrics(m.port)["vllm:num_requests_running"] == 1,
                         what="a running")
        rest = [Stream(m.port, "/v1/completions",
                       {"prompt": "p%d" % i, "max_tokens": 10, "stream": True})
                for i in range(3)]
        harness.wait_for(lambda: metrics(m.port)["vllm:num_requests_waiting"] == 3,
                         what="b, c, d waiting")
        # a streamed answer's head goes out as soon as the request is queued:
        # e's says b, c, d and e itself wait
        e = Stream(m.port, "/v1/completions",
                   {"prompt": "e", "max_tokens": 10, "stream": True}, hdr)
        # after a's prefill step: two run, the others wait (one scrape is one
        # instant of the replica: running + waiting + finished = 5)
        got = harness.wait_for(lambda: (lambda g: g if g["vllm:num_requests_running"] == 2 else None)
                               (metrics(m.port)), what="two running")
        self.assertEqual(got["vllm:num_requests_waiting"],
                         5 - 2 - got["vllm:request_success_total"], got)
        self.assertGreater(got["vllm:gpu_cache_usage_perc"], 0)
        self.assertLessEqual(got["vllm:gpu_cache_usage_perc"], 1)
        # until every stream has ended, the batch never holds more than 2
        running = []
        while any(s.th.is_alive() for s in [a, e] + rest):
            running.append(metrics(m.port)["vllm:num_requests_running"])
        self.assertEqual(max(running), 2, running)
        ra, re_ = a.join(), e.join()
        rs = [s.join() for s in rest]
        for r in [ra, re_] + rs:
            self.assertEqual(r.status, 200)
            self.assertEqual(len(sse_events(r.body)), 21 if r is ra else 11)
        self.assertRegex(ra.header("endpoint-load-metrics"),
                         r"^TEXT named_metrics\.kv_cache_usage_perc=0\.\d{4}, "
                         r"named_metrics\.num_requests_waiting=0\.0$")
        self.assertRegex(re_.header("endpoint-load-metrics"),
                         r"^TEXT named_metrics\.kv_cache_usage_perc=0\.\d{4}, "
                         r"named_metrics\.num_requests_waiting=4\.0$")
        self.assertIsNone(rs[0].header("endpoint-load-metrics"))
        self.assertEqual(metrics(m.port)["vllm:request_success_total"], 5)
        # JSON form
        r = harness.http_once(m.port, "POST", "/v1/chat/completions",
                              {"endpoint-load-metrics-format": "JSON"},
                              json.dumps({"messages": [{"content": "x"}], "max_tokens": 1}).encode())
        h = r.header("endpoint-load-metrics")
        self.assertTrue(h.startswith("JSON "), h)
        nm = json.loads(h[5:])["named_metrics"]
        self.assertEqual(set(nm), {"kv_cache_usage_perc", "num_requests_waiting"})
        self.assertTrue(0 <= nm["kv_cache_usage_perc"] <= 1)
        self.assertEqual(nm["num_requests_waiting"], 0)

    def test_kv_usage_counts_shared_blocks_once(self):
        # vLLM's kv_cache_usage_perc: blocks held by running sequences, a
        # prefix block shared by two of them counted once; cached blocks no
        # running sequence holds are free. Two prompts of 100 shared full
        # blocks (16 tokens = 64 bytes each) + 1 token of their own: 101
        # blocks each, 102 distinct, of 1000.
        m = self.mock(kv_blocks=1000, max_batch=4, prefill_us_per_token=10,
                      decode_us_per_token=100000)
        common = "s" * 6400
        ss = [Stream(m.port, "/v1/completions",
                     {"prompt": common + tail, "max_tokens": 10, "stream": True})
              for tail in ("xa", "yb")]
        got = harness.wait_for(lambda: (lambda g: g if g["vllm:num_requests_running"] == 2 else None)
                               (metrics(m.port)), what="both running")
        self.assertAlmostEqual(got["vllm:kv_cache_usage_perc"], 0.102, places=6, msg=got)
        self.assertEqual(got["vllm:gpu_cache_usage_perc"], got["vllm:kv_cache_usage_perc"])
        for s in ss:
            self.assertEqual(s.join().status, 200)
        # idle, with the prefix cached: nothing held
        got = metrics(m.port)
        self.assertEqual(got["vllm:num_requests_running"], 0)
        self.assertEqual(got["vllm:kv_cache_usage_perc"], 0)

    def test_metrics_and_models(self):
        m = self.mock(model="llama-x", decode_us_per_token=100)
        got = metrics(m.port)
        for name in ("vllm:num_requests_running", "vllm:num_requests_waiting",
                     "vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc",
                     "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"):
            self.assertIn(name, got)
            self.assertEqual(got[name], 0)
        r = harness.http_once(m.port, "GET", "/metrics")
        for name, labels, _ in harness.parse_metrics(r.body.decode()):
            self.assertEqual(labels, {"model_name": "llama-x"}, name)
        harness.http_once(m.port, "POST", "/v1/completions", None,
                          json.dumps({"prompt": "a" * 100, "max_tokens": 3}).encode())
        got = metrics(m.port)
        self.assertEqual(got["vllm:prefix_cache_queries_total"], 25)
        self.assertEqual(got["vllm:generation_tokens_total"], 3)
        self.assertEqual(got["vllm:request_success_total"], 1)
        r = harness.http_once(m.port, "GET", "/v1/models")
        self.assertEqual(r.json()["data"][0]["id"], "llama-x")
        # other paths keep the echo behaviour of the plain mock
        r = harness.http_once(m.port, "GET", "/other")
        self.assertEqual(r.json()["path"], "/other")
        self.assertEqual(m.stats()["served"], 2)  # the completion and /other

    def test_bad_input(self):
        m = self.mock()
        cases = [
            ("POST", "/v1/completions", b"{not json", 400, "not valid JSON"),
            ("POST", "/v1/completions", b"[1]", 400, "JSON object"),
            ("POST", "/v1/completions", b'{"prompt": 3}', 400, '"prompt"'),
            ("POST", "/v1/chat/completions", b'{"messages": []}', 400, '"messages"'),
            ("POST", "/v1/chat/completions", b'{"messages": [{"content": 5}]}', 400, '"content"'),
            ("POST", "/v1/completions", b'{"prompt": "x", "max_tokens": 0}', 400, '"max_tokens"'),
            ("POST", "/v1/completions", b'{"prompt": "x", "max_tokens": 1.5}', 400, '"max_tokens"'),
            ("POST", "/v1/completions", b'{"prompt": "x", "stream": "yes"}', 400, '"stream"'),
            ("GET", "/v1/completions", None, 405, "POST"),
        ]
        with harness.Client(m.port) as c:
            for method, path, body, status, text in cases:
                r = c.request(method, path, None, body)
                self.assertEqual(r.status, status, (body, r.body))
                self.assertIn(text, r.json()["error"]["message"], body)
            big = b'{"prompt": "' + b"x" * (8 << 20) + b'"}'
            r = c.request("POST", "/v1/completions", None, big, timeout=20)
            self.assertEqual(r.status, 413)
        p = subprocess.run([harness.mock_bin(), "--llm", "--threads", "2"],
                           capture_output=True, timeout=10)
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"--llm needs --threads 1", p.stderr)

    def test_client_gone_frees_its_slot(self):
        m = self.mock(max_batch=1, decode_us_per_token=20000)
        s = socket.create_connection(("127.0.0.1", m.port))
        s.sendall(build_request("POST", "/v1/completions", None,
                                json.dumps({"prompt": "x", "max_tokens": 1000,
                                            "stream": True}).encode()))
        harness.wait_for(lambda: metrics(m.port)["vllm:num_requests_running"] == 1)
        s.close()
        harness.wait_for(lambda: metrics(m.port)["vllm:num_requests_running"] == 0,
                         what="slot freed")
        r = harness.http_once(m.port, "POST", "/v1/completions", None,
                              json.dumps({"prompt": "x", "max_tokens": 2}).encode())
        self.assertEqual(r.status, 200)

    def test_llm_load_smoke(self):
        """bench/llm-load (the llm benchmark's client) drives a real replica and
        prints its summary line: every request completed, none failed, and the
        replicas' hit rate comes from their /metrics."""
        a = self.mock(decode_us_per_token=1000, prefill_us_per_token=20)
        exe = os.path.join(harness.REPO, "bench", "llm-load")
        p = subprocess.run([sys.executable, exe, "--url", "http://127.0.0.1:%d" % a.port,
                            "--users", "4", "--warmup", "0.5", "--duration", "1.5",
                            "--metrics-url", "http://127.0.0.1:%d/metrics" % a.port],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        doc = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertGreater(doc["completed"], 4)
        self.assertEqual(doc["errors"], 0, doc["errors_by_kind"])
        self.assertGreater(doc["ttft_ms"]["p50"], 0)
        self.assertGreater(doc["itl_ms"]["p50"], 0)
        self.assertEqual(doc["same_replica_frac"], 1.0)  # one replica
        self.assertTrue(0 < doc["replica_hit_rate"] < 1, doc)


if __name__ == "__main__":
    harness.main()
