"""TensorFlow and Keras models for tests/python/test_adapters_tf.py, as users write them. This
module imports tensorflow, so only that test file imports it, after pytest.importorskip."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

D_IN, D_OUT = 6, 3


def make_sequential():
    """Dense layers with seeded weights: the same model in every process."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((D_IN,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(D_OUT)])


def make_functional():
    """Named inputs "tokens" (int32 [batch, 4]) and "features" (float32 [batch, D_IN]), a dict
    of outputs: "logits" [batch, D_OUT] and "total" [batch]."""
    keras.utils.set_random_seed(1)
    tokens = keras.Input((4,), dtype="int32", name="tokens")
    features = keras.Input((D_IN,), name="features")
    mixed = keras.layers.Concatenate()([keras.ops.cast(tokens, "float32"), features])
    logits = keras.layers.Dense(D_OUT)(mixed)
    return keras.Model({"tokens": tokens, "features": features},
                       {"logits": logits, "total": keras.ops.sum(logits, axis=1)})


class Scale(tf.Module):
    """A tf.Module whose __call__ is a tf.function: y = x @ W * 2, and the row maxima."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(5)
        self.w = tf.Variable(rng.standard_normal((D_IN, D_OUT)).astype(np.float32))

    @tf.function
    def __call__(self, x):
        y = tf.matmul(x, self.w) * 2.0
        return y, tf.reduce_max(y, axis=1)


def calls_sequential(shared, i, calls, go, results):
    """Run in a spawn child: acquires, waits for go, then sends `calls` numpy inputs of 1 to 3 rows
    and checks each answer against the model run here; puts (i, error or None)."""
    try:
        rng = np.random.default_rng(i)
        here = make_sequential()
        with shared.acquire() as model:
            model(np.zeros((1, D_IN), np.float32))
            go.wait(120)
            for c in range(calls):
                x = rng.standard_normal((1 + (i + c) % 3, D_IN)).astype(np.float32)
                y = model(x)
                assert isinstance(y, np.ndarray) and y.shape == (len(x), D_OUT), y
                np.testing.assert_allclose(y, here(x).numpy(), rtol=1e-5, atol=1e-5)
        results.put((i, None))
    except Exception as e:  # reported to the parent
        results.put((i, repr(e)))
