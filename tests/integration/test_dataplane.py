"""The data plane under concurrency: rings, batching across clients, instances, deadlines, fairness.

Correctness, not speed: counts and answers are checked, never timings (speed is bench/'s job).
"""
import json
import os
import signal
import subprocess
import time

from conftest import (PLANECLIENT, SANITIZED, finish, pid_alive, start_planeclient as start,
                      wait_until)


def streams(ms, tag, spec, clients, iters):
    procs = [start(ms, "stream", tag, json.dumps(spec), iters, seed + 1)
             for seed in range(clients)]
    for p in procs:
        assert finish(p) == f"ok {iters}"


def test_eight_clients_get_their_own_answers_identity(ms):
    # Inputs unique to each client and request, 1 to 3 rows each, so that batches of up to 8 rows
    # mix clients and split requests at their boundaries: any lost, duplicated or swapped answer
    # shows as a mismatch.
    iters = 1500 if SANITIZED else 5000
    spec = {"backend": "identity", "max_batch": 8, "batch_delay_us": 100}
    streams(ms, "ident", spec, 8, iters)
    m = ms.model("ident")
    assert m["requests"] == 8 * iters
    assert m["loads"] == 1
    # Batching happened: fewer backend runs than requests.
    assert m["batches"] < m["requests"], m


def test_eight_clients_get_their_own_answers_dense(ms):
    weights = ms.make_dense("m.safetensors", [32, 64, 8], seed=5)
    iters = 300 if SANITIZED else 1000
    spec = {"backend": "dense", "weights": str(weights), "max_batch": 16, "batch_delay_us": 200}
    streams(ms, "mlp", spec, 8, iters)
    m = ms.model("mlp")
    assert m["requests"] == 8 * iters
    assert m["batches"] < m["requests"], m
    assert m["rows"] > m["batches"], m


def test_not_batchable_runs_one_request_at_a_time(ms):
    spec = {"backend": "identity", "batchable": False, "batch_delay_us": 100}
    streams(ms, "single", spec, 4, 500)
    m = ms.model("single")
    assert m["requests"] == 2000
    assert m["batches"] == m["requests"], m


def test_instances_share_the_requests(ms):
    spec = {"backend": "identity", "instances": 2}
    streams(ms, "two", spec, 6, 1000)
    m = ms.model("two")
    assert len(m["worker_pids"]) == 2
    assert sum(m["worker_requests"]) == 6000
    # Each request goes to the instance with fewer in flight: with 6 clients both serve.
    assert min(m["worker_requests"]) > 0, m


def test_deadline_expires_and_the_handle_goes_on(ms):
    # Big enough that 256 rows take far more than the 1 us timeout.
    weights = ms.make_dense("slow.safetensors", [512, 512, 512], seed=2)
    spec = {"backend": "dense", "weights": str(weights)}
    out = finish(start(ms, "deadline", "slow", json.dumps(spec)))
    assert out == "ok timeouts=100"
    m = ms.model("slow")
    assert m["state"] == "ready"


def test_flooding_client_does_not_starve_another(ms):
    # One client keeps 16 requests in flight; another sends one request at a time and counts the
    # flooder's answers during each of its own. The order the worker serves them in is proved
    # exactly by tests/python/test_python_backend.py (a gate, then round-robin); here, under
    # steady load, it must stay far from starvation, which would mean thousands. The counts
    # include the slow client's own wake-ups, which a loaded machine stretches: the flooder's
    # requests are made long (256 rows) so that those count for little.
    weights = ms.make_dense("f.safetensors", [256, 256, 256], seed=3)
    spec = {"backend": "dense", "weights": str(weights), "batchable": False}
    out = finish(start(ms, "fairness", "flood", json.dumps(spec), 16, 40, 256))
    worst = int(out.split()[1])
    mean = float(out.split()[3])
    assert mean < 16, out  # first in, first out: about 16 every time
    assert worst <= 200, out


