"""thread_safe=True: the python worker runs up to `threads` batches at once, on runner threads
that take the GIL only for their own call. The model counts its own calls in flight (pymodels.
Overlaps), so what is asserted is what it saw, never a time; every answer is checked per client."""
import functools
import multiprocessing
import threading
import time

import numpy as np
import pytest

import modelshare
import pymodels
from conftest import wait_until
from procs import spawn_all

CLIENTS = 8


def run_clients(shared, n, clients=CLIENTS):
    got, exitcodes = spawn_all(pymodels.overlaps_client, [(shared, i, n) for i in range(clients)],
                               timeout=180)
    assert dict(got) == {i: None for i in range(clients)}
    assert exitcodes == [0] * clients


def model_status(tag):
    return next(m for m in modelshare.status()["models"] if m["tag"] == tag)


def peak(shared):
    with shared.acquire() as model:
        return model.peak()


def test_thread_safe_model_runs_calls_at_once(daemon):
    # One request a call (batchable=False), so that eight clients keep several calls to make;
    # the model's first call waits for a second one to come in, which only a worker that runs
    # calls at once lets happen.
    shared = modelshare.Shared(functools.partial(pymodels.make_overlaps, 2.0, 0.005, True),
                               tag="overlaps", thread_safe=True, threads=4, batchable=False)
    run_clients(shared, 20)
    most, calls = peak(shared)
    assert 2 <= most <= 4, (most, calls)
    assert calls == CLIENTS * 20  # every request its own call (peak() is a method: not counted)
    with shared.acquire() as model:
        # A pool starts by handing batches to runners, and calls of 5 ms keep it there: the
        # loop's thread never runs one itself (runners.c, inline runs).
        assert model.inline_calls() == 0


def test_calls_go_to_runners_once_they_are_slow(daemon):
    # A model of no work runs its batches on the loop's thread once a dozen of them have shown it
    # (a hand-over to a runner would cost more than the call); when its calls turn slow, the
    # first one at most runs there, and the rest go to runners, several at once. What is
    # asserted is what the model saw: how many calls at once, and on which thread.
    shared = modelshare.Shared(pymodels.make_turns, tag="turns", thread_safe=True, threads=4,
                               batchable=False)
    for _ in range(5):  # a loaded machine may slow a few dozen calls in a row past the threshold
        run_clients(shared, 100)
        with shared.acquire() as model:
            if model.counts()["fast"][2] > 0:
                break
    with shared.acquire() as model:
        fast_calls = model.counts()["fast"][0]
        model.turn_slow(0.005)
    run_clients(shared, 20)
    with shared.acquire() as model:
        seen = model.counts()
    fast, slow = seen["fast"], seen["slow"]
    assert fast[0] == fast_calls and slow[0] == CLIENTS * 20, seen
    assert fast[2] > 0, seen  # the tiny calls: some on the loop's own thread
    assert slow[2] <= 1, seen  # the slow ones: at most the first (it shows they are slow)
    assert 2 <= slow[1] <= 4, seen


def test_default_runs_one_call_at_a_time(daemon):
    shared = modelshare.Shared(functools.partial(pymodels.make_overlaps, 2.0, 0.005),
                               tag="overlaps", batchable=False)
    run_clients(shared, 20)
    most, calls = peak(shared)
    assert most == 1, (most, calls)
    assert calls == CLIENTS * 20


def test_thread_safe_batches_and_threads_together(daemon):
    # Batched across clients (requests of 1 to 3 rows) and run 3 at a time: each client still
    # gets its own rows back.
    shared = modelshare.Shared(functools.partial(pymodels.make_overlaps, 2.0, 0.002),
                               tag="overlaps", thread_safe=True, threads=3, max_batch=4)
    run_clients(shared, 40)
    m = next(m for m in modelshare.status()["models"] if m["tag"] == "overlaps")
    assert m["requests"] == CLIENTS * 40
    most, calls = peak(shared)
    assert 1 <= most <= 3, (most, calls)


def test_threads_spec_field(daemon):
    shared = modelshare.Shared(pymodels.make_overlaps, tag="t", thread_safe=True, threads=2)
    assert shared.spec["threads"] == 2
    with shared.acquire() as model:
        assert model(np.ones((1, 2), np.float32)).tolist() == [[3.0, 3.0]]
        m = next(m for m in modelshare.status()["models"] if m["tag"] == "t")
        assert m["spec"]["threads"] == 2 and m["spec"]["thread_safe"] is True
        # Another thread count is another model.
        with pytest.raises(modelshare.SpecConflict, match="threads: loaded 2, asked 3"):
            modelshare.Shared(pymodels.make_overlaps, tag="t", thread_safe=True,
                              threads=3).acquire()
    with pytest.raises(modelshare.SpecError, match="threads"):
        modelshare.Shared(pymodels.make_overlaps, tag="u", threads=4).acquire()
    with pytest.raises(modelshare.SpecError, match="threads"):
        modelshare.Shared(pymodels.make_overlaps, tag="u", thread_safe=True, threads=65).acquire()


