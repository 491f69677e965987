"""Eight Python processes share one load of a model, with spawn and with fork."""
import multiprocessing
import numpy as np
import pytest

import modelshare
from conftest import mlp_reference, wait_until
from procs import use_shared
from testlib import assert_close_across_batches


def model_status(tag):
    return next(m for m in modelshare.status()["models"] if m["tag"] == tag)


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_eight_processes_share_one_load(mlp, method):
    ctx = multiprocessing.get_context(method)
    shared = modelshare.Shared.dense(mlp, tag="shared")
    # With fork, the children inherit this process's connection and a handle: they must not use
    # the connection, and the handle takes a lease of their own.
    parent = shared.acquire() if method == "fork" else None
    results = ctx.Queue()
    barrier = ctx.Barrier(9)
    procs = [ctx.Process(target=use_shared, args=(shared, parent, i, results, barrier))
             for i in range(8)]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=120) for _ in procs]
        for i, pid, x, y, extra in got:
            assert x is not None, f"child {i}: {y}"
            np.testing.assert_allclose(y, mlp_reference(mlp, x), rtol=1e-4, atol=1e-5)
            if method == "fork":
                # Same input through the inherited handle: the same answer, to float rounding
                # (the two requests may run in batches of other sizes, merged with other
                # children's rows).
                assert_close_across_batches(extra, y, reduction=64 + 128)
        m = model_status("shared")
        assert m["loads"] == 1 and len(m["worker_pids"]) == 1
        # Each child holds one lease (two with fork: the inherited handle took one too), and
        # the parent its own.
        assert m["leases"] == (8 * 2 + 1 if method == "fork" else 8), m
        barrier.wait(timeout=120)
    finally:
        for p in procs:
            p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * 8
    if parent is not None:
        x = np.ones((1, 64), np.float32)
        np.testing.assert_allclose(parent(x), mlp_reference(mlp, x), rtol=1e-4, atol=1e-5)
        parent.release()
    # The children's leases end with their connections: the daemon sees them close.
    wait_until(lambda: model_status("shared")["leases"] == 0, what="all leases released")
    assert model_status("shared")["loads"] == 1
