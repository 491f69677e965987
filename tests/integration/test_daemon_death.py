"""kill -9 of modelshared under load: every client's next call fails with MS_E_DAEMON_LOST (never
a hang), even one blocked in ms_infer; the workers exit with their daemon; the next acquire starts
a new daemon on the same socket path with nothing stale left behind. (test_daemon.py has the same
kill without load; tests/helpers/faultclient.c drives the clients.)"""
import json
import os
import signal
import subprocess
import time

from conftest import BUILD, pid_alive, wait_until

FAULTCLIENT = BUILD / "tests" / "ms-faultclient"
WORKER = BUILD / "modelshare-worker"
# Generous bounds; the figure is "within 1 s" for the workers, and the client looks at
# the daemon's socket every 100 ms while it waits.
BOUND_S = 3.0


def loadloop(ms, tag, spec, kind, rows):
    p = subprocess.Popen([str(FAULTCLIENT), "loadloop", tag, json.dumps(spec), kind, str(rows)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ms.env)
    return p


def test_kill_9_of_the_daemon_under_load(ms):
    # Each request on "slow" takes a good part of a second: its client is blocked in ms_infer
    # when the daemon dies.
    weights = ms.make_dense("slow.safetensors", [2048, 2048, 2048], seed=5)
    slow = {"backend": "dense", "weights": str(weights), "keep_alive": 60}
    fast = {"backend": "identity", "keep_alive": 60}
    clients = [("slow", slow, "infer", 1024)]
    clients += [("fast", fast, "infer", 4)] * 3
    clients += [("fast", fast, "status", 0)] * 2
    procs = [loadloop(ms, *c) for c in clients]
    try:
        for p in procs:
            line = p.stdout.readline().strip()
            assert line == "ready", line + p.stderr.read()
        time.sleep(0.5)
        daemon = ms.daemon_pid()
        workers = [w for m in ms.status()["models"] for w in m["worker_pids"]]
        assert len(workers) == 2
        t_kill = time.monotonic()
        os.kill(daemon, signal.SIGKILL)

        # Every worker goes (parent-death signal; its control socket closes too).
        wait_until(lambda: not any(pid_alive(w) for w in workers), timeout=10,
                   interval=0.005, what="the workers to exit")
        workers_s = time.monotonic() - t_kill
        print(f"\nworkers gone {workers_s * 1e3:.0f} ms after kill -9 of the daemon")
        assert workers_s <= BOUND_S

        for (tag, _, kind, _), p in zip(clients, procs):
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, out + err
            lost, nxt = out.strip().splitlines()[-2:]
            _, name, calls, at = lost.split()
            lost_s = float(at) - t_kill
            print(f"{kind:6} client of {tag}: {name} {lost_s * 1e3:.0f} ms after the kill "
                  f"({calls} calls before); {nxt}")
            assert name == "MS_E_DAEMON_LOST", out
            assert lost_s <= BOUND_S
            f = nxt.split()
            assert f[0] == "next" and f[2] == f[5] == f[8] == "MS_E_DAEMON_LOST", nxt
            assert all(float(f[i]) / 1e6 <= BOUND_S for i in (3, 6, 9)), nxt
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()

    # The next acquire starts a new daemon on the same socket path and is served.
    s = ms.session("fast", fast)
    assert s.ok, s.first + s.proc.stderr.read()
    new = ms.daemon_pid()
    assert new is not None and new != daemon
    assert s.command("release") == "released"
    # Nothing of the dead daemon is left where it could block or leak: the socket directory has
    # the new daemon's files only, and modelshare never puts anything in /dev/shm (its shared
    # memory is memfds, gone with their last process).
    assert sorted(os.listdir(ms.socket.parent)) == [
        "modelshared.log", "modelshared.sock", "modelshared.sock.pid",
        "modelshared.sock.start.lock"]
    assert not [n for n in os.listdir("/dev/shm") if "modelshare" in n]


def test_a_worker_whose_control_socket_closes_exits(ms, tmp_path):
    # The second way a worker notices its daemon is gone: its parent is alive here (the helper),
    # so no parent-death signal comes; only the control socket closes.
    r = subprocess.run([str(FAULTCLIENT), "orphanworker", str(WORKER),
                        json.dumps({"backend": "identity"})], capture_output=True, text=True,
                       env=ms.env, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("exited "), r.stdout + r.stderr
    _, ms_taken, status = r.stdout.split()
    print(f"\nworker exited {ms_taken} ms after its control socket closed (status {status})")
    assert status == "0"
    assert float(ms_taken) / 1e3 <= BOUND_S
