"""Shared.swap(): a tag moves to a new version while leases stay; the handles need no change."""
import functools

import numpy as np
import pytest

import modelshare
import pymodels
from conftest import mlp_reference, save_mlp

RNG = np.random.default_rng(11)


def model_status(tag):
    return next(m for m in modelshare.status()["models"] if m["tag"] == tag)


def test_dense_swap_keeps_the_lease_and_answers_with_the_new_weights(daemon):
    old = save_mlp(daemon.tmp / "old.safetensors", [32, 64, 8], seed=1)
    new = save_mlp(daemon.tmp / "new.safetensors", [32, 64, 8], seed=2)
    shared = modelshare.Shared.dense(old, tag="mlp", version="1")
    x = RNG.standard_normal((4, 32)).astype(np.float32)
    with shared.acquire() as model:
        np.testing.assert_allclose(model(x), mlp_reference(old, x), rtol=1e-4, atol=1e-5)
        pid = model_status("mlp")["worker_pids"]
        shared.swap(new, version="2")
        # The same handle, the new version's answer.
        np.testing.assert_allclose(model(x), mlp_reference(new, x), rtol=1e-4, atol=1e-5)
        m = model_status("mlp")
        assert m["version"] == "2" and m["worker_pids"] != pid and m["leases"] == 1
    # This Shared describes the new version now: acquiring it is no conflict.
    assert shared.spec["version"] == "2" and shared.spec["weights"] == str(new)
    with shared.acquire() as model:
        np.testing.assert_allclose(model(x), mlp_reference(new, x), rtol=1e-4, atol=1e-5)


def test_failed_swap_raises_and_the_old_version_serves(daemon):
    old = save_mlp(daemon.tmp / "old.safetensors", [32, 64, 8], seed=3)
    bad = daemon.tmp / "bad.safetensors"
    bad.write_bytes(b"nonsense")
    shared = modelshare.Shared.dense(old, tag="mlp", version="1")
    x = RNG.standard_normal((2, 32)).astype(np.float32)
    with shared.acquire() as model:
        with pytest.raises(modelshare.WeightsError):
            shared.swap(bad, version="2")
        np.testing.assert_allclose(model(x), mlp_reference(old, x), rtol=1e-4, atol=1e-5)
    assert shared.spec["version"] == "1" and model_status("mlp")["version"] == "1"
    wider = save_mlp(daemon.tmp / "wider.safetensors", [32, 64, 16], seed=3)
    with pytest.raises(modelshare.SpecConflict, match="signature"):
        shared.swap(wider)
    with pytest.raises(TypeError, match="unexpected keyword"):
        shared.swap(old, weigths="x")


def test_python_model_swaps_to_a_new_constructor(daemon):
    shared = modelshare.Shared(functools.partial(pymodels.make_scale, 2.0), tag="scale")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with shared.acquire() as model:
        np.testing.assert_array_equal(model(x), x * 2)
        shared.swap(functools.partial(pymodels.make_scale, 3.0), version="k3")
        np.testing.assert_array_equal(model(x), x * 3)
        assert model.vocab_size() == 30522
    assert model_status("scale")["version"] == "k3"
