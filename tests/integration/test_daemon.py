"""The daemon: started on demand exactly once, recovered after a crash, private to its user."""
import os
import pwd
import signal
import subprocess

import pytest

from conftest import TESTCLIENT, pid_alive, wait_until


def modelshared_pids(socket):
    out = subprocess.run(["pgrep", "-f", f"modelshared --socket {socket}"], capture_output=True,
                         text=True).stdout.split()
    return [int(p) for p in out if pid_alive(int(p))]


def test_sixteen_racing_clients_start_one_daemon(ms):
    procs = [subprocess.Popen([str(TESTCLIENT), "connect"], stdout=subprocess.PIPE, text=True,
                              env=ms.env) for _ in range(16)]
    outputs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    pids = {line.split()[1] for line in outputs}
    assert len(pids) == 1, outputs
    assert len(modelshared_pids(ms.socket)) == 1
    assert int(pids.pop()) == ms.daemon_pid()


def test_stale_socket_from_killed_daemon_is_recovered(ms):
    weights = ms.make_dense("m.safetensors", [8, 8, 2])
    ms.cli("load", "x", "--backend", "dense", "--weights", weights)
    old = ms.daemon_pid()
    (worker,) = ms.model("x")["worker_pids"]
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: not pid_alive(old), what="daemon death")
    assert ms.socket.exists(), "the killed daemon leaves its socket file behind"
    # Its worker follows it (parent-death signal): no orphan keeps the memory.
    wait_until(lambda: not pid_alive(worker), timeout=10, what="orphan worker exit")
    r = subprocess.run([str(TESTCLIENT), "connect"], capture_output=True, text=True, env=ms.env,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    new = int(r.stdout.split()[1])
    assert new != old and pid_alive(new)


def test_daemon_refuses_second_instance(ms):
    subprocess.run([str(TESTCLIENT), "connect"], check=True, env=ms.env, capture_output=True)
    from conftest import BUILD
    r = subprocess.run([str(BUILD / "modelshared"), "--socket", str(ms.socket), "--foreground"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "another modelshared is running" in r.stderr


def _as_nobody():
    nobody = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
def test_other_uid_is_refused(ms):
    import shutil
    import tempfile
    from conftest import BUILD
    subprocess.run([str(TESTCLIENT), "connect"], check=True, env=ms.env, capture_output=True)
    # A copy of the client that user nobody can execute, wherever the build folder lives.
    bindir = tempfile.mkdtemp(prefix="msn-", dir="/tmp")
    try:
        os.chmod(bindir, 0o755)
        shutil.copy2(TESTCLIENT, bindir)
        for lib in BUILD.glob("libmodelshare.so*"):
            shutil.copy2(lib, bindir, follow_symlinks=True)
        client = os.path.join(bindir, "ms-testclient")
        env = dict(ms.env, MODELSHARE_NO_AUTOSTART="1", LD_LIBRARY_PATH=bindir)
        # The socket's directory is private (0700): another user cannot even reach the socket.
        r = subprocess.run([client, "connect"], capture_output=True, text=True, env=env,
                           preexec_fn=_as_nobody, timeout=30)
        assert r.returncode == 1 and r.stdout.startswith("error MS_E_"), r.stdout + r.stderr
        # Even with the file permissions opened up, the daemon checks the peer's uid itself.
        os.chmod(ms.dir, 0o755)
        os.chmod(ms.socket.parent, 0o755)
        os.chmod(ms.socket, 0o777)
        r = subprocess.run([client, "connect"], capture_output=True, text=True, env=env,
                           preexec_fn=_as_nobody, timeout=30)
        assert r.returncode == 1
        assert r.stdout.startswith("error MS_E_PERMISSION"), r.stdout + r.stderr
        assert "uid" in r.stdout
        assert "refuses" in ms.log()
    finally:
        shutil.rmtree(bindir)
        os.chmod(ms.socket.parent, 0o700)
        os.chmod(ms.dir, 0o700)


def test_idle_exit(ms):
    env = dict(ms.env, MODELSHARE_IDLE_EXIT="1")
    r = subprocess.run([str(TESTCLIENT), "connect"], capture_output=True, text=True, env=env,
                       timeout=60)
    pid = int(r.stdout.split()[1])
    wait_until(lambda: not pid_alive(pid), timeout=15, what="idle daemon exit")
    assert not ms.socket.exists()
