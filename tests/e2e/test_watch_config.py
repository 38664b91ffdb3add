#!/usr/bin/env python3
"""--watch-config: a change of the --config file's content reloads it, as
SIGHUP does, however the change is made: the kubelet's ConfigMap update (a
new directory, then a symlink renamed over ..data), a write in place, a new
file renamed over the old. Events that leave the content as it was do not
reload; a bad file is refused and the old config stays."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import backend, endpoint, wait_stderr  # noqa: E402


class ConfigMapDir:
    """A directory laid out as the kubelet lays out a mounted ConfigMap:
    KEY -> ..data/KEY, ..data -> ..<timestamp>/, swapped atomically."""

    def __init__(self, key="routes.json"):
        self.dir = tempfile.mkdtemp(dir=harness._TMPDIR)
        self.key = key
        self.n = 0
        self.current = None
        self.path = os.path.join(self.dir, key)

    def update(self, doc):
        self.n += 1
        ts = "..2026_12_02_00_00_%02d.%d" % (self.n, os.getpid())
        os.mkdir(os.path.join(self.dir, ts))
        with open(os.path.join(self.dir, ts, self.key), "w") as f:
            json.dump(doc, f)
        tmp = os.path.join(self.dir, "..data_tmp")
        os.symlink(ts, tmp)
        os.rename(tmp, os.path.join(self.dir, "..data"))
        if not os.path.islink(self.path):
            os.symlink(os.path.join("..data", self.key), self.path)
        if self.current:
            shutil.rmtree(os.path.join(self.dir, self.current))
        self.current = ts


class WatchConfigTest(harness.RRTestCase):
    def cfg(self, *targets):
        return {"backends": {m.id: backend([m]) for m in self.mocks},
                "endpoints": {"e": endpoint("/", {t.id: 1.0 for t in targets})}}

    def setUp(self):
        super().setUp()
        self.mocks = [self.mock("a"), self.mock("b")]

    def served_by(self, rr):
        return self.client(rr.port).request("GET", "/x").json()["id"]

    def test_configmap_symlink_swap(self):
        a, b = self.mocks
        cm = ConfigMapDir()
        cm.update(self.cfg(a))
        rr = self.ringroute(cm.path, shards=2, extra=["--watch-config"])
        self.assertEqual(self.served_by(rr), "a")
        cm.update(self.cfg(b))
        self.assertTrue(wait_stderr(rr, "config version 2"), rr.stderr_tail())
        self.assertIn("changed: reloading", rr.stderr())
        for _ in range(10):
            self.assertEqual(self.served_by(rr), "b")
        # The same content again (a new ..data with identical bytes):
        # nothing to reload. Then a real change is version 3, not 4.
        cm.update(self.cfg(b))
        cm.update(self.cfg(a))
        self.assertTrue(wait_stderr(rr, "config version 3"), rr.stderr_tail())
        self.assertEqual(self.served_by(rr), "a")
        self.assertNotIn("config version 4", rr.stderr())
        self.assertEqual(rr.stderr().count("changed: reloading"), 2, rr.stderr_tail())

    def test_plain_file_write_and_rename(self):
        a, b = self.mocks
        path = harness.write_config(self.cfg(a))
        rr = self.ringroute(path, extra=["--watch-config"])
        # Written in place.
        with open(path, "w") as f:
            json.dump(self.cfg(b), f)
        self.assertTrue(wait_stderr(rr, "config version 2"), rr.stderr_tail())
        self.assertEqual(self.served_by(rr), "b")
        # Another file of the directory changes nothing.
        with open(os.path.join(os.path.dirname(path), "notes.txt"), "w") as f:
            f.write("x")
        # A broken file is refused; the config stays.
        with open(path, "w") as f:
            f.write('{"backends": {')
        self.assertTrue(wait_stderr(rr, "reload refused"), rr.stderr_tail())
        self.assertEqual(self.served_by(rr), "b")
        # An editor's save: a new file renamed over the old.
        tmp = path + ".swp"
        with open(tmp, "w") as f:
            json.dump(self.cfg(a), f)
        os.rename(tmp, path)
        self.assertTrue(wait_stderr(rr, "config version 3"), rr.stderr_tail())
        self.assertEqual(self.served_by(rr), "a")

    def test_needs_config(self):
        # Only --config is watched: with --state alone there is no file.
        state = os.path.join(tempfile.mkdtemp(dir=harness._TMPDIR), "state.json")
        with open(state, "w") as f:
            json.dump(self.cfg(self.mocks[0]), f)
        p = subprocess.run([harness.ringroute_bin(), "--state", state, "--watch-config",
                            "--listen", "127.0.0.1:0"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=15)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(b"--watch-config needs --config", p.stderr)

if __name__ == "__main__":
    harness.main()
