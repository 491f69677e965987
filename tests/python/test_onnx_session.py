"""An ONNX Runtime session returned as it is by the constructor: model(x) runs it."""
import functools

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import modelshare  # noqa: E402
import pymodels  # noqa: E402


def affine(x):
    w, b = pymodels.onnx_weights()
    return x @ w + b


@pytest.mark.parametrize("framework", [None, "onnxruntime"])
def test_an_inference_session_returned_as_is(daemon, framework):
    # Detected from the constructor's InferenceSession, or said with framework="onnxruntime".
    shared = modelshare.Shared(pymodels.onnx_session, tag="onnx", framework=framework,
                               batchable=True)
    x = np.random.default_rng(2).standard_normal((5, 8)).astype(np.float32)
    with shared.acquire() as model:
        np.testing.assert_allclose(model(x), affine(x), rtol=1e-5, atol=1e-5)
        # An input in shared memory already reaches the session read-only, by reference.
        e = model.empty((2, 8))
        e[:] = x[:2]
        np.testing.assert_allclose(model(e), affine(x[:2]), rtol=1e-5, atol=1e-5)
        assert model.get_providers() == ["CPUExecutionProvider"]  # the session's own methods
        # Its input by name, as the session knows it (a pickled call).
        np.testing.assert_allclose(model(x=x), affine(x), rtol=1e-5, atol=1e-5)
    m = next(m for m in modelshare.status()["models"] if m["tag"] == "onnx")
    assert m["spec"]["python"]["framework"] == framework


def test_a_session_of_two_outputs_answers_a_tuple(daemon):
    shared = modelshare.Shared(functools.partial(pymodels.onnx_session, 2), tag="onnx2")
    x = np.random.default_rng(3).standard_normal((4, 8)).astype(np.float32)
    with shared.acquire() as model:
        y, s = model(x)
        np.testing.assert_allclose(y, affine(x), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s, affine(x).sum(axis=1), rtol=1e-5, atol=1e-4)


def test_a_wrapper_of_a_session_is_called_as_it_is(daemon):
    # framework="onnxruntime" on the user's own wrapper (numpy in, numpy out): left alone.
    shared = modelshare.Shared(pymodels.Onnx, tag="wrapped", framework="onnxruntime")
    x = np.random.default_rng(4).standard_normal((3, 8)).astype(np.float32)
    with shared.acquire() as model:
        np.testing.assert_allclose(model(x), affine(x), rtol=1e-5, atol=1e-5)
