#!/usr/bin/env python3
"""Routing by model and model_rewrite (issue 11 part 1; docs/config.md
"Routing by model").

The replicas are upstreams in this process that answer with what they
received: their id, the body, and the framing headers, so the test sees
the bytes ringroute forwarded. Bodies are real OpenAI-style JSON, sent
with Content-Length and chunked.

* The body's top-level "model" picks the endpoint among those sharing a
  route; the model header wins over the body; a "model" in a nested
  object does not count; a model nobody names goes to the catch-all, or
  is a 404 naming it (reason no_model) where there is none.
* A body longer than route_body_max_bytes routes without a model.
* Expect: 100-continue is answered by ringroute (the body is held before
  a replica is chosen).
* model_rewrite: the replica gets the body with the new model and the
  right Content-Length; a chunked body is forwarded with a Content-Length;
  a retry and a shadow copy carry the rewritten body too.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, build_request, endpoint  # noqa: E402


class Echo(harness.GatedUpstream):
    """Answers {"id", "body", "cl", "te"}; status 503 while fail503 > 0."""

    def __init__(self, id, fail503=0):
        super().__init__(id)
        self.fail503 = fail503

    def answer(self, req):
        if self.fail503 > 0:
            self.fail503 -= 1
            return b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
        hd = req["hdict"]
        body = json.dumps({"id": self.id, "body": req["body"].decode("utf-8", "replace"),
                           "cl": hd.get("content-length"),
                           "te": hd.get("transfer-encoding")}).encode()
        return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)) + body


def chunked(body, size=7):
    out = b""
    for i in range(0, len(body), size):
        part = body[i:i + size]
        out += b"%x\r\n%s\r\n" % (len(part), part)
    return out + b"0\r\n\r\n"


def chat(model=None, nested=None, pad=0):
    d = {}
    if nested is not None:
        d["options"] = {"model": nested, "list": [{"model": nested}]}
    if model is not None:
        d["model"] = model
    d["messages"] = [{"role": "user", "content": "hello \"there\" " + "x" * pad}]
    return json.dumps(d).encode()


class ModelTest(harness.RRTestCase):
    def setUp(self):
        super().setUp()
        self.ups = {n: self.upstream(Echo(n)) for n in ("a", "b1", "b2", "d", "s")}
        self.ups["b1"].fail503 = 0
        u = self.ups
        cfg = {"backends": {
            "A": backend({"a": u["a"].addr}, load_reports=True),
            "B": backend({"b1": u["b1"].addr, "b2": u["b2"].addr}, model_rewrite="beta-lora",
                         retry_on=["503"], retries=2),
            "D": backend({"d": u["d"].addr}),
            "S": backend({"s": u["s"].addr}),
        }, "endpoints": {
            "alpha": endpoint("/v1/chat", {"A": 1}, models=["alpha", "alpha2"],
                              route_body_max_bytes=400),
            "beta": endpoint("/v1/chat", {"B": 1}, models=["beta"], shadow={"S": 1.0},
                             route_body_max_bytes=400),
            "default": endpoint("/v1/chat", {"D": 1}, route_body_max_bytes=400),
            "only": endpoint("/v2", {"A": 1}, models=["alpha"]),
        }}
        self.rr = self.ringroute(cfg, shards=2)

    def post(self, path, body, headers=(), chunk=False):
        hs = [("Content-Type", "application/json")] + list(headers)
        with harness.Client(self.rr.port) as c:
            if chunk:
                hs.append(("Transfer-Encoding", "chunked"))
                c.send(build_request("POST", path, hs, chunked(body)))
                return c.read_response("POST")
            return c.request("POST", path, hs, body)

    def routed(self, body, headers=(), path="/v1/chat"):
        ids = set()
        for chunk in (False, True):
            r = self.post(path, body, headers, chunk)
            self.assertEqual(r.status, 200, r)
            ids.add(r.json()["id"].rstrip("12"))  # b1, b2: backend B
        self.assertEqual(len(ids), 1, "Content-Length and chunked went apart: %r" % ids)
        return ids.pop()

    def test_body_model_picks_the_endpoint(self):
        self.assertEqual(self.routed(chat("alpha")), "a")
        self.assertEqual(self.routed(chat("alpha2")), "a")
        self.assertEqual(self.routed(chat("beta")), "b")
        self.assertEqual(self.routed(chat("gamma")), "d", "catch-all")
        self.assertEqual(self.routed(chat(None)), "d", "no model: catch-all")
        # Escapes decode before the comparison.
        self.assertEqual(self.routed(b'{"model": "alph\\u0061", "prompt": "x"}'), "a")

    def test_held_head_load_format(self):
        # The backend is chosen after the head was written (open): its
        # load format is added then; the client's passes elsewhere.
        hs = [("Endpoint-Load-Metrics-Format", "json")]
        self.assertEqual(self.routed(chat("alpha"), hs), "a")
        got = [v for k, v in self.ups["a"].requests[-1]["headers"]
               if k.lower() == "endpoint-load-metrics-format"]
        self.assertEqual(got, ["text"])
        self.assertEqual(self.routed(chat("gamma"), hs), "d")
        got = [v for k, v in self.ups["d"].requests[-1]["headers"]
               if k.lower() == "endpoint-load-metrics-format"]
        self.assertEqual(got, ["json"])

    def test_header_wins_over_body(self):
        self.assertEqual(self.routed(chat("alpha"), [("X-Model", "beta")]), "b")
        self.assertEqual(self.routed(chat("beta"), [("X-Model", "alpha")]), "a")

    def test_nested_model_does_not_count(self):
        self.assertEqual(self.routed(chat(None, nested="alpha")), "d")
        self.assertEqual(self.routed(chat("alpha", nested="beta")), "a")

    def test_not_json_routes_without_a_model(self):
        self.assertEqual(self.routed(b"model=alpha"), "d")
        self.assertEqual(self.routed(b'["model", "alpha"]'), "d")

    def test_no_endpoint_for_the_model_is_404(self):
        for chunk in (False, True):
            r = self.post("/v2", chat("gamma"), chunk=chunk)
            self.assertEqual(r.status, 404, r)
            self.assertIn('no endpoint for model \\"gamma\\"', r.body.decode(), r)
        r = self.post("/v2", chat(None))
        self.assertEqual(r.status, 404, r)
        self.assertEqual(self.routed(chat("alpha"), path="/v2"), "a")

    def test_body_beyond_route_body_max_bytes_routes_without_model(self):
        big = chat("alpha", pad=600)
        self.assertGreater(len(big), 400)
        r = self.post("/v1/chat", big)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["id"], "d")
        self.assertEqual(r.json()["body"].encode(), big, "the body went through whole")
        r = self.post("/v1/chat", big, chunk=True)
        self.assertEqual(r.json()["id"], "d")
        self.assertEqual(r.json()["body"].encode(), big)

    def test_expect_100_continue_is_answered(self):
        body = chat("alpha")
        with harness.Client(self.rr.port) as c:
            c.send(build_request("POST", "/v1/chat",
                                 [("Content-Length", str(len(body))),
                                  ("Expect", "100-continue")]))
            r = c.read_response("POST", skip_1xx=False)
            self.assertEqual(r.status, 100, r)
            c.send(body)
            r = c.read_response("POST")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["id"], "a")
            self.assertEqual(r.json()["body"].encode(), body)

    def check_rewritten(self, r, original):
        self.assertEqual(r.status, 200, r)
        j = r.json()
        fwd = json.loads(j["body"])
        want = json.loads(original)
        want["model"] = "beta-lora"
        self.assertEqual(fwd, want)
        self.assertEqual(int(j["cl"]), len(j["body"].encode()))
        self.assertIsNone(j["te"], "a chunked body is forwarded with a Content-Length")

    def test_model_rewrite(self):
        body = chat("beta")
        for chunk in (False, True):
            self.check_rewritten(self.post("/v1/chat", body, chunk=chunk), body)
        # By the header too: the body's model is rewritten all the same.
        body = chat("whatever")
        self.check_rewritten(self.post("/v1/chat", body, [("X-Model", "beta")]), body)

    def test_retry_and_shadow_carry_the_rewritten_body(self):
        body = chat("beta")
        for chunk in (False, True):
            n_shadow = len(self.ups["s"].requests)
            before = len(self.ups["b1"].requests) + len(self.ups["b2"].requests)
            self.ups["b1"].fail503 = 1
            self.ups["b2"].fail503 = 1
            r = self.post("/v1/chat", body, chunk=chunk)
            # Both replicas said 503 once: three tries, the last one answered.
            self.check_rewritten(r, body)
            tried = self.ups["b1"].requests + self.ups["b2"].requests
            self.assertEqual(len(tried) - before, 3)
            for t in self.ups["b1"].requests[-1:] + self.ups["b2"].requests[-1:]:
                self.assertEqual(json.loads(t["body"])["model"], "beta-lora")
                self.assertEqual(int(t["hdict"]["content-length"]), len(t["body"]))
            self.ups["b1"].fail503 = self.ups["b2"].fail503 = 0
            self.ups["s"].wait_requests(n_shadow + 1)
            sb = self.ups["s"].requests[-1]
            self.assertEqual(json.loads(sb["body"])["model"], "beta-lora", "shadow copy")
            self.assertEqual(int(sb["hdict"]["content-length"]), len(sb["body"]))


class HoldLimitsTest(harness.RRTestCase):
    """A held body that does not come, and one larger than a retry keeps."""

    def setUp(self):
        super().setUp()
        self.up = self.upstream(Echo("a"))
        cfg = {"backends": {"A": backend({"a": self.up.addr}, model_rewrite="big-lora",
                                         max_ongoing_requests=1, queue_timeout_ms=10000)},
               "endpoints": {
                   "alpha": endpoint("/v1", {"A": 1}, models=["alpha"],
                                     route_body_max_bytes=4 << 20)}}
        self.rr = self.ringroute(cfg, admin=True, extra=["--header-timeout-ms", "300"])

    def test_short_body_times_out_408(self):
        with harness.Client(self.rr.port) as c:
            c.send(build_request("POST", "/v1", [("Content-Length", "100")]) + b'{"model": ')
            r = c.read_response("POST", timeout=5)
            self.assertEqual(r.status, 408, r)
            self.assertIn(b"request body not received in time", r.body)
            self.assertEqual(c.sock.recv(1), b"", "the connection closes")
        self.assertEqual(self.up.requests, [], "no replica saw it")

    def test_body_beyond_replay_max_is_held_and_rewritten(self):
        body = json.dumps({"model": "alpha", "prompt": "p" * (2 << 20)}).encode()
        for chunk in (False, True):
            with harness.Client(self.rr.port, timeout=20) as c:
                hs = [("Content-Type", "application/json")]
                if chunk:
                    c.send(build_request("POST", "/v1", hs + [("Transfer-Encoding", "chunked")],
                                         chunked(body, 65536)))
                    r = c.read_response("POST")
                else:
                    r = c.request("POST", "/v1", hs, body)
            self.assertEqual(r.status, 200, r)
            fwd = json.loads(r.json()["body"])
            self.assertEqual(fwd["model"], "big-lora")
            self.assertEqual(len(fwd["prompt"]), 2 << 20)
            self.assertEqual(int(r.json()["cl"]), len(body) + 3)

    def test_queued_request_sends_its_held_body(self):
        # Cap 1, one request held at the replica: the next one (its body
        # held and rewritten) waits in the queue, then goes whole.
        gate = self.client(self.rr.port, timeout=15)
        first = json.dumps({"model": "alpha", "prompt": "first"}).encode()
        gate.send(build_request("POST", "/v1", [("X-Gate", "g")], first))
        self.up.wait_requests(1)
        body = json.dumps({"model": "alpha", "prompt": "second"}).encode()
        c = self.client(self.rr.port, timeout=15)
        c.send(build_request("POST", "/v1", [("Transfer-Encoding", "chunked")], chunked(body)))
        harness.wait_for(lambda: harness.http_once(self.rr.admin_port, "GET", "/v1/queues")
                         .json()["backends"]["A"]["queued"] == 1, 5.0, "second queued",
                         interval=0.005)
        self.assertEqual(len(self.up.requests), 1, "the second waits for the slot")
        self.up.release("g")
        for cl in (gate, c):
            r = cl.read_response("POST")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(json.loads(r.json()["body"])["model"], "big-lora")
        self.assertEqual(json.loads(self.up.requests[1]["body"])["prompt"], "second")


if __name__ == "__main__":
    harness.main()
