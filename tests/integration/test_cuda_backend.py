"""The CUDA backend where there may be no GPU: it is built as a library of its own that loads, and
a CUDA model without a driver or without the library fails with MS_E_DEVICE and the reason."""
import ctypes
import os

import pytest

from conftest import BUILD

CUDA_LIB = BUILD / "libmodelshare-cuda.so"


def have_driver():
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


def spec(path, device="cuda:0"):
    return {"backend": "dense", "weights": str(path), "device": device}


@pytest.mark.skipif(not CUDA_LIB.exists(), reason="CUDA toolkit not found at build time")
def test_cuda_backend_library_links_and_exports_its_ops():
    # RTLD_NOW: every symbol it needs (cudart, cuBLAS, OpenBLAS, our own) must resolve.
    lib = ctypes.CDLL(str(CUDA_LIB), mode=os.RTLD_NOW | os.RTLD_LOCAL)
    ops = ctypes.c_void_p.in_dll(lib, "ms__cuda_dense_ops")
    name = ctypes.cast(ops.value, ctypes.c_char_p).value  # first field: const char *name
    assert ctypes.addressof(ops) and name == b"dense"


@pytest.mark.skipif(have_driver(), reason="this machine has a CUDA driver: see tests/gpu")
def test_cuda_model_without_a_driver_says_so(ms):
    w = ms.make_dense("m.safetensors", [8, 8, 2])
    s = ms.session("g", spec(w))
    assert s.first.startswith("error MS_E_DEVICE "), s.first
    if CUDA_LIB.exists():
        assert "no CUDA driver: libcuda.so.1 not found" in s.first, s.first
    # The daemon goes on: the same model on the CPU loads.
    cpu = ms.session("c", spec(w, "cpu"))
    assert cpu.ok, cpu.first


def test_cuda_model_without_the_backend_library_says_so(ms):
    ms.env["MODELSHARE_CUDA_BACKEND"] = str(ms.tmp / "no-such-libmodelshare-cuda.so")
    w = ms.make_dense("m.safetensors", [8, 8, 2])
    s = ms.session("g", spec(w, "cuda:1"))
    assert s.first.startswith("error MS_E_DEVICE "), s.first
    assert "CUDA backend not built" in s.first and "no-such-libmodelshare-cuda.so" in s.first
    assert ms.model("g")["state"] == "failed"
