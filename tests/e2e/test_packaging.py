#!/usr/bin/env python3
"""Packaging (docs/operations.md): the Kubernetes manifests, the Dockerfile,
the systemd unit, the man page and `cmake --install`, each checked against
what ringroute itself says (--help, its admin port, its binaries): a flag,
port, path or time named in one place must be the one the program has."""

import glob
import ipaddress
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

REPO = harness.REPO
K8S = os.path.join(REPO, "packaging", "k8s")
DOCKERFILE = os.path.join(REPO, "packaging", "Dockerfile")
UNIT = os.path.join(REPO, "packaging", "systemd", "ringroute.service")
MAN = os.path.join(REPO, "docs", "man", "ringroute.8")


def help_flags():
    """{name: (metavar or None, default or None)} from `ringroute --help`."""
    out = subprocess.run([harness.ringroute_bin(), "--help"], stdout=subprocess.PIPE,
                         check=True, timeout=10).stdout.decode()
    flags = {}
    for line in out.splitlines():
        m = re.match(r"^  --([a-z][a-z-]*)(?: ([^ ]+))? +(.*)$", line)
        if m:
            d = re.search(r"Default: (.*)\.$", m.group(3))
            flags[m.group(1)] = (m.group(2), d.group(1) if d else None)
    if len(flags) < 10:
        raise AssertionError("--help lists too few flags:\n" + out)
    return flags


FLAGS = None


def flags():
    global FLAGS
    if FLAGS is None:
        FLAGS = help_flags()
    return FLAGS


def parse_args(args):
    """ringroute argv (no program name) -> {flag: value or True}. Fails on a
    flag --help does not list or a value missing."""
    out, i = {}, 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            raise AssertionError("not a flag: %r in %r" % (a, args))
        name = a[2:]
        if name not in flags():
            raise AssertionError("--%s is not in ringroute --help" % name)
        if flags()[name][0] is None:
            out[name] = True
            i += 1
        else:
            if i + 1 >= len(args):
                raise AssertionError("--%s needs a value" % name)
            out[name] = args[i + 1]
            i += 2
    return out


def flag_ms(args, name):
    """The value of a millisecond flag, or its default from --help."""
    return int(args.get(name, flags()[name][1]))


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def load_manifests(d=K8S):
    docs = []
    files = sorted(glob.glob(os.path.join(d, "*.yaml")) + glob.glob(os.path.join(d, "*.yml")))
    for path in files:
        with open(path) as f:
            for d in yaml.safe_load_all(f):
                if d is not None:
                    docs.append((os.path.basename(path), d))
    return files, docs


