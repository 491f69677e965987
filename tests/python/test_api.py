"""The package's API on the dense backend: Shared.dense, acquire/release, numpy in and out,
errors as exceptions."""
import gc
import threading

import numpy as np
import pytest

import modelshare
from conftest import mlp_reference, save_mlp

RNG = np.random.default_rng(7)


def model_status(tag):
    for m in modelshare.status()["models"]:
        if m["tag"] == tag:
            return m
    return None


def close(y, x, weights):
    np.testing.assert_allclose(y, mlp_reference(weights, x), rtol=1e-4, atol=1e-5)


def test_dense_matches_numpy_and_output_views_shared_memory(mlp):
    shared = modelshare.Shared.dense(mlp, tag="mlp")
    x = RNG.standard_normal((5, 64)).astype(np.float32)
    with shared.acquire() as model:
        y = model(x)
        assert isinstance(y, np.ndarray)
        assert y.dtype == np.float32 and y.shape == (5, 10)
        close(y, x, mlp)
        # No copy: the array views the output tensor in the model's shared memory.
        assert not y.flags.owndata
        assert type(y.base.obj).__name__ == "Tensor"
        assert model.signature() == (("float32", (None, 64)), ("float32", (None, 10)))
    m = model_status("mlp")
    assert m["loads"] == 1 and m["backend"] == "dense" and m["requests"] == 1


def test_context_manager_and_explicit_release(mlp):
    shared = modelshare.Shared.dense(mlp, tag="mlp")
    x = RNG.standard_normal((2, 64)).astype(np.float32)
    with shared.acquire() as model:
        assert model_status("mlp")["leases"] == 1
        model(x)  # the output is dropped at once
    assert model.released and not model.held
    assert model_status("mlp")["leases"] == 0

    model = shared.acquire()  # like Beam's: acquire() without with, then release()
    other = shared.acquire()
    assert model_status("mlp")["leases"] == 2
    close(model(x), x, mlp)
    shared.release(model)
    assert model_status("mlp")["leases"] == 1
    with pytest.raises(modelshare.InvalidArgument, match="released"):
        model(x)
    shared.release(model)  # twice is harmless
    other.release()
    assert model_status("mlp")["leases"] == 0
    assert model_status("mlp")["loads"] == 1


def test_output_keeps_the_lease_until_it_is_freed(mlp):
    shared = modelshare.Shared.dense(mlp, tag="mlp")
    x = RNG.standard_normal((3, 64)).astype(np.float32)
    with shared.acquire() as model:
        y = model(x)
    # Released, but y still views the lease's shared memory: the lease lasts until y goes.
    assert model.released and model.held
    assert model_status("mlp")["leases"] == 1
    close(y, x, mlp)
    del y
    gc.collect()
    assert not model.held
    assert model_status("mlp")["leases"] == 0


def test_outputs_stay_valid_after_further_calls(mlp):
    shared = modelshare.Shared.dense(mlp, tag="mlp")
    xs = [RNG.standard_normal((i + 1, 64)).astype(np.float32) for i in range(20)]
    with shared.acquire() as model:
        ys = [model(x) for x in xs]
        for _ in range(10):
            model(xs[0])
        for x, y in zip(xs, ys):
            close(y, x, mlp)
    for x, y in zip(xs, ys):
        close(y, x, mlp)


def test_inputs_with_array_or_dlpack_and_strided_inputs(mlp):
    x = RNG.standard_normal((4, 64)).astype(np.float32)

    class WithArray:  # e.g. a framework tensor that numpy can convert
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return self.a

    class WithDlpack:  # a CPU tensor of another framework, known only by __dlpack__
        def __init__(self, a):
            self.a = a

        def __dlpack__(self, **kwargs):
            return self.a.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return self.a.__dlpack_device__()

    wide = np.zeros((4, 128), np.float32)
    wide[:, ::2] = x
    with modelshare.Shared.dense(mlp, tag="mlp").acquire() as model:
        for given in (WithArray(x), WithDlpack(x), memoryview(x)):
            close(model(given), x, mlp)
        close(model(wide[:, ::2]), x, mlp)               # strided: one copy, in the library
        close(model(np.asfortranarray(x)), x, mlp)       # Fortran order
        with pytest.raises(modelshare.DtypeError):       # float64 from a list: the model says no
            model(x.tolist())
        close(model(x), x, mlp)


