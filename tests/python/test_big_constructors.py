"""Constructors of any size: one capturing megabytes (Beam's MultiProcessShared takes them) travels
in a sealed memfd beside the request, not in the spec (src/common/ctorfd.h). Served to several
processes, reloaded from the memfd after a worker is killed, swapped to; memfds the daemon must
not take are refused with a message that says what was expected; no descriptor is left behind."""
import fcntl
import functools
import hashlib
import json
import multiprocessing
import os
import signal

import numpy as np
import pytest

import modelshare
import pymodels
from conftest import wait_until
from modelshare import _client, _shared

X = np.arange(6, dtype=np.float32).reshape(2, 3)


def model_status(tag):
    return next((m for m in modelshare.status()["models"] if m["tag"] == tag), None)


def expected(blob):
    return X + np.float32(pymodels.HoldsBytes(blob).checksum()), hashlib.sha256(blob).hexdigest()


def big(tag, nbytes, seed=1, **spec):
    """A Shared whose constructor captures nbytes of random bytes (a lambda: pickled by value)."""
    blob = np.random.default_rng(seed).bytes(nbytes)
    return modelshare.Shared(lambda: pymodels.HoldsBytes(blob), tag=tag, **spec), blob


def use_big(shared, i, results):
    """In a child process: one tensor call and one method call through the shared model."""
    try:
        with shared.acquire() as model:
            results.put((i, np.array(model(X)), model.sha256(), None))
    except Exception as e:  # reported to the parent
        results.put((i, None, None, repr(e)))


def serve_children(shared, method, n):
    ctx = multiprocessing.get_context(method)
    results = ctx.Queue()
    procs = [ctx.Process(target=use_big, args=(shared, i, results)) for i in range(n)]
    for p in procs:
        p.start()
    try:
        return [results.get(timeout=180) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)


def daemon_fds(daemon):
    return sorted(os.listdir(f"/proc/{daemon.pid()}/fd"))


def test_a_1mb_constructor_is_served_to_four_processes(daemon):
    shared, blob = big("big1", 1 << 20)
    assert len(shared._payload) > _shared.CONSTRUCTOR_INLINE_MAX
    y, sha = expected(blob)
    with shared.acquire() as model:
        np.testing.assert_array_equal(model(X), y)
        assert model.sha256() == sha
        got = serve_children(shared, "spawn", 3)
        for i, out, their_sha, err in got:
            assert err is None, f"child {i}: {err}"
            np.testing.assert_array_equal(out, y)
            assert their_sha == sha
        m = model_status("big1")
        assert m["loads"] == 1 and len(m["worker_pids"]) == 1
    # The spec names the pickle by size and hash; the pickle itself never went through it.
    py = m["spec"]["python"]
    assert py["constructor"] is None
    assert py["constructor_size"] == len(shared._payload)
    assert py["constructor_sha256"] == hashlib.sha256(shared._payload).hexdigest()


def test_a_20mb_numpy_constructor_is_served_to_forked_processes(daemon):
    arr = np.random.default_rng(2).standard_normal(20 * (1 << 20) // 8)
    shared = modelshare.Shared(functools.partial(pymodels.HoldsBytes, arr), tag="big20")
    assert len(shared._payload) > 20 * (1 << 20)
    y, sha = expected(arr.tobytes())
    with shared.acquire() as model:
        np.testing.assert_array_equal(model(X), y)
        for i, out, their_sha, err in serve_children(shared, "fork", 2):
            assert err is None, f"child {i}: {err}"
            np.testing.assert_array_equal(out, y)
            assert their_sha == sha
    assert model_status("big20")["loads"] == 1


def test_a_killed_worker_reloads_its_constructor_from_the_memfd(daemon):
    shared, blob = big("bigkill", 2 << 20, seed=3, instances=2)
    y, sha = expected(blob)
    with shared.acquire() as model:
        np.testing.assert_array_equal(model(X), y)
        before = model_status("bigkill")["worker_pids"]
        assert len(before) == 2
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: (m := model_status("bigkill"))["restarts"] == 2 and
                   all(i["state"] == "up" for i in m["instances"]), what="both restarts")
        after = model_status("bigkill")["worker_pids"]
        assert not set(after) & set(before)
        # The handle's next call may see its worker lost once; then it serves again.
        for _ in range(3):
            try:
                np.testing.assert_array_equal(model(X), y)
                break
            except modelshare.WorkerLost:
                pass
        assert model.sha256() == sha
    assert model_status("bigkill")["loads"] == 1
    assert "cannot be used" not in daemon.log()


def test_swap_to_a_large_constructor_and_on(daemon):
    shared = modelshare.Shared(functools.partial(pymodels.make_scale, 2.0), tag="swapbig")
    blob = np.random.default_rng(4).bytes(3 << 20)
    other = np.random.default_rng(5).bytes(2 << 20)
    with shared.acquire() as model:
        np.testing.assert_array_equal(model(X), X * 2)
        shared.swap(lambda: pymodels.HoldsBytes(blob), version="big")
        y, sha = expected(blob)
        np.testing.assert_array_equal(model(X), y)
        assert model.sha256() == sha
        # Another field only: the same large constructor travels again, the new worker reads it.
        shared.swap(version="big-again")
        np.testing.assert_array_equal(model(X), y)
        # Drain first, to another large one.
        shared.swap(lambda: pymodels.HoldsBytes(other), version="other", drain_first=True)
        y, sha = expected(other)
        np.testing.assert_array_equal(model(X), y)
        assert model.sha256() == sha
        # And back to a small one, inline.
        shared.swap(functools.partial(pymodels.make_scale, 3.0), version="small")
        np.testing.assert_array_equal(model(X), X * 3)
    m = model_status("swapbig")
    assert m["version"] == "small" and m["spec"]["python"]["constructor"] is not None


