"""A machine-wide daemon: socket activation as systemd does it, a Unix group that shares one
daemon, and the unit files in contrib/systemd started as written."""
import configparser
import json
import os
import pathlib
import shlex
import signal
import socket
import stat
import subprocess
import tempfile

import numpy as np
import pytest

from conftest import BUILD, CLI, ROOT, wait_until, pid_alive

DAEMON = BUILD / "modelshared"
UNITS = ROOT / "contrib" / "systemd"
IS_ROOT = os.geteuid() == 0


def short_dir(mode=0o700):
    d = pathlib.Path(tempfile.mkdtemp(prefix="mss-", dir="/tmp"))
    os.chmod(d, mode)
    return d


def listening(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(64)
    return s


def activate(sock, *args, env=None):
    """Starts modelshared as a service manager does: the socket as descriptor 3, LISTEN_FDS=1 and
    LISTEN_PID naming the daemon itself."""
    fd = sock.fileno()
    line = f'exec 3<&{fd} {fd}<&-; LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"'
    return subprocess.Popen(["bash", "-c", line, str(DAEMON), *map(str, args)], pass_fds=(fd,),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def answers(env):
    """Whether a daemon answers on env's socket (status says "no daemon" with exit 0)."""
    r = cli(env, "status", "--json", check=False)
    return r.returncode == 0 and r.stdout.startswith("{")


def client_env(path):
    env = dict(os.environ)
    env["MODELSHARE_SOCKET"] = str(path)
    env["MODELSHARE_NO_AUTOSTART"] = "1"
    return env


def cli(env, *args, user=None, check=True):
    r = subprocess.run([str(CLI), *map(str, args)], env=env, capture_output=True, text=True,
                       timeout=120, preexec_fn=user)
    if check:
        assert r.returncode == 0, f"modelshare {args} exited {r.returncode}: {r.stdout}{r.stderr}"
    return r


def infer_identity(env, tmp, user=None, check=True, spec='{"backend":"identity"}'):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    xin, yout = tmp / "x.npy", pathlib.Path(tempfile.mktemp(suffix=".npy", dir=tmp))
    np.save(xin, x)
    os.chmod(xin, 0o644)
    r = cli(env, "infer", "ident", "--spec", spec, "--input", xin,
            "--output", yout, user=user, check=check)
    if r.returncode == 0:
        np.testing.assert_array_equal(np.load(yout), x)
    return r


def stop(p):
    """Stops a daemon started in the foreground; its exit status and log (stderr)."""
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
        assert marker not in err, f"sanitizer report in the daemon's log:\n{err[-6000:]}"
    return p.returncode, err


def test_socket_activation_serves_on_the_inherited_socket(tmp_path):
    d = short_dir()
    path = d / "modelshared.sock"
    sock = listening(path)
    ino = os.stat(path).st_ino
    p = activate(sock, "--log-level", "debug")
    sock.close()
    env = client_env(path)
    try:
        wait_until(lambda: answers(env), what="the daemon")
        infer_identity(env, tmp_path)
        st = json.loads(cli(env, "status", "--json").stdout)
        assert st["socket"] == str(path)
        worker = st["models"][0]["worker_pids"][0]
        environ = pathlib.Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
        assert not any(v.startswith((b"LISTEN_PID=", b"LISTEN_FDS=")) for v in environ)
        daemon_fds = os.listdir(f"/proc/{p.pid}/fd")
        assert "3" in daemon_fds  # served on, not closed with the other inherited descriptors
    finally:
        rc, err = stop(p)
    assert rc == 0, err
    assert "a socket from the service manager" in err
    # The socket is the manager's: the same file, left in place, and no pid lock beside it.
    assert os.stat(path).st_ino == ino
    assert not pathlib.Path(str(path) + ".pid").exists()
    assert not pid_alive(worker)


@pytest.mark.parametrize("kind", ["file", "datagram", "not_listening", "two"])
def test_socket_activation_refuses_what_is_not_one_listening_socket(kind):
    d = short_dir()
    if kind == "file":
        sock = open(d / "plain", "w")
    elif kind == "datagram":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(d / "dgram"))
    elif kind == "not_listening":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(d / "quiet"))
    else:
        sock = listening(d / "one")
    fd = sock.fileno()
    n = "2" if kind == "two" else "1"
    line = f'exec 3<&{fd} {fd}<&-; LISTEN_PID=$$ LISTEN_FDS={n} exec "$0" "$@"'
    r = subprocess.run(["bash", "-c", line, str(DAEMON)], pass_fds=(fd,), capture_output=True,
                       text=True, timeout=30)
    sock.close()
    assert r.returncode == 1, r.stderr
    want = ("expected one inherited socket, got 2" if kind == "two" else
            "expected descriptor 3 to be a listening Unix stream socket")
    assert want in r.stderr, r.stderr