def test_inputs_already_in_shared_memory_are_sent_with_no_copy(mlp, daemon):
    shared = modelshare.Shared.dense(mlp, tag="mlp")
    x = RNG.standard_normal((6, 64)).astype(np.float32)
    with shared.acquire() as model:
        close(model(x), x, mlp)
        assert model.copied_bytes == x.nbytes          # a plain array: one copy
        room = model.empty((6, 64))
        assert room.dtype == np.float32 and room.shape == (6, 64)
        room[...] = x                                  # filled in place
        close(model(room), x, mlp)
        close(model(room[2:5]), x[2:5], mlp)           # a contiguous part of it
        assert model.copied_bytes == x.nbytes          # neither was copied
        close(model(room[:, :32].repeat(2, axis=1)), np.repeat(x[:, :32], 2, axis=1), mlp)
        close(model(room.T.copy().T), x, mlp)          # not C order: copied
        assert model.copied_bytes == 3 * x.nbytes
        # An output of this model is in its shared memory too: this model takes it back with no
        # copy, and so does another model of this process (a pipeline: tests/python/
        # test_pipeline.py).
        square = modelshare.Shared.dense(save_mlp(daemon.tmp / "sq.safetensors", [64, 64],
                                                  seed=2), tag="sq")
        with square.acquire() as sq:
            y = sq(x)
            y2 = sq(y)
            assert sq.copied_bytes == x.nbytes
            np.testing.assert_allclose(y2, mlp_reference(daemon.tmp / "sq.safetensors", y),
                                       rtol=1e-4, atol=1e-5)
            # Another model's output: by reference too (its memory linked to this model's
            # workers), and right.
            close(model(y), y, mlp)
            assert model.copied_bytes == 3 * x.nbytes
        with pytest.raises(TypeError, match="not one the data plane carries"):
            model.empty((2, 2), dtype=np.complex64)
        with pytest.raises(modelshare.Error, match="expected dimensions >= 0"):
            model.empty((-1, 2))
        del room


def test_wrong_dtype_and_shape_raise_and_the_model_keeps_serving(mlp):
    x = RNG.standard_normal((3, 64)).astype(np.float32)
    with modelshare.Shared.dense(mlp, tag="mlp").acquire() as model:
        with pytest.raises(modelshare.DtypeError) as e:
            model(x.astype(np.float64))
        assert e.value.code == "MS_E_DTYPE" and "float32" in str(e.value)
        assert isinstance(e.value, modelshare.Error) and isinstance(e.value, ValueError)
        with pytest.raises(modelshare.ShapeError, match="64") as e:
            model(np.zeros((3, 65), np.float32))
        assert e.value.code == "MS_E_SHAPE" and e.value.number == -12
        with pytest.raises(modelshare.ShapeError):
            model(np.zeros((2, 3, 64), np.float32))
        with pytest.raises(modelshare.DtypeError, match="buffer format"):
            model(np.zeros((3, 64), np.complex64))
        close(model(x), x, mlp)


def test_spec_conflict_carries_the_daemons_message(mlp):
    with modelshare.Shared.dense(mlp, tag="mlp", keep_alive=30).acquire():
        other = modelshare.Shared.dense(mlp, tag="mlp", keep_alive=60)
        with pytest.raises(modelshare.SpecConflict) as e:
            other.acquire()
        assert e.value.code == "MS_E_SPEC_CONFLICT"
        msg = str(e.value)
        assert "keep_alive: loaded 30.0, asked 60.0" in msg, msg
        # The same spec shares the load.
        with modelshare.Shared.dense(mlp, tag="mlp", keep_alive=30).acquire():
            assert model_status("mlp")["leases"] == 2
    assert model_status("mlp")["loads"] == 1


def test_spec_keywords(mlp):
    shared = modelshare.Shared.dense(mlp, tag="mlp", device="cpu", output="softmax",
                                     max_batch=8, batch_delay_us=0, instances=1,
                                     thread_safe=False, batchable=True, memory=0,
                                     load_timeout=30, keep_alive=5)
    with shared.acquire() as model:
        y = model(RNG.standard_normal((2, 64)).astype(np.float32))
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    spec = model_status("mlp")["spec"]
    assert spec["output"] == "softmax" and spec["max_batch"] == 8 and spec["keep_alive"] == 5
    with pytest.raises(TypeError, match="keepalive"):
        modelshare.Shared.dense(mlp, tag="x", keepalive=5)
    with pytest.raises(modelshare.SpecError, match="output"):
        modelshare.Shared.dense(mlp, tag="bad", output="tanh").acquire()