def test_the_daemon_keeps_no_descriptor_of_a_model_that_went(daemon):
    modelshare.status()  # the daemon, started
    base = daemon_fds(daemon)
    blob = np.random.default_rng(6).bytes(1 << 20)

    def make():
        return pymodels.HoldsBytes(blob)
    shared = modelshare.Shared(make, tag="bigfds", keep_alive=0)
    twin = modelshare.Shared(make, tag="bigfds", keep_alive=0)  # its own memfd, the same spec
    with shared.acquire() as a, twin.acquire() as b:  # the second memfd is closed at once
        np.testing.assert_array_equal(a(X), b(X))
        loaded = daemon_fds(daemon)
    # One more for the model's memfd (beside its worker's and leases' own descriptors).
    wait_until(lambda: model_status("bigfds") is None, what="the unload at keep_alive 0")
    wait_until(lambda: daemon_fds(daemon) == base,
               what=f"the daemon's descriptors back to {base} (loaded: {loaded})")


def test_above_the_hard_limit_a_constructor_is_refused(daemon, monkeypatch):
    monkeypatch.setattr(_shared, "CONSTRUCTOR_MAX", 1 << 20)
    blob = os.urandom(2 << 20)
    with pytest.raises(modelshare.NotPicklable, match=r"pickles to \d+ bytes, expected at most"):
        modelshare.Shared(lambda: pymodels.HoldsBytes(blob), tag="huge")


def memfd(data, seals=fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW):
    fd = os.memfd_create("test-constructor", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, data)
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


@pytest.fixture
def request_parts(daemon):
    """(spec JSON of a large constructor, its pickle): for requests made by hand."""
    shared, _ = big("bad", 1 << 20, seed=7)
    spec, _memfd = shared._request()
    return spec, shared._payload


def refused(how, exc, text):
    with pytest.raises(exc) as e:
        how(_client.client())
    assert text in str(e.value), str(e.value)


@pytest.mark.parametrize("op", ["load", "acquire", "swap"])
def test_memfds_that_do_not_fit_the_spec_are_refused(request_parts, op):
    spec, payload = request_parts
    if op == "swap":  # a model to swap: a small python one
        modelshare.Shared(functools.partial(pymodels.make_scale, 2.0), tag="bad").load()

    def send(fd):
        def how(c):
            if op == "load":
                c.load("bad", spec, constructor_fd=fd)
            elif op == "acquire":
                c.acquire("bad", spec, constructor_fd=fd).release()
            else:
                c.swap("bad", spec, constructor_fd=fd)
        return how
    unsealed = memfd(payload, seals=0)
    short = memfd(payload[:-1])
    try:
        refused(send(unsealed), modelshare.SpecError, "expected it sealed against write, shrink "
                "and grow (seals 0xe), got seals 0x0")
        refused(send(short), modelshare.SpecError,
                f"expected {len(payload)} bytes (python.constructor_size), got {len(payload) - 1}")
        with open(os.devnull, "rb") as f:
            refused(send(f.fileno()), modelshare.SpecError, "expected a memfd (a regular file)")
        refused(send(-1), modelshare.SpecError, "expected that memfd with the request, got none")
    finally:
        os.close(unsealed)
        os.close(short)
    if op != "swap":
        assert model_status("bad") is None  # nothing was made of the refused requests
    else:
        assert model_status("bad")["state"] == "ready"


def test_a_memfd_with_an_inline_spec_is_refused(daemon):
    inline, none = modelshare.Shared(functools.partial(pymodels.make_scale, 2.0),
                                     tag="small")._request()
    assert none is None and json.loads(inline)["python"]["constructor"]
    fd = memfd(b"anything")
    try:
        refused(lambda c: c.load("small", inline, constructor_fd=fd), modelshare.SpecError,
                "got a constructor memfd, but the spec has no python.constructor_size")
    finally:
        os.close(fd)
    assert model_status("small") is None


def test_a_memfd_whose_bytes_differ_from_the_hash_fails_the_load(request_parts):
    spec, payload = request_parts
    forged = memfd(bytes(len(payload)))  # the right size, other bytes: only the worker can tell
    try:
        refused(lambda c: c.load("bad", spec, constructor_fd=forged), modelshare.LoadFailed,
                "(python.constructor_sha256)")
    finally:
        os.close(forged)
    assert model_status("bad")["state"] == "failed"
    # The same tag with the true pickle loads (a failed model takes the next spec).
    good = memfd(payload)
    try:
        _client.client().load("bad", spec, constructor_fd=good)
    finally:
        os.close(good)
    assert model_status("bad")["state"] == "ready"
    assert json.loads(spec)["python"]["constructor_sha256"] == hashlib.sha256(payload).hexdigest()
