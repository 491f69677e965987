"""Failures reach Python as the right exceptions, and the package recovers from them."""
import os
import signal

import numpy as np

import modelshare
from conftest import mlp_reference, pid_alive, wait_until


def model_status(tag):
    return next((m for m in modelshare.status()["models"] if m["tag"] == tag), None)


def test_killed_worker_is_restarted_and_the_handle_goes_on(mlp):
    shared = modelshare.Shared.dense(mlp, tag="mlp")
    x = np.ones((2, 64), np.float32)
    model = shared.acquire()
    model(x)
    (worker,) = model_status("mlp")["worker_pids"]
    os.kill(worker, signal.SIGKILL)
    # The daemon restarts the worker by itself; the model stays loaded and the handle works.
    wait_until(lambda: (m := model_status("mlp"))["restarts"] == 1 and
               m["instances"][0]["state"] == "up", what="the restart")
    np.testing.assert_allclose(model(x), mlp_reference(mlp, x), rtol=1e-4, atol=1e-5)
    model.release()
    with shared.acquire() as again:
        np.testing.assert_allclose(again(x), mlp_reference(mlp, x), rtol=1e-4, atol=1e-5)
    m = model_status("mlp")
    assert m["loads"] == 1 and m["worker_pids"] != [worker]


def test_daemon_lost_then_a_new_daemon_serves(mlp, daemon):
    shared = modelshare.Shared.dense(mlp, tag="mlp")
    x = np.ones((2, 64), np.float32)
    model = shared.acquire()
    model(x)
    first = daemon.pid()
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: not pid_alive(first), what="daemon exit")
    # The worker goes with its daemon: the handle fails with a modelshare error, never hangs.
    wait_until(lambda: not still_answers(model, x), what="handle failure")
    model.release()
    # The process's connection was to the dead daemon: the next acquire starts a new one.
    with shared.acquire() as again:
        np.testing.assert_allclose(again(x), mlp_reference(mlp, x), rtol=1e-4, atol=1e-5)
    assert daemon.pid() not in (None, first)


def still_answers(model, x):
    """True while the handle still answers; False once it fails with a modelshare error."""
    try:
        model(x)
        return True
    except (modelshare.WorkerLost, modelshare.DaemonLost):
        return False
