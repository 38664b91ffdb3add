"""The `llm` scenario of bench/compare: inference-aware routing policies against
HAProxy and nginx on LLM replicas, driven by bench/llm-load instead of wrk.

    bench/compare --scenario llm [--duration 30] [--warmup 10] [--rounds 3]
                  [--only ringroute-prefix,ringroute-least-load,ringroute-p2c,haproxy,nginx]
                  [--connections USERS] [--think-ms MS] [--json out.json]

Replicas: LLM_REPLICAS x `mock-replica --llm` with its default cost model (batch 8,
2,048-block KV cache of 16 tokens, prefill 200 us per uncached token, decode 10 ms a
step; bench/README-mock.md). Contenders, the same replicas for all:

* ringroute-prefix      backend "policy": "prefix" (prompt prefix affinity)
* ringroute-least-load  backend "policy": "least_load", "load_reports": true
* ringroute-p2c         backend "policy": "p2c" (ringroute's default)
* haproxy               balance leastconn, option http-no-delay (tokens not held back)
* nginx                 least_conn, proxy_buffering off (SSE must flow)

No proxy caps or queues in front of the replicas (ringroute's cap is high, HAProxy and
nginx have none): the replicas' own batch and FIFO decide, as vLLM's do. A ringroute
build that refuses a contender's policy (the config is rejected at start) is reported
as "policy X not supported by this build" and the others run.

Each measured run: every replica's KV cache and counters are emptied (POST
/-/llm/reset), then bench/llm-load runs --warmup seconds unmeasured and --duration
seconds measured (--connections = its --users, default 48), reading the replicas'
/metrics at the window's edges for the prefix cache hit rate. Runs alternate A B C A B
C ... like the other scenarios; the table shows medians over rounds, and the issue's
goals: prefix TTFT p99 <= 0.5x haproxy's, completed req/s >= 1.3x haproxy's.

bench/compare imports this module and calls register(compare_module): the scenario
and its contenders are added to compare's tables; run() is the scenario's own loop.
"""

import json
import os
import statistics
import subprocess
import sys

LLM_REPLICAS = 4
LLM_USERS = 48
LLM_PATH = "/v1/chat/completions"
GOAL_TTFT_P99 = 0.5   # ringroute-prefix TTFT p99 at most this x haproxy's
GOAL_RPS = 1.3        # ringroute-prefix completed req/s at least this x haproxy's
CONTENDERS = ("ringroute-prefix", "ringroute-least-load", "ringroute-p2c", "haproxy", "nginx")
POLICY = {"ringroute-prefix": "prefix", "ringroute-least-load": "least_load",
          "ringroute-p2c": "p2c"}

C = None  # the bench/compare module, set by register()


def ringroute_config(replicas, policy):
    be = {"max_ongoing_requests": 1000, "max_queued_requests": 100000,
          "queue_timeout_ms": 60000, "request_timeout_ms": 60000, "policy": policy,
          "replicas": {r.name: r.addr for r in replicas}}
    if policy == "least_load":
        be["load_reports"] = True
    return {"backends": {"b": be}, "endpoints": {"all": {"route": "/", "traffic": {"b": 1}}}}


def policy_refused(err, policy):
    """Did ringroute refuse this policy's config (an older build)? Its config errors
    name the JSON path: backends.b.policy, or an unknown key such as load_reports."""
    text = str(err)
    return "exited" in text and ("policy" in text or "load_reports" in text)


def scenario_llm(args):
    s = C.Scenario(
        "llm",
        f"{LLM_REPLICAS} mock-replica --llm (batch 8, KV cache 2048 x 16 tokens, prefill "
        "200 us/uncached token, decode 10 ms/step), bench/llm-load multi-turn chats with "
        "Zipf-popular system prompts, closed loop",
        replicas=[(f"r{i}", ["--llm"]) for i in range(1, LLM_REPLICAS + 1)],
        connections=args.connections or LLM_USERS,
        backend=C.Backend(cap=None, rr_cap=1000, balance="leastconn"),
        proxies=CONTENDERS)
    for name, policy in POLICY.items():
        s.configs[name] = (lambda p: lambda reps: ringroute_config(reps, p))(policy)
    # what an operator sets for SSE: nginx would otherwise buffer the stream, HAProxy
    # would hold small chunks back (MSG_MORE) and deliver tokens in bursts
    s.nginx_location_extra = "proxy_buffering off;"
    s.haproxy_defaults_extra = "option http-no-delay"
    s.run = lambda a: run(a, s)
    return s


