"""The python backend: Shared(constructor, tag=...) with any Python model, in its own worker."""
import functools
import multiprocessing
import os
import signal
import threading

import numpy as np
import pytest

import modelshare
from conftest import wait_until, pid_alive
import pymodels


def model_status(tag):
    for m in modelshare.status()["models"]:
        if m["tag"] == tag:
            return m
    return None


def test_tensor_path_methods_attributes_and_release(daemon):
    shared = modelshare.Shared(functools.partial(pymodels.make_scale, 2.0), tag="scale",
                               max_batch=32, keep_alive=5)
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    with shared.acquire() as model:
        y = model(x)
        np.testing.assert_array_equal(y, x * 2)
        assert model.vocab_size() == 30522
        assert model.add(2, b=5) == 7
        assert model.k == np.float32(2.0)          # an attribute: its value, pickled
        assert model.pid != os.getpid()             # the model lives in the worker
        assert model.pid in model_status("scale")["worker_pids"]
        assert model(3) == 6.0                      # not an array: a pickled __call__
        assert model(x[:0]).shape == (0, 3)
    assert model.released
    del y  # outputs keep their lease until freed
    # acquire() without `with`, and Shared.release(), as with Beam's MultiProcessShared.
    m = shared.acquire()
    np.testing.assert_array_equal(m(x), x * 2)
    shared.release(m)
    st = model_status("scale")
    assert st["loads"] == 1 and st["leases"] == 0 and st["backend"] == "python"
    assert st["spec"]["python"]["constructor"].startswith("<pickle:")


def test_lambda_closure_and_output_larger_than_input(daemon):
    k = 5.0
    shared = modelshare.Shared(lambda: pymodels.Scale(k), tag="closure")
    with shared.acquire() as model:
        np.testing.assert_array_equal(model(np.ones((2, 2), np.float32)), np.full((2, 2), 5.0))
    wide = modelshare.Shared(pymodels.Widen, tag="widen")
    with wide.acquire() as model:
        for rows in (1, 3, 50):
            x = np.random.default_rng(rows).standard_normal((rows, 16)).astype(np.float32)
            y = model(x)
            assert y.dtype == np.float64 and y.shape == (rows, 160)
            np.testing.assert_array_equal(y, np.repeat(x.astype(np.float64), 10, axis=1))


def test_threads_batched_each_gets_its_rows(daemon):
    shared = modelshare.Shared(pymodels.make_scale, tag="batched", max_batch=64,
                               batch_delay_us=2000)
    errors = []
    with shared.acquire() as model:
        def worker(i):
            try:
                for j in range(20):
                    x = np.full((1 + (i + j) % 3, 4), i * 100 + j, dtype=np.float32)
                    np.testing.assert_array_equal(model(x), x * 2)
            except Exception as e:  # checked below
                errors.append(e)
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    st = model_status("batched")
    assert st["requests"] >= 120


def test_sklearn_model(daemon):
    shared = modelshare.Shared(pymodels.Sklearn, tag="sk")
    x = np.random.default_rng(1).standard_normal((32, 4))
    local = pymodels.train_logistic()
    with shared.acquire() as model:
        np.testing.assert_allclose(model(x), local.predict_proba(x), rtol=1e-12)
        np.testing.assert_array_equal(model.predict(x), local.predict(x))
        np.testing.assert_array_equal(model.clf.classes_, [0, 1])


def test_onnxruntime_model(daemon):
    shared = modelshare.Shared(pymodels.Onnx, tag="onnx")
    w, b = pymodels.onnx_weights()
    x = np.random.default_rng(2).standard_normal((5, 8)).astype(np.float32)
    with shared.acquire() as model:
        np.testing.assert_allclose(model(x), x @ w + b, rtol=1e-5, atol=1e-5)


def test_eight_processes_share_one_load(daemon):
    shared = modelshare.Shared(pymodels.make_scale, tag="eight")
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=pymodels.use_in_child, args=(shared, i, results))
             for i in range(8)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
    for i, y, vocab, err in got:
        assert err is None, err
        np.testing.assert_array_equal(y, np.full((i + 1, 4), 2 * i, dtype=np.float32))
        assert vocab == 30522
    assert model_status("eight")["loads"] == 1


