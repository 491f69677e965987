"""A thread-safe model (spec thread_safe, threads) runs several batches at once on the worker's
runner threads: every client still gets its own answers, a client that dies while its requests
run takes nothing with it, and a swap drains every runner before it hands over, losing nothing.

The identity backend may be called concurrently; these tests run under ThreadSanitizer too
(make test-tsan). Correctness only, never timings (bench/threads_bench.py measures).
"""
import json
import os
import re
import signal

from conftest import SANITIZED, finish, start_planeclient as start, wait_until


def survivors(ms, tag, spec, stop, rows):
    """One ms-planeclient survive per entry of rows (its rows a request), each started."""
    procs = [start(ms, "survive", tag, json.dumps(spec), stop, seed + 1, r)
             for seed, r in enumerate(rows)]
    for p in procs:
        line = p.stdout.readline().strip()
        assert line == "started", f"{line} {p.stderr.read() if not line else ''}"
    return procs


def counts(p):
    """(answered, lost) of a survive client that ended without an error."""
    out = finish(p, timeout=120)
    return tuple(map(int, re.fullmatch(r"ok (\d+) lost (\d+)", out.splitlines()[-1]).groups()))


def test_eight_clients_get_their_own_answers_from_four_runners(ms):
    # As test_dataplane's identity test: inputs unique to each client and request, 1 to 3 rows
    # each, batches of up to 8 rows, now up to four of them at once.
    iters = 1000 if SANITIZED else 3000
    spec = {"backend": "identity", "thread_safe": True, "threads": 4, "max_batch": 8,
            "batch_delay_us": 100}
    procs = [start(ms, "stream", "ident", json.dumps(spec), iters, seed + 1) for seed in range(8)]
    for p in procs:
        assert finish(p) == f"ok {iters}"
    m = ms.model("ident")
    assert m["requests"] == 8 * iters and m["loads"] == 1
    assert m["spec"]["threads"] == 4
    assert "4 runner threads" in ms.log()


def test_default_spec_runs_without_runners(ms):
    spec = {"backend": "identity", "max_batch": 8}
    p = start(ms, "stream", "plain", json.dumps(spec), 200, 1)
    assert finish(p) == "ok 200"
    assert "runner threads" not in ms.log()


def test_client_killed_while_runners_hold_its_requests(ms):
    # Split (20 rows, max_batch 8) and padded (batch_sizes) requests beside small ones; one
    # client is killed mid-stream: the daemon detaches it, which waits for the runners that
    # hold its requests before its arena goes. The others go on and lose nothing.
    spec = {"backend": "identity", "thread_safe": True, "threads": 3, "max_batch": 8,
            "batch_sizes": [2, 4, 8], "keep_alive": 60}
    stop = ms.tmp / "stop"
    procs = survivors(ms, "kill", spec, stop, [1, 3, 20, 5, 20])
    pid = ms.model("kill")["worker_pids"]
    wait_until(lambda: ms.model("kill")["requests"] > 2000, timeout=60, what="2000 requests")
    victim = procs.pop(2)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    wait_until(lambda: ms.model("kill")["leases"] == 4, timeout=30, what="the lease released")
    before = ms.model("kill")["requests"]
    wait_until(lambda: ms.model("kill")["requests"] > before + 1000, timeout=60,
               what="1000 requests more")
    stop.touch()
    for p in procs:
        ok, lost = counts(p)
        assert ok > 0 and lost == 0
    m = ms.model("kill")
    assert m["worker_pids"] == pid, "the worker restarted"


def test_swap_drains_every_runner_and_loses_nothing(ms):
    spec = {"backend": "identity", "thread_safe": True, "threads": 4, "max_batch": 4,
            "keep_alive": 60, "version": "1"}
    ms.cli("load", "sw", "--spec", json.dumps(spec))
    stop = ms.tmp / "stop"
    procs = survivors(ms, "sw", spec, stop, [1, 2, 3, 9, 1, 2])
    try:
        wait_until(lambda: ms.model("sw")["requests"] > 1000, timeout=60, what="1000 requests")
        r = ms.cli("swap", "sw", "--spec", "{}", "--version", "2", check=False)
        assert r.returncode == 0, r.stderr
        before = ms.model("sw")["requests"]
        wait_until(lambda: ms.model("sw")["requests"] > before + 1000, timeout=60,
                   what="1000 requests on the new version")
    finally:
        stop.touch()
    for p in procs:
        ok, lost = counts(p)
        assert ok > 0 and lost == 0
    m = ms.model("sw")
    assert m["version"] == "2" and m["spec"]["threads"] == 4, m
    assert "drained for a swap" in ms.log()
