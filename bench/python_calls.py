"""Calls of a python model that is not batchable, from 1 and 4 processes, side by side in one run:
modelshare (Shared(make, tag=...), the default spec), Apache Beam's MultiProcessShared (when
apache_beam imports) and the same model called in-process. The model is one plain numpy layer,
x @ w + b, 256 > 256 float32; each call is one (1, 256) row.

    .venv/bin/python bench/python_calls.py [--procs 1,4] [--calls 5000] [--repeat 3]
        [--systems modelshare,beam,inproc] [--quick] [--json]
    .venv/bin/python bench/python_calls.py --cost [--cost-calls 200,1200]

Timed figures: calls/s of all the processes together (calls over the span from the first start
to the last end) and p50 of each call's latency, the median run by calls/s of --repeat. Every
client is a process of its own (multiprocessing, spawn). --quick: few calls, to see it run.

--cost counts instructions instead of time (valgrind's callgrind: exact, and the same on a busy
machine): one client in this process calls the model a few times and then more times, each run
of its own under callgrind, with a worker of its own, also under callgrind; the difference
divided by the difference in calls is the cost of one call, in the worker and in the client
(the client's own loop included; the in-process call of the model is counted the same way, for
comparison). Waiting is made free of spinning for this (MODELSHARE_SPIN_US=0: the worker and
the client sleep on their futex), and BLAS runs on one thread (a helper thread's wait would be
counted too), so what is counted is the work of a call; the kernel's part (futex, scheduling)
is not counted. Needs valgrind.

Runs its own daemon on a private socket and stops it at the end. Not part of `make test`.
"""
import argparse
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
WIDTH = 256
SYSTEMS = ("modelshare", "beam", "inproc")
NAMES = {"modelshare": "modelshare Shared (python, not batchable)",
         "beam": "Beam MultiProcessShared", "inproc": "in-process"}


class Layer:
    """The model: one float32 layer, x @ w + b."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.w = ((rng.random((WIDTH, WIDTH), dtype=np.float32) - 0.5) / 16).astype(np.float32)
        self.b = np.full(WIDTH, 0.01, np.float32)

    def __call__(self, x):
        return x @ self.w + self.b


def make():
    return Layer()


def row():
    return np.random.default_rng(7).standard_normal((1, WIDTH)).astype(np.float32)


# ----------------------------------------------------------------------------------- timing

def open_model(system, ctx):
    """(callable, let go) in a client process."""
    # The constructor by reference to this module (importable in every server process).
    from python_calls import make as constructor
    if system == "inproc":
        return constructor(), lambda: None
    if system == "beam":
        from apache_beam.utils.multi_process_shared import MultiProcessShared
        shared = MultiProcessShared(constructor, tag=ctx["tag"], path=ctx["path"],
                                    always_proxy=True)
        held = shared.acquire()
        return held, lambda: shared.release(held)
    import modelshare
    model = modelshare.Shared(constructor, tag=ctx["tag"]).acquire()
    return model, model.release


def timed_calls(model, job):
    x = row()
    for _ in range(job["warmup"]):
        model(x)
    while time.monotonic() < job["start_at"]:
        time.sleep(0.0005)
    lat = []
    t_start = time.monotonic()
    for _ in range(job["calls"]):
        t0 = time.perf_counter_ns()
        model(x)
        lat.append(time.perf_counter_ns() - t0)
    return {"lat": lat, "start": t_start, "end": time.monotonic()}


def client_main(system, ctx, jobs, results):
    sys.path.insert(0, HERE)
    try:
        model, let_go = open_model(system, ctx)
        y = np.asarray(model(row()))
        from python_calls import make as constructor
        np.testing.assert_allclose(y, constructor()(row()), rtol=1e-5, atol=1e-6)
    except Exception:
        results.put(("error", traceback.format_exc()))
        return
    from vs_peers import serve_jobs
    serve_jobs(lambda job: timed_calls(model, job), let_go, jobs, results)


def take(results, what, n, timeout=300):
    out = []
    while len(out) < n:
        kind, value = results.get(timeout=timeout)
        if kind == "error":
            raise RuntimeError(value)
        if kind == what:
            out.append(value)
    return out


def summary(runs):
    lat = sorted(x for r in runs for x in r["lat"])
    wall = max(r["end"] for r in runs) - min(r["start"] for r in runs)
    return {"calls_per_s": len(lat) / wall, "p50_us": lat[len(lat) // 2] / 1e3,
            "p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1e3, "calls": len(lat)}


def run_system(system, procs, args, ctx):
    """{procs: figures} for one system, its clients started once for the largest count."""
    mpc = mp.get_context("spawn")
    jobs = [mpc.Queue() for _ in range(max(procs))]
    results = mpc.Queue()
    kids = [mpc.Process(target=client_main, args=(system, ctx, jobs[i], results), daemon=True)
            for i in range(max(procs))]
    for k in kids:
        k.start()
    out = {}
    try:
        take(results, "ready", len(kids))
        for n in procs:
            figures = []
            for _ in range(args.repeat):
                job = {"calls": args.calls, "warmup": args.warmup,
                       "start_at": time.monotonic() + 0.3}
                for q in jobs[:n]:
                    q.put(job)
                figures.append(summary(take(results, "done", n)))
            figures.sort(key=lambda f: f["calls_per_s"])
            out[n] = figures[len(figures) // 2]
    finally:
        for q in jobs:
            q.put(None)
        for k in kids:
            k.join(timeout=30)
            if k.is_alive():
                k.kill()
    return out


def beam_server(tmp, tag):
    """Beam's server process, started here (spawn_process) so that clients only connect."""
    from apache_beam.utils.multi_process_shared import MultiProcessShared
    from python_calls import make as constructor
    s = MultiProcessShared(constructor, tag=tag, path=tmp, always_proxy=True, spawn_process=True)
    return s, s.acquire()


