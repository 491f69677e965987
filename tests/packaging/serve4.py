"""Run by test_wheel.py inside the hidden namespace, with the fresh virtualenv's python: four
spawned processes share a python-backend model and a dense model through the installed wheel.
argv: WEIGHTS OUTDIR. Writes OUTDIR/x.I.npy, py.I.npy, dense.I.npy and OUTDIR/report.json."""
import json
import multiprocessing as mp
import os
import sys

import numpy as np

import modelshare

N = 4


class Affine:
    """The python backend's model: y = x @ W + 1, W fixed by a seed."""

    def __init__(self):
        self.w = np.random.default_rng(7).standard_normal((16, 5)).astype(np.float32)

    def __call__(self, x):
        return x @ self.w + 1


def child(py, dense, i, outdir, barrier, errors):
    try:
        x = np.random.default_rng(100 + i).standard_normal((i + 2, 16)).astype(np.float32)
        with py.acquire() as a, dense.acquire() as d:
            np.save(f"{outdir}/x.{i}.npy", x)
            np.save(f"{outdir}/py.{i}.npy", np.array(a(x)))
            np.save(f"{outdir}/dense.{i}.npy", np.array(d(x)))
            barrier.wait(timeout=120)  # every lease held at once: the parent looks now
            barrier.wait(timeout=120)
    except Exception as e:  # reported to the parent
        errors.put(f"child {i}: {e!r}")
        barrier.abort()


def main():
    weights, outdir = sys.argv[1], sys.argv[2]
    ctx = mp.get_context("spawn")
    py = modelshare.Shared(Affine, tag="affine")
    dense = modelshare.Shared.dense(weights, tag="mlp")
    barrier, errors = ctx.Barrier(N + 1), ctx.Queue()
    procs = [ctx.Process(target=child, args=(py, dense, i, outdir, barrier, errors))
             for i in range(N)]
    for p in procs:
        p.start()
    status = None
    try:
        barrier.wait(timeout=180)
        status = modelshare.status()
        barrier.wait(timeout=60)
    except Exception as e:
        errors.put(f"parent: {e!r}")
    for p in procs:
        p.join(timeout=60)
    errs = []
    while not errors.empty():
        errs.append(errors.get())
    models = {m["tag"]: m for m in (status or {}).get("models", [])}
    exes = {}
    if status:
        pids = [status["daemon_pid"]] + [p for m in models.values() for p in m["worker_pids"]]
        exes = {str(p): os.path.realpath(f"/proc/{p}/exe") for p in pids}
    maps = open(f"/proc/{status['daemon_pid']}/maps").read() if status else ""
    report = {"package": os.path.dirname(modelshare.__file__), "errors": errs,
              "exitcodes": [p.exitcode for p in procs], "models": models, "exes": exes,
              "daemon_libs": sorted({line.split()[-1] for line in maps.splitlines()
                                     if ".so" in line.split()[-1]}),
              "daemon_pid": status["daemon_pid"] if status else None}
    with open(f"{outdir}/report.json", "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
