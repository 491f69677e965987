"""Memory budgets on the host: LRU eviction, loads that wait for memory, fail with
MS_E_NO_MEMORY naming the holders, measured memory in place of the estimate, and load/unload
cycles that give everything back."""
import json
import os
import signal
import subprocess
import time

from conftest import SANITIZED, TESTCLIENT, wait_until

MIB = 1 << 20


def spec(path, **extra):
    return {"backend": "dense", "weights": str(path), "keep_alive": 600, **extra}


def with_budget(ms, text):
    """The daemon this test starts (with its first client) gets this --memory."""
    ms.env["MODELSHARE_MEMORY"] = text


def model_64mib(ms, name="m64.safetensors"):
    # One 4096 x 4096 float32 layer: 64 MiB of weights, ~65 MiB measured in its worker.
    return ms.make_dense(name, [4096, 4096])


def load(ms, tag, weights, **extra):
    return ms.cli("load", tag, "--spec", json.dumps(spec(weights, **extra)), check=False)


def evicted(ms):
    """Tags in the order the daemon's log says they were evicted."""
    out = []
    for line in ms.log().splitlines():
        if "evicted (idle, least recently used" in line:
            out.append(line.split('model "', 1)[1].split('"', 1)[0])
    return out


class Pending:
    """An ms-testclient session whose acquire may wait: the answer is read later."""

    def __init__(self, ms, tag, spec_obj):
        self.proc = subprocess.Popen([str(TESTCLIENT), "session", tag, json.dumps(spec_obj)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=ms.env)

    def answer(self, timeout=60):
        import selectors
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        assert sel.select(timeout), f"no answer within {timeout} s"
        return self.proc.stdout.readline().strip()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            f.close()


def test_status_shows_budget_and_free(ms):
    with_budget(ms, "host=1GiB")
    w = model_64mib(ms)
    assert load(ms, "a", w).returncode == 0
    st = ms.status()
    host = st["budgets"]["host"]
    assert host["budget_bytes"] == 1 << 30
    (m,) = st["models"]  # one document: the same measurement in both places
    assert host["used_bytes"] == m["memory_bytes"]
    assert host["free_bytes"] == host["budget_bytes"] - host["used_bytes"]
    assert host["models"] == {"a": m["memory_bytes"]}
    text = ms.cli("status").stdout
    assert "host:" in text and "free" in text, text


def test_default_host_budget_is_80_percent_of_ram(ms):
    ms.env.pop("MODELSHARE_MEMORY", None)
    w = ms.make_dense("s.safetensors", [8, 8, 2])
    assert load(ms, "s", w).returncode == 0
    host = ms.status()["budgets"]["host"]
    with open("/proc/meminfo") as f:
        total = int(f.readline().split()[1]) * 1024
    assert host["total_bytes"] == total
    assert abs(host["budget_bytes"] - total * 0.8) <= 1, host


def test_lru_order_of_eviction(ms):
    # Room for three 65 MiB models, not four.
    with_budget(ms, "host=230MiB")
    w = model_64mib(ms)
    for tag in ("a", "b", "c"):
        assert load(ms, tag, w).returncode == 0, tag
    # "a" is used again: "b" is now the least recently used.
    assert load(ms, "a", w).returncode == 0
    assert load(ms, "d", w).returncode == 0
    tags = {m["tag"] for m in ms.status()["models"]}
    assert tags == {"a", "c", "d"}, tags
    assert load(ms, "e", w).returncode == 0
    tags = {m["tag"] for m in ms.status()["models"]}
    assert tags == {"a", "d", "e"}, tags
    assert evicted(ms) == ["b", "c"]
    host = ms.status()["budgets"]["host"]
    assert host["used_bytes"] <= host["budget_bytes"]


def test_leased_models_are_not_evicted(ms):
    with_budget(ms, "host=230MiB")
    w = model_64mib(ms)
    held = [ms.session(t, spec(w)) for t in ("a", "b")]
    assert all(s.ok for s in held)
    assert load(ms, "c", w).returncode == 0
    # "a" and "b" are older but leased: "c" (idle) is the one to go.
    assert load(ms, "d", w).returncode == 0
    assert evicted(ms) == ["c"]
    assert {m["tag"] for m in ms.status()["models"]} == {"a", "b", "d"}


def test_load_waits_then_succeeds_when_a_lease_drops(ms):
    with_budget(ms, "host=150MiB")
    w = model_64mib(ms)
    a = ms.session("a", spec(w))
    b = ms.session("b", spec(w))
    assert a.ok and b.ok
    c = Pending(ms, "c", spec(w, load_timeout=60))
    try:
        wait_until(lambda: (ms.model("c") or {}).get("state") == "waiting", timeout=20,
                   what="c waiting for memory")
        m = ms.model("c")
        assert m["worker_pids"] == [] and "waiting_s" in m
        # Nothing was evicted: both holders have leases. The daemon still answers meanwhile.
        assert evicted(ms) == []
        assert ms.model("a")["state"] == "ready"
        assert b.command("release") == "released"
        assert c.answer() == "acquired"
        assert evicted(ms) == ["b"]
        assert ms.model("c")["state"] == "ready"
        assert ms.model("a")["leases"] == 1
    finally:
        c.close()


def test_load_times_out_with_no_memory_naming_the_holders(ms):
    with_budget(ms, "host=150MiB")
    w = model_64mib(ms)
    a = ms.session("holder-a", spec(w))
    b = ms.session("holder-b", spec(w))
    assert a.ok and b.ok
    t0 = time.monotonic()
    c = ms.session("c", spec(w, load_timeout=1))
    waited = time.monotonic() - t0
    assert c.first.startswith("error MS_E_NO_MEMORY "), c.first
    assert waited >= 0.9, waited  # it waited for leases to drop before failing
    for part in ('"holder-a"', '"holder-b"', "host", "needs", "free", "lease"):
        assert part in c.first, (part, c.first)
    m = ms.model("c")
    assert m["state"] == "failed" and m["worker_pids"] == []
    # The holders were not disturbed.
    assert ms.model("holder-a")["leases"] == 1 and ms.model("holder-b")["leases"] == 1


def test_model_bigger_than_the_budget_fails_at_once(ms):
    with_budget(ms, "host=100MiB")
    big = ms.make_dense("big.safetensors", [4096, 8192])  # 128 MiB of weights
    t0 = time.monotonic()
    r = load(ms, "big", big, load_timeout=60)
    assert r.returncode == 1
    assert time.monotonic() - t0 < 30  # did not wait for its load_timeout
    assert "more than the whole budget" in r.stderr and "host" in r.stderr, r.stderr
    small = ms.make_dense("s.safetensors", [8, 8, 2])
    r = load(ms, "declared", small, memory=200 * MIB)
    assert r.returncode == 1 and "more than the whole budget" in r.stderr, r.stderr
    s = ms.session("big", spec(big))
    assert s.first.startswith("error MS_E_NO_MEMORY "), s.first


def test_the_estimate_counts_a_copy_per_instance(ms):
    """Each instance is a worker with its own copy of the weights: 64 MiB fits a 100 MiB budget
    once, but two instances of it are more than the whole budget, found before anything loads."""
    with_budget(ms, "host=100MiB")
    w = model_64mib(ms)
    r = load(ms, "two", w, instances=2, load_timeout=60)
    assert r.returncode == 1 and "more than the whole budget" in r.stderr, r.stderr
    assert load(ms, "one", w).returncode == 0
    assert ms.model("one")["estimate_bytes"] >= 64 * MIB


def test_measured_memory_replaces_the_estimate(ms):
    with_budget(ms, "host=200MiB")
    small = ms.make_dense("s.safetensors", [64, 64, 8])
    # Declared 150 MiB: admitted on that figure, then charged what the worker really holds.
    assert load(ms, "a", small, memory=150 * MIB).returncode == 0
    m = ms.model("a")
    assert m["estimate_bytes"] == 150 * MIB
    assert m["memory_measured"] is True
    assert 0 < m["memory_bytes"] < 40 * MIB, m
    with open(f"/proc/{m['worker_pids'][0]}/smaps_rollup") as f:
        pss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
    assert abs(m["memory_bytes"] - pss) < 8 * MIB, (m["memory_bytes"], pss)
    # A second 150 MiB declaration fits only because "a" is charged its measurement.
    assert load(ms, "b", small, memory=150 * MIB).returncode == 0
    assert evicted(ms) == []
    assert {x["tag"]: x["state"] for x in ms.status()["models"]} == {"a": "ready", "b": "ready"}


def test_waiting_client_that_goes_away_is_forgotten(ms):
    with_budget(ms, "host=150MiB")
    w = model_64mib(ms)
    a = ms.session("a", spec(w))
    b = ms.session("b", spec(w))
    assert a.ok and b.ok
    c = Pending(ms, "c", spec(w, load_timeout=600))
    try:
        wait_until(lambda: (ms.model("c") or {}).get("state") == "waiting", timeout=20,
                   what="c waiting")
        os.kill(c.proc.pid, signal.SIGKILL)
        wait_until(lambda: ms.model("c") is None, timeout=10, what="the abandoned load forgotten")
        # Releasing now evicts nothing: nobody waits.
        assert b.command("release") == "released"
        time.sleep(0.5)
        assert evicted(ms) == [] and ms.model("b")["state"] == "ready"
    finally:
        c.close()


def _fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def _children(pid):
    out = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out.update(int(p) for p in f.read().split())
    return out


def test_fifty_load_unload_cycles_do_not_leak(ms):
    w = ms.make_dense("m.safetensors", [1024, 2048, 256])  # ~9 MiB
    s = spec(w)

    def cycle():
        ms.cli("load", "cyc", "--spec", json.dumps(s))
        ms.cli("unload", "cyc")

    for _ in range(5):  # warm up: allocator arenas, NVML probe, log buffers
        cycle()
    daemon = ms.daemon_pid()
    fds, rss = _fds(daemon), _rss(daemon)
    for _ in range(50):
        cycle()
    assert ms.model("cyc") is None
    assert ms.status()["budgets"]["host"]["used_bytes"] == 0
    assert _children(daemon) == set(), "a worker process outlived its unload"
    assert _fds(daemon) == fds, "the daemon leaks descriptors"
    if not SANITIZED:  # ASan's quarantine holds freed memory on purpose
        assert _rss(daemon) - rss < 2 * MIB, (rss, _rss(daemon))
    assert ms.log().count('"cyc": unloaded: its workers are gone') == 55
