"""Per-call latency from Python: a modelshare dense model against a pickling proxy over a localhost
socket (multiprocessing.managers.BaseManager, what Apache Beam's MultiProcessShared uses), and the
same computation in-process with numpy.

    .venv/bin/python bench/python_vs_pickle.py [--calls 20000] [--batch 1] [--width 256]

Runs its own daemon on a private socket and stops it at the end. Not part of `make test`.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import struct
import tempfile
import time
from multiprocessing.managers import BaseManager

import numpy as np

import modelshare


def write_dense(path, width, seed=0):
    """A one-layer width > width float32 model in safetensors (names as nn.Sequential's)."""
    rng = np.random.default_rng(seed)
    w = ((rng.random((width, width)) - 0.5) / np.sqrt(width)).astype(np.float32)
    b = ((rng.random(width) - 0.5) / np.sqrt(width)).astype(np.float32)
    header = {"0.weight": {"dtype": "F32", "shape": [width, width],
                           "data_offsets": [0, w.nbytes]},
              "0.bias": {"dtype": "F32", "shape": [width], "data_offsets": [w.nbytes,
                                                                         w.nbytes + b.nbytes]}}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + w.tobytes() + b.tobytes())
    return w, b


class Linear:
    """The model as a plain Python object, for the proxy and the in-process figures."""

    def __init__(self, w, b):
        self.w, self.b = w, b

    def infer(self, x):
        return x @ self.w.T + self.b


class Manager(BaseManager):
    pass


def timed(fn, x, calls, warmup=200):
    for _ in range(warmup):
        fn(x)
    lat = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        fn(x)
        lat.append(time.perf_counter_ns() - t0)
    lat.sort()
    return {"p50_us": lat[len(lat) // 2] / 1e3, "p99_us": lat[int(len(lat) * 0.99)] / 1e3,
            "mean_us": statistics.fmean(lat) / 1e3, "calls_per_s": 1e9 / statistics.fmean(lat)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="msb-", dir="/tmp")
    os.chmod(tmp, 0o700)
    socket = os.path.join(tmp, "d", "modelshared.sock")
    os.environ["MODELSHARE_SOCKET"] = socket
    os.environ.setdefault("MODELSHARE_IDLE_EXIT", "0")
    weights = os.path.join(tmp, "linear.safetensors")
    w, b = write_dense(weights, args.width)
    x = np.random.default_rng(1).standard_normal((args.batch, args.width)).astype(np.float32)
    results = {}
    try:
        with modelshare.Shared.dense(weights, tag="bench-linear").acquire() as model:
            np.testing.assert_allclose(model(x), Linear(w, b).infer(x), rtol=1e-4, atol=1e-5)
            results["modelshare"] = timed(model, x, args.calls)

        Manager.register("Linear", Linear)
        manager = Manager(address=("127.0.0.1", 0), authkey=b"bench")
        manager.start()
        try:
            proxy = manager.Linear(w, b)
            results["pickle proxy (BaseManager, TCP)"] = timed(proxy.infer, x, args.calls)
        finally:
            manager.shutdown()

        results["in-process numpy"] = timed(Linear(w, b).infer, x, args.calls)
    finally:
        try:
            with open(socket + ".pid") as f:
                os.kill(int(f.read().strip()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
        shutil.rmtree(tmp, ignore_errors=True)

    if args.json:
        print(json.dumps({"batch": args.batch, "width": args.width, "calls": args.calls,
                          "results": results}))
        return
    print(f"per-call latency, {args.width} > {args.width} float32 linear layer, batch "
          f"{args.batch}, {args.calls} calls each")
    print(f"  {'':34} {'p50 us':>9} {'p99 us':>9} {'mean us':>9} {'calls/s':>10}")
    for name, r in results.items():
        print(f"  {name:34} {r['p50_us']:9.1f} {r['p99_us']:9.1f} {r['mean_us']:9.1f} "
              f"{r['calls_per_s']:10.0f}")


if __name__ == "__main__":
    main()
