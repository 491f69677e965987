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
import tempfile
import time

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("MODELSHARE_BUILD", ROOT / "build")).resolve()
CLI = BUILD / "modelshare"
TESTCLIENT = BUILD / "tests" / "ms-testclient"
SANITIZED = os.environ.get("MODELSHARE_SANITIZED") == "1"


def wait_until(predicate, timeout=20.0, interval=0.05, what="condition"):
    """Polls predicate until it returns a true value; fails the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:  # gone between the two looks
        return False


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


def mlp_reference(path, x, output="linear"):
    """The MLP computed with numpy from the safetensors file: layers ordered by their index."""
    tensors = load_file(str(path))
    layers = {}
    for name, value in tensors.items():
        stem, kind = name.rsplit(".", 1)
        index = int(stem.rsplit(".", 1)[-1])
        layers.setdefault(index, {})[kind] = value.astype(np.float64)
    h = x.astype(np.float64)
    order = sorted(layers)
    for i, index in enumerate(order):
        h = h @ layers[index]["weight"].T
        if "bias" in layers[index]:
            h = h + layers[index]["bias"]
        if i + 1 < len(order):
            h = np.maximum(h, 0)
    if output == "softmax":
        h = np.exp(h - h.max(axis=1, keepdims=True))
        h = h / h.sum(axis=1, keepdims=True)
    return h


def save_mlp(path, layers, prefix="", seed=0, dtype=np.float32):
    """Writes an nn.Sequential-like MLP with numpy and the safetensors package."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for i in range(len(layers) - 1):
        bound = 1 / np.sqrt(layers[i])
        tensors[f"{prefix}{2 * i}.weight"] = rng.uniform(
            -bound, bound, (layers[i + 1], layers[i])).astype(dtype)
        tensors[f"{prefix}{2 * i}.bias"] = rng.uniform(-bound, bound, layers[i + 1]).astype(dtype)
    save_file(tensors, str(path))
    return path