def make_ringroute(name):
    class RR(C.RingRoute):
        pass
    RR.name = name
    RR.__name__ = "RingRoute_" + POLICY[name]
    RR.__doc__ = f"llm scenario: ringroute with policy {POLICY[name]}"
    return RR


def register(c):
    """Called by bench/compare once its tables exist."""
    global C
    C = c
    c.SCENARIOS["llm"] = scenario_llm
    for name in POLICY:
        c.PROXIES[name] = make_ringroute(name)


def check_stream(proxy):
    """One streamed chat completion through the proxy: 200, text/event-stream, every
    token event and the final [DONE] (a proxy that mangles SSE fails here, not in
    the middle of a round)."""
    body = json.dumps({"model": "mock-llm", "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": 3, "stream": True}).encode()
    conn = C.http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        conn.request("POST", LLM_PATH, body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        ctype = r.getheader("Content-Type") or ""
    except (OSError, C.http.client.HTTPException) as e:
        raise C.BenchError(f"{proxy.name}: streamed request failed: {e!r}")
    finally:
        conn.close()
    events = [e for e in data.split(b"\n\n") if e]
    if r.status != 200 or not ctype.startswith("text/event-stream") or \
            len(events) != 4 or events[-1] != b"data: [DONE]":
        raise C.BenchError(f"{proxy.name}: streamed request -> {r.status} {ctype!r} "
                           f"{data[:300]!r}")


def reset_replicas(replicas):
    for r in replicas:
        status, body = C.http_request(r.port, "POST", "/-/llm/reset", body=b"")
        if status != 200:
            raise C.BenchError(f"replica {r.name}: POST /-/llm/reset -> {status} {body[:100]!r}")


def run_load(args, scenario, proxy, replicas):
    exe = os.path.join(C.HERE, "llm-load")
    argv = [sys.executable, exe, "--url", f"http://127.0.0.1:{proxy.port}",
            "--users", str(scenario.connections), "--duration", str(args.duration),
            "--warmup", str(args.warmup), "--seed", "1", "--think-ms", f"{args.think_ms:g}"]
    for r in replicas:
        argv += ["--metrics-url", f"http://127.0.0.1:{r.port}/metrics"]
    cpu0 = C.proc_tree_cpu(proxy.proc.pid)
    p = subprocess.run(argv, capture_output=True, text=True,
                       timeout=args.duration + args.warmup + 120)
    cpu1 = C.proc_tree_cpu(proxy.proc.pid)
    if p.returncode != 0:
        raise C.BenchError(f"llm-load exited {p.returncode}: {p.stderr.strip()[-500:]}")
    if not proxy.proc.alive() or cpu0 is None or cpu1 is None:
        raise C.BenchError(f"{proxy.name} died during the run: {proxy.proc.describe_exit()}")
    doc = json.loads(p.stdout.strip().splitlines()[-1])
    doc["cpu_s"] = cpu1 - cpu0
    return doc


def med(runs, *keys):
    vals = []
    for r in runs:
        v = r
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        if v is not None:
            vals.append(v)
    return statistics.median(vals) if vals else None


def summarize(runs):
    if not runs:
        return None
    completed = sum(r["completed"] for r in runs)
    return {
        "rounds": len(runs),
        "rps": med(runs, "rps"),
        "ttft_p50_ms": med(runs, "ttft_ms", "p50"), "ttft_p99_ms": med(runs, "ttft_ms", "p99"),
        "itl_p50_ms": med(runs, "itl_ms", "p50"), "itl_p99_ms": med(runs, "itl_ms", "p99"),
        "hit_rate": med(runs, "replica_hit_rate"),
        "same_replica": med(runs, "same_replica_frac"),
        "errors": sum(r["errors"] for r in runs),
        "completed": completed,
        "cpu_ms_per_req": (sum(r["cpu_s"] for r in runs) / completed * 1e3) if completed else None,
    }


def fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def goals(summary):
    pre, hap = summary.get("ringroute-prefix"), summary.get("haproxy")
    if not pre or not hap or not hap["ttft_p99_ms"] or not hap["rps"]:
        return None
    t = pre["ttft_p99_ms"] / hap["ttft_p99_ms"]
    r = pre["rps"] / hap["rps"]
    return {"ttft_p99_ratio": t, "rps_ratio": r,
            "ttft_pass": t <= GOAL_TTFT_P99, "rps_pass": r >= GOAL_RPS}


def report(args, scenario, summary, failed, versions, info):
    print(f"machine: {info['nproc']} CPUs ({info['usable_cpus']} usable), "
          f"{info['cpu_model'] or 'unknown CPU'}, Linux {info['kernel']}")
    if info.get("busy_cpus_before", 0) > 0.2:
        print(f"WARNING: machine not idle: {info['busy_cpus_before']:.2f} CPUs busy before "
              "the benchmark started; numbers are noisy")
    print("peers:   " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    print(f"scenario llm: {scenario.description}")
    print(f"load:    bench/llm-load --users {scenario.connections} --warmup {args.warmup:g} "
          f"--duration {args.duration:g} --seed 1 --think-ms {args.think_ms:g}, "
          f"{args.rounds} rounds alternating, "
          "KV caches emptied before every run")
    print()
    cols = ["proxy", "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms",
            "completed req/s", "prefix hit rate", "same replica", "errors", "CPU ms/req"]
    rows = []
    for name, s in summary.items():
        if s is None:
            why = failed.get(name, "")
            rows.append([name, "unsupported" if "not supported by this build" in why
                         else "FAILED"] + [""] * (len(cols) - 2))
            continue
        rows.append([name, fmt(s["ttft_p50_ms"]), fmt(s["ttft_p99_ms"]), fmt(s["itl_p50_ms"]),
                     fmt(s["itl_p99_ms"]), fmt(s["rps"], ".2f"),
                     fmt(s["hit_rate"] * 100 if s["hit_rate"] is not None else None) + "%",
                     fmt(s["same_replica"] * 100 if s["same_replica"] is not None else None) + "%",
                     str(s["errors"]), fmt(s["cpu_ms_per_req"], ".3f")])
    C.print_table(cols, rows)
    print()
    print("medians over rounds; TTFT: request sent to first content chunk; ITL: gaps "
          "between content chunks; completed req/s: streams finished inside the window; "
          "prefix hit rate: cached / queried prompt tokens at the replicas (their /metrics); "
          "same replica: later turns of a conversation served where its previous turn was")
    for name, why in failed.items():
        print(f"{name}: {why}")
    g = goals(summary)
    print()
    if g:
        print(f"goal ringroute-prefix TTFT p99 <= {GOAL_TTFT_P99}x haproxy's: "
              f"x{g['ttft_p99_ratio']:.2f} {'yes' if g['ttft_pass'] else 'NO'}")
        print(f"goal ringroute-prefix completed req/s >= {GOAL_RPS}x haproxy's: "
              f"x{g['rps_ratio']:.2f} {'yes' if g['rps_pass'] else 'NO'}")
    else:
        print("goals: not evaluated (needs ringroute-prefix and haproxy measured)")
    return g


def run(args, scenario):
    """bench/compare's main loop for this scenario. Returns the exit status."""
    for tool in [p for p in ("nginx", "haproxy") if p in args.only]:
        if not C.shutil.which(tool) and not os.access(f"/usr/sbin/{tool}", os.X_OK):
            raise C.BenchError(f"{tool} not found in PATH")
    if args.replica_server != "mock":
        raise C.BenchError("--scenario llm needs mock replicas (mock-replica --llm)")
    if not os.access(os.path.join(args.build, "mock-replica"), os.X_OK):
        raise C.BenchError(f"{args.build}/mock-replica not found (pass --build DIR)")
    C.raise_nofile(4 * scenario.connections + 512)
    info = C.machine_info()
    info["busy_cpus_before"] = round(C.cpu_busy_fraction(), 3)
    tmpdir = C.tempfile.mkdtemp(prefix="rr-bench-llm-")
    procs = C.Procs(tmpdir)
    failed, versions = {}, {"replicas": "mock-replica --llm"}
    runs = {name: [] for name in args.only}
    try:
        C.log(f"[compare] temp dir {tmpdir}")
        replicas = C.start_replicas(procs, args.build, scenario.replicas, None)
        C.log("[compare] replicas: " + ", ".join(f"{r.name}={r.addr}" for r in replicas))
        proxies = []
        for name in args.only:
            p = C.PROXIES[name](procs, tmpdir, args.build, None)
            try:
                p.start(scenario, replicas)
                p.check(scenario, replicas)
                check_stream(p)
            except C.BenchError as e:
                if name in POLICY and policy_refused(e, POLICY[name]):
                    failed[name] = f"policy {POLICY[name]} not supported by this build"
                else:
                    failed[name] = f"failed to start or to proxy correctly: {e}"
                C.log(f"[compare] {name}: {failed[name]}")
                if p.proc and p.proc.alive():
                    procs.items.remove(p.proc)
                    p.proc.kill()
                continue
            versions[name] = p.version() or (f"policy {POLICY[name]}" if name in POLICY else "")
            C.log(f"[compare] {name} up on 127.0.0.1:{p.port} (pid {p.proc.pid})")
            proxies.append(p)
        if not proxies:
            raise C.BenchError("no contender could be started: " + "; ".join(
                f"{k}: {v}" for k, v in failed.items()))
        for rnd in range(1, args.rounds + 1):
            for p in proxies:
                if p.name in failed:
                    continue
                try:
                    reset_replicas(replicas)
                    rec = run_load(args, scenario, p, replicas)
                except (C.BenchError, subprocess.TimeoutExpired, ValueError) as e:
                    failed[p.name] = f"round {rnd}: {e}"
                    C.log(f"[compare] {p.name} FAILED in round {rnd}: {e}")
                    continue
                rec["round"] = rnd
                runs[p.name].append(rec)
                C.log(f"[compare] round {rnd}/{args.rounds} {p.name:<20} "
                      f"{rec['rps']:7.2f} req/s  TTFT p50 {fmt(rec['ttft_ms']['p50'])} "
                      f"p99 {fmt(rec['ttft_ms']['p99'])} ms  ITL p99 "
                      f"{fmt(rec['itl_ms']['p99'])} ms  hit {fmt(rec['replica_hit_rate'], '.3f')}"
                      f"  same replica {fmt(rec['same_replica_frac'], '.3f')}"
                      f"  errors {rec['errors']}")
        summary = {name: summarize(runs[name]) for name in args.only}
        g = report(args, scenario, summary, failed, versions, info)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": info, "versions": versions,
                           "scenario": {"name": "llm", "description": scenario.description,
                                        "replicas": scenario.replicas,
                                        "users": scenario.connections},
                           "args": vars(args), "runs": runs, "summary": summary,
                           "goals": g, "failed": failed}, f, indent=2)
            C.log(f"[compare] raw numbers written to {args.json}")
        # a policy this build lacks is reported, not a failure of the benchmark
        hard = [n for n, why in failed.items() if "not supported by this build" not in why]
        return 1 if hard else 0
    finally:
        procs.kill_all()
        if args.keep_tmp:
            C.log(f"[compare] kept {tmpdir}")
        else:
            C.shutil.rmtree(tmpdir, ignore_errors=True)
