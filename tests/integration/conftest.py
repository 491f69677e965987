"""Fixtures for the multi-process integration tests.

Every test gets its own daemon socket in a fresh directory (MODELSHARE_SOCKET), so tests never
share a daemon, and the daemon is stopped at the end of the test. The binaries come from
$MODELSHARE_BUILD (default: ./build). Under sanitizers (MODELSHARE_SANITIZED=1) the daemon's log is
searched for sanitizer reports at the end of each test.
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from testlib import mlp_reference, pid_alive, save_mlp, wait_until  # noqa: E402,F401
BUILD = pathlib.Path(os.environ.get("MODELSHARE_BUILD", ROOT / "build")).resolve()
CLI = BUILD / "modelshare"
TESTCLIENT = BUILD / "tests" / "ms-testclient"
SANITIZED = os.environ.get("MODELSHARE_SANITIZED") == "1"
PLANECLIENT = BUILD / "tests" / "ms-planeclient"


def start_planeclient(ms, *args):
    """An ms-planeclient process (tests/helpers/planeclient.c) with this daemon's environment."""
    return subprocess.Popen([str(PLANECLIENT), *map(str, args)], env=ms.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p, timeout=300):
    """Its output, once it exited 0."""
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, f"exit {p.returncode}: {out}{err}"
    return out.strip()


class LineClient:
    """A helper program (tests/helpers/) that acquires a model, prints "acquired", then answers each
    line it reads with one line."""

    def __init__(self, argv, env):
        self.proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout.readline().strip() == "acquired"

    def command(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self, timeout=60, check=False):
        """Ends its input and waits for it; check: it must exit 0."""
        self.proc.stdin.close()
        rc = self.proc.wait(timeout=timeout)
        self.proc.stdout.close()
        assert not check or rc == 0, rc


class Session:
    """An ms-testclient 'session' process holding a lease, driven line by line."""

    def __init__(self, env, tag, spec):
        spec_arg = "-" if spec is None else (spec if isinstance(spec, str) else json.dumps(spec))
        self.proc = subprocess.Popen(
            [str(TESTCLIENT), "session", tag, spec_arg],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env)
        self.first = self.proc.stdout.readline().strip()

    @property
    def ok(self):
        return self.first == "acquired"

    def command(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def infer(self, x, tmp):
        tmp = pathlib.Path(tmp)
        inp = tmp / f"in-{self.proc.pid}.npy"
        out = tmp / f"out-{self.proc.pid}.npy"
        np.save(inp, x)
        answer = self.command(f"infer {inp} {out}")
        if answer != "ok":
            return answer
        return np.load(out)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()


class Modelshare:
    """One private daemon socket and helpers to drive the CLI and clients against it."""

    def __init__(self, tmp):
        # Socket paths must fit in 107 bytes: keep the directory short.
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="mst-", dir="/tmp"))
        os.chmod(self.dir, 0o700)
        self.socket = self.dir / "d" / "modelshared.sock"
        self.tmp = pathlib.Path(tmp)
        self.env = dict(os.environ)
        self.env["MODELSHARE_SOCKET"] = str(self.socket)
        self.env["MODELSHARE_IDLE_EXIT"] = "0"
        self.sessions = []

    # --- CLI -------------------------------------------------------------------------------
    def cli(self, *args, check=True, timeout=120):
        r = subprocess.run([str(CLI), *map(str, args)], env=self.env, capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"modelshare {' '.join(map(str, args))} exited {r.returncode}:\n"
                                 f"{r.stdout}\n{r.stderr}")
        return r

    def status(self):
        r = self.cli("status", "--json")
        return json.loads(r.stdout)

    def model(self, tag):
        for m in self.status()["models"]:
            if m["tag"] == tag:
                return m
        return None

    def session(self, tag, spec):
        s = Session(self.env, tag, spec)
        self.sessions.append(s)
        return s

    # --- daemon ----------------------------------------------------------------------------
    def daemon_pid(self):
        try:
            text = pathlib.Path(str(self.socket) + ".pid").read_text().strip()
            pid = int(text)
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def log(self):
        p = self.socket.parent / "modelshared.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self):
        for s in self.sessions:
            s.close()
        pid = self.daemon_pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
            try:
                wait_until(lambda: not pid_alive(pid), timeout=15, what="daemon exit")
            except AssertionError:
                os.kill(pid, signal.SIGKILL)

    # --- models ----------------------------------------------------------------------------
    def make_dense(self, name, layers, seed=0):
        path = self.tmp / name
        self.cli("make-dense", path, "--layers", ",".join(map(str, layers)), "--seed", seed)
        return path


@pytest.fixture
def ms(tmp_path):
    assert CLI.exists(), f"{CLI} is missing: build first (make build)"
    m = Modelshare(tmp_path)
    yield m
    m.stop()
    log = m.log()
    if SANITIZED:
        for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            assert marker not in log, f"sanitizer report in the daemon's log:\n{log[-6000:]}"
    subprocess.run(["rm", "-rf", str(m.dir)])
