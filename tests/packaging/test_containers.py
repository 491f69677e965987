"""Clients in other "containers": one daemon on the host, four clients each in new PID, mount,
IPC and UTS namespaces (`unshare -p -f -m -i -u --mount-proc`) with a private /tmp and /dev/shm
(empty tmpfs) that share only the socket directory, bind-mounted at /tmp/modelshare as a
Kubernetes hostPath volume or `docker run -v` would. What crosses is the socket: arenas are
memfds passed over it, so nothing else needs sharing.

Checked: one load of each model serves all four, answers right, the daemon sees the clients'
pids in its own PID namespace (the kernel translates SO_PEERCRED) and their uid, a killed
container (SIGKILL to its PID 1: the kernel kills everything in it) releases its leases, and
the others keep being served. Root only (skipped with the reason otherwise)."""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from testlib import mlp_reference, save_mlp, wait_until

CLIENT = r"""
import json, os, socket, sys
import numpy as np
import modelshare

def make_affine():
    import numpy as np
    w = np.random.default_rng(7).standard_normal((16, 5)).astype(np.float32)
    return lambda x: x @ w + 1

i = int(sys.argv[2])
x = np.random.default_rng(100 + i).standard_normal((i + 2, 16)).astype(np.float32)
dense = modelshare.Shared.dense(sys.argv[1], tag="mlp")
affine = modelshare.Shared(make_affine, tag="affine")
with dense.acquire() as d, affine.acquire() as a:
    print(json.dumps({"pid": os.getpid(), "hostname": socket.gethostname(),
                      "tmp": sorted(os.listdir("/tmp")), "shm": sorted(os.listdir("/dev/shm")),
                      "x": x.tolist(), "dense": np.asarray(d(x)).tolist(),
                      "affine": np.asarray(a(x)).tolist()}), flush=True)
    for line in sys.stdin:
        if line.strip() != "again":
            break
        print(json.dumps({"dense": np.asarray(d(x)).tolist()}), flush=True)
"""

NS = ["unshare", "--pid", "--fork", "--mount", "--ipc", "--uts", "--mount-proc"]


