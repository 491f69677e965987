"""Outputs go to other frameworks without a copy: DLPack reads the model's shared memory."""
import gc

import numpy as np

import modelshare


def model_status(tag):
    return next((m for m in modelshare.status()["models"] if m["tag"] == tag), None)


def test_an_output_through_dlpack_is_the_same_memory(daemon, mlp):
    x = np.random.default_rng(7).standard_normal((3, 64)).astype(np.float32)
    with modelshare.Shared.dense(mlp, tag="dl").acquire() as model:
        y = model(x)
        z = np.from_dlpack(y)  # what torch.from_dlpack(y) and jax.dlpack do, zero-copy
        assert np.shares_memory(y, z) and z.ctypes.data == y.ctypes.data
        np.testing.assert_array_equal(z, y)
        assert y.__dlpack_device__() == (1, 0)  # kDLCPU
    del y
    gc.collect()
    # The lease lives on in what DLPack handed out, and ends with it.
    assert model_status("dl")["leases"] == 1
    del z
    gc.collect()
    assert model_status("dl")["leases"] == 0
