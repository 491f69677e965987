"""Leases, keep-alive, unload, and memory that comes back when a model goes."""
import json
import os
import signal

import numpy as np

from conftest import mlp_reference, pid_alive, wait_until


def spec(path, **extra):
    return {"backend": "dense", "weights": str(path), **extra}


def rss_of(pid):
    """A process's resident memory (its own: the machine's free memory says nothing on a busy
    machine)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def descendants(pid):
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except FileNotFoundError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = {int(c) for c in f.read().split()}
            except FileNotFoundError:
                continue
            todo.extend(kids - out)
            out |= kids
    return out


def test_release_then_keep_alive_stops_worker_and_returns_memory(ms):
    # ~256 MB of weights, held by the worker process.
    weights = ms.make_dense("big.safetensors", [4096, 8192, 4096, 16])
    s = ms.session("big", spec(weights, keep_alive=1))
    assert s.ok, s.first
    m = ms.model("big")
    (worker,) = m["worker_pids"]
    assert m["memory_bytes"] > 200e6, m
    assert rss_of(worker) > 200e6, rss_of(worker)
    assert s.command("release") == "released"
    # Idle now: still loaded during the keep-alive, gone after it.
    assert ms.model("big")["leases"] == 0
    wait_until(lambda: not pid_alive(worker), timeout=15, what="worker exit after keep-alive")
    wait_until(lambda: ms.model("big") is None, timeout=5, what="model removed from status")
    assert ms.status()["budgets"]["host"]["used_bytes"] == 0
    # The memory went with the process that held it, and no other process of the daemon's holds
    # a copy.
    daemon = ms.daemon_pid()
    assert worker not in descendants(daemon)
    assert sum(rss_of(p) for p in descendants(daemon) if os.path.exists(f"/proc/{p}")) < 64e6


def test_keep_alive_zero_unloads_at_once(ms):
    weights = ms.make_dense("m.safetensors", [8, 8, 2])
    s = ms.session("now", spec(weights, keep_alive=0))
    assert s.ok
    (worker,) = ms.model("now")["worker_pids"]
    assert s.command("release") == "released"
    wait_until(lambda: not pid_alive(worker), timeout=10, what="worker exit")


def test_model_stays_during_keep_alive_and_is_reused(ms):
    weights = ms.make_dense("m.safetensors", [8, 8, 2])
    s = ms.session("warm", spec(weights, keep_alive=60))
    assert s.ok and s.command("release") == "released"
    s2 = ms.session("warm", spec(weights, keep_alive=60))
    assert s2.ok
    m = ms.model("warm")
    assert m["loads"] == 1 and m["leases"] == 1


def test_killed_client_releases_its_leases(ms):
    weights = ms.make_dense("m.safetensors", [8, 8, 2])
    holder = ms.session("k", spec(weights, keep_alive=60))
    other = ms.session("k", spec(weights, keep_alive=60))
    assert holder.ok and other.ok
    assert ms.model("k")["leases"] == 2
    os.kill(holder.proc.pid, signal.SIGKILL)
    holder.proc.wait()
    wait_until(lambda: ms.model("k")["leases"] == 1, timeout=10, what="lease of the dead client")
    # The survivor does not notice.
    x = np.ones((1, 8), np.float32)
    y = other.infer(x, ms.tmp)
    np.testing.assert_allclose(y, mlp_reference(weights, x), rtol=1e-4, atol=1e-6)


def test_unload_refused_with_leases_then_forced(ms):
    weights = ms.make_dense("m.safetensors", [8, 8, 2])
    s = ms.session("u", spec(weights, keep_alive=60))
    assert s.ok
    (worker,) = ms.model("u")["worker_pids"]
    r = ms.cli("unload", "u", check=False)
    assert r.returncode == 1
    assert "lease" in r.stderr and "--force" in r.stderr, r.stderr
    assert pid_alive(worker)
    ms.cli("unload", "u", "--force")
    assert not pid_alive(worker)
    assert ms.model("u") is None
    answer = s.infer(np.ones((1, 8), np.float32), ms.tmp)
    assert isinstance(answer, str) and answer.startswith("error MS_E_UNLOADED"), answer
    assert s.command("release") == "released"


def test_unload_idle_model_and_unknown_tag(ms):
    weights = ms.make_dense("m.safetensors", [8, 8, 2])
    ms.cli("load", "idle", "--backend", "dense", "--weights", weights, "--keep-alive", "300")
    (worker,) = ms.model("idle")["worker_pids"]
    ms.cli("unload", "idle")
    assert not pid_alive(worker)
    r = ms.cli("unload", "idle", check=False)
    assert r.returncode == 1 and "idle" in r.stderr


def test_worker_killed_with_no_restarts_left_fails_then_reloads(ms):
    # max_restarts 0: the first crash marks the model failed (no automatic restart); the lease
    # holder's next request fails, and the next acquire loads it again in a new worker.
    weights = ms.make_dense("m.safetensors", [8, 8, 2])
    s = ms.session("w", spec(weights, keep_alive=60, max_restarts=0))
    assert s.ok
    (worker,) = ms.model("w")["worker_pids"]
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: ms.model("w")["state"] == "failed", timeout=10, what="state failed")
    m = ms.model("w")
    assert "max_restarts 0" in m["error"] and "SIGKILL" in m["error"], m["error"]
    answer = s.infer(np.ones((1, 8), np.float32), ms.tmp)
    assert isinstance(answer, str) and answer.startswith("error MS_E_WORKER_LOST"), answer
    # A new acquire loads it again, in a new worker.
    s2 = ms.session("w", spec(weights, keep_alive=60, max_restarts=0))
    assert s2.ok, s2.first
    m = ms.model("w")
    assert m["loads"] == 2 and m["worker_pids"] and m["worker_pids"][0] != worker
    x = np.ones((2, 8), np.float32)
    np.testing.assert_allclose(s2.infer(x, ms.tmp), mlp_reference(weights, x), rtol=1e-4,
                               atol=1e-6)


def test_attach_without_spec_reloads_a_model_whose_worker_died(ms):
    weights = ms.make_dense("m.safetensors", [8, 8, 2])
    ms.cli("load", "r", "--spec", json.dumps(spec(weights, keep_alive=60, max_restarts=0)))
    (worker,) = ms.model("r")["worker_pids"]
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: ms.model("r")["state"] == "failed", timeout=10, what="state failed")
    x = np.ones((1, 8), np.float32)
    np.save(ms.tmp / "x.npy", x)
    ms.cli("infer", "r", "--input", ms.tmp / "x.npy", "--output", ms.tmp / "y.npy")
    np.testing.assert_allclose(np.load(ms.tmp / "y.npy"), mlp_reference(weights, x), rtol=1e-4,
                               atol=1e-6)
    m = ms.model("r")
    assert m["loads"] == 2 and m["state"] == "ready" and m["worker_pids"] != [worker]


def test_killed_single_instance_restarts_and_the_lease_holder_goes_on(ms):
    # instances 1: the daemon restarts the worker by itself; the client keeps its handle.
    weights = ms.make_dense("m.safetensors", [8, 8, 2])
    s = ms.session("one", spec(weights, keep_alive=60))
    assert s.ok
    x = np.ones((2, 8), np.float32)
    np.testing.assert_allclose(s.infer(x, ms.tmp), mlp_reference(weights, x), rtol=1e-4,
                               atol=1e-6)
    (worker,) = ms.model("one")["worker_pids"]
    os.kill(worker, signal.SIGKILL)

    def back():
        m = ms.model("one")
        inst = m["instances"][0]
        return inst["state"] == "up" and inst["pid"] not in (None, worker) and m

    m = wait_until(back, timeout=20, what="the instance to be back")
    assert m["state"] == "ready" and m["loads"] == 1 and m["restarts"] == 1, m
    assert m["instances"][0]["restarts"] == 1 and m["instances"][0]["last_crash"] == "SIGKILL"
    np.testing.assert_allclose(s.infer(x, ms.tmp), mlp_reference(weights, x), rtol=1e-4,
                               atol=1e-6)
    table = ms.cli("status").stdout
    assert "RESTARTS" in table and "last crash SIGKILL" in table, table
