"""A deadline on every call: model(x, timeout=S), Shared(..., timeout=S), ainfer's cancellation
and Ctrl-C end a call that waits for a worker that does not answer, give back what it held, and
leave the lease usable. No timed assertions: each bound only proves "does not hang"."""
import asyncio
import concurrent.futures
import functools
import os
import signal
import textwrap

import numpy as np
import pytest

import modelshare
import pymodels
from conftest import wait_until
from testlib import start_interruptible

HERE = os.path.dirname(os.path.abspath(__file__))


def test_timeout_is_checked(daemon):
    for bad in (0, -1, "1", True, float("nan")):
        with pytest.raises(ValueError, match="timeout"):
            modelshare.Shared(pymodels.make_scale, tag="bad", timeout=bad)
    assert issubclass(modelshare.Timeout, TimeoutError)


def test_200_timed_out_calls_on_a_stopped_worker_then_it_answers(daemon):
    # One model, two Shareds: timeout= is the caller's, not the spec's.
    shared = modelshare.Shared(pymodels.make_scale, tag="stopped", timeout=0.02)
    plain = modelshare.Shared(pymodels.make_scale, tag="stopped")
    x = np.ones((1, 4), np.float32)
    with plain.acquire() as first, shared.acquire() as model:
        pid = first.pid
        np.testing.assert_array_equal(model(x, timeout=30), 2 * x)
        os.kill(pid, signal.SIGSTOP)
        try:
            # More than the ring's 64 slots, which the stopped worker holds: once the 65th call
            # hung for good. Each fails with Timeout (the Shared's timeout=, or the call's own).
            for i in range(200):
                with pytest.raises(modelshare.Timeout):
                    model(x) if i % 2 else model(x, timeout=0.01)
        finally:
            os.kill(pid, signal.SIGCONT)
        # The worker answers what it was given (discarded): the slots come back.
        for k in range(3):
            np.testing.assert_array_equal(model(x + k, timeout=30), 2 * (x + k))


def test_100_asyncio_timeouts_leave_no_thread_stuck(daemon, tmp_path):
    hang = modelshare.Shared(functools.partial(pymodels.CallWaitsForFile, str(tmp_path / "never")),
                             tag="hang")
    healthy = modelshare.Shared(pymodels.make_scale, tag="healthy")
    x = np.ones((1, 4), np.float32)

    async def main():
        async with hang.acquire_async() as h, healthy.acquire_async() as ok:
            for _ in range(100):  # more than the pool's 64 threads
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(h.ainfer(x), 0.05)
            # Each cancelled call gave its pool thread back: the healthy model answers.
            y = await asyncio.wait_for(ok.ainfer(x), 30)
            np.testing.assert_array_equal(y, 2 * x)
            assert await asyncio.wait_for(ok.ainfer(x + 1), 30) is not None

    asyncio.run(main())


CHILD = textwrap.dedent("""
    import functools, sys
    import numpy as np
    import modelshare, pymodels
    flag = sys.argv[1]
    shared = modelshare.Shared(functools.partial(pymodels.CallWaitsForFile, flag), tag="sigint")
    x = np.zeros((1, 4), np.float32)
    with shared.acquire() as model:
        print("calling", flush=True)
        try:
            model(x)
            print("answered", flush=True)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        sys.stdin.readline()  # the test made the flag: the worker answers now
        print("again", float(model(x, timeout=60)[0, 0]), flush=True)
""")


def start_child(code, flag):
    """A python process running code with the flag file's path, its lines on pipes; Ctrl-C
    interrupts it."""
    return start_interruptible(code, flag, path=[HERE])


def test_ctrl_c_interrupts_a_blocked_call_and_the_lease_stays_usable(daemon, tmp_path):
    flag = tmp_path / "flag"
    p = start_child(CHILD, flag)
    try:
        assert p.stdout.readline().strip() == "calling"
        wait_until(lambda: os.path.exists(str(flag) + ".started"), timeout=60,
                   what="the call to start in the worker")
        os.kill(p.pid, signal.SIGINT)
        # Before, the call waited for its answer, Ctrl-C or not: this readline hung.
        assert p.stdout.readline().strip() == "interrupted"
        flag.write_text("go")
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "again 1.0"
        p.stdin.close()
        assert p.wait(timeout=60) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_load_timeout_bounds_a_constructor_that_never_returns(daemon):
    shared = modelshare.Shared(pymodels.never_returns, tag="forever", load_timeout=3)
    # Before, acquire() waited for the constructor, load_timeout or not.
    with pytest.raises(modelshare.Timeout, match=r"load_timeout of 3 s \(phase: constructing"):
        shared.acquire()
    m = [m for m in modelshare.status()["models"] if m["tag"] == "forever"][0]
    assert m["state"] == "failed" and m["error_code"] == modelshare.Timeout.number
    wait_until(lambda: [m for m in modelshare.status()["models"]
                        if m["tag"] == "forever"][0]["worker_pids"] == [],
               timeout=60, what="the worker killed")


