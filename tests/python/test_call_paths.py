"""model(x)'s short ways (the common call of one numpy array, infer()'s common argument forms,
the worker's reused shape tuple and dtype table) give what the general ways give."""
import functools

import numpy as np
import pytest

import modelshare
import pymodels


@pytest.fixture
def scale(daemon):
    shared = modelshare.Shared(functools.partial(pymodels.make_scale, 2.0), tag="paths")
    with shared.acquire() as model:
        yield model


def test_shapes_and_dtypes_in_turn(scale):
    """The worker reuses the last request's shape tuple: requests of other shapes, ranks and
    dtypes in turn each get their own answer."""
    rng = np.random.default_rng(3)
    inputs = []
    for shape in [(1, 4), (3, 4), (1, 4), (4, 1), (2, 2, 3), (1, 4), (5,), (1, 4)]:
        for dtype in (np.float32, np.float64, np.int32, np.int64, np.float16, np.uint8):
            inputs.append((rng.standard_normal(shape) * 10).astype(dtype))
    for x in inputs + inputs[::-1]:
        y = scale(x)
        want = x * np.float32(2)
        assert y.dtype == want.dtype and y.shape == want.shape
        np.testing.assert_array_equal(y, want)


def test_general_path_inputs_same_answers(scale):
    """What the short way leaves to the general one (a subclass of ndarray, a dtype equal to a
    plane dtype but another object, a strided array, a dtype the plane does not carry, a number)
    still gets the same answers."""
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    meta = np.dtype(np.float32, metadata={"unit": "m"})
    assert meta == np.float32 and meta is not np.dtype(np.float32)
    for v in (x, x.view(np.matrix), x.astype(meta), np.asfortranarray(x), x[:, ::2]):
        np.testing.assert_array_equal(np.asarray(scale(v)), np.asarray(v) * 2)
    big_endian = x.astype(">f4")  # not a plane dtype: a pickled call, answered all the same
    np.testing.assert_array_equal(scale(big_endian), big_endian * 2)
    assert scale(3) == 6.0  # not an array: a pickled call


def test_timeouts_on_the_call_and_the_shared(daemon):
    shared = modelshare.Shared(functools.partial(pymodels.make_scale, 3.0), tag="paths-t",
                               timeout=30)
    x = np.ones((2, 3), np.float32)
    with shared.acquire() as model:
        np.testing.assert_array_equal(model(x), x * 3)  # the Shared's timeout, by keyword
        np.testing.assert_array_equal(model(x, timeout=20), x * 3)
        with pytest.raises(ValueError, match="timeout: expected None or seconds > 0"):
            model(x, timeout=0)


def test_infer_argument_forms(scale):
    """infer() of the C extension: its common forms read directly, every other form and every
    mistake through the argument parser, with its messages."""
    core = scale._core
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    forms = [((x,), {}), ((x, 0), {}), ((x, 0, False), {}), ((x, 0, True), {}),
             ((x,), {"timeout": None}), ((x, 0, True), {"timeout": 5.0, "cancel": None}),
             ((), {"input": x}), ((x,), {"dtype": 0, "objects": 1}), ((x, 0, 1), {}),
             ((x, False), {})]
    for args, kwargs in forms:
        np.testing.assert_array_equal(np.asarray(core.infer(*args, **kwargs)), x * 2)
    with pytest.raises(TypeError, match="infer"):
        core.infer()
    with pytest.raises(TypeError):
        core.infer(x, "float32")
    with pytest.raises(OverflowError):
        core.infer(x, 1 << 40)
    with pytest.raises(TypeError, match="infer"):
        core.infer(x, 0, True, 5.0)  # timeout is keyword-only
    with pytest.raises(TypeError, match="infer"):
        core.infer(x, deadline=5)
    with pytest.raises(TypeError, match="infer"):
        core.infer(x, input=x)


def test_shared_memory_input_still_by_reference(scale):
    """An input outside every arena is copied; one in this model's shared memory is not."""
    x = np.ones((2, 4), np.float32)
    before = scale.copied_bytes
    scale(x)
    assert scale.copied_bytes == before + x.nbytes
    e = scale.empty((2, 4))
    e[:] = 5
    y = scale(e)
    np.testing.assert_array_equal(y, e * 2)
    assert scale.copied_bytes == before + x.nbytes
    np.testing.assert_array_equal(scale(y), e * 4)  # an output of the model, by reference
    assert scale.copied_bytes == before + x.nbytes
