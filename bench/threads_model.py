"""The models of bench/threads_bench.py, importable by the python workers (they get the bench's
sys.path): both let go of the GIL while they work, as numpy's, ONNX Runtime's and PyTorch's
kernels do."""
import time

import numpy as np


class Sleep:
    """y = x + 1 after time.sleep(seconds) a call: a model whose call waits (an accelerator, a
    remote store) without holding the GIL."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __call__(self, x):
        time.sleep(self.seconds)
        return x + np.float32(1)


class MatMul:
    """y = tanh(x @ W), W float32 [width, width]: numpy's BLAS matmul (one core each with
    OPENBLAS_NUM_THREADS=1) and tanh, both without the GIL."""

    def __init__(self, width, seed=1):
        rng = np.random.default_rng(seed)
        self.w = (rng.standard_normal((width, width), dtype=np.float32) / np.sqrt(width))

    def __call__(self, x):
        return np.tanh(x @ self.w)


def make(kind, arg):
    return Sleep(arg) if kind == "sleep" else MatMul(int(arg))