def test_a_flooding_client_does_not_starve_another(daemon, tmp_path):
    # The worker takes requests round-robin across clients, one from each per pass. Order, not
    # time, is the proof: this process holds the worker at a gate with one call and queues 15
    # more behind it, a second process queues one, and the gate opens. First in, first out would
    # serve the second process's request last; round-robin serves it next.
    opened = tmp_path / "opened"
    shared = modelshare.Shared(functools.partial(pymodels.Gate, str(opened)), tag="gate",
                               batchable=False)
    ctx = multiprocessing.get_context("spawn")
    results, go = ctx.Queue(), ctx.Event()
    x = np.full((3, 4), 2, np.float32)
    other = ctx.Process(target=pymodels.call_in_child, args=(shared, x, go, results))
    with shared.acquire() as model:
        other.start()
        assert results.get(timeout=120) == ("ready", None)
        inflight = lambda: model_status("gate")["instances"][0]["inflight"]  # noqa: E731
        gate = threading.Thread(target=model, args=(np.zeros((1, 4), np.float32),))
        gate.start()
        wait_until(lambda: inflight() == 1, what="the call at the gate")
        flood = [threading.Thread(target=model, args=(np.ones((1, 4), np.float32),))
                 for _ in range(15)]
        for t in flood:
            t.start()
        wait_until(lambda: inflight() == 16, what="15 more requests of this process in flight")
        go.set()
        wait_until(lambda: inflight() == 17, what="the other process's request in flight")
        opened.touch()
        y, err = results.get(timeout=120)
        other.join(60)
        for t in [gate, *flood]:
            t.join()
        assert err is None, err
        np.testing.assert_array_equal(y, x)
        order = model.served()
    assert order[:2] == [3.0, 0.0], order
    assert sorted(order[2:]) == [1.0] * 15 + [2.0] * 3, order
    # The call at the gate, at most one more of this process's, then the other process's rows.
    assert order.index(2.0) <= 3, order


def test_two_constructors_under_one_tag_conflict(daemon):
    a = modelshare.Shared(pymodels.make_scale, tag="same")
    b = modelshare.Shared(pymodels.make_other, tag="same")
    with a.acquire() as model:
        with pytest.raises(modelshare.SpecConflict, match="constructor: loaded function "
                           "pymodels.make_scale, asked function pymodels.make_other"):
            b.acquire()
        np.testing.assert_array_equal(model(np.ones((1, 1), np.float32)), [[2.0]])
    # The same constructor from another Shared object is the same model.
    with modelshare.Shared(pymodels.make_scale, tag="same").acquire() as again:
        assert again.vocab_size() == 30522
    assert model_status("same")["loads"] == 1


def test_constructor_that_raises(daemon):
    shared = modelshare.Shared(pymodels.failing_constructor, tag="broken")
    with pytest.raises(modelshare.LoadFailed) as info:
        shared.acquire()
    text = str(info.value)
    assert "RuntimeError: the weights are not there" in text
    assert "failing_constructor" in text  # the remote traceback
    st = model_status("broken")
    assert st is None or (st["worker_pids"] == [] and st["state"] != "ready")


def test_unpicklable_constructor_fails_at_shared():
    lock = threading.Lock()
    with pytest.raises(modelshare.NotPicklable, match="cannot be pickled"):
        modelshare.Shared(lambda: lock, tag="unpicklable")
    with pytest.raises(TypeError, match="must be callable"):
        modelshare.Shared(42, tag="x")
    with pytest.raises(ValueError, match="framework"):
        modelshare.Shared(pymodels.make_scale, tag="x", framework="caffe")