def test_acquire_timeout_fails_the_wait_not_the_load(daemon, tmp_path):
    flag = tmp_path / "loaded"
    slow = modelshare.Shared(functools.partial(pymodels.WaitsForFile, str(flag)), tag="slowload")
    # Before, acquire() waited for the constructor however long it took.
    with pytest.raises(modelshare.Timeout, match="not ready within the acquire's timeout"):
        slow.acquire(timeout=0.5)
    with pytest.raises(ValueError, match="timeout"):
        slow.acquire(timeout=-1)
    # The connection stays in step, and the load went on.
    assert [m["state"] for m in modelshare.status()["models"] if m["tag"] == "slowload"] == \
        ["loading"]
    flag.write_text("go")
    x = np.ones((1, 4), np.float32)
    with slow.acquire(timeout=60) as model:
        np.testing.assert_array_equal(model(x), x)

    async def main():
        async with slow.acquire_async(timeout=60) as m:
            return await m.ainfer(x)

    np.testing.assert_array_equal(asyncio.run(main()), x)


CHILD_ACQUIRE = textwrap.dedent("""
    import functools, sys
    import numpy as np
    import modelshare, pymodels
    shared = modelshare.Shared(functools.partial(pymodels.WaitsForFile, sys.argv[1]), tag="sigacq")
    print("acquiring", flush=True)
    try:
        shared.acquire()
        print("acquired", flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    sys.stdin.readline()  # the test made the flag: the load ends
    with shared.acquire(timeout=60) as model:
        print("again", float(model(np.zeros((1, 4), np.float32))[0, 0]), flush=True)
        leases = [m["leases"] for m in modelshare.status()["models"] if m["tag"] == "sigacq"]
        print("leases", leases[0], flush=True)
""")


def test_ctrl_c_interrupts_a_waiting_acquire_and_the_connection_stays_usable(daemon, tmp_path):
    flag = tmp_path / "flag"
    p = start_child(CHILD_ACQUIRE, flag)
    try:
        assert p.stdout.readline().strip() == "acquiring"
        wait_until(lambda: [m["state"] for m in modelshare.status()["models"]
                            if m["tag"] == "sigacq"] == ["loading"],
                   timeout=60, what="the load to begin")
        os.kill(p.pid, signal.SIGINT)
        # Before, acquire() waited for the load, Ctrl-C or not: this readline hung.
        assert p.stdout.readline().strip() == "interrupted"
        flag.write_text("go")
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "again 0.0"
        # The lease the interrupted acquire was granted later was given back.
        assert p.stdout.readline().strip() == "leases 1"
        p.stdin.close()
        assert p.wait(timeout=60) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.parametrize("ninputs", [1, 2], ids=["one-tensor", "several-tensors"])
def test_a_timed_out_calls_inputs_are_not_reused_while_its_worker_writes_them(daemon, tmp_path,
                                                                               ninputs):
    # The call's input copies (and, for several tensors, their manifest) stay the worker's after
    # its timeout: later calls' inputs never go where it still writes, so their answers are theirs.
    flag = str(tmp_path / "go")
    shared = modelshare.Shared(functools.partial(pymodels.WritesItsInputLate, flag),
                               tag=f"late-writer-{ninputs}")
    shape = (64, 64)
    with shared.acquire() as model:
        np.testing.assert_array_equal(model(*[np.ones(shape, np.float32)] * ninputs),
                                      ninputs * np.ones(shape, np.float32))
        marker = np.zeros(shape, np.float32)
        marker.flat[0] = -1
        with pytest.raises(modelshare.Timeout):
            model(*[marker] * ninputs, timeout=5)
        assert os.path.exists(flag + ".started")  # the worker runs it: it was not skipped
        xs = [np.full(shape, k, np.float32) for k in range(8)]
        with concurrent.futures.ThreadPoolExecutor(len(xs)) as pool:
            futures = [pool.submit(model, *[x] * ninputs) for x in xs]
            # Every call's inputs are in shared memory and waiting behind the stuck one.
            wait_until(lambda: sum(i["inflight"] for m in modelshare.status()["models"]
                                   if m["tag"] == shared.tag for i in m["instances"])
                       == 1 + len(xs), what="the calls in flight")
            open(flag, "w").close()  # the late write happens now
            for x, f in zip(xs, futures):
                np.testing.assert_array_equal(f.result(), ninputs * x)
