"""Helpers shared by the integration tests and the Python package's tests (each conftest.py
re-exports them): waiting for a condition, whether a process lives, and a small MLP written with
numpy and computed with numpy, to check models against."""
import os
import time

import numpy as np
from safetensors.numpy import load_file, save_file


def wait_until(predicate, timeout=20.0, interval=0.05, what="condition"):
    """Polls predicate until it returns a true value; fails the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:  # gone between the two looks
        return False


def mlp_reference(path, x, output="linear"):
    """The MLP computed with numpy from the safetensors file: layers ordered by their index."""
    tensors = load_file(str(path))
    layers = {}
    for name, value in tensors.items():
        stem, kind = name.rsplit(".", 1)
        index = int(stem.rsplit(".", 1)[-1])
        layers.setdefault(index, {})[kind] = value.astype(np.float64)
    h = x.astype(np.float64)
    order = sorted(layers)
    for i, index in enumerate(order):
        h = h @ layers[index]["weight"].T
        if "bias" in layers[index]:
            h = h + layers[index]["bias"]
        if i + 1 < len(order):
            h = np.maximum(h, 0)
    if output == "softmax":
        h = np.exp(h - h.max(axis=1, keepdims=True))
        h = h / h.sum(axis=1, keepdims=True)
    return h


def save_mlp(path, layers, prefix="", seed=0, dtype=np.float32):
    """Writes an nn.Sequential-like MLP with numpy and the safetensors package."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for i in range(len(layers) - 1):
        bound = 1 / np.sqrt(layers[i])
        tensors[f"{prefix}{2 * i}.weight"] = rng.uniform(
            -bound, bound, (layers[i + 1], layers[i])).astype(dtype)
        tensors[f"{prefix}{2 * i}.bias"] = rng.uniform(-bound, bound, layers[i + 1]).astype(dtype)
    save_file(tensors, str(path))
    return path


# Checked on other CPUs' kernels (issue 20, part 5): OpenBLAS, numpy's and Debian's (the dense
# backend's, a DYNAMIC_ARCH build) alike, takes its kernel from $OPENBLAS_CORETYPE, which the
# daemon and its workers inherit; OPENBLAS_VERBOSE=2 prints the one it picked ("Core: Zen", in
# the daemon's log for a worker). Where the environment sets OPENBLAS_L2_SIZE too, override both
# together. Zen (Haswell's kernels) is the AMD EPYC case: there B(3 rows) and B(7 rows) differ by
# 3e-8. To re-run the check (after make build python):
#   for core in Zen Sandybridge Nehalem; do
#     OPENBLAS_CORETYPE=$core MODELSHARE_BUILD=$PWD/build .venv/bin/python -m pytest -q \
#       tests/python tests/integration tests/chaos/test_chaos.py
#   done
# Where the batch composition can differ (merged clients, split pieces, padding, another row
# count), answers are compared with assert_close_across_batches (and, in the C helpers, with
# first_mismatch of tests/helpers/reference.c, the same bound); bit-for-bit only where the
# computation is the same row for row (zero-copy views, identity, integers, exact arithmetic).
def assert_close_across_batches(actual, expected, reduction):
    """The same rows computed in batches of other sizes: BLAS picks its kernels by the row count
    and the CPU (OpenBLAS on Haswell, SkylakeX, Zen...), so the last bits may differ. The bound is
    the dtype's epsilon times the longest sum behind an output (reduction: the sum of the layers'
    input widths), relative to the answer's scale."""
    expected = np.asarray(expected)
    eps = np.finfo(expected.dtype).eps
    scale = float(np.max(np.abs(expected))) if expected.size else 1.0
    tol = 4 * eps * reduction
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * max(scale, 1.0))


def run_together(target, shared, n, calls, timeout=300):
    """Starts n spawned processes target(shared, i, calls, go, results) at once (they wait on go)
    and returns what each put on results, sorted."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(shared, i, calls, go, results)) for i in range(n)]
    for p in procs:
        p.start()
    go.set()
    got = sorted(results.get(timeout=timeout) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    return got


def start_interruptible(code, *args, path=()):
    """A python process running code (python -c) with args, its lines on text pipes, that Ctrl-C
    (SIGINT) interrupts with KeyboardInterrupt as at a terminal: Python ignores SIGINT for good
    when it starts with it ignored, as a command started in the background by a non-interactive
    shell does (a CI runner's). path: directories put before sys.path in its PYTHONPATH."""
    import signal
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*path, *sys.path]))
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
