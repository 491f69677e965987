"""modelshare swap: a tag moves to a new version of its model while clients call it without pause.
No request fails, every answer is the old version's or the new one's (checked by each client
against both, run in its own process), and after the swap returned only the new one answers. A
new version that fails to load leaves the old one serving; a swap that does not fit the memory
budget says so, and --drain-first makes it fit."""
import json
import os
import signal
import subprocess

import numpy as np

from conftest import BUILD, mlp_reference, wait_until

SWAPCLIENT = BUILD / "tests" / "ms-swapclient"
MIB = 1 << 20


class Clients:
    """n ms-swapclient processes calling TAG without pause (each checks old or new)."""

    def __init__(self, ms, tag, old, new, n):
        self.procs = [subprocess.Popen([str(SWAPCLIENT), tag, str(old), str(new), str(i)],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                       env=ms.env) for i in range(n)]
        for p in self.procs:
            line = p.stdout.readline().strip()
            assert line == "ready", f"client {p.pid}: {line} {p.stderr.read() if not line else ''}"

    def signal(self, sig):
        for p in self.procs:
            os.kill(p.pid, sig)

    def finish(self):
        """Stops them; their counts, one dict per client."""
        self.signal(signal.SIGTERM)
        out = []
        for p in self.procs:
            text, err = p.communicate(timeout=60)
            assert p.returncode == 0, f"client {p.pid} exited {p.returncode}: {text} {err}"
            out.append(json.loads(text.strip().splitlines()[-1]))
        return out

    def kill(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def after_requests(clients, ms, tag, more):
    """Waits until the model has answered `more` requests more than now (no time asserted)."""
    start = ms.model(tag)["requests"]
    wait_until(lambda: ms.model(tag)["requests"] >= start + more, timeout=120,
               what=f"{more} more requests")


def swap_through(ms, tag, old, new, clients_n, *swap_args):
    """Clients call tag from old through a swap to new; returns (swap result, counts)."""
    clients = Clients(ms, tag, old, new, clients_n)
    try:
        after_requests(clients, ms, tag, 50)
        clients.signal(signal.SIGUSR1)
        r = ms.cli("swap", tag, *swap_args, check=False)
        clients.signal(signal.SIGUSR2)
        if r.returncode == 0:
            after_requests(clients, ms, tag, 50)
        return r, clients.finish()
    finally:
        clients.kill()


def totals(counts):
    keys = ("requests", "failed", "old", "new", "wrong", "old_after_swap", "old_after_new",
            "during", "after")
    t = {k: sum(c[k] for c in counts) for k in keys}
    t["longest_us"] = max(c["longest_us"] for c in counts)
    t["longest_during_us"] = max(c["longest_during_us"] for c in counts)
    t["first_error"] = next((c["first_error"] for c in counts if c["first_error"]), "")
    return t


def load_dense(ms, tag, weights, **extra):
    spec = {"backend": "dense", "weights": str(weights), "keep_alive": 600, **extra}
    ms.cli("load", tag, "--spec", json.dumps(spec))


def test_swap_under_load_loses_nothing(ms):
    old = ms.make_dense("old.safetensors", [256, 1024, 256], seed=1)
    new = ms.make_dense("new.safetensors", [256, 1024, 256], seed=2)
    load_dense(ms, "m", old, version="1")
    before = ms.model("m")
    r, counts = swap_through(ms, "m", old, new, 8, "--weights", new, "--version", "2")
    assert r.returncode == 0, r.stderr
    t = totals(counts)
    # The figures for the note (pytest -s shows them).
    print(f"\nswap under load: 8 clients, {r.stdout.strip()}: {t['requests']} requests, "
          f"{t['during']} started during the swap, {t['failed']} failed, "
          f"longest call {t['longest_us'] / 1000:.1f} ms "
          f"(during the swap {t['longest_during_us'] / 1000:.1f} ms)")
    assert t["failed"] == 0, t["first_error"]
    assert t["wrong"] == 0
    assert t["old"] > 0 and t["new"] > 0
    assert t["old_after_swap"] == 0 and t["old_after_new"] == 0
    assert t["after"] > 0
    after = ms.model("m")
    assert after["version"] == "2" and after["spec"]["weights"] == str(new)
    assert after["state"] == "ready" and not after["swapping"]
    assert after["leases"] == 0
    assert set(after["worker_pids"]).isdisjoint(before["worker_pids"])
    # The old worker is gone: only the new one runs.
    assert len(after["worker_pids"]) == 1
    assert "drained for a swap" in ms.log()


def test_swap_with_two_instances(ms):
    old = ms.make_dense("old.safetensors", [64, 128, 64], seed=3)
    new = ms.make_dense("new.safetensors", [64, 128, 64], seed=4)
    load_dense(ms, "m2", old, instances=2)
    clients = Clients(ms, "m2", old, new, 3)
    try:
        after_requests(clients, ms, "m2", 30)
        clients.signal(signal.SIGUSR1)
        r = ms.cli("swap", "m2", "--weights", new, check=False)
        clients.signal(signal.SIGUSR2)
        assert r.returncode == 0, r.stderr
        after_requests(clients, ms, "m2", 30)
        t = totals(clients.finish())
    finally:
        clients.kill()
    assert t["failed"] == 0, t["first_error"]
    assert t["wrong"] == 0 and t["old_after_swap"] == 0 and t["new"] > 0
    m = ms.model("m2")
    assert len(m["worker_pids"]) == 2 and m["spec"]["weights"] == str(new)


def test_new_version_that_fails_to_load_leaves_the_old_serving(ms, tmp_path):
    old = ms.make_dense("old.safetensors", [64, 128, 64], seed=5)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    load_dense(ms, "m", old, version="1")
    pids = ms.model("m")["worker_pids"]
    r, counts = swap_through(ms, "m", old, old, 2, "--weights", bad, "--version", "2")
    assert r.returncode == 1
    assert "cannot swap \"m\"" in r.stderr and "MS_E_WEIGHTS" in r.stderr, r.stderr
    t = totals(counts)
    assert t["failed"] == 0 and t["wrong"] == 0, t["first_error"]
    m = ms.model("m")
    assert m["version"] == "1" and m["spec"]["weights"] == str(old)
    assert m["worker_pids"] == pids and m["state"] == "ready" and not m["swapping"]
    # It still answers after the failed swap, and a good swap works after it.
    new = ms.make_dense("new.safetensors", [64, 128, 64], seed=6)
    ms.cli("swap", "m", "--weights", new)
    assert ms.model("m")["spec"]["weights"] == str(new)


def test_changed_signature_is_refused(ms):
    old = ms.make_dense("old.safetensors", [64, 128, 64], seed=7)
    wider = ms.make_dense("wider.safetensors", [64, 128, 32], seed=7)
    load_dense(ms, "m", old)
    r = ms.cli("swap", "m", "--weights", wider, check=False)
    assert r.returncode == 1
    assert "MS_E_SPEC_CONFLICT" in r.stderr and "signature" in r.stderr, r.stderr
    m = ms.model("m")
    assert m["spec"]["weights"] == str(old) and m["state"] == "ready"


def test_swap_that_does_not_fit_the_budget_and_drain_first(ms):
    # 24 MiB of weights each: one fits a 48 MiB budget, both at once do not.
    ms.env["MODELSHARE_MEMORY"] = "host=48MiB"
    old = ms.make_dense("old.safetensors", [2048, 3072], seed=8)
    new = ms.make_dense("new.safetensors", [2048, 3072], seed=9)
    load_dense(ms, "big", old, version="1")
    r = ms.cli("swap", "big", "--weights", new, check=False)
    assert r.returncode == 1
    assert "MS_E_NO_MEMORY" in r.stderr and "--drain-first" in r.stderr, r.stderr
    assert ms.model("big")["version"] == "1"
    r, counts = swap_through(ms, "big", old, new, 3, "--weights", new, "--version", "2",
                             "--drain-first")
    assert r.returncode == 0, r.stderr
    t = totals(counts)
    assert t["failed"] == 0 and t["wrong"] == 0, t["first_error"]
    assert t["old_after_swap"] == 0 and t["new"] > 0
    m = ms.model("big")
    assert m["version"] == "2"
    budget = ms.status()["budgets"]["host"]
    assert budget["used_bytes"] <= budget["budget_bytes"]


def test_drain_first_with_a_bad_new_version_loads_the_old_again(ms, tmp_path):
    ms.env["MODELSHARE_MEMORY"] = "host=48MiB"
    old = ms.make_dense("old.safetensors", [2048, 3072], seed=10)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    load_dense(ms, "big", old, version="1")
    r, counts = swap_through(ms, "big", old, old, 2, "--weights", bad, "--version", "2",
                             "--drain-first")
    assert r.returncode == 1
    assert "the old one was loaded again" in r.stderr, r.stderr
    t = totals(counts)
    assert t["failed"] == 0 and t["wrong"] == 0, t["first_error"]
    m = ms.model("big")
    assert m["version"] == "1" and m["state"] == "ready"


def test_swap_cli_errors(ms):
    r = ms.cli("swap", check=False)
    assert r.returncode == 2 and "missing TAG" in r.stderr
    r = ms.cli("swap", "m", check=False)
    assert r.returncode == 2 and "--weights" in r.stderr
    r = ms.cli("swap", "--help")
    assert "--drain-first" in r.stdout
    old = ms.make_dense("old.safetensors", [16, 16], seed=11)
    load_dense(ms, "m", old)
    r = ms.cli("swap", "nope", "--weights", old, check=False)
    assert r.returncode == 1 and "MS_E_UNKNOWN_TAG" in r.stderr, r.stderr
    r = ms.cli("swap", "m", "--spec", '{"instances": 2}', check=False)
    assert r.returncode == 1 and "instances" in r.stderr and "MS_E_SPEC" in r.stderr, r.stderr
    r = ms.cli("swap", "m", "--spec", '{"weigths": "x"}', check=False)
    assert r.returncode == 1 and "unknown spec field" in r.stderr, r.stderr
    r = ms.cli("swap", "m", "--version", "has space", check=False)
    assert r.returncode == 1 and "version" in r.stderr, r.stderr
    # A version only: the same weights loaded again (a file rewritten in place).
    ms.cli("swap", "m", "--version", "1.1")
    assert ms.model("m")["version"] == "1.1"
    assert "m@1.1" in ms.cli("status").stdout



def test_old_worker_that_dies_while_draining_hands_over_all_the_same(ms):
    old = ms.make_dense("old.safetensors", [16, 32, 16], seed=12)
    new = ms.make_dense("new.safetensors", [16, 32, 16], seed=13)
    load_dense(ms, "m", old)
    (pid,) = ms.model("m")["worker_pids"]
    os.kill(pid, signal.SIGSTOP)  # it cannot drain
    swap = subprocess.Popen([str(BUILD / "modelshare"), "swap", "m", "--weights", str(new)],
                            env=ms.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: "handing over" in ms.log(), timeout=60, what="the new version loaded")
        assert swap.poll() is None  # waits for the old worker's "drained"
        os.kill(pid, signal.SIGKILL)
        out, err = swap.communicate(timeout=60)
    finally:
        if swap.poll() is None:
            swap.kill()
            swap.wait()
    assert swap.returncode == 0, err
    assert "died while it drained" in ms.log()
    m = ms.model("m")
    assert m["spec"]["weights"] == str(new) and pid not in m["worker_pids"]
    assert m["instances"][0]["state"] == "up"
    # It serves: a client gets the new version's answer.
    s = ms.session("m", None)
    assert s.ok, s.first
    x = np.ones((2, 16), dtype=np.float32)
    np.testing.assert_allclose(s.infer(x, ms.tmp), mlp_reference(new, x), rtol=1e-4, atol=1e-5)
