"""Pipelines of models: B(A(x)) with A's output passed to B by reference. A's arena is linked to
B's workers (the daemon's "link", src/daemon/links.c); each answer by reference is compared byte
for byte with B on a copy (tests/helpers/pipeclient.c). B's worker maps A's arena while the link
lives (/proc/PID/maps), unmaps it when A is released, and maps it again after a restart."""
import json
import os
import signal
import subprocess

from conftest import BUILD, wait_until

PIPECLIENT = BUILD / "tests" / "ms-pipeclient"


def specs(ms):
    a = ms.make_dense("a.safetensors", [6, 8, 5], seed=1)
    b = ms.make_dense("b.safetensors", [5, 7, 3], seed=2)
    return ({"backend": "dense", "weights": str(a), "keep_alive": 60},
            {"backend": "dense", "weights": str(b), "keep_alive": 60, "max_restarts": 3})


def start(ms, mode):
    a, b = specs(ms)
    return subprocess.Popen([str(PIPECLIENT), mode, "A", json.dumps(a), "B", json.dumps(b)],
                            env=ms.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def line(p):
    got = p.stdout.readline().strip()
    assert got and not got.startswith("error"), got + p.stderr.read() if not got else got
    return got


def arenas_mapped(pid):
    """The distinct arenas (memfds) worker pid maps."""
    with open(f"/proc/{pid}/maps") as f:
        return {ln.split()[4] for ln in f if "modelshare-arena" in ln}


def worker_of(ms, tag):
    pids = ms.model(tag)["worker_pids"]
    assert len(pids) == 1, pids
    return pids[0]


def finish(p):
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, out + err
    return out.splitlines()


def test_pipeline_by_reference_and_release(ms):
    p = start(ms, "pipe")
    assert line(p) == "linked 1"
    wb = worker_of(ms, "B")
    # B's worker maps its own lease's arena and A's, linked.
    assert len(arenas_mapped(wb)) == 2
    p.stdin.write("go\n")
    p.stdin.flush()
    assert line(p) == "released"
    # A released: the link is dropped, B's worker unmaps A's arena (between batches).
    wait_until(lambda: len(arenas_mapped(wb)) == 1, what="B's worker to unmap A's arena")
    p.stdin.write("go\n")
    p.stdin.flush()
    assert finish(p) == ["relinked 1", "ok"]
    assert worker_of(ms, "B") == wb
    # The client gone: every arena of it unmapped.
    wait_until(lambda: len(arenas_mapped(wb)) == 0, what="B's worker to unmap every arena")


def test_restarted_worker_maps_the_linked_arena_again(ms):
    p = start(ms, "restart")
    assert line(p) == "linked 1"
    wb = worker_of(ms, "B")
    os.kill(wb, signal.SIGKILL)
    wait_until(lambda: (m := ms.model("B")) and m["worker_pids"] and m["worker_pids"][0] != wb
               and m["state"] == "ready", timeout=30, what="B's worker to restart")
    p.stdin.write("go\n")
    p.stdin.flush()
    assert finish(p) == ["ok 1"]
    assert "link" not in "".join(ln for ln in ms.log().splitlines() if "ignoring" in ln)


def test_links_per_lease_are_limited(ms):
    p = start(ms, "limit")
    out = finish(p)
    assert out[0].startswith("limit link: lease"), out
    assert "has 8 linked arenas already" in out[0]
    assert out[1] == "ok 1", out
