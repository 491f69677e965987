"""TensorFlow and Keras models through the python worker's adapter, as users write them: the
constructor returns a keras.Model or a tf.Module as it is, callers pass numpy arrays (or tf
tensors), and the answers equal the same model run in this process. TensorFlow is in
tests/requirements.txt; without it these tests are skipped."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow",
                         reason="tensorflow is not installed (tests/requirements.txt)")

import modelshare  # noqa: E402
import tfmodels  # noqa: E402
from testlib import run_together  # noqa: E402
from tfmodels import D_IN, D_OUT  # noqa: E402


def model_status(tag):
    return next(m for m in modelshare.status()["models"] if m["tag"] == tag)


def test_a_keras_sequential_answers_two_processes_as_in_process(daemon):
    shared = modelshare.Shared(tfmodels.make_sequential, tag="keras-seq")
    with shared.acquire() as model:
        x = np.random.default_rng(9).standard_normal((5, D_IN)).astype(np.float32)
        y = model(x)
        assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == (5, D_OUT)
        np.testing.assert_allclose(y, tfmodels.make_sequential()(x).numpy(), rtol=1e-5,
                                   atol=1e-5)
        # A tf tensor from the caller, as a numpy array would be.
        np.testing.assert_allclose(model(tf.constant(x)), y, rtol=1e-6, atol=1e-6)
        got = run_together(tfmodels.calls_sequential, shared, 2, 10)
    assert got == [(0, None), (1, None)]
    assert model_status("keras-seq")["requests"] >= 22


def test_a_keras_functional_model_takes_its_inputs_by_name(daemon):
    shared = modelshare.Shared(tfmodels.make_functional, tag="keras-named")
    rng = np.random.default_rng(4)
    tokens = rng.integers(0, 9, (3, 4)).astype(np.int32)
    features = rng.standard_normal((3, D_IN)).astype(np.float32)
    want = tfmodels.make_functional()({"tokens": tokens, "features": features})
    with shared.acquire() as model:
        for y in (model(tokens=tokens, features=features),
                  model({"tokens": tokens, "features": features})):
            assert sorted(y) == ["logits", "total"]
            np.testing.assert_allclose(y["logits"], want["logits"].numpy(), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(y["total"], want["total"].numpy(), rtol=1e-5, atol=1e-5)
        # Its inputs and outputs by name, in the model's order, as Keras knows them.
        T = modelshare.TensorInfo
        assert model.named_signature() == (
            [T("tokens", "int32", (None, 4)), T("features", "float32", (None, D_IN))],
            [T("logits", "float32", (None, D_OUT)), T("total", "float32", (None,))])
        with pytest.raises(modelshare.BackendError, match="takes the inputs"):
            model(tokens=tokens, other=features)


def test_a_tf_module_answers_a_tuple_of_arrays(daemon):
    shared = modelshare.Shared(tfmodels.Scale, tag="tf-module")
    x = np.random.default_rng(6).standard_normal((4, D_IN)).astype(np.float32)
    want_y, want_m = tfmodels.Scale()(x)
    with shared.acquire() as model:
        y, m = model(x)
        assert isinstance(y, np.ndarray) and isinstance(m, np.ndarray)
        np.testing.assert_allclose(y, want_y.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(m, want_m.numpy(), rtol=1e-5, atol=1e-5)


def test_a_batchable_keras_model_gives_each_caller_its_rows(daemon):
    shared = modelshare.Shared(tfmodels.make_sequential, tag="keras-batched", batchable=True,
                               max_batch=64, batch_delay_us=2000)
    with shared.acquire():
        got = run_together(tfmodels.calls_sequential, shared, 2, 20)
    assert got == [(0, None), (1, None)]
    m = model_status("keras-batched")
    assert m["spec"]["batchable"] is True and m["rows"] >= 2 * 20
