"""JAX functions for tests/python/test_adapters_jax.py, as users write them. This module imports
jax, so only that test file imports it, after pytest.importorskip."""
import jax
import jax.numpy as jnp
import numpy as np

D_IN, D_OUT = 5, 3


def weights():
    rng = np.random.default_rng(7)
    return (rng.standard_normal((D_IN, D_OUT)).astype(np.float32),
            rng.standard_normal(D_OUT).astype(np.float32))


def make_jitted():
    """A jax.jit function returning a dict: "y" = x @ W + b and its rows' "norm"."""
    w, b = (jnp.asarray(a) for a in weights())

    @jax.jit
    def affine(x):
        y = x @ w + b
        return {"y": y, "norm": jnp.linalg.norm(y, axis=1)}
    return affine


def make_plain():
    """A plain function that only a jax array can run (.at[...].set: numpy has no .at)."""
    def first_zeroed(x):
        return x.at[:, 0].set(0) * 2
    return first_zeroed


def reference(x):
    """make_jitted()'s answer computed with numpy."""
    w, b = weights()
    y = x @ w + b
    return {"y": y, "norm": np.linalg.norm(y, axis=1)}


def calls_jitted(shared, i, calls, go, results):
    """Run in a spawn child: acquires, waits for go, then sends `calls` inputs of 1 to 3 rows and
    checks each answer's rows against numpy's; puts (i, error or None)."""
    try:
        rng = np.random.default_rng(i)
        with shared.acquire() as model:
            model(np.zeros((1, D_IN), np.float32))
            go.wait(120)
            for c in range(calls):
                x = rng.standard_normal((1 + (i + c) % 3, D_IN)).astype(np.float32)
                y, want = model(x), reference(x)
                np.testing.assert_allclose(y["y"], want["y"], rtol=1e-5, atol=1e-5)
                np.testing.assert_allclose(y["norm"], want["norm"], rtol=1e-5, atol=1e-5)
        results.put((i, None))
    except Exception as e:  # reported to the parent
        results.put((i, repr(e)))
