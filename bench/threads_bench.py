#!/usr/bin/env python3
"""thread_safe=True against one call at a time: N client processes (8) call one python model
through modelshare as fast as they can for a while, and the rows/s of all of them together are
printed for each setting of the spec (thread_safe false; thread_safe true with each --threads).

    .venv/bin/python bench/threads_bench.py [--clients 8] [--seconds 5] [--threads 2,4]
        [--models sleep,numpy] [--results FILE]

Models (bench/threads_model.py), both letting go of the GIL while they work:
    sleep: time.sleep(5 ms) a call, requests of 64 rows of 16 float32 (one request a run:
           max_batch 64)
    numpy: tanh(x @ W), W 1024 x 1024 float32, requests of 64 rows (one request a run:
           max_batch 64); the daemon and so its workers run with OPENBLAS_NUM_THREADS=1 (and
           OMP_NUM_THREADS=1), so that one call uses one core and calls at once use more

Its own daemon on a private socket; nothing is asserted (tests/python/test_threads.py checks
the behaviour): figures printed, and with --results appended to FILE as Markdown lines."""
import argparse
import functools
import multiprocessing
import os
import pathlib
import signal
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import threads_model  # noqa: E402

MODELS = {"sleep": (("sleep", 0.005), 64, 16), "numpy": (("numpy", 1024), 64, 1024)}


def client(shared, rows, width, seconds, start, results):
    import modelshare  # noqa: F401  (the package, in the child)
    x = np.random.default_rng(os.getpid()).standard_normal((rows, width)).astype(np.float32)
    with shared.acquire() as model:
        model(x)  # loaded, warm
        start.wait()
        n, t_end = 0, time.monotonic() + seconds
        while time.monotonic() < t_end:
            model(x)
            n += 1
    results.put(n * rows)


def measure(name, spec, clients, seconds):
    import modelshare
    (kind, arg), rows, width = MODELS[name]
    shared = modelshare.Shared(functools.partial(threads_model.make, kind, arg),
                               tag=f"{name}-{spec.get('threads', 1)}", keep_alive=0, **spec)
    with shared.acquire() as model:  # loaded once, before the clients come
        model(np.zeros((rows, width), np.float32))
        ctx = multiprocessing.get_context("spawn")
        start, results = ctx.Barrier(clients + 1), ctx.Queue()
        procs = [ctx.Process(target=client, args=(shared, rows, width, seconds, start, results))
                 for _ in range(clients)]
        for p in procs:
            p.start()
        start.wait(timeout=300)
        t0 = time.monotonic()
        total = sum(results.get(timeout=seconds + 300) for _ in procs)
        wall = time.monotonic() - t0
        for p in procs:
            p.join(timeout=60)
    return total / wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", default="2,4")
    ap.add_argument("--models", default="sleep,numpy")
    ap.add_argument("--results")
    a = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="msb-", dir="/tmp"))
    os.chmod(tmp, 0o700)
    # Set before the package starts the daemon: its workers inherit them.
    os.environ.update(MODELSHARE_SOCKET=str(tmp / "d" / "s.sock"), MODELSHARE_IDLE_EXIT="0",
                      OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    settings = [("one at a time", {})] + [
        (f"thread_safe, threads={t}", {"thread_safe": True, "threads": int(t)})
        for t in a.threads.split(",")]
    lines = []
    for name in a.models.split(","):
        base = None
        for label, spec in settings:
            rate = measure(name, spec, a.clients, a.seconds)
            base = base or rate
            line = (f"| {name} | {label} | {rate:,.0f} | {rate / base:.2f}x |")
            print(line, flush=True)
            lines.append(line)
    if a.results:
        with open(a.results, "a") as f:
            f.write("\n".join(lines) + "\n")
    try:  # the bench's own daemon
        os.kill(int((tmp / "d" / "s.sock.pid").read_text()), signal.SIGTERM)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    main()