def test_bad_outputs_and_raising_models_keep_serving(daemon):
    # A model that runs alone answers any object (pickled back); a batchable one must answer
    # one array with a row per input row, since each caller gets its rows of it.
    with modelshare.Shared(pymodels.NotAnArray, tag="notarray").acquire() as model:
        assert model(np.ones((2, 2), np.float32)) == {"sum": 4.0}
        assert model([1, 2]) == {"sum": 3.0}  # the pickled call path takes anything
    with modelshare.Shared(pymodels.NotAnArray, tag="notarray-b", batchable=True).acquire() \
            as model:
        with pytest.raises(modelshare.BackendError, match="expected an array"):
            model(np.ones((2, 2), np.float32))
        with pytest.raises(modelshare.BackendError, match="expected an array"):
            model(np.ones((2, 2), np.float32))
        assert model([1, 2]) == {"sum": 3.0}
    with modelshare.Shared(pymodels.RaisesOnNegative, tag="raises").acquire() as model:
        with pytest.raises(modelshare.BackendError, match="ValueError: negative input"):
            model(-np.ones((2, 2), np.float32))
        np.testing.assert_array_equal(model(np.ones((2, 2), np.float32)), np.full((2, 2), 2.0))
    with modelshare.Shared(pymodels.make_scale, tag="method-raises").acquire() as model:
        with pytest.raises(ValueError, match="refused: because") as info:
            model.fail("because")
        assert "in fail" in info.value.remote_traceback
        with pytest.raises(AttributeError, match="no_such"):
            model.no_such
        assert model.vocab_size() == 30522
        assert model_status("method-raises")["loads"] == 1


def test_worker_killed_mid_call_then_next_call_gets_the_restarted_worker(daemon, tmp_path):
    shared = modelshare.Shared(pymodels.make_scale, tag="killed")
    flag = tmp_path / "started"
    with shared.acquire() as model:
        first_pid = model.pid
        outcome = []

        def call():
            try:
                model.block(str(flag))
                outcome.append("returned")
            except modelshare.WorkerLost as e:
                outcome.append(e)
        t = threading.Thread(target=call)
        t.start()
        wait_until(flag.exists, timeout=60, what="the call to start")
        os.kill(first_pid, signal.SIGKILL)
        t.join(60)
        assert len(outcome) == 1 and isinstance(outcome[0], modelshare.WorkerLost), outcome
        wait_until(lambda: not pid_alive(first_pid), what="the worker to go")
        # The next call gets the worker the daemon restarted by itself.
        np.testing.assert_array_equal(model(np.ones((1, 2), np.float32)), [[2.0, 2.0]])
        assert model.pid != first_pid
    m = model_status("killed")
    assert m["loads"] == 1 and m["restarts"] == 1, m


def test_python_spec_fields_are_checked(daemon):
    import json
    c = modelshare._client.client()
    good = {"backend": "python", "python": {"constructor": "gAR=", "executable": "/usr/bin/python3",
                                            "cwd": "/", "path": []}}
    for field, value, expected in [
            ("constructor", "not base64!", "python.constructor"),
            ("constructor", "A" * 100000, "python.constructor"),
            ("executable", "python3", "python.executable"),
            ("cwd", 3, "python.cwd"),
            ("path", ["a:b"], "python.path"),
            ("framework", "caffe", "python.framework"),
            ("colour", "red", "python.colour")]:
        spec = json.loads(json.dumps(good))
        spec["python"][field] = value
        with pytest.raises(modelshare.SpecError, match=expected.replace(".", r"\.")):
            c.acquire("bad-spec", json.dumps(spec))
    with pytest.raises(modelshare.SpecError, match="pickled constructor"):
        c.acquire("bad-spec", json.dumps({"backend": "python"}))
    with pytest.raises(modelshare.SpecError, match="only with backend"):
        c.acquire("bad-spec", json.dumps({"backend": "identity", "python": good["python"]}))


def test_framework_cap_is_applied_before_the_constructor(daemon):
    # JAX reads its caps from the environment when it starts; on the CPU the worker still turns
    # preallocation off (GPU caps need a card: tests/gpu). Without framework, nothing is set.
    jax = modelshare.Shared(pymodels.SeesEnvironment, tag="jaxcap", framework="jax")
    with jax.acquire() as model:
        assert model.seen == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    plain = modelshare.Shared(pymodels.SeesEnvironment, tag="nocap")
    with plain.acquire() as model:
        assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in model.seen
