"""Functions run in child processes by the multi-process tests (importable, for spawn)."""
import os

import numpy as np


def use_shared(shared, inherited, i, results, barrier):
    """Acquires the shared model, answers one input, and holds the lease until all have."""
    x = np.random.default_rng(100 + i).standard_normal((i + 1, 64)).astype(np.float32)
    try:
        with shared.acquire() as model:
            y = model(x)
            extra = None
            if inherited is not None:  # a handle acquired by the parent before fork()
                extra = inherited(x)
            results.put((i, os.getpid(), x, np.array(y),
                         None if extra is None else np.array(extra)))
            barrier.wait(timeout=120)
    except Exception as e:  # reported to the parent
        results.put((i, os.getpid(), None, repr(e), None))
        barrier.abort()


def centered_calls(make, i, calls, results):
    """Calls a Centered model (make() acquires it: modelshare.Shared or the Beam drop-in) calls
    times with inputs of 2 to 5 rows; puts (i, wrong answers, None) or (i, None, error)."""
    rng = np.random.default_rng(1000 + i)
    try:
        obj, release = make()
        wrong = 0
        for _ in range(calls):
            x = rng.standard_normal((int(rng.integers(2, 6)), 8)).astype(np.float32)
            y = np.asarray(obj(x))
            if y.shape != x.shape or not np.allclose(y, x - x.mean(axis=0), rtol=1e-5, atol=1e-6):
                wrong += 1
        release(obj)
        results.put((i, wrong, None))
    except Exception as e:  # reported to the parent
        results.put((i, None, repr(e)))


def acquire_shared(shared):
    return shared.acquire(), lambda m: m.release()


def acquire_beam(mps):
    return mps.acquire(), mps.release


def spawn_all(target, argsets, timeout=300):
    """Runs target(*args, results) in a spawned process for each args of argsets; returns what
    each put in results (one item each), in the order they came, once all have exited."""
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, results)) for args in argsets]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=timeout) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
    return got, [p.exitcode for p in procs]



def call_after(shared, warmed, started, first, delay, value, results):
    """Acquires and makes one call (the worker knows this client from then on); once both
    processes have (warmed, a barrier), the first takes the model's figures, says so (started)
    and calls at once, the other waits for that and delay seconds more, then calls. Each call is
    one row of value; puts (value, the last answer's rows, the figures or None), or (value,
    the error, None)."""
    import time

    import modelshare

    try:
        with shared.acquire() as model:
            x = np.full((1, 4), value, np.float32)
            model(x)
            warmed.wait(120)
            figures = None
            if first:
                m = next(m for m in modelshare.status()["models"] if m["tag"] == shared.tag)
                figures = (m["requests"], m["batches"])
                started.set()
            else:
                started.wait(120)
                time.sleep(delay)
            results.put((value, np.asarray(model(x)).tolist(), figures))
    except Exception as e:  # reported to the parent
        results.put((value, repr(e), None))