class K8sTest(harness.RRTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.files, cls.docs = load_manifests()
        by_kind = {}
        for name, d in cls.docs:
            by_kind.setdefault(d["kind"], []).append(d)
        cls.by_kind = by_kind
        (cls.dep,) = by_kind["Deployment"]
        pod = cls.dep["spec"]["template"]["spec"]
        cls.pod = pod
        (cls.ctr,) = [c for c in pod["containers"] if c["name"] == "ringroute"]
        cls.args = parse_args(cls.ctr["args"])
        cls.ports = {p["name"]: p["containerPort"] for p in cls.ctr["ports"]}

    def resolve(self, port):
        """A probe's or Service's port (a number or a container port name)."""
        if isinstance(port, int):
            return port
        self.assertIn(port, self.ports, "no container port named %r" % port)
        return self.ports[port]

    def test_every_manifest_parses_and_is_listed(self):
        self.assertTrue(self.files)
        for name, d in self.docs:
            self.assertIn("apiVersion", d, name)
            self.assertIn("kind", d, name)
        (kust,) = self.by_kind["Kustomization"]
        listed = sorted(kust["resources"])
        others = sorted(os.path.basename(f) for f in self.files
                        if os.path.basename(f) != "kustomization.yaml")
        self.assertEqual(listed, others)

    def test_container_ports_match_flags(self):
        self.assertIn("listen", self.args)
        self.assertIn("admin", self.args)
        self.assertEqual(sorted(self.ports.values()),
                         sorted([port_of(self.args["listen"]), port_of(self.args["admin"])]))
        # The kubelet probes the pod's address, not loopback.
        self.assertNotRegex(self.args["admin"], r"^(127\.|localhost)")

    def test_probes(self):
        admin = port_of(self.args["admin"])
        live = self.ctr["livenessProbe"]["httpGet"]
        ready = self.ctr["readinessProbe"]["httpGet"]
        self.assertEqual(live["path"], "/healthz")
        self.assertEqual(ready["path"], "/readyz")
        self.assertEqual(self.resolve(live["port"]), admin)
        self.assertEqual(self.resolve(ready["port"]), admin)

    def test_grace_period_covers_drain(self):
        grace = self.pod["terminationGracePeriodSeconds"]
        drain = flag_ms(self.args, "drain-delay-ms") + flag_ms(self.args, "drain-timeout-ms")
        self.assertGreater(grace, drain / 1000.0)
        self.assertGreater(flag_ms(self.args, "drain-delay-ms"), 0,
                           "behind a Service the drain delay is what lets endpoints update")

    def configmap(self):
        cfg_path = self.args["config"]
        (mount,) = [m for m in self.ctr["volumeMounts"]
                    if m["mountPath"].rstrip("/") == os.path.dirname(cfg_path)]
        self.assertNotIn("subPath", mount, "a subPath mount never sees ConfigMap updates")
        (vol,) = [v for v in self.pod["volumes"] if v["name"] == mount["name"]]
        name = vol["configMap"]["name"]
        (cm,) = [d for d in self.by_kind["ConfigMap"] if d["metadata"]["name"] == name]
        key = os.path.basename(cfg_path)
        self.assertIn(key, cm["data"], "the ConfigMap has no key %s (--config)" % key)
        return json.loads(cm["data"][key])

    def test_configmap_is_the_config_and_reloads(self):
        doc = self.configmap()
        self.assertIn("watch-config", self.args, "a ConfigMap update must reload")
        for b in doc["backends"].values():
            for addr in b["replicas"].values():
                host, port = addr.rsplit(":", 1)
                ipaddress.IPv4Address(host)
                self.assertTrue(1 <= int(port) <= 65535, addr)

    def test_service_targets_listen_port(self):
        (svc,) = self.by_kind["Service"]
        labels = self.dep["spec"]["template"]["metadata"]["labels"]
        for k, v in svc["spec"]["selector"].items():
            self.assertEqual(labels.get(k), v)
        targets = [self.resolve(p["targetPort"]) for p in svc["spec"]["ports"]]
        self.assertEqual(targets, [port_of(self.args["listen"])])

    def test_resources(self):
        res = self.ctr["resources"]
        self.assertIn("cpu", res["requests"])
        self.assertIn("memory", res["requests"])
        self.assertIn("memory", res["limits"])
        self.assertNotIn("cpu", res.get("limits", {}), "CPU throttling stalls a whole shard")
        # One shard per CPU requested.
        self.assertEqual(float(res["requests"]["cpu"]), float(self.args["shards"]))

    def test_runs_with_these_args(self):
        # ringroute started with the container's args and the ConfigMap's
        # config; only addresses move to loopback (replicas to closed
        # ports: nothing leaves this machine) and one shard is enough.
        doc = self.configmap()
        for b in doc["backends"].values():
            for rid in b["replicas"]:
                b["replicas"][rid] = "127.0.0.1:%d" % harness.free_port()
        path = os.path.join(tempfile.mkdtemp(dir=harness._TMPDIR), os.path.basename(
            self.args["config"]))
        with open(path, "w") as f:
            json.dump(doc, f)
        argv = list(self.ctr["args"])
        for flag, value in (("--config", path), ("--listen", "127.0.0.1:0"),
                            ("--admin", "127.0.0.1:0"), ("--shards", "1"),
                            ("--drain-delay-ms", "0")):
            argv[argv.index(flag) + 1] = value
        rr = self.ringroute(path, admin=True, extra=argv)
        live = self.ctr["livenessProbe"]["httpGet"]["path"]
        ready = self.ctr["readinessProbe"]["httpGet"]["path"]
        self.assertEqual(harness.http_once(rr.admin_port, "GET", live).status, 200)
        # The replicas are down here: not ready, and it says why.
        r = harness.http_once(rr.admin_port, "GET", ready)
        self.assertIn(r.status, (200, 503), r)
        if "ready-requires-healthy" in self.args:
            self.assertTrue(harness.wait_stderr(rr, "is unhealthy"), rr.stderr_tail())
            r = harness.http_once(rr.admin_port, "GET", ready)
            self.assertEqual(r.status, 503, r)


class MultiK8sTest(K8sTest):
    """packaging/k8s/multi: a StatefulSet whose instances share every cap
    (--peers on a headless Service). The pod checks of K8sTest hold for it
    too; the routes are the top-level ConfigMap."""

    @classmethod
    def setUpClass(cls):
        harness.RRTestCase.setUpClass.__func__(cls)
        cls.files, cls.docs = load_manifests(os.path.join(K8S, "multi"))
        _, top = load_manifests()
        by_kind = {}
        for name, d in cls.docs:
            by_kind.setdefault(d["kind"], []).append(d)
        by_kind["ConfigMap"] = [d for _, d in top if d["kind"] == "ConfigMap"]
        cls.by_kind = by_kind
        (cls.dep,) = by_kind["StatefulSet"]
        cls.pod = cls.dep["spec"]["template"]["spec"]
        (cls.ctr,) = [c for c in cls.pod["containers"] if c["name"] == "ringroute"]
        cls.args = parse_args(cls.ctr["args"])
        cls.ports = {p["name"]: p["containerPort"] for p in cls.ctr["ports"]}
        (cls.headless,) = [d for d in by_kind["Service"] if d["spec"].get("clusterIP") == "None"]

    def test_service_targets_listen_port(self):
        (svc,) = [d for d in self.by_kind["Service"] if d is not self.headless]
        labels = self.dep["spec"]["template"]["metadata"]["labels"]
        for k, v in svc["spec"]["selector"].items():
            self.assertEqual(labels.get(k), v)
        targets = [self.resolve(p["targetPort"]) for p in svc["spec"]["ports"]]
        self.assertEqual(targets, [port_of(self.args["listen"])])

    def test_peers_are_the_headless_service(self):
        m = re.match(r"^dns:([a-z0-9.-]+):(\d+)$", self.args.get("peers", ""))
        self.assertIsNotNone(m, "--peers dns:NAME:PORT")
        name, port = m.group(1), int(m.group(2))
        self.assertEqual(name.split(".")[0], self.headless["metadata"]["name"])
        self.assertEqual(self.dep["spec"]["serviceName"], self.headless["metadata"]["name"])
        # The peer port is the listen port: that is how an instance finds itself.
        self.assertEqual(port, port_of(self.args["listen"]))
        self.assertTrue(self.headless["spec"].get("publishNotReadyAddresses"),
                        "every pod must count, ready or not, or a starting one runs alone")
        labels = self.dep["spec"]["template"]["metadata"]["labels"]
        for k, v in self.headless["spec"]["selector"].items():
            self.assertEqual(labels.get(k), v)
        self.assertNotIn("instance-index", self.args)
        self.assertNotIn("instance-count", self.args)

    def test_runs_with_these_args(self):
        # --peers names a Service only a cluster resolves: here the literal
        # form with this instance and one more, at a fixed listen port.
        port = harness.free_port()
        self.ctr = dict(self.ctr, args=list(self.ctr["args"]))
        argv = self.ctr["args"]
        argv[argv.index("--peers") + 1] = "127.0.0.1:%d,127.0.0.2:%d" % (port, port)
        real = harness.Ringroute.__init__

        def init(rr, *a, **kw):
            kw["extra"] = list(kw["extra"])
            kw["extra"][kw["extra"].index("--listen") + 1] = "127.0.0.1:%d" % port
            real(rr, *a, **kw)
        harness.Ringroute.__init__ = init
        try:
            super().test_runs_with_these_args()
        finally:
            harness.Ringroute.__init__ = real


def dockerfile_stages():
    """[(FROM line, [RUN commands with continuations joined])]."""
    with open(DOCKERFILE) as f:
        text = re.sub(r"\\\n", " ", f.read())
    stages = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        word = s.split()[0].upper()
        if word == "FROM":
            stages.append((s, []))
        elif stages:
            stages[-1][1].append(s)
    return stages


def apt_installs(instrs):
    pkgs = []
    for s in instrs:
        if not s.upper().startswith("RUN "):
            continue
        for cmd in re.split(r"&&|;", s[4:]):
            words = shlex.split(cmd)
            if "apt-get" in words and "install" in words:
                rest = words[words.index("install") + 1:]
                pkgs += [w for w in rest if not w.startswith("-")]
    return pkgs


def debian_knows(pkg):
    """True when Debian (the apt lists here, or dpkg) has pkg."""
    r = subprocess.run(["apt-cache", "show", "--no-all-versions", pkg],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if r.returncode == 0:
        return True
    r = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", pkg],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return r.stdout == b"installed"


def tools_deps_pkgs():
    with open(os.path.join(REPO, "tools", "deps")) as f:
        m = re.search(r"PKGS=\((.*?)\)", f.read(), re.S)
    return m.group(1).split()


def needed_packages(binary):
    """Debian packages of the shared libraries binary links (DT_NEEDED)."""
    out = subprocess.run(["objdump", "-p", binary], stdout=subprocess.PIPE,
                         check=True).stdout.decode()
    arch = subprocess.run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL).stdout.decode().strip() or "x86_64-linux-gnu"
    pkgs = set()
    for lib in re.findall(r"NEEDED\s+(\S+)", out):
        # The multiarch directory keeps lib32/libx32 variants out.
        r = subprocess.run(["dpkg", "-S", "*/%s/%s" % (arch, lib)], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL)
        owners = {line.split(":")[0] for line in r.stdout.decode().splitlines() if line}
        if not owners:
            raise AssertionError("no Debian package holds %s (linked by %s)" % (lib, binary))
        pkgs |= owners
    return pkgs


class DockerfileTest(unittest.TestCase):
    def test_from_debian_bookworm_slim(self):
        stages = dockerfile_stages()
        self.assertGreaterEqual(len(stages), 2, "multi-stage")
        for line, _ in stages:
            self.assertRegex(line, r"^FROM debian:bookworm-slim( AS \w+)?$")

    def test_only_debian_packages(self):
        with open(DOCKERFILE) as f:
            text = f.read()
        comments_out = "\n".join(l for l in text.splitlines() if not l.strip().startswith("#"))
        for bad in (r"\bcurl\b", r"\bwget\b", r"\bpip3?\b", r"\bnpm\b", r"ADD\s+https?://",
                    r"\bgit clone\b"):
            self.assertNotRegex(comments_out, bad)
        stages = dockerfile_stages()
        all_pkgs = [p for _, instrs in stages for p in apt_installs(instrs)]
        self.assertTrue(all_pkgs)
        for p in all_pkgs:
            self.assertTrue(debian_knows(p), "%s is not a Debian package" % p)
        # The build stage installs what tools/deps says the build needs.
        deps = set(tools_deps_pkgs())
        for p in apt_installs(stages[0][1]):
            self.assertIn(p, deps, "build package %s is not in tools/deps" % p)

    def test_runtime_stage_has_the_libraries(self):
        with open(os.path.join(harness.BUILD, "CMakeCache.txt")) as f:
            cache = f.read()
        if re.search(r"^RR_(SANITIZE|TSAN):BOOL=ON$", cache, re.M):
            self.skipTest("a sanitizer build links what the image's Release build does not")
        runtime = set(apt_installs(dockerfile_stages()[-1][1])) | {"libc6"}
        for name in ("ringroute", "ringroutectl"):
            binary = os.path.join(harness.BUILD, name)
            if not os.path.exists(binary):
                continue
            for pkg in needed_packages(binary):
                self.assertIn(pkg, runtime, "%s links a library of %s" % (name, pkg))

    def test_cmd_and_ports(self):
        with open(DOCKERFILE) as f:
            text = re.sub(r"\\\n", " ", f.read())
        entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
        self.assertEqual(entry, ["/usr/bin/ringroute"])
        cmd = parse_args(json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1)))
        exposed = sorted(int(p) for p in re.search(r"^EXPOSE (.*)$", text, re.M).group(1).split())
        self.assertEqual(exposed, sorted([port_of(cmd["listen"]), port_of(cmd["admin"])]))