def beam_available():
    try:
        import apache_beam.utils.multi_process_shared  # noqa: F401
        return True
    except Exception:
        return False


def timing(args, tmp):
    procs = [int(p) for p in args.procs.split(",")]
    systems = [s for s in args.systems.split(",") if s]
    results, keep = {}, []
    for system in systems:
        ctx = {"tag": f"pycalls-{system}-{os.getpid()}", "path": tmp}
        if system == "beam":
            if not beam_available():
                print("beam: apache_beam does not import here: skipped", file=sys.stderr)
                continue
            keep.append(beam_server(tmp, ctx["tag"]))
        try:
            results[system] = run_system(system, procs, args, ctx)
        finally:
            for s, m in keep:
                s.release(m)
            keep.clear()
    return procs, results


def print_table(procs, results):
    print("| system | processes | calls/s | p50 µs | p99 µs |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for system, by_n in results.items():
        for n in procs:
            f = by_n[n]
            print(f"| {NAMES[system]} | {n} | {f['calls_per_s']:,.0f} | {f['p50_us']:.1f} | "
                  f"{f['p99_us']:.1f} |")
    if "modelshare" in results and "beam" in results:
        for n in procs:
            ratio = results["modelshare"][n]["calls_per_s"] / results["beam"][n]["calls_per_s"]
            print(f"modelshare / Beam calls/s, {n} process{'es' * (n > 1)}: {ratio:.1f}x")


# ----------------------------------------------------------------------------------- cost

def callgrind_total(path):
    """Total instructions (Ir) of a callgrind output file."""
    with open(path) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError(f"{path}: no totals line")


def cost_child(out_dir, calls, system):
    """One run under callgrind: this process is the client (and, for modelshare, its worker is
    a callgrind run of its own, through a wrapper interpreter). Writes its callgrind files."""
    sys.path.insert(0, HERE)
    from python_calls import make as constructor
    x = row()
    if system == "inproc":
        model = constructor()
        for _ in range(calls):
            model(x)
        return
    import modelshare
    shared = modelshare.Shared(constructor, tag=f"cost-{calls}", load_timeout=600,
                               call_timeout=600)
    with shared.acquire() as model:
        for _ in range(calls):
            model(x)


def worker_wrapper(tmp, out):
    """An interpreter that runs itself under callgrind: the spec's executable for the worker."""
    path = os.path.join(tmp, "python-callgrind")
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file={out} "
                f"{sys.executable} \"$@\"\n")
    os.chmod(path, 0o755)
    return path


