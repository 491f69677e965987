"""PyTorch models through the python worker's adapter, as users write them: a constructor returns a
module as it is, the caller passes torch tensors, and the answers equal the same module run in
this process."""
import functools
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import modelshare  # noqa: E402
import torchmodels  # noqa: E402
from testlib import run_together  # noqa: E402
from torchmodels import D_IN, D_MODEL, D_OUT  # noqa: E402


def model_status(tag):
    return next(m for m in modelshare.status()["models"] if m["tag"] == tag)


def in_process(make, *args):
    """The module of make(), run here on torch tensors, as a numpy array (or a tuple of them)."""
    with torch.no_grad():
        y = make()(*args)
    return tuple(v.numpy() for v in y) if isinstance(y, tuple) else y.numpy()


@pytest.mark.parametrize("framework", [None, "torch"])
def test_a_sequential_returned_as_is_takes_torch_tensors(daemon, framework):
    # Detected from the constructor's nn.Module, or said with framework="torch". Its parameters
    # require grad and nothing in it says inference_mode: the worker runs it under inference mode.
    shared = modelshare.Shared(torchmodels.make_sequential, tag="mlp", framework=framework)
    x = torch.randn(8, D_IN)
    with shared.acquire() as model:
        y = model(x)
        assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == (8, D_OUT)
        np.testing.assert_allclose(y, in_process(torchmodels.make_sequential, x),
                                   rtol=1e-5, atol=1e-6)
        # A CPU tensor is read in place (DLPack) and copied once into shared memory, as an
        # array is: nothing more.
        assert model.copied_bytes == x.numel() * 4
        # numpy input too, and rows of any count.
        for rows in (1, 3, 100):
            xn = np.random.default_rng(rows).standard_normal((rows, D_IN)).astype(np.float32)
            np.testing.assert_allclose(model(xn), in_process(torchmodels.make_sequential,
                                                             torch.from_numpy(xn)),
                                       rtol=1e-5, atol=1e-6)
        # The answer is numpy over shared memory: torch reads it in place.
        t = torch.from_dlpack(y)
        assert t.data_ptr() == y.ctypes.data
    assert model_status("mlp")["requests"] >= 4


def test_a_transformer_encoder_answers_as_in_process(daemon):
    shared = modelshare.Shared(torchmodels.make_encoder, tag="encoder", framework="torch")
    x = torch.randn(4, 10, D_MODEL)
    with shared.acquire() as encoder:
        y = encoder(x)
        assert y.shape == (4, 10, D_MODEL)
        np.testing.assert_allclose(y, in_process(torchmodels.make_encoder, x),
                                   rtol=1e-4, atol=1e-5)


def test_the_forward_sees_torch_tensors_under_inference_mode(daemon):
    shared = modelshare.Shared(torchmodels.SeesTypes, tag="types")
    with shared.acquire() as model:
        x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
        np.testing.assert_array_equal(model(x), x.numpy() + 1)
        # An input from model.empty() is in shared memory already: passed by reference.
        e = model.empty((2, 3))
        e[:] = 5
        np.testing.assert_array_equal(model(e), np.full((2, 3), 6, np.float32))
        assert model.copied_bytes == x.numel() * 4
        assert model.types() == [("Tensor", "cpu", "torch.float32", False, True)] * 2


@pytest.mark.parametrize("make", [torchmodels.make_scripted, torchmodels.make_exported],
                         ids=["ScriptModule", "ExportedProgram"])
def test_scripted_and_exported_modules(daemon, make):
    # Detected without framework=; an ExportedProgram is called through .module().
    shared = modelshare.Shared(make, tag="compiled")
    x = torch.randn(5, D_IN)
    with shared.acquire() as model:
        np.testing.assert_allclose(model(x), in_process(torchmodels.make_sequential, x),
                                   rtol=1e-5, atol=1e-6)


def test_tensors_that_require_grad_are_not_contiguous_or_bfloat16(daemon):
    shared = modelshare.Shared(torchmodels.make_sequential, tag="inputs")
    with shared.acquire() as model:
        x = torch.randn(D_IN, 6, requires_grad=True)   # a graph leaf, transposed: strided
        y = model(x.t())
        np.testing.assert_allclose(y, in_process(torchmodels.make_sequential, x.detach().t()),
                                   rtol=1e-5, atol=1e-6)
        assert model.copied_bytes == x.numel() * 4  # the data plane, not a pickled call
    pytest.importorskip("ml_dtypes")
    bf = modelshare.Shared(torchmodels.make_bfloat16, tag="bf16")
    with bf.acquire() as model:
        x = torch.randn(3, D_IN).to(torch.bfloat16)
        y = model(x)
        assert y.dtype.name == "bfloat16" and y.shape == (3, D_OUT)
        with torch.no_grad():
            want = torchmodels.make_bfloat16()(x).float().numpy()
        np.testing.assert_allclose(y.astype(np.float32), want, rtol=1e-2, atol=1e-2)


