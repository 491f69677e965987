"""Split and pad: a request larger than max_batch runs in pieces, reassembled in order; with
batch_sizes, every run is padded up to an allowed size and the padding never reaches a caller."""
import functools
import threading

import numpy as np
import pytest

import modelshare
import pymodels
from conftest import mlp_reference
from testlib import assert_close_across_batches


def model_status(tag):
    return next((m for m in modelshare.status()["models"] if m["tag"] == tag), None)


def test_a_large_request_is_split_into_max_batch_pieces(daemon):
    shared = modelshare.Shared(functools.partial(pymodels.FixedShapes, (64, 8)), tag="split",
                               max_batch=64, batchable=True)
    x = np.random.default_rng(1).standard_normal((200, 5)).astype(np.float32)
    with shared.acquire() as model:
        before = model_status("split")["batches"]
        y = model(x)  # 200 rows: pieces of 64, 64, 64 and 8, in order
        np.testing.assert_array_equal(y, x * 2)
        assert model_status("split")["batches"] - before == 4
        assert model.runs() == [8, 64]


def test_dense_split_equals_the_whole_computation(daemon, mlp):
    x = np.random.default_rng(2).standard_normal((50, 64)).astype(np.float32)
    with modelshare.Shared.dense(mlp, tag="whole").acquire() as whole, \
            modelshare.Shared.dense(mlp, tag="pieces", max_batch=8).acquire() as pieces:
        a, b = whole(x), pieces(x)
        # Row for row, to float rounding: pieces of 8 rows run other BLAS kernels than 50 rows.
        assert_close_across_batches(b, a, reduction=64 + 128)
        np.testing.assert_allclose(b, mlp_reference(mlp, x), rtol=1e-4, atol=1e-5)
        assert model_status("pieces")["batches"] >= 7  # 50 rows in pieces of 8


def test_batch_sizes_pad_every_run(daemon):
    sizes = (1, 2, 4, 8, 16)
    shared = modelshare.Shared(functools.partial(pymodels.FixedShapes, sizes), tag="padded",
                               batch_sizes=list(sizes), max_batch=64, batch_delay_us=2000,
                               batchable=True)
    errors, rng = [], np.random.default_rng(3)
    inputs = [rng.standard_normal((int(n), 3)).astype(np.float32)
              for n in rng.integers(1, 41, size=60)]  # 1 to 40 rows: padded, or split then padded

    def call(model, xs):
        try:
            for x in xs:
                y = model(x)
                if y.shape != x.shape or not np.array_equal(y, x * 2):
                    errors.append(f"{x.shape[0]} rows: got {y.shape}")
        except Exception as e:  # reported below
            errors.append(repr(e))
    with shared.acquire() as model:
        threads = [threading.Thread(target=call, args=(model, inputs[i::4])) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        assert set(model.runs()) <= set(sizes) and len(model.runs()) > 1, model.runs()


def test_dense_with_batch_sizes(daemon, mlp):
    x = np.random.default_rng(4).standard_normal((11, 64)).astype(np.float32)
    with modelshare.Shared.dense(mlp, tag="dpad", batch_sizes=[4, 8]).acquire() as model:
        before = model_status("dpad")
        y = model(x)  # 11 rows: a piece of 8, then 3 rows padded to 4
        np.testing.assert_allclose(y, mlp_reference(mlp, x), rtol=1e-4, atol=1e-5)
        assert y.shape == (11, 10)
        after = model_status("dpad")
        assert after["batches"] - before["batches"] == 2
        assert after["rows"] - before["rows"] == 11  # padding rows are not counted


def test_bad_batch_sizes_name_the_field(daemon, mlp):
    with pytest.raises(modelshare.SpecError, match="batch_sizes"):
        modelshare.Shared.dense(mlp, tag="bad", batch_sizes=[4, 2]).acquire()
