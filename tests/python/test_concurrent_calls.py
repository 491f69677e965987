"""Control calls of one process run concurrently: while one thread waits in acquire() for a slow
constructor, the process's other threads get modelshare.status(), acquire and call other models,
and a second slow load, on the same connection. Before, they all waited for the first load.
No timed assertions: each bound only proves "does not hang"."""
import concurrent.futures
import functools
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np

import modelshare
import pymodels
from conftest import wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
BOUND = 60  # seconds; the slow constructors give up after 120


def slow(flag, tag):
    """y = x, once flag exists (its constructor gives up after 120 s: more than BOUND)."""
    return modelshare.Shared(functools.partial(pymodels.WaitsForFile, str(flag)), tag=tag,
                             load_timeout=300)


def state(tag):
    return [m["state"] for m in modelshare.status()["models"] if m["tag"] == tag]


def acquire_and_call(shared, x):
    with shared.acquire() as model:
        return model(x)


def test_status_and_another_models_calls_go_on_while_a_thread_waits_for_a_load(daemon, tmp_path):
    flag = tmp_path / "loaded"
    waits = slow(flag, "slow")
    fast = modelshare.Shared(pymodels.make_scale, tag="fast")
    x = np.ones((1, 4), np.float32)
    np.testing.assert_array_equal(acquire_and_call(fast, x), 2 * x)  # loaded, before
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(acquire_and_call, waits, x)
        # From this thread: before, status() waited for the first thread's acquire.
        wait_until(lambda: pool.submit(state, "slow").result(BOUND) == ["loading"], timeout=BOUND,
                   what="the slow load to begin")
        second = pool.submit(acquire_and_call, fast, x + 1)
        np.testing.assert_array_equal(second.result(BOUND), 2 * (x + 1))
        assert pool.submit(state, "fast").result(BOUND) == ["ready"]
        assert not first.done()
        flag.write_text("go")
        np.testing.assert_array_equal(first.result(BOUND), x)


def test_two_threads_wait_for_two_loads_at_once(daemon, tmp_path):
    a, b = slow(tmp_path / "a", "slow-a"), slow(tmp_path / "b", "slow-b")
    x = np.ones((1, 4), np.float32)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        fa = pool.submit(acquire_and_call, a, x)
        fb = pool.submit(acquire_and_call, b, x + 1)
        # Both loads begin: before, the second acquire waited in this process for the first.
        wait_until(lambda: pool.submit(lambda: state("slow-a") + state("slow-b")).result(BOUND)
                   == ["loading", "loading"], timeout=BOUND, what="both loads to begin")
        (tmp_path / "a").write_text("go")
        (tmp_path / "b").write_text("go")
        np.testing.assert_array_equal(fa.result(BOUND), x)
        np.testing.assert_array_equal(fb.result(BOUND), x + 1)


CHILD = textwrap.dedent("""
    import functools, sys, threading
    import numpy as np
    import modelshare, pymodels
    first = modelshare.Shared(functools.partial(pymodels.WaitsForFile, sys.argv[1]), tag="first",
                              load_timeout=300)
    other = modelshare.Shared(functools.partial(pymodels.WaitsForFile, sys.argv[1] + ".other"),
                              tag="other", load_timeout=300)
    got = {}
    def second():
        got["other"] = other.acquire()
    t = threading.Thread(target=second)
    t.start()
    print("acquiring", flush=True)
    try:
        first.acquire()
        print("acquired", flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    print("status", len(modelshare.status()["models"]), flush=True)
    sys.stdin.readline()  # the test made the flags: the loads end
    t.join()
    x = np.zeros((1, 4), np.float32)
    with first.acquire(timeout=60) as model:
        print("again", float(model(x)[0, 0]), float(got["other"](x + 1)[0, 0]), flush=True)
        modelshare.status()  # sent after the interrupted acquire's lease was given back
        leases = {m["tag"]: m["leases"] for m in modelshare.status()["models"]}
        print("leases", leases["first"], leases["other"], flush=True)
    got["other"].release()
""")


def test_ctrl_c_ends_one_threads_acquire_while_another_threads_waits(daemon, tmp_path):
    flag = tmp_path / "flag"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, *sys.path]))
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(flag)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout.readline().strip() == "acquiring"
        wait_until(lambda: state("first") + state("other") == ["loading", "loading"],
                   timeout=BOUND, what="both loads to begin")
        os.kill(p.pid, signal.SIGINT)
        assert p.stdout.readline().strip() == "interrupted"
        # The connection is usable while the other thread's acquire is still in flight.
        assert p.stdout.readline().strip() == "status 2"
        flag.write_text("go")
        (tmp_path / "flag.other").write_text("go")
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "again 0.0 1.0"
        # The lease granted to the interrupted acquire was given back: the daemon counts the
        # client's leases, one on each model.
        assert p.stdout.readline().strip() == "leases 1 1"
        p.stdin.close()
        assert p.wait(timeout=BOUND) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