def unit_exec_start():
    with open(UNIT) as f:
        text = re.sub(r"\\\n", " ", f.read())
    keys = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, _, v = line.partition("=")
            keys.setdefault(k.strip(), []).append(v.strip())
    return keys


class UnitFileTest(unittest.TestCase):
    def test_exec_start_flags(self):
        keys = unit_exec_start()
        (start,) = keys["ExecStart"]
        argv = shlex.split(start)
        self.assertEqual(argv[0], "/usr/bin/ringroute")
        args = parse_args(argv[1:])
        self.assertEqual(keys["Type"], ["notify"])
        self.assertTrue(keys["ExecReload"][0].startswith("/bin/kill -HUP $MAINPID"))
        # Paths live in the directories systemd makes for the service.
        self.assertTrue(args["state"].startswith("/var/lib/%s/" % keys["StateDirectory"][0]))
        self.assertTrue(args["control"].startswith("/run/%s/" % keys["RuntimeDirectory"][0]))
        self.assertTrue(args["config"].startswith("/etc/%s/" %
                                                  keys["ConfigurationDirectory"][0]))
        stop = int(keys["TimeoutStopSec"][0].rstrip("s"))
        drain = flag_ms(args, "drain-delay-ms") + flag_ms(args, "drain-timeout-ms")
        self.assertGreater(stop, drain / 1000.0)
        for k in ("NoNewPrivileges", "ProtectSystem", "LimitNOFILE"):
            self.assertIn(k, keys)
        self.assertEqual(keys["ProtectSystem"], ["strict"])


