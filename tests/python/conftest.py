"""Fixtures for the Python package's tests.

They test the package as installed (make test installs ./python into .venv): every test gets its
own daemon socket in a fresh directory through $MODELSHARE_SOCKET, the package's own daemon starts
on first use, and it is stopped at the end of the test.
"""
import os
import pathlib
import shutil
import signal
import sys
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from testlib import mlp_reference, pid_alive, save_mlp, wait_until  # noqa: E402,F401


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
