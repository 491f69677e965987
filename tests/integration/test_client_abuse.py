"""Hostile and concurrent use of the client library and the worker (tests/helpers/abuseclient.c)."""
import contextlib
import json
import os
import pathlib
import subprocess

import pytest
from conftest import BUILD, finish, start_planeclient

ABUSECLIENT = BUILD / "tests" / "ms-abuseclient"
PLANEABUSE = BUILD / "tests" / "ms-planeabuse"


def run(ms, *args, timeout=120):
    r = subprocess.run([str(ABUSECLIENT), *map(str, args)], capture_output=True, text=True,
                       env=ms.env, timeout=timeout)
    return r


def spec_for(ms, name, layers, seed=0):
    weights = ms.make_dense(name, layers, seed=seed)
    return json.dumps({"backend": "dense", "weights": str(weights), "keep_alive": 30})


def test_acquire_and_release_from_many_threads_of_one_client(ms):
    spec = spec_for(ms, "c.safetensors", [8, 16, 4], seed=1)
    r = run(ms, "churn", "churn", spec, 6, 15)
    assert r.returncode == 0 and r.stdout.strip() == "ok 90", r.stdout + r.stderr
    assert ms.model("churn")["leases"] == 0


def test_hostile_channel_records_do_not_hurt_other_clients(ms):
    spec = spec_for(ms, "e.safetensors", [4, 8, 2], seed=2)
    r = run(ms, "evil", "evil", spec)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
    m = ms.model("evil")
    assert m["state"] == "ready" and len(m["worker_pids"]) == 1


def test_errmsg_is_empty_after_a_successful_call(ms):
    spec = spec_for(ms, "m.safetensors", [4, 8, 2], seed=3)
    r = run(ms, "errmsg", "errmsg", spec)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


# --- the shared pages: the door and the arenas (tests/helpers/planeabuse.c) -------------------

def abuse(ms, *args, timeout=120):
    return subprocess.run([str(PLANEABUSE), *map(str, args)], capture_output=True, text=True,
                          env=ms.env, timeout=timeout)


def checked(ms, tag, spec, clients=1, iters=200, seed=1):
    """clients ms-planeclient streams at once, every answer checked against its own input."""
    procs = [start_planeclient(ms, "stream", tag, spec, iters, seed + i) for i in range(clients)]
    for p in procs:
        assert finish(p, timeout=240) == f"ok {iters}"


def untouched(ms, tag, pids):
    """The model serves on the same workers, never restarted."""
    m = ms.model(tag)
    assert m["state"] == "ready" and m["worker_pids"] == pids and m["restarts"] == 0, m


def memfd_maps(pid):
    """How many memfds the daemon has mapped (doors, arena headers)."""
    lines = pathlib.Path(f"/proc/{pid}/maps").read_text().splitlines()
    return sum("/memfd:" in line for line in lines)


def test_a_client_cannot_write_the_door_and_its_exit_harms_nobody(ms):
    # Protocol 3: every client mapped the door read-write; one write of its gen or down, by a
    # client that then exits, froze the model for everyone while status said ready.
    spec = spec_for(ms, "d.safetensors", [4, 8, 2], seed=4)
    checked(ms, "door", spec)
    pids = ms.model("door")["worker_pids"]
    r = abuse(ms, "door", "door", spec)
    lines = r.stdout.split("\n")
    assert r.returncode == 0 and lines[-2] == "ok", r.stdout + r.stderr
    for line in ("mprotect refused EACCES", "mmap refused EACCES", "pwrite refused EBADF",
                 "store refused SEGV"):
        assert line in lines, r.stdout
    if os.geteuid() == 0:
        # Another uid (group mode) cannot open it again for writing through /proc either.
        assert "reopen refused" in lines, r.stdout
    # It wound every word it may write (the bell page) to garbage and left without a release.
    checked(ms, "door", spec, clients=2)
    untouched(ms, "door", pids)


