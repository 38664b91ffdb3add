"""The `overload` scenario of bench/compare (issue 12 part 5): who goes next when the
replicas are driven at twice their capacity.

    bench/compare --scenario overload [--duration 10] [--warmup 3] [--rounds 1]
                  [--only ringroute,ringroute-fifo,haproxy,haproxy-abortonclose,nginx]

Replicas: REPLICAS mock-replicas with a fixed service time (--delay-ms SERVICE_MS, no
jitter), each capped at CAP requests by every proxy, so the capacity is
C = REPLICAS x CAP / service time (160 requests/s). bench/overload-load drives each
proxy open loop at LOAD x C with the class and tenant mix it documents (interactive /
batch / sheddable, a flooding tenant and NORMAL_TENANTS normal ones), each client
giving up at its deadline. Before every loaded run, an unloaded one (interactive only,
0.25 C) measures the interactive p99 with nothing queued, which the goal is relative to.

Contenders (alternated per round: A B C ... A B C ...):
* ringroute: the issue 12 features, per the fixed schema: the endpoint reads
  X-Request-Priority and X-Request-Timeout-Ms (defaults), fairness_header X-Tenant
  (weight 1 each), max_queued_per_tenant = a quarter of the queue, timeout_ms =
  the longest client deadline. A build that refuses those keys is reported as
  "this ringroute build lacks the queue features" and the others still run.
* ringroute-fifo: the same binary, priority_header and timeout_header null, no
  fairness: today's bounded FIFO (a build without the features gets the same config
  without those two keys, which is the same thing for it).
* haproxy: server maxconn CAP, its backend queue with `timeout queue` (no length bound:
  HAProxy has none per backend), balance leastconn.
* haproxy-abortonclose: the same plus `option abortonclose` (queued requests whose
  client left are dropped: HAProxy's best setting here).
* nginx: upstream max_conns CAP. Open-source nginx (nginx-light) has no upstream queue
  (`queue` is commercial): with every server at max_conns it answers 502 at once.

Both ringroute configs bound the queue at QUEUE_SECONDS x C requests (what the
replicas finish in 2 s) with queue_timeout_ms = the longest client deadline; HAProxy's
`timeout queue` is that deadline too. Decisions of the scenario, not tuned to results.

Goal checks (issue 12): goodput >= haproxy-abortonclose's; >= 99% of interactive
requests in time with p99 <= 1.5 x the unloaded p99; no normal tenant below 0.8 of its
fair share.

bench/compare hands run() its parsed arguments and itself (the module: processes,
replicas, proxies), so this file owns the scenario and compare only registers it.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LOAD_EXE = os.path.join(HERE, "overload-load")

# 16 slots of 100 ms: an ideal strict-priority scheduler must be able to meet the
# interactive goal (p99 <= 1.5 x unloaded). Non-preemptive, an interactive request
# waits for the next slot to free; simulating that ideal scheduler (slots always busy
# with batch, interactive Poisson at 0.4 C, served first) gives an interactive p99 of
# 1.47 x the service time with 8 slots (no room left for any proxy) and 1.28 x with 16.
REPLICAS = 4
CAP = 4
SERVICE_MS = 100.0
CAPACITY = REPLICAS * CAP * 1000.0 / SERVICE_MS  # requests/s
LOAD = 2.0                 # offered rate, multiple of the capacity
UNLOADED_LOAD = 0.25       # unloaded run: interactive only at this fraction of C
NORMAL_TENANTS = 4
LONGEST_DEADLINE_MS = 30000  # batch: the most patient client
QUEUE_SECONDS = 2.0
MAX_QUEUED = int(QUEUE_SECONDS * CAPACITY)
CONNECTIONS = 8192         # sockets a FIFO proxy may hold open (client side)
DRAIN_S = 1.5              # > the interactive deadline: every interactive fate is known
IDLE_WAIT_S = 60.0         # between runs: until the proxies' queues have drained
IDLE_QUIET_S = 0.5         # ... with no request at any replica for this long (10 services)
LAG_WARN_MS = 10.0         # generator lag p99 above this: the numbers are suspect

GOAL_INTERACTIVE = 0.99
GOAL_P99_FACTOR = 1.5
GOAL_TENANT = 0.8
# goodput "at least HAProxy's best": within this relative margin counts as equal, the
# round-to-round spread of goodput between two runs of the same proxy near capacity.
GOODPUT_TOLERANCE = 0.01
BEST_PEER = "haproxy-abortonclose"
NAMES = ("ringroute", "ringroute-fifo", "haproxy", "haproxy-abortonclose", "nginx")
LACKS = "this ringroute build lacks the queue features"


def ideal_interactive_p99_ms(slots=REPLICAS * CAP, service_ms=SERVICE_MS,
                             rate=0.2 * LOAD * CAPACITY, seconds=500.0, seed=1):
    """p99 (ms) of an interactive request's response time under the ideal scheduler
    of this scenario: every slot busy (the batch backlog never runs out), interactive
    requests Poisson at `rate`, served first (not preempting anyone) and FIFO among
    themselves, fixed service time. The lower bound no proxy can beat; with the
    defaults 1.28 x the service time (8 slots: 1.47 x)."""
    import heapq
    import random
    rng = random.Random(seed)
    svc = service_ms / 1000.0
    free = [rng.uniform(0, svc) for _ in range(slots)]  # when each slot frees next
    heapq.heapify(free)
    t, arrivals = 0.0, []
    while t < seconds:
        t += rng.expovariate(rate)
        arrivals.append(t)
    waits, i = [], 0
    while i < len(arrivals):
        f = heapq.heappop(free)
        if arrivals[i] <= f:  # the oldest waiting interactive request takes the slot
            waits.append(f - arrivals[i])
            i += 1
        heapq.heappush(free, f + svc)  # else a batch request took it
    waits.sort()
    return (waits[int(0.99 * len(waits))] + svc) * 1000.0


def _backend(addr_of):
    return {"max_ongoing_requests": CAP, "max_queued_requests": MAX_QUEUED,
            "queue_timeout_ms": LONGEST_DEADLINE_MS, "replicas": addr_of}


def ringroute_features_config(replicas):
    return {
        "backends": {"b": _backend({r.name: r.addr for r in replicas})},
        "endpoints": {"all": {
            "route": "/", "traffic": {"b": 1},
            "fairness_header": "X-Tenant",
            "max_queued_per_tenant": MAX_QUEUED // 4,
            "timeout_ms": LONGEST_DEADLINE_MS}},
    }


def ringroute_fifo_config(replicas, keys=True):
    ep = {"route": "/", "traffic": {"b": 1}}
    if keys:
        ep.update(priority_header=None, timeout_header=None)
    return {"backends": {"b": _backend({r.name: r.addr for r in replicas})},
            "endpoints": {"all": ep}}


def refused_keys(err_text):
    """True when ringroute's start failed because its config has keys it does not
    know (config.c: "json.path: unknown key")."""
    return "unknown key" in err_text


def make_proxies(cx):
    """The contender classes, built on bench/compare's (cx) Proxy classes."""

    class RRFeatures(cx.RingRoute):
        name = "ringroute"
        lacks = False

        def start(self, scenario, replicas):
            scenario.configs["ringroute"] = ringroute_features_config
            try:
                super().start(scenario, replicas)
            except cx.BenchError as e:
                if refused_keys(str(e)):
                    self.lacks = True
                    line = next((l.strip() for l in str(e).splitlines()
                                 if "unknown key" in l), "")
                    raise cx.BenchError(f"{LACKS} (its config is refused: {line})")
                raise

        def version(self):
            return "priorities, tenants (X-Tenant), deadlines"

    class RRFifo(cx.RingRoute):
        name = "ringroute-fifo"
        note = "priority_header/timeout_header null, no fairness"

        def start(self, scenario, replicas):
            scenario.configs["ringroute"] = ringroute_fifo_config
            try:
                super().start(scenario, replicas)
            except cx.BenchError as e:
                if not refused_keys(str(e)):
                    raise
                # A build without the features reads neither header: its plain
                # config is the same FIFO.
                self.proc.kill()
                self.note = "build without the queue features: plain FIFO config"
                scenario.configs["ringroute"] = lambda reps: ringroute_fifo_config(reps, False)
                super().start(scenario, replicas)

        def version(self):
            return self.note

    class HAProxyOverload(cx.HAProxy):
        name = "haproxy"
        abortonclose = False

        def start(self, scenario, replicas):
            # `option abortonclose` goes in `defaults`: HAProxy 2.6 ignores it in a
            # backend section (haproxy/haproxy issue 2344, fixed in later versions;
            # measured here: in the backend, queued requests whose client left were
            # still sent to the server).
            exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
            self.port = cx.free_port()
            maxconn = max(1000, min(20000, (cx.nofile_limit() - 200) // 2))
            servers = "\n    ".join(f"server {r.name} {r.addr} maxconn {CAP}"
                                    for r in replicas)
            conf = f"""# generated by bench/compare --scenario overload ({self.name})
global
    nbthread 1
    maxconn {maxconn}

defaults
    maxconn {maxconn}
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    timeout queue {LONGEST_DEADLINE_MS // 1000}s
    {"option abortonclose" if self.abortonclose else "# no option abortonclose"}

frontend fe
    bind 127.0.0.1:{self.port}
    default_backend replicas

backend replicas
    balance leastconn
    {servers}
"""
            path = os.path.join(self.tmpdir, "haproxy.cfg")
            with open(path, "w") as f:
                f.write(conf)
            self.proc = self.procs.spawn(self.name, [exe, "-db", "-f", path], cpus=self.cpus)
            cx.wait_port(self.port, self.proc)

        def version(self):
            v = super().version()
            return v + (" option abortonclose" if self.abortonclose else "")

    class HAProxyAbort(HAProxyOverload):
        name = "haproxy-abortonclose"
        abortonclose = True

    class NginxOverload(cx.Nginx):
        name = "nginx"

        def version(self):
            return super().version() + " (max_conns, no queue)"

    return {c.name: c for c in (RRFeatures, RRFifo, HAProxyOverload, HAProxyAbort,
                                NginxOverload)}


def run_load(a, port, unloaded, out_json, cpus, seed):
    """One bench/overload-load run against 127.0.0.1:port with the arrival schedule of
    `seed`; returns its JSON."""
    argv = [sys.executable, LOAD_EXE, "--port", str(port), "--capacity", f"{CAPACITY:g}",
            "--normal-tenants", str(NORMAL_TENANTS), "--seed", str(seed),
            "--json", out_json]
    if unloaded:
        argv += ["--unloaded", "--load", f"{UNLOADED_LOAD:g}",
                 "--duration", str(min(a.duration, 5)), "--warmup", "1", "--drain", "1.5"]
    else:
        argv += ["--load", f"{LOAD:g}", "--duration", str(a.duration),
                 "--warmup", str(a.warmup), "--drain", f"{DRAIN_S:g}"]
    if cpus:
        argv = ["taskset", "-c", ",".join(str(c) for c in sorted(cpus))] + argv
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _, err = p.communicate(timeout=a.duration + a.warmup + 120)
    except BaseException:
        p.kill()
        p.wait()
        raise
    if p.returncode != 0 or not os.path.exists(out_json):
        raise RuntimeError(f"overload-load exited {p.returncode}: "
                           f"{err.decode(errors='replace').strip()[-800:]}")
    with open(out_json) as f:
        doc = json.load(f)
    doc["argv"] = argv  # to rerun this one load by hand
    return doc


def wait_idle(replicas, timeout):
    """True once no replica has had a request in flight for IDLE_QUIET_S in a row (a
    proxy still draining its queue leaves a replica idle only between two requests,
    for much less than a service time), False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        if all(r.stats().get("inflight", 0) == 0 for r in replicas):
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= IDLE_QUIET_S:
                return True
        else:
            quiet_since = None
        time.sleep(0.02)
    return False


def measure(a, cx, proxy, replicas, tmpdir, rnd, cpus):
    """Unloaded run, then the loaded one, replica stats around the loaded one."""
    base = os.path.join(tmpdir, f"{proxy.name}-r{rnd}")

    def idle(what):
        if not wait_idle(replicas, IDLE_WAIT_S):
            raise cx.BenchError(f"{proxy.name}: replicas still busy {IDLE_WAIT_S:.0f}s "
                                f"after the previous run (before the {what} run)")

    idle("unloaded")
    unl = run_load(a, proxy.port, True, base + "-unloaded.json", cpus, rnd)
    idle("loaded")
    for r in replicas:
        r.reset()
    cpu0 = cx.proc_tree_cpu(proxy.proc.pid)
    load = run_load(a, proxy.port, False, base + "-loaded.json", cpus, rnd)
    cpu1 = cx.proc_tree_cpu(proxy.proc.pid)
    if not proxy.proc.alive() or cpu0 is None or cpu1 is None:
        raise cx.BenchError(f"{proxy.name} died during the run: {proxy.proc.describe_exit()}")
    # In flight now are leftovers the proxy still had queued when the clients left.
    stats = [r.stats() for r in replicas]
    return {"round": rnd, "unloaded": unl, "loaded": load, "cpu_s": cpu1 - cpu0,
            "replica_stats": stats}


def _sum_counts(dicts):
    out = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def summarize(runs):
    if not runs:
        return None
    med = lambda xs: statistics.median(xs) if xs else None
    L = [r["loaded"] for r in runs]
    inter = [x["classes"].get("interactive", {}) for x in L]
    unl = [r["unloaded"]["classes"]["interactive"] for r in runs]
    errors = {}
    for x in L:
        for k, v in x["all"]["errors_by_status"].items():
            errors[k] = errors.get(k, 0) + v
        if x["all"]["conn_errors"]:
            errors["conn"] = errors.get("conn", 0) + x["all"]["conn_errors"]
    tenants = {}
    for t in L[0]["tenants"]:
        tenants[t] = med([x["tenants"][t]["share"] for x in L
                          if x["tenants"].get(t, {}).get("share") is not None])
    s = {
        "rounds": len(runs),
        "goodput_rps": med([x["goodput_rps"] for x in L]),
        "interactive_in_time": med([i.get("in_time_share") or 0.0 for i in inter]),
        "interactive_p99_ms": med([i["p99_ms"] for i in inter if i.get("p99_ms") is not None]),
        "unloaded_p99_ms": med([u["p99_ms"] for u in unl if u.get("p99_ms") is not None]),
        "unloaded_in_time": med([u.get("in_time_share") or 0.0 for u in unl]),
        "classes": {c: {k: med([x["classes"][c][k] for x in L
                                if x["classes"][c].get(k) is not None])
                        for k in ("in_time_share", "p50_ms", "p99_ms")}
                    for c in L[0]["classes"]},
        # Non-2xx answers per class by "STATUS first line of the body" (the proxy's
        # reason), summed over rounds.
        "reasons": {c: _sum_counts(x["classes"][c].get("errors_by_reason", {}) for x in L)
                    for c in L[0]["classes"]},
        "late": sum(x["all"]["late"] for x in L),
        "unfinished": sum(x["all"]["unfinished"] for x in L),
        "tenant_share": tenants,
        "min_normal_share": med([x["min_normal_share"] for x in L
                                 if x["min_normal_share"] is not None]),
        "errors": errors, "errors_total": sum(errors.values()),
        "sent": sum(x["all"]["sent"] for x in L),
        "max_inflight": max(max(st.get("max_inflight", 0) for st in r["replica_stats"])
                            for r in runs),
        "lag_p99_ms": max(max(r[k]["lag_ms"]["p99"] or 0.0 for k in ("loaded", "unloaded"))
                          for r in runs),
        "cpu_s": sum(r["cpu_s"] for r in runs),
    }
    return s


def goals(summary):
    """Per contender: {check: True/False/None (not measurable)}."""
    best = (summary.get(BEST_PEER) or {}).get("goodput_rps")
    out = {}
    for name, s in summary.items():
        if not s:
            continue
        g = {}
        g["goodput"] = None if best is None or name == BEST_PEER else \
            s["goodput_rps"] >= best * (1 - GOODPUT_TOLERANCE)
        p99, unl = s["interactive_p99_ms"], s["unloaded_p99_ms"]
        g["interactive"] = (s["interactive_in_time"] >= GOAL_INTERACTIVE and
                            p99 is not None and unl is not None and
                            p99 <= GOAL_P99_FACTOR * unl)
        g["tenants"] = s["min_normal_share"] is not None and \
            s["min_normal_share"] >= GOAL_TENANT
        out[name] = g
    return out


def fmt(v, f="{:.1f}", none="-"):
    return none if v is None else f.format(v)


def print_report(cx, info, a, summary, failed, versions, skipped):
    print(f"machine: {info['nproc']} CPUs ({info['usable_cpus']} usable), "
          f"{info['cpu_model'] or 'unknown CPU'}, Linux {info['kernel']}")
    if info.get("busy_cpus_before", 0) > 0.2:
        print(f"WARNING: machine not idle: {info['busy_cpus_before']:.2f} CPUs busy before "
              "the benchmark started; numbers are noisy")
    print("peers:   " + ", ".join(f"{k}: {v}" for k, v in versions.items() if v))
    print(f"scenario overload: {REPLICAS} mock-replicas, service time {SERVICE_MS:g} ms "
          f"fixed, cap {CAP} each: capacity C = {CAPACITY:g} req/s; offered {LOAD:g} C "
          "open loop (Poisson, seed = round number: every contender gets the same arrivals in "
          "a round), one connection per request; mix "
          "interactive 20% (prio 1, 1 s) / batch 50% (prio 0, 30 s) / sheddable 30% "
          f"(prio -1, 5 s); tenants: flood + {NORMAL_TENANTS} normal, each normal "
          f"0.75 C/{NORMAL_TENANTS + 1}; queue bound {MAX_QUEUED} (ringroute), "
          f"queue timeout {LONGEST_DEADLINE_MS // 1000} s")
    ideal = ideal_interactive_p99_ms()
    print(f"ideal:   strict priority, {REPLICAS * CAP} slots always busy (simulated): "
          f"interactive p99 {ideal:.1f} ms = {ideal / SERVICE_MS:.2f} x the service time "
          "(the goal allows 1.5 x the unloaded p99)")
    print(f"load:    bench/overload-load, warm-up {a.warmup:g} s + measured {a.duration:g} s "
          f"(+ unloaded {min(a.duration, 5):g} s at {UNLOADED_LOAD:g} C, interactive only), "
          f"{a.rounds} round(s) alternating")
    print()
    tnames = []
    for s in summary.values():
        if s:
            tnames = list(s["tenant_share"])
            break
    cols = (["proxy", "goodput/s", "of C", "inter. in time", "inter. p99 ms",
             "unloaded p99 ms"] + [f"{t} share" for t in tnames] +
            ["errors", "max inflight"])
    rows = []
    for name, s in summary.items():
        if s is None:
            why = "skipped" if name in skipped else "FAILED"
            rows.append([name, why] + [""] * (len(cols) - 2))
            continue
        over = s["max_inflight"] > CAP
        rows.append([name, fmt(s["goodput_rps"]), fmt(s["goodput_rps"] / CAPACITY * 100,
                                                       "{:.0f}%"),
                     fmt(s["interactive_in_time"] * 100, "{:.1f}%"),
                     fmt(s["interactive_p99_ms"]), fmt(s["unloaded_p99_ms"])] +
                    [fmt(s["tenant_share"].get(t), "{:.2f}") for t in tnames] +
                    [str(s["errors_total"]),
                     f"{s['max_inflight']}" + (f" (>{CAP}!)" if over else "")])
    cx.print_table(cols, rows)
    print()
    print("goodput/s: 2xx responses completed within their deadline per second (median "
          "over rounds); inter.: interactive requests in time and the p99 of those; "
          "share: tenant goodput / its fair share (strict priority bands, max-min fair "
          "within each, from the requests it sent); errors: non-2xx answers and "
          "connection errors (late = the client gave up, not counted here).")
    for name, s in summary.items():
        if not s:
            continue
        cls = ", ".join(f"{c} {fmt((v['in_time_share'] or 0) * 100, '{:.0f}%')} in time "
                        f"p99 {fmt(v['p99_ms'])} ms" for c, v in s["classes"].items())
        errs = ", ".join(f"{k} {v}" for k, v in sorted(s["errors"].items())) or "none"
        print(f"{name}: {cls}; late {s['late']}, unfinished {s['unfinished']} of "
              f"{s['sent']}; errors: {errs}")
        for c, reasons in s["reasons"].items():
            if reasons:
                print(f"  {c} errors: " + ", ".join(f"{why!r} {n}" for why, n in
                                                     reasons.items()))
        if s["lag_p99_ms"] > LAG_WARN_MS:
            print(f"WARNING: {name}: the load generator lagged (p99 "
                  f"{s['lag_p99_ms']:.1f} ms behind its schedule): numbers suspect")
    for name, why in failed.items():
        print(f"{name} {'SKIPPED' if name in skipped else 'FAILED'}: {why}")
    g = goals(summary)
    if g:
        print()
        print(f"goals (issue 12): goodput >= {BEST_PEER}'s (within "
              f"{GOODPUT_TOLERANCE:.0%}); interactive >= "
              f"{GOAL_INTERACTIVE:.0%} in time with p99 <= {GOAL_P99_FACTOR:g} x unloaded; "
              f"every normal tenant >= {GOAL_TENANT:g} of its fair share")
        yn = lambda v: "n/a" if v is None else ("yes" if v else "NO")
        for name, checks in g.items():
            s = summary[name]
            print(f"  {name:<21} goodput {yn(checks['goodput'])}  interactive "
                  f"{yn(checks['interactive'])}  tenants {yn(checks['tenants'])} "
                  f"(min normal {fmt(s['min_normal_share'], '{:.2f}')})")


def run(a, cx):
    """bench/compare main for --scenario overload; returns the exit status."""
    classes = make_proxies(cx)
    order = a.only or list(NAMES)
    bad = [n for n in order if n not in classes]
    if bad:
        raise cx.BenchError(f"--only: {bad}: the overload scenario's contenders are "
                            f"{', '.join(NAMES)}")
    if a.replica_server != "mock":
        raise cx.BenchError("--scenario overload needs mock replicas (a fixed service "
                            "time and in-flight counters)")
    if a.ringroute_old or a.ringroute_access_log or a.ringroute_unix or a.profile:
        raise cx.BenchError("--scenario overload: --ringroute-old, --ringroute-access-log, "
                            "--ringroute-unix and --profile are not supported")
    cx.raise_nofile(2 * CONNECTIONS + 512)
    info = cx.machine_info()
    info["busy_cpus_before"] = round(cx.cpu_busy_fraction(), 3)
    for tool in [p for p in ("nginx", "haproxy") if any(n.startswith(p) for n in order)]:
        if not shutil.which(tool) and not os.access(f"/usr/sbin/{tool}", os.X_OK):
            raise cx.BenchError(f"{tool} not found in PATH")
    if not os.access(os.path.join(a.build, "mock-replica"), os.X_OK):
        raise cx.BenchError(f"{a.build}/mock-replica not found (pass --build DIR)")
    proxy_cpus = other_cpus = None
    if a.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise cx.BenchError("--pin needs at least 2 usable CPUs")
        proxy_cpus, other_cpus = cpus[:1], cpus[1:]
    backend = cx.Backend(cap=CAP, rr_cap=CAP, max_queued=MAX_QUEUED,
                         queue_timeout_ms=LONGEST_DEADLINE_MS, balance="leastconn")
    scenario = cx.Scenario(
        "overload", "overload", connections=CONNECTIONS, backend=backend,
        replicas=[(f"r{i}", ["--delay-ms", f"{SERVICE_MS:g}"])
                  for i in range(1, REPLICAS + 1)], track_inflight=True)
    tmpdir = tempfile.mkdtemp(prefix="rr-bench-overload-")
    procs = cx.Procs(tmpdir)
    failed, skipped, versions = {}, set(), {}
    runs = {n: [] for n in order}
    try:
        cx.log(f"[compare] temp dir {tmpdir}")
        replicas = cx.start_replicas(procs, a.build, scenario.replicas, other_cpus)
        cx.log("[compare] replicas: " + ", ".join(f"{r.name}={r.addr}" for r in replicas))
        proxies = []
        for name in order:
            p = classes[name](procs, tmpdir, a.build, proxy_cpus)
            try:
                p.start(scenario, replicas)
                p.check(scenario, replicas)
            except cx.BenchError as e:
                failed[name] = str(e)
                if getattr(p, "lacks", False):
                    skipped.add(name)
                    cx.log(f"[compare] {name}: {e}; going on with the others")
                else:
                    cx.log(f"[compare] {name} FAILED to start or to proxy correctly:\n  {e}")
                continue
            versions[name] = p.version()
            cx.log(f"[compare] {name} up on 127.0.0.1:{p.port} (pid {p.proc.pid})")
            proxies.append(p)
        if not proxies:
            raise cx.BenchError("no proxy could be started")
        for rnd in range(1, a.rounds + 1):
            for p in proxies:
                if p.name in failed:
                    continue
                try:
                    rec = measure(a, cx, p, replicas, tmpdir, rnd, other_cpus)
                except (cx.BenchError, RuntimeError) as e:
                    failed[p.name] = f"round {rnd}: {e}"
                    cx.log(f"[compare] {p.name} FAILED in round {rnd}:\n  {e}")
                    continue
                runs[p.name].append(rec)
                L = rec["loaded"]
                i = L["classes"]["interactive"]
                cx.log(f"[compare] round {rnd}/{a.rounds} {p.name:<21} goodput "
                       f"{L['goodput_rps']:6.1f}/s  interactive in time "
                       f"{(i['in_time_share'] or 0) * 100:5.1f}% p99 {fmt(i['p99_ms'])} ms "
                       f"(unloaded {fmt(rec['unloaded']['classes']['interactive']['p99_ms'])}"
                       f" ms)  min normal share {fmt(L['min_normal_share'], '{:.2f}')}  "
                       f"lag p99 {L['lag_ms']['p99']} ms")
        summary = {n: summarize(runs[n]) for n in order}
        print_report(cx, info, a, summary, failed, versions, skipped)
        if a.json:
            doc = {"machine": info, "versions": versions,
                   "scenario": {"name": "overload", "replicas": REPLICAS, "cap": CAP,
                                "service_ms": SERVICE_MS, "capacity_rps": CAPACITY,
                                "load": LOAD, "max_queued": MAX_QUEUED,
                                "normal_tenants": NORMAL_TENANTS},
                   "args": {k: v for k, v in vars(a).items()},
                   "runs": runs, "summary": summary, "goals": goals(summary),
                   "failed": failed, "skipped": sorted(skipped)}
            with open(a.json, "w") as f:
                json.dump(doc, f, indent=2)
            cx.log(f"[compare] raw numbers written to {a.json}")
        return 1 if set(failed) - skipped else 0
    finally:
        procs.kill_all()
        if a.keep_tmp:
            cx.log(f"[compare] kept {tmpdir}")
        else:
            shutil.rmtree(tmpdir, ignore_errors=True)