def kill_then_release(child, release, before):
    """Kills the child whose call a runner holds, lets the worker detach it (and unlink what it
    linked), then lets the runner answer: answered (the count is made after the answer is
    written) by the same worker, or the worker crashed."""
    child.kill()
    child.join()
    wait_until(lambda: model_status("holds")["leases"] == 1, timeout=30,
               what="the dead client's leases to go")
    time.sleep(0.2)  # the worker reads the detach within a millisecond: let it, then
    release.touch()  # let the runner write the dead client's answer
    after = wait_until(lambda: (m := model_status("holds"))["restarts"] > 0 and m or
                       m["requests"] > before["requests"] and m, timeout=60,
                       what="the held call to be answered")
    assert after["worker_pids"] == before["worker_pids"] and after["restarts"] == 0, after


def test_client_killed_while_a_runner_holds_its_call(daemon):
    # The daemon detaches a client that died; its arena must stay mapped until the runner that
    # holds its call has written the answer (else the worker crashes writing into it).
    started, release = daemon.tmp / "started", daemon.tmp / "release"
    shared = modelshare.Shared(functools.partial(pymodels.make_holds, str(started), str(release)),
                               tag="holds", thread_safe=True, threads=2)
    with shared.acquire() as model:
        x = np.zeros((2, 3), np.float32)
        np.testing.assert_array_equal(model(x), x)
        before = model_status("holds")
        child = multiprocessing.get_context("spawn").Process(target=pymodels.call_held,
                                                             args=(shared,))
        child.start()
        wait_until(started.exists, timeout=60, what="the held call to start")
        kill_then_release(child, release, before)
        np.testing.assert_array_equal(model(x + 2), x + 2)


def test_swap_waits_for_the_calls_runners_hold(daemon):
    # A swap's drain reports where the old worker stopped in each ring only once every request
    # it took is answered: with a call held on a runner, the swap cannot finish.
    started, release = daemon.tmp / "started", daemon.tmp / "release"
    shared = modelshare.Shared(functools.partial(pymodels.make_holds, str(started), str(release)),
                               tag="holds", thread_safe=True, threads=2, version="1")
    ones = np.ones((4, 8), np.float32)
    with shared.acquire() as model:
        np.testing.assert_array_equal(model(ones * 0), ones * 0)
        answers = []
        held = threading.Thread(target=lambda: answers.append(model(ones)))
        held.start()
        wait_until(started.exists, timeout=60, what="the held call to start")
        swapper = threading.Thread(target=shared.swap, kwargs={"version": "2"}, args=(
            functools.partial(pymodels.make_holds, str(started) + "2", str(release) + "2"),))
        swapper.start()
        try:
            wait_until(lambda: "handing over" in daemon.log(), timeout=60,
                       what="the new version to load")
            time.sleep(0.5)  # the old worker has its drain by now
            assert swapper.is_alive(), "the swap finished while a runner held a call"
        finally:
            release.touch()
            swapper.join(timeout=60)
            held.join(timeout=60)
        np.testing.assert_array_equal(answers[0], ones)
        np.testing.assert_array_equal(model(ones * 3), ones * 3)
    assert model_status("holds")["version"] == "2"


def memfd_maps(pid):
    with open(f"/proc/{pid}/maps") as f:
        return sum("memfd:" in line for line in f)


def test_client_killed_while_a_runner_reads_its_linked_input(daemon):
    # A dead client's leases go: the workers of its second model detach it and unlink the first
    # model's arena, where the held call's input (and output: Holds returns it) lies. Neither may
    # unmap it while the runner still reads it (else the worker crashes copying the output).
    started, release = daemon.tmp / "started", daemon.tmp / "release"
    first = modelshare.Shared(functools.partial(pymodels.make_scale, 1.0), tag="first")
    held = modelshare.Shared(functools.partial(pymodels.make_holds, str(started), str(release)),
                             tag="holds", thread_safe=True, threads=2)
    with held.acquire() as model:
        x = np.zeros((2, 3), np.float32)
        np.testing.assert_array_equal(model(x), x)
        before = model_status("holds")
        worker = before["worker_pids"][0]
        alone = memfd_maps(worker)
        child = multiprocessing.get_context("spawn").Process(target=pymodels.call_held_through,
                                                             args=(first, held))
        child.start()
        wait_until(started.exists, timeout=60, what="the held call to start")
        # The child's own arena and, linked to it, its first model's.
        assert memfd_maps(worker) == alone + 2, "the held call's input is not in a linked arena"
        kill_then_release(child, release, before)
        np.testing.assert_array_equal(model(x + 2), x + 2)
