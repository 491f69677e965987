"""Daemon recovery: the socket of a newer daemon is left alone, failed models do not fill
the model table for good."""
import json
import os
import pathlib
import signal
import socket
import struct
import subprocess

from conftest import BUILD, SANITIZED, pid_alive, wait_until

DAEMON = BUILD / "modelshared"


def start_daemon(sock):
    r = subprocess.run([str(DAEMON), "--socket", str(sock)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return int(pathlib.Path(str(sock) + ".pid").read_text().strip())


def test_old_daemon_leaves_a_newer_daemons_socket(ms):
    ms.socket.parent.mkdir(mode=0o700)
    old_pid = start_daemon(ms.socket)
    # The socket directory is recreated (moved away here, so that the old daemon's log stays
    # readable) and a second daemon binds the same path.
    old_dir = ms.dir / "d-old"
    os.rename(ms.socket.parent, old_dir)
    ms.socket.parent.mkdir(mode=0o700)
    new_pid = start_daemon(ms.socket)
    assert new_pid != old_pid
    st = os.stat(ms.socket)
    os.kill(old_pid, signal.SIGTERM)
    wait_until(lambda: not pid_alive(old_pid), timeout=15, what="old daemon exit")
    assert ms.socket.exists(), "the old daemon removed the new daemon's socket"
    assert os.stat(ms.socket).st_ino == st.st_ino
    assert ms.status()["daemon_pid"] == new_pid
    if SANITIZED:
        log = (old_dir / "modelshared.log").read_text(errors="replace")
        for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            assert marker not in log, log[-6000:]


class Conn:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(60)
        self.s.connect(str(path))
        self.next_id = 1

    def call(self, **msg):
        msg["id"] = self.next_id
        self.next_id += 1
        body = json.dumps(msg).encode()
        self.s.sendall(struct.pack("<I", len(body)) + body)
        head = self._read(4)
        (n,) = struct.unpack("<I", head)
        reply = json.loads(self._read(n))
        assert reply["id"] == msg["id"]
        return reply

    def _read(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            assert chunk, "daemon closed the connection"
            buf += chunk
        return buf

    def close(self):
        self.s.close()


def test_failed_models_do_not_fill_the_table(ms, tmp_path):
    ms.socket.parent.mkdir(mode=0o700)
    start_daemon(ms.socket)
    c = Conn(ms.socket)
    try:
        assert c.call(op="hello", version=4)["ok"]
        missing = str(tmp_path / "missing.safetensors")
        for i in range(256 + 8):
            r = c.call(op="load", tag=f"bad{i}", spec={"backend": "dense", "weights": missing})
            assert not r["ok"]
            assert "MS_E_LIMIT" not in r["error"] and "at most" not in r["error"], r
        # A good model still loads.
        w = ms.make_dense("m.safetensors", [4, 3])
        r = c.call(op="load", tag="good", spec={"backend": "dense", "weights": str(w)})
        assert r["ok"], r
    finally:
        c.close()
    models = ms.status()["models"]
    assert len(models) == 256
    tags = {m["tag"] for m in models}
    assert "good" in tags and "bad0" not in tags and "bad263" in tags