def man_options():
    """{name: metavar or None} from the OPTIONS section of the man page,
    and the text of each option's paragraph."""
    with open(MAN) as f:
        src = f.read()
    sec = re.search(r"^\.SH OPTIONS\n(.*?)^\.SH ", src, re.S | re.M).group(1)
    opts, paras = {}, {}
    for item in sec.split(".TP\n")[1:]:
        first, _, rest = item.partition("\n")
        first = first.replace("\\-", "-")
        m = re.match(r'^\.BI "--([a-z-]+) " (\S+)$', first) or \
            re.match(r"^\.B --([a-z-]+)()$", first)
        if not m:
            raise AssertionError("option line not understood: %r" % first)
        opts[m.group(1)] = m.group(2) or None
        paras[m.group(1)] = rest.replace("\\-", "-")
    return opts, paras


class ManPageTest(unittest.TestCase):
    def test_options_match_help(self):
        opts, paras = man_options()
        want = {k: v[0] for k, v in flags().items()}
        self.assertEqual(opts, want)
        for name, (_, default) in flags().items():
            if default is not None:
                self.assertIn("Default: %s." % default, " ".join(paras[name].split()),
                              "--%s: the man page's default differs" % name)

    def test_sections(self):
        with open(MAN) as f:
            src = f.read()
        for sec in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SIGNALS", "EXIT STATUS",
                    "ENVIRONMENT", "FILES", "SEE ALSO"):
            self.assertRegex(src, r"(?m)^\.SH %s$" % sec)
        for word in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "SIGHUP", "SIGTERM", "SIGINT"):
            self.assertIn(word, src)
        for code in ("0", "1", "2", "77"):
            self.assertRegex(src, r"(?m)^\.TP\n\.B %s$" % code)

    def test_no_man_warnings(self):
        env = dict(os.environ, MANWIDTH="80")
        p = subprocess.run(["man", "--warnings", "-l", MAN], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        self.assertEqual(p.stderr.decode(), "")
        self.assertIn("--drain-delay-ms", p.stdout.decode())


class InstallTest(unittest.TestCase):
    def test_cmake_install(self):
        prefix = tempfile.mkdtemp(dir=harness._TMPDIR)
        p = subprocess.run(["cmake", "--install", harness.BUILD, "--prefix", prefix],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout.decode())
        want = ["bin/ringroute", "lib/systemd/system/ringroute.service"]
        if os.path.exists(os.path.join(harness.BUILD, "ringroutectl")):
            want.append("bin/ringroutectl")
        for page in glob.glob(os.path.join(REPO, "docs", "man", "*.[1-8]")):
            want.append("share/man/man%s/%s" % (page[-1], os.path.basename(page)))
        self.assertIn("share/man/man8/ringroute.8", want)
        for rel in want:
            self.assertTrue(os.path.isfile(os.path.join(prefix, rel)), rel)
        for rel in ("bin/ringroute", "bin/ringroutectl"):
            path = os.path.join(prefix, rel)
            if os.path.exists(path):
                self.assertTrue(os.access(path, os.X_OK), rel)
        v = subprocess.run([os.path.join(prefix, "bin", "ringroute"), "--version"],
                           stdout=subprocess.PIPE, timeout=10)
        self.assertEqual(v.returncode, 0)
        with open(os.path.join(prefix, "lib/systemd/system/ringroute.service")) as f:
            self.assertIn("ExecStart=%s/bin/ringroute " % prefix, f.read())


if __name__ == "__main__":
    harness.main()