def test_calls_from_idle_all_complete(ms):
    # Random pauses before each request, so that each finds the worker busy, spinning, about to
    # sleep or asleep (ring.h, "Wake-ups"): some clients spin for their answers, others always
    # sleep on the slot (MODELSHARE_SPIN_US=0) and must be woken by the worker. Every answer is
    # checked; a lost wake-up would leave a client asleep until its next liveness look.
    weights = ms.make_dense("g.safetensors", [16, 32, 16], seed=7)
    iters = 60 if SANITIZED else 200
    for tag, spec in (("gid", {"backend": "identity"}),
                      ("gmlp", {"backend": "dense", "weights": str(weights)})):
        procs = []
        for seed in range(4):
            env = dict(ms.env)
            if seed % 2:
                env["MODELSHARE_SPIN_US"] = "0"
            procs.append(subprocess.Popen(
                [str(PLANECLIENT), "gaps", tag, json.dumps(spec), str(iters), str(seed + 1),
                 "3000"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for p in procs:
            assert finish(p) == f"ok {iters}"
        m = ms.model(tag)
        assert m["requests"] == 4 * iters, m


def cpu_ticks(pid):
    """User plus system time of a process, in clock ticks."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_idle_worker_uses_no_cpu(ms):
    # A busy worker spins; one with nothing to do must sleep on its door.
    streams(ms, "idle", {"backend": "identity"}, 2, 300)
    pid = ms.model("idle")["worker_pids"][0]
    time.sleep(0.5)  # past the spin time after the last request
    before = cpu_ticks(pid)
    time.sleep(3)
    used = cpu_ticks(pid) - before
    hz = os.sysconf("SC_CLK_TCK")
    assert used <= 0.1 * 3 * hz, f"idle worker used {used} ticks in 3 s"


def test_worker_killed_while_a_request_runs(ms):
    # The request takes seconds; the worker is killed under it: the caller gets
    # MS_E_WORKER_LOST (not a hang), and the next client gets the restarted worker.
    weights = ms.make_dense("k.safetensors", [2048, 2048, 2048], seed=4)
    spec = json.dumps({"backend": "dense", "weights": str(weights)})
    p = start(ms, "once", "killme", spec, 4096)
    assert p.stdout.readline().strip() == "sending"
    pid = ms.model("killme")["worker_pids"][0]
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1 and out.startswith("error infer MS_E_WORKER_LOST"), out + err
    # The daemon restarts it by itself; another client uses it.
    assert finish(start(ms, "once", "killme", spec, 2)) == "sending\nok"
    m = ms.model("killme")
    assert m["loads"] == 1 and m["restarts"] == 1, m
    assert m["worker_pids"] and m["worker_pids"][0] != pid


def test_a_forked_child_does_not_keep_its_parents_leases(ms, tmp_path):
    # A pre-fork server: the parent acquires, forks workers, and goes away. The child's copies
    # of the parent's descriptors are closed at fork, so the daemon sees the parent leave and
    # ends its lease at once, while the child lives on; the child's copy of the handle refuses
    # to run (it would share the parent's rings).
    result = tmp_path / "child.txt"
    spec = json.dumps({"backend": "identity"})
    out = finish(start(ms, "forkhold", "forked", spec, result))
    child = int(out.split()[1])
    try:
        wait_until(lambda: ms.model("forked")["leases"] == 0, timeout=10,
                   what="the parent's lease to end")
        assert pid_alive(child)
        wait_until(result.exists, timeout=10, what="the child's report")
        assert result.read_text().startswith("MS_E_DAEMON_LOST"), result.read_text()
        assert "before fork()" in result.read_text()
    finally:
        os.kill(child, signal.SIGKILL)


def test_client_forget_in_a_forked_child_leaves_the_parents_lease(ms):
    # The child drops every inherited client at once with ms_client_forget(NULL): its mappings
    # of the parent's arena and doors go, nothing reaches the daemon, and it can connect and
    # acquire on its own. The parent's lease and rings are untouched: it still calls the model,
    # and after the child released its own lease, the parent's is still counted.
    spec = json.dumps({"backend": "identity"})
    out = finish(start(ms, "forkforget", "forget", spec))
    child, parent = out.splitlines()
    _, _, before, after, _, leases = child.split()
    assert int(before) > 0 and int(after) == 0, child
    assert int(leases) == 2, child  # the parent's and the child's own
    assert parent == "parent ok leases 1", out
    assert ms.model("forget")["leases"] == 0  # the parent released its own at the end


def test_top_shows_each_models_rates(ms):
    p = start(ms, "stream", "topped", json.dumps({"backend": "identity"}), 20000, 1)
    try:
        wait_until(lambda: (ms.model("topped") or {}).get("requests", 0) > 0, timeout=30,
                   what="the first requests")
        r = ms.cli("top", "--interval", "0.3", "--count", "2")
    finally:
        finish(p)
    frames = r.stdout.strip().split("\n\n")
    assert len(frames) == 4, r.stdout  # two tables, each a title and a table
    header, row = frames[-1].splitlines()[:2]
    assert header.split() == ["TAG", "STATE", "WORKERS", "LEASES", "REQ/S", "ROWS/S", "BATCH",
                              "BUSY", "MEMORY"], header
    cells = row.split()
    assert cells[0] == "topped" and cells[1] == "ready"
    assert int(cells[4]) >= 0 and int(cells[5]) >= 0 and cells[7].endswith("%")
    # Without a daemon it says so and exits 0.
    ms.stop()
    assert "no daemon running" in ms.cli("top", "--count", "1").stdout