@contextlib.contextmanager
def huge_pages(n):
    """At least n free 2 MiB huge pages, the pool given back after; skips when they cannot be
    had (not root, no hugetlbfs, no memory)."""
    knob = pathlib.Path("/proc/sys/vm/nr_hugepages")
    try:
        before = int(knob.read_text())
        knob.write_text(str(before + n))
        got = int(knob.read_text())
    except OSError as e:
        pytest.skip(f"cannot reserve huge pages for a hugetlb arena ({knob}: {e}); run as root")
    try:
        if got < before + n:
            pytest.skip(f"asked {knob} for {before + n} huge pages, the kernel gave {got}")
        yield
    finally:
        knob.write_text(str(before))


def test_a_hugetlb_arena_is_refused_and_harms_nobody(ms):
    # Protocol 3 took a MFD_HUGETLB memfd as an arena: the worker died of SIGBUS when the pool ran
    # dry, and the daemon kept each one mapped (it unmapped 4096 bytes of a 2 MiB mapping).
    spec = spec_for(ms, "h.safetensors", [4, 8, 2], seed=5)
    checked(ms, "huge", spec)
    pids = ms.model("huge")["worker_pids"]
    daemon = ms.daemon_pid()
    maps_before = memfd_maps(daemon)
    with huge_pages(4):
        r = abuse(ms, "arena", "hugetlb", "huge", spec)
    if r.stdout.startswith("skip"):
        pytest.skip(r.stdout.strip())
    assert r.stdout.startswith("MS_E_PROTOCOL "), r.stdout + r.stderr
    assert "expected the arena to be a memfd of tmpfs" in r.stdout, r.stdout
    assert "hugetlbfs: MFD_HUGETLB arenas are refused" in r.stdout, r.stdout
    checked(ms, "huge", spec, clients=2)
    untouched(ms, "huge", pids)
    assert memfd_maps(daemon) == maps_before


@pytest.mark.parametrize("kind, seals", [("unsealed", "0x0"), ("noshrink", "0x5")])
def test_an_arena_that_can_shrink_is_refused(ms, kind, seals):
    spec = spec_for(ms, "s.safetensors", [4, 8, 2], seed=6)
    checked(ms, "seal", spec)
    pids = ms.model("seal")["worker_pids"]
    r = abuse(ms, "arena", kind, "seal", spec)
    assert r.stdout.strip() == (
        "MS_E_PROTOCOL acquire: the arena descriptor is not usable: expected the arena sealed "
        f"against shrink, grow and reseal (seals 0x7), got seals {seals}"), r.stdout + r.stderr
    checked(ms, "seal", spec)
    untouched(ms, "seal", pids)


def test_a_client_cannot_truncate_its_arena(ms):
    spec = spec_for(ms, "t.safetensors", [4, 8, 2], seed=7)
    checked(ms, "trunc", spec)
    pids = ms.model("trunc")["worker_pids"]
    r = abuse(ms, "truncate", "trunc", spec)
    assert r.stdout.split("\n")[:2] == ["ftruncate refused EPERM", "infer ok"], r.stdout + r.stderr
    checked(ms, "trunc", spec)
    untouched(ms, "trunc", pids)


def test_live_fuzz_of_a_clients_ring_and_bell_page_harms_nobody(ms):
    # One client writes random ring entries, tails, slot states, request records and bell-page
    # words (bell, inflight, scan_all, hints) while three others check every answer they get.
    spec = spec_for(ms, "f.safetensors", [6, 16, 3], seed=8)
    checked(ms, "fuzz", spec)
    pids = ms.model("fuzz")["worker_pids"]
    fz = subprocess.Popen([str(PLANEABUSE), "fuzz", "fuzz", spec, "12345"], env=ms.env,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert fz.stdout.readline().strip() == "started"
        checked(ms, "fuzz", spec, clients=3, iters=2000, seed=10)
    finally:
        out, _ = fz.communicate(timeout=60)
    assert fz.returncode == 0 and out.startswith("ok "), out
    assert int(out.split()[1]) > 0
    untouched(ms, "fuzz", pids)
