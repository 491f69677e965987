"""Fixtures for the Python package's tests.

They test the package as installed (make test installs ./python into .venv): every test gets its
own daemon socket in a fresh directory through $MODELSHARE_SOCKET, the package's own daemon starts
on first use, and it is stopped at the end of the test.
"""
import os
import pathlib
import shutil
import signal
import tempfile
import time

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

ROOT = pathlib.Path(__file__).resolve().parents[2]


def wait_until(predicate, timeout=20.0, interval=0.05, what="condition"):
    """Polls predicate until it returns a true value; fails after timeout seconds."""
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
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def save_mlp(path, layers, seed=0, prefix=""):
    """Writes an nn.Sequential-like float32 MLP (Linear, ReLU, Linear, ...) as safetensors."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for i in range(len(layers) - 1):
        bound = np.float32(1 / np.sqrt(layers[i]))
        w = rng.random((layers[i + 1], layers[i]), dtype=np.float32)
        tensors[f"{prefix}{2 * i}.weight"] = (w * 2 - 1) * bound
        tensors[f"{prefix}{2 * i}.bias"] = (rng.random(layers[i + 1], dtype=np.float32) * 2 - 1) * bound
    save_file(tensors, str(path))
    return path


def mlp_reference(path, x):
    """The MLP computed with numpy in float64 from the safetensors file."""
    layers = {}
    for name, value in load_file(str(path)).items():
        stem, kind = name.rsplit(".", 1)
        layers.setdefault(int(stem.rsplit(".", 1)[-1]), {})[kind] = value.astype(np.float64)
    h = np.asarray(x, dtype=np.float64)
    order = sorted(layers)
    for i, index in enumerate(order):
        h = h @ layers[index]["weight"].T + layers[index]["bias"]
        if i + 1 < len(order):
            h = np.maximum(h, 0)
    return h


class Daemon:
    """This test's private socket, and the daemon behind it once something started it."""

    def __init__(self, tmp):
        # Socket paths must fit in 107 bytes: keep the directory short.
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="msp-", dir="/tmp"))
        os.chmod(self.dir, 0o700)
        self.socket = self.dir / "d" / "modelshared.sock"
        self.tmp = pathlib.Path(tmp)

    def pid(self):
        try:
            pid = int(pathlib.Path(str(self.socket) + ".pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def log(self):
        p = self.socket.parent / "modelshared.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self):
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
            try:
                wait_until(lambda: not pid_alive(pid), timeout=15, what="daemon exit")
            except AssertionError:
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def daemon(tmp_path, monkeypatch):
    d = Daemon(tmp_path)
    monkeypatch.setenv("MODELSHARE_SOCKET", str(d.socket))
    monkeypatch.setenv("MODELSHARE_IDLE_EXIT", "0")
    for var in ("MODELSHARE_DAEMON", "MODELSHARE_WORKER", "MODELSHARE_NO_AUTOSTART"):
        monkeypatch.delenv(var, raising=False)
    yield d
    d.stop()
    shutil.rmtree(d.dir, ignore_errors=True)


@pytest.fixture
def mlp(daemon):
    """A small dense model file: 64 > 128 > 10."""
    return save_mlp(daemon.tmp / "mlp.safetensors", [64, 128, 10], seed=1)
