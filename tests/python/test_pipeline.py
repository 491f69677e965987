"""Pipelines of models: B(A(x)) passes A's output to B by reference (A's shared memory is linked
to B's workers), however it comes: the Tensor itself, a numpy view of it, np.from_dlpack, or a
torch tensor made with torch.from_dlpack (when torch is installed). The answers are those of the
copied path, row for row."""
import gc

import numpy as np
import pytest

import modelshare
from conftest import mlp_reference, save_mlp
from testlib import assert_close_across_batches

RNG = np.random.default_rng(11)


@pytest.fixture
def pipeline(daemon):
    a = save_mlp(daemon.tmp / "a.safetensors", [64, 48, 32], seed=3)
    b = save_mlp(daemon.tmp / "b.safetensors", [32, 24, 10], seed=4)
    return (modelshare.Shared.dense(a, tag="pipe-a"), a,
            modelshare.Shared.dense(b, tag="pipe-b"), b)


def test_an_output_goes_to_the_next_model_with_no_copy(pipeline):
    sa, wa, sb, wb = pipeline
    x = RNG.standard_normal((7, 64)).astype(np.float32)
    with sa.acquire() as A, sb.acquire() as B:
        ya = A(x)
        expected = B(np.array(ya))                      # a copy: the reference answer
        assert B.copied_bytes == ya.nbytes
        for given in (ya, np.asarray(ya), ya[2:5], np.from_dlpack(ya)):
            before = B.copied_bytes
            y = B(given)
            assert B.copied_bytes == before, type(given)  # by reference
            if given.shape[0] == 3:  # 3 of the 7 rows: another batch size, other BLAS kernels
                assert_close_across_batches(y, expected[2:5], reduction=32 + 24)
            else:
                np.testing.assert_array_equal(y, expected)
        np.testing.assert_allclose(B(A(x)), mlp_reference(wb, mlp_reference(wa, x)), rtol=1e-4,
                                   atol=1e-5)
        assert B.copied_bytes == ya.nbytes              # only the reference copy
        assert A.copied_bytes == 2 * x.nbytes           # x itself, twice


def test_a_torch_tensor_of_an_output_goes_with_no_copy(pipeline):
    torch = pytest.importorskip("torch")
    sa, wa, sb, wb = pipeline
    x = RNG.standard_normal((4, 64)).astype(np.float32)
    with sa.acquire() as A, sb.acquire() as B:
        ya = A(x)
        t = torch.from_dlpack(ya)
        assert t.data_ptr() == ya.ctypes.data
        y = B(t)
        assert B.copied_bytes == 0
        np.testing.assert_array_equal(y, B(np.array(ya)))


def test_the_first_model_released_the_second_serves_on(pipeline, daemon):
    sa, wa, sb, wb = pipeline
    x = RNG.standard_normal((5, 64)).astype(np.float32)
    with sb.acquire() as B:
        with sa.acquire() as A:
            ya = A(x)
            y1 = B(ya)
            assert B.copied_bytes == 0
        kept = np.array(ya)
        del ya                                          # A's lease ends with its last output
        gc.collect()
        lease_a = next(m for m in modelshare.status()["models"] if m["tag"] == "pipe-a")
        assert lease_a["leases"] == 0
        y2 = B(kept)                                    # copies, and right
        assert B.copied_bytes == kept.nbytes
        np.testing.assert_array_equal(y1, y2)
        with sa.acquire() as A:                         # linked again, to A's new lease
            y3 = B(A(x))
            assert B.copied_bytes == kept.nbytes
            np.testing.assert_array_equal(y3, y1)


def test_a_swap_of_the_second_model_keeps_the_link(pipeline, daemon):
    sa, wa, sb, wb = pipeline
    wb2 = save_mlp(daemon.tmp / "b2.safetensors", [32, 24, 10], seed=5)
    x = RNG.standard_normal((6, 64)).astype(np.float32)
    with sa.acquire() as A, sb.acquire() as B:
        ya = A(x)
        np.testing.assert_allclose(B(ya), mlp_reference(wb, ya), rtol=1e-4, atol=1e-5)
        sb.swap(wb2, version="2")
        # The new version's worker got the link with the lease: still by reference, and right.
        np.testing.assert_allclose(B(ya), mlp_reference(wb2, ya), rtol=1e-4, atol=1e-5)
        assert B.copied_bytes == 0