def test_devices_keyword(mlp):
    # devices= reaches the spec: two instances spread over the listed devices (here the CPU).
    shared = modelshare.Shared.dense(mlp, tag="spread", devices=["cpu"], instances=2)
    with shared.acquire() as model:
        model(RNG.standard_normal((2, 64)).astype(np.float32))
    m = model_status("spread")
    assert m["spec"]["devices"] == ["cpu"] and m["spec"]["device"] == "auto"
    assert [i["device"] for i in m["instances"]] == ["cpu", "cpu"]
    with pytest.raises(modelshare.SpecError, match="devices"):
        modelshare.Shared.dense(mlp, tag="both", device="cpu", devices=["cpu"]).acquire()


def test_load_and_unload_errors(mlp, daemon):
    with pytest.raises(modelshare.WeightsError):
        modelshare.Shared.dense(daemon.tmp / "missing.safetensors", tag="w").acquire()
    with pytest.raises(modelshare.UnknownTag):
        modelshare.unload("nothing-here")
    with pytest.raises(modelshare.InvalidArgument, match="tag"):
        modelshare.Shared.dense(mlp, tag="bad tag!").acquire()
    shared = modelshare.Shared.dense(mlp, tag="mlp")
    model = shared.acquire()
    with pytest.raises(modelshare.Busy):
        shared.unload()
    shared.unload(force=True)
    with pytest.raises(modelshare.Unloaded):
        model(np.zeros((1, 64), np.float32))
    model.release()
    assert model_status("mlp") is None


def test_error_classes_come_from_the_c_table():
    types = modelshare._core.error_types
    assert len(types) >= 24
    for number, cls in types.items():
        assert issubclass(cls, modelshare.Error)
        assert cls.number == number and cls.code.startswith("MS_E_")
        assert getattr(modelshare, cls.__name__) is cls
        assert modelshare._core.strerror(number) == cls.__doc__
    expected = {"SpecConflict": -8, "NoMemory": -19, "WorkerLost": -15, "Timeout": -20,
                "UnknownTag": -7, "DaemonLost": -4, "ShapeError": -12, "DtypeError": -11,
                "SpecError": -9, "WeightsError": -10}
    for name, number in expected.items():
        assert getattr(modelshare, name).number == number
    assert issubclass(modelshare.Timeout, TimeoutError)


def test_unpicklable_constructor_fails_at_shared():
    lock = threading.Lock()

    def holds_a_lock():
        return lock

    with pytest.raises(modelshare.NotPicklable, match="cannot be pickled") as e:
        modelshare.Shared(holds_a_lock, tag="locked")
    assert isinstance(e.value, modelshare.Error)
    with pytest.raises(TypeError, match="callable"):
        modelshare.Shared(42, tag="x")


def test_threads_share_one_handle(mlp):
    xs = [RNG.standard_normal((i + 1, 64)).astype(np.float32) for i in range(8)]
    errors = []
    with modelshare.Shared.dense(mlp, tag="mlp").acquire() as model:
        def work(x):
            try:
                for _ in range(20):
                    close(model(x), x, mlp)
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(x,)) for x in xs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert model_status("mlp")["requests"] == 160


def test_every_dtype_reaches_the_model_as_itself(mlp):
    # The dense model takes float32 only: its refusal names the dtype that arrived.
    names = {np.float16: "float16", np.float64: "float64", np.int8: "int8", np.uint8: "uint8",
             np.int16: "int16", np.int32: "int32", np.int64: "int64", np.bool_: "bool"}
    with modelshare.Shared.dense(mlp, tag="mlp").acquire() as model:
        for dtype, name in names.items():
            with pytest.raises(modelshare.DtypeError, match=f"got {name}$"):
                model(np.zeros((2, 64), dtype))
        # bfloat16 travels as its uint16 bits with the dtype given explicitly.
        with pytest.raises(modelshare.DtypeError, match="got bfloat16$"):
            model._core.infer(np.zeros((2, 64), np.uint16), modelshare._core.BFLOAT16)
        with pytest.raises(modelshare.DtypeError, match="2-byte"):
            model._core.infer(np.zeros((2, 64), np.float32), modelshare._core.BFLOAT16)
        x = np.ones((2, 64), np.float32)
        close(model(x), x, mlp)