def why_not():
    if os.geteuid() != 0:
        return "needs root for unshare --pid --mount --ipc --uts"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    r = subprocess.run(NS + ["true"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"unshare cannot make the namespaces here: {r.stderr.strip()}"
    return None


def kept_in_tmp():
    """What a container's private /tmp holds besides the socket directory: the top folder of this
    test's Python when it lies under /tmp (see container())."""
    venv = os.path.realpath(sys.prefix)
    return [venv.split("/")[2]] if venv.startswith("/tmp/") else []


def container(i, sockdir, weights, env):
    """A client in container i: the socket directory moved to /tmp/modelshare after /tmp and
    /dev/shm are replaced by empty ones. The container's image is the host's root, so its Python
    (this test's virtual environment) stays where it is, also when it lies under /tmp (a checkout
    there): staged on a tmpfs of the container's own at /mnt, then moved back in place."""
    venv = os.path.realpath(sys.prefix)
    keep = venv == "/tmp" or venv.startswith("/tmp/")
    script = "\n".join([
        "set -e",
        "mount --make-rprivate /",
        "mkdir -p /mnt",
        "mount -t tmpfs none /mnt",
        "mkdir /mnt/sock /mnt/venv",
        f"mount --bind {sockdir} /mnt/sock",
        *([f"mount --bind {venv} /mnt/venv"] if keep else []),
        "mount -t tmpfs -o mode=1777 none /tmp",
        "mount -t tmpfs -o mode=1777 none /dev/shm",
        "mkdir /tmp/modelshare",
        "mount --move /mnt/sock /tmp/modelshare",
        *([f"mkdir -p {venv}", f"mount --move /mnt/venv {venv}"] if keep else []),
        f"hostname container-{i}",
        f"exec {sys.executable} -c '{CLIENT}' {weights} {i}",
    ])
    return subprocess.Popen(NS + ["sh", "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(env, MODELSHARE_SOCKET="/tmp/modelshare/modelshared.sock",
                                     MODELSHARE_NO_AUTOSTART="1"))


def host_side(tmp_path):
    """What the host of the containers has (skips when containers cannot be made here): the
    installed package's folder, the socket directory and path, a dense model's weights, the
    environment the daemon and the containers start from, and the daemon's log file."""
    why = why_not()
    if why:
        pytest.skip(why)
    import modelshare
    package = os.path.dirname(modelshare.__file__)
    sockdir = tmp_path / "run"
    sockdir.mkdir(mode=0o700)
    weights = save_mlp(tmp_path / "m.safetensors", [16, 32, 4], seed=3)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    log = open(tmp_path / "daemon.log", "w")
    return package, sockdir, sockdir / "modelshared.sock", weights, env, log


def init_pid(unshare_pid):
    """The container's PID 1 as the host sees it: unshare's child."""
    with open(f"/proc/{unshare_pid}/task/{unshare_pid}/children") as f:
        return int(f.read().split()[0])


def test_clients_in_four_containers_share_one_daemon(tmp_path):
    package, sockdir, sock, weights, env, log = host_side(tmp_path)
    daemon = subprocess.Popen([f"{package}/modelshared", "--foreground", "--socket", str(sock),
                               "--log-level", "info"], stdout=log, stderr=log, env=env)
    host = dict(env, MODELSHARE_SOCKET=str(sock), MODELSHARE_NO_AUTOSTART="1")
    cli = f"{package}/modelshare"

    def status():
        r = subprocess.run([cli, "status", "--json"], env=host, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return {m["tag"]: m for m in json.loads(r.stdout)["models"]}

    procs = []
    try:
        wait_until(lambda: sock.exists(), what="the daemon's socket")
        t0 = time.monotonic()
        procs = [container(i, sockdir, weights, env) for i in range(4)]
        got = []
        for p in procs:
            line = p.stdout.readline()
            assert line, p.stderr.read()
            got.append(json.loads(line))
        served = time.monotonic() - t0
        w = np.random.default_rng(7).standard_normal((16, 5)).astype(np.float32)
        for g in got:
            # Each is PID 1 of a container of its own, with its own hostname, /tmp and /dev/shm.
            assert g["pid"] == 1 and g["tmp"] == sorted(["modelshare", *kept_in_tmp()]) and \
                g["shm"] == [], g
            x = np.array(g["x"], np.float32)
            np.testing.assert_allclose(g["dense"], mlp_reference(weights, x), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(g["affine"], x @ w + 1, rtol=1e-5, atol=1e-5)
        assert sorted(g["hostname"] for g in got) == [f"container-{i}" for i in range(4)]
        models = status()
        for tag in ("mlp", "affine"):
            assert models[tag]["loads"] == 1 and models[tag]["leases"] == 4, models[tag]
        # The daemon names each client by its pid in the daemon's own PID namespace (the kernel
        # translates SO_PEERCRED's pid): the container's PID 1 as the host sees it.
        hosts = {init_pid(p.pid) for p in procs}
        r = subprocess.run([cli, "unload", "mlp"], env=host, capture_output=True, text=True)
        assert r.returncode == 1
        named = {int(t) for t in r.stderr.replace(",", " ").replace(")", " ").split()
                 if t.isdigit() and int(t) in hosts}
        assert named == hosts, (r.stderr, hosts)

        # Kill container 3 as a runtime does: SIGKILL to its PID 1 takes everything in it.
        t1 = time.monotonic()
        os.kill(init_pid(procs[3].pid), 9)
        procs[3].wait(timeout=30)
        wait_until(lambda: status()["mlp"]["leases"] == 3 and status()["affine"]["leases"] == 3,
                   what="the killed container's leases released")
        released = time.monotonic() - t1
        for i, p in enumerate(procs[:3]):  # the others go on being served
            p.stdin.write("again\n")
            p.stdin.flush()
            again = json.loads(p.stdout.readline())
            np.testing.assert_allclose(again["dense"], got[i]["dense"], rtol=1e-4, atol=1e-5)
        for p in procs[:3]:
            p.stdin.close()
            assert p.wait(timeout=30) == 0, p.stderr.read()
        wait_until(lambda: status()["mlp"]["leases"] == 0, what="all leases released")
        models = status()
        assert models["mlp"]["loads"] == 1 and models["affine"]["loads"] == 1
        print(f"4 containers: one load per model, answers right; served in {served:.2f} s; "
              f"a killed container's leases released in {released:.2f} s")
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    os.kill(init_pid(p.pid), 9)
                except (OSError, IndexError, ValueError):
                    p.kill()
                p.wait(timeout=30)
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()


def test_daemon_as_pid_1_of_its_own_container(tmp_path):
    """The daemon as a container's PID 1 (`unshare --pid --fork`, as `docker run` or a pod
    starts it): a client outside its PID namespace is served (its pid shows as 0, said once in
    the log), SIGTERM from outside stops it cleanly and its workers with it."""
    package, sockdir, sock, weights, env, log = host_side(tmp_path)
    ns = subprocess.Popen(["unshare", "--pid", "--fork", "--mount", "--mount-proc",
                           f"{package}/modelshared", "--foreground", "--socket", str(sock)],
                          stdout=log, stderr=log, env=env)
    host = dict(env, MODELSHARE_SOCKET=str(sock), MODELSHARE_NO_AUTOSTART="1")
    try:
        wait_until(lambda: sock.exists(), what="the daemon's socket")
        daemon = init_pid(ns.pid)
        r = subprocess.run([f"{package}/modelshare", "load", "mlp", "--backend", "dense",
                            "--weights", str(weights)], env=host, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        r = subprocess.run([f"{package}/modelshare", "status", "--json"], env=host,
                           capture_output=True, text=True)
        st = json.loads(r.stdout)
        assert st["daemon_pid"] == 1  # as the daemon sees itself
        worker = [p for m in st["models"] for p in m["worker_pids"]]
        assert len(worker) == 1
        # The worker's pid is the daemon's view; the host's is the daemon's child.
        with open(f"/proc/{daemon}/task/{daemon}/children") as f:
            (host_worker,) = [int(p) for p in f.read().split()]
        assert "not visible here and shows as 0" in (tmp_path / "daemon.log").read_text()
        t0 = time.monotonic()
        os.kill(daemon, 15)
        assert ns.wait(timeout=30) == 0, (tmp_path / "daemon.log").read_text()
        stopped = time.monotonic() - t0
        assert not os.path.exists(f"/proc/{host_worker}")
        print(f"daemon as PID 1: SIGTERM to exit 0 in {stopped:.2f} s, worker gone")
    finally:
        if ns.poll() is None:
            ns.kill()
            ns.wait(timeout=30)
        log.close()