def as_user(uid, gid, groups):
    """A preexec_fn that makes the child another user (tests run as root in CI)."""
    def switch():
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
    return switch


@pytest.mark.skipif(not IS_ROOT, reason="switching to other users needs root (CI runs as root)")
def test_a_group_shares_one_daemon_and_others_stay_out(tmp_path):
    group = 46123
    top = short_dir(0o755)
    path = top / "run" / "modelshared.sock"
    env = client_env(path)
    tmp = short_dir(0o1777)
    r = subprocess.run([str(DAEMON), "--socket", path, "--group", str(group)], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    try:
        for f, mode in ((path, 0o660), (path.parent, 0o750)):
            st = os.stat(f)
            assert stat.S_IMODE(st.st_mode) == mode and st.st_gid == group, (f, oct(st.st_mode))
        # A member through a supplementary group, and one through its primary group, share the
        # model the first loaded for the group (docs/SECURITY.md: each model has an owner).
        shared = '{"backend":"identity","shared_with":"group"}'
        infer_identity(env, tmp, user=as_user(47001, 47001, [group]), spec=shared)
        infer_identity(env, tmp, user=as_user(47002, group, []))
        # Outside the group: the socket's mode keeps it out, and so would the daemon.
        r = infer_identity(env, tmp, user=as_user(47003, 47003, []), check=False)
        assert r.returncode != 0
        assert "ermission" in r.stderr, r.stderr
        st = json.loads(cli(env, "status", "--json").stdout)
        assert st["models"][0]["tag"] == "ident"
    finally:
        pid = int(pathlib.Path(str(path) + ".pid").read_text())
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pid_alive(pid), what="daemon exit")


@pytest.mark.skipif(not IS_ROOT, reason="switching to other users needs root (CI runs as root)")
def test_the_daemon_itself_refuses_a_user_outside_the_group(tmp_path):
    # The socket file open to everyone: the daemon's own check (SO_PEERCRED, SO_PEERGROUPS) is
    # what keeps the stranger out, with MS_E_PERMISSION and a message.
    group = 46124
    d = short_dir(0o755)
    path = d / "modelshared.sock"
    sock = listening(path)
    os.chmod(path, 0o666)
    p = activate(sock, "--group", group)
    sock.close()
    env = client_env(path)
    tmp = short_dir(0o1777)
    try:
        wait_until(lambda: answers(env), what="the daemon")
        infer_identity(env, tmp, user=as_user(47011, 47011, [group]))
        r = infer_identity(env, tmp, user=as_user(47012, 47012, [46999]), check=False)
        assert r.returncode != 0
        assert "outside that group" in r.stderr, r.stderr
    finally:
        rc, err = stop(p)
    assert "refused a client of uid 47012 outside that group" in err


def unit(name):
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read(UNITS / name)
    return cp


def test_the_unit_files_start_the_daemon_as_written(tmp_path):
    sock_unit, service = unit("modelshared.socket"), unit("modelshared.service")
    listen = sock_unit["Socket"]["ListenStream"]
    assert listen == "/run/modelshare/modelshared.sock"  # docs/operations.md's machine-wide path
    assert sock_unit["Socket"]["SocketMode"] == "0660"
    group = sock_unit["Socket"]["SocketGroup"]
    argv = shlex.split(service["Service"]["ExecStart"])
    assert pathlib.Path(argv[0]).name == "modelshared"
    assert argv[argv.index("--group") + 1] == group
    assert service["Service"]["User"] == sock_unit["Socket"]["SocketUser"]
    # Its command line, with this build's binary and a group that exists here, activated.
    argv[argv.index("--group") + 1] = str(os.getegid())
    d = short_dir()
    sock = listening(d / "modelshared.sock")
    fd = sock.fileno()
    line = f'exec 3<&{fd} {fd}<&-; LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"'
    p = subprocess.Popen(["bash", "-c", line, str(DAEMON), *argv[1:]], pass_fds=(fd,),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sock.close()
    env = client_env(d / "modelshared.sock")
    try:
        wait_until(lambda: answers(env) or p.poll() is not None,
                   what="the daemon")
        assert p.poll() is None, p.communicate()
        infer_identity(env, tmp_path)
    finally:
        rc, err = stop(p)
    assert rc == 0, err
