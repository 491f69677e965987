"""JAX functions through the python worker's adapter, as users write them: the constructor returns
a jax.jit function (or any function, with framework="jax"), callers pass numpy arrays (or jax
arrays), and the answers are numpy arrays in the structure the function returned."""
import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="jax is not installed (tests/requirements.txt)")

import modelshare  # noqa: E402
import jaxmodels  # noqa: E402
from jaxmodels import D_IN, D_OUT  # noqa: E402
from testlib import run_together  # noqa: E402


def model_status(tag):
    return next(m for m in modelshare.status()["models"] if m["tag"] == tag)


def test_a_jitted_function_returning_a_dict(daemon):
    shared = modelshare.Shared(jaxmodels.make_jitted, tag="jax-jit")
    x = np.random.default_rng(3).standard_normal((4, D_IN)).astype(np.float32)
    want = jaxmodels.reference(x)
    with shared.acquire() as model:
        for given in (x, jax.numpy.asarray(x)):
            y = model(given)
            assert sorted(y) == ["norm", "y"]
            assert isinstance(y["y"], np.ndarray) and y["y"].shape == (4, D_OUT)
            np.testing.assert_allclose(y["y"], want["y"], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(y["norm"], want["norm"], rtol=1e-5, atol=1e-5)
    assert model_status("jax-jit")["spec"]["python"]["framework"] is None


def test_a_plain_function_gets_jax_arrays_with_framework_jax(daemon):
    shared = modelshare.Shared(jaxmodels.make_plain, tag="jax-plain", framework="jax")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with shared.acquire() as model:
        y = model(x)
    want = x * 2
    want[:, 0] = 0
    assert isinstance(y, np.ndarray)
    np.testing.assert_array_equal(y, want)


def test_a_batchable_jitted_function_gives_each_caller_its_rows(daemon):
    shared = modelshare.Shared(jaxmodels.make_jitted, tag="jax-batched", batchable=True,
                               max_batch=64, batch_delay_us=2000)
    with shared.acquire():
        got = run_together(jaxmodels.calls_jitted, shared, 2, 20)
    assert got == [(0, None), (1, None)]
    m = model_status("jax-batched")
    assert m["spec"]["batchable"] is True and m["rows"] >= 2 * 20