def test_one_forward_at_a_time_unless_thread_safe(daemon):
    # 6 threads of this process, with requests in flight at once: the module's own forward sees
    # one call at a time; thread_safe=True lets the worker run several.
    x = torch.randn(2, D_IN)
    want = in_process(torchmodels.make_sequential, x)
    for tag, extra, most in (("one", {}, 1), ("many", {"thread_safe": True, "threads": 4}, 2)):
        shared = modelshare.Shared(functools.partial(torchmodels.make_counts, 0.005, bool(extra)),
                                   tag=tag, **extra)
        errors = []
        with shared.acquire() as model:
            def call():
                try:
                    for _ in range(15):
                        np.testing.assert_allclose(model(x), want, rtol=1e-5, atol=1e-6)
                except Exception as e:  # checked below
                    errors.append(e)
            threads = [threading.Thread(target=call) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            peak, calls = model.peak()
        assert errors == []
        assert calls >= 6 * 15
        assert peak == 1 if most == 1 else peak >= most, (tag, peak)


def test_batchable_calls_of_four_processes_are_merged_and_right(daemon):
    shared = modelshare.Shared(torchmodels.make_sequential, tag="batched", batchable=True,
                               max_batch=64, batch_delay_us=2000)
    with shared.acquire():
        got = run_together(torchmodels.batched_calls, shared, 4, 40)
    assert got == [(i, None) for i in range(4)]
    m = model_status("batched")
    assert m["spec"]["batchable"] is True
    assert m["batches"] < m["requests"], m


def test_a_module_that_is_not_batchable_may_answer_a_tuple(daemon):
    shared = modelshare.Shared(torchmodels.Two, tag="two")
    x = torch.randn(3, D_IN)
    with shared.acquire() as model:
        y, s = model(x)
        want_y, want_s = in_process(torchmodels.Two, x)
        assert isinstance(y, np.ndarray) and isinstance(s, np.ndarray)
        np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s, want_s, rtol=1e-5, atol=1e-5)


def test_a_module_that_writes_its_input(daemon):
    shared = modelshare.Shared(torchmodels.WritesItsInput, tag="inplace")
    x = torch.tensor([[-1.0, 2.0]])
    with shared.acquire() as model:
        # The input copied for the call is the request's own: the module may write it, and the
        # caller's tensor is untouched.
        np.testing.assert_array_equal(model(x), [[0.0, 4.0]])
        assert x.tolist() == [[-1.0, 2.0]]
        # An input passed by reference (model.empty()) is the caller's memory: the call fails
        # and says why, rather than answering as if nothing happened.
        e = model.empty((1, 2))
        e[:] = [[-1.0, 2.0]]
        with pytest.raises(modelshare.BackendError, match="wrote into its input"):
            model(e)
        np.testing.assert_array_equal(model(x), [[0.0, 4.0]])  # the worker goes on


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_and_a_module_on_cuda(daemon):
    shared = modelshare.Shared(torchmodels.make_cuda, tag="cuda", device="cuda:0")
    x = torch.randn(4, D_IN)
    want = in_process(torchmodels.make_sequential, x)
    with shared.acquire() as model:
        np.testing.assert_allclose(model(x), want, rtol=1e-4, atol=1e-5)   # host to device
        before = model.copied_bytes
        np.testing.assert_allclose(model(x.cuda()), want, rtol=1e-4, atol=1e-5)
        assert model.copied_bytes - before == x.numel() * 4   # device to host, once


@pytest.mark.parametrize("framework, batchable", [(None, False), (None, True), ("torch", False)])
def test_a_wrapper_that_forgets_inference_mode(daemon, framework, batchable):
    # A plain callable (not a module) that answers a tensor requiring grad: numpy in without
    # framework=, a tensor with framework="torch"; either way the caller gets the array.
    shared = modelshare.Shared(torchmodels.ForgetsInferenceMode, tag="wrapper",
                               framework=framework, batchable=batchable)
    x = torch.randn(3, D_IN)
    with shared.acquire() as model:
        y = model(x)
        assert isinstance(y, np.ndarray)
        np.testing.assert_allclose(y, in_process(torchmodels.make_sequential, x),
                                   rtol=1e-5, atol=1e-6)