def cost_run(tmp, system, calls):
    """(client Ir, worker Ir or None) of one run of `calls` calls."""
    d = tempfile.mkdtemp(prefix=f"{system}-{calls}-", dir=tmp)
    d = os.path.abspath(d)
    os.chmod(d, 0o700)
    env = dict(os.environ, MODELSHARE_SOCKET=os.path.join(d, "s", "modelshared.sock"),
               MODELSHARE_SPIN_US="0", MODELSHARE_IDLE_EXIT="0", PYTHONHASHSEED="0",
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    worker_out = os.path.join(d, "worker.out")
    client_out = os.path.join(d, "client.out")
    code = (f"import sys; sys.path.insert(0, {HERE!r}); sys.executable = "
            f"{worker_wrapper(d, worker_out)!r}; import python_calls; "
            f"python_calls.cost_child({d!r}, {calls}, {system!r})")
    try:
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={client_out}",
                        sys.executable, "-c", code], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1800)
    finally:
        stop_daemon(env["MODELSHARE_SOCKET"])
    deadline = time.monotonic() + 60
    while system == "modelshare" and not os.path.exists(worker_out):
        if time.monotonic() > deadline:
            raise RuntimeError("the worker's callgrind output did not come")
        time.sleep(0.2)
    time.sleep(0.5)  # the worker's file is written at its exit
    return callgrind_total(client_out), \
        callgrind_total(worker_out) if system == "modelshare" else None


def stop_daemon(socket):
    try:
        with open(socket + ".pid") as f:
            pid = int(f.read().strip())
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
    except (OSError, ValueError):
        pass


def cost(args, tmp):
    lo, hi = (int(c) for c in args.cost_calls.split(","))
    out = {}
    for system in ("inproc", "modelshare"):
        where = args.keep or tmp
        os.makedirs(where, exist_ok=True)
        c_lo, w_lo = cost_run(where, system, lo)
        c_hi, w_hi = cost_run(where, system, hi)
        out[system] = {"client": (c_hi - c_lo) / (hi - lo),
                       "worker": (w_hi - w_lo) / (hi - lo) if w_lo is not None else None}
    print(f"instructions per call (callgrind, ({hi} calls - {lo} calls) / {hi - lo}):")
    print("| path | client | worker |")
    print("| --- | ---: | ---: |")
    for system, f in out.items():
        worker = f"{f['worker']:,.0f}" if f["worker"] is not None else "-"
        print(f"| {NAMES[system]} | {f['client']:,.0f} | {worker} |")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", default="1,4")
    ap.add_argument("--calls", type=int, default=5000, help="calls per process per run")
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--quick", action="store_true", help="few calls: to see it run")
    ap.add_argument("--cost", action="store_true", help="instructions per call (callgrind)")
    ap.add_argument("--cost-calls", default="200,1200")
    ap.add_argument("--keep", help="--cost: keep the callgrind files in this folder")
    ap.add_argument("--json", action="store_true", help="also print one JSON object")
    args = ap.parse_args()
    if args.quick:
        args.calls, args.warmup, args.repeat = 200, 50, 1
        args.cost_calls = "20,120"
    if re.fullmatch(r"\d+,\d+", args.cost_calls) is None:
        ap.error("--cost-calls: expected LOW,HIGH")
    sys.path.insert(0, HERE)
    tmp = tempfile.mkdtemp(prefix="mspc-", dir="/tmp")
    os.chmod(tmp, 0o700)
    socket = os.path.join(tmp, "d", "modelshared.sock")
    os.environ["MODELSHARE_SOCKET"] = socket
    os.environ.setdefault("MODELSHARE_IDLE_EXIT", "0")
    try:
        if args.cost:
            out = cost(args, tmp)
        else:
            procs, results = timing(args, tmp)
            print_table(procs, results)
            out = {s: {str(n): f for n, f in r.items()} for s, r in results.items()}
    finally:
        stop_daemon(socket)
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
