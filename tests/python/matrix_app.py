"""A user's main script for the constructor compatibility matrix (test_constructors.py).

    python matrix_app.py CALLER OUT.json

It writes its own constructors the ways users write them -- a class, a function, a lambda, a
closure, a partial, a bound method and a callable object of this script, and a function of an
importable module -- and has CALLER acquire each, under a tag of its own, in several processes:

    main    this process first, then two spawn children
    spawn   three spawn children first, then this process
    fork    three fork children first, then this process
    pool    a ProcessPoolExecutor (the default start method) first, then this process
    beam    Beam's DirectRunner, multi_processing x 4, the constructors made in DoFn.setup()
    dask    a LocalCluster(processes=True) of two workers, then this process
    dashc   run as python -c (no script file): this process, then two fork children

Each process makes the constructors again itself, checks each model's answer against numpy and
a pickled method call with an object of this script's Point class, and reports. OUT.json gets
{"cells": {kind: [error or null, ...]}, "loads": {kind: n}}.
"""
import functools
import json
import multiprocessing
import os
import sys

import numpy as np

import modelshare
import pymodels
from pymodels import WIDTH, dense_weights

KINDS = ("module_function", "main_class", "main_function", "lambda", "closure", "partial",
         "bound_method", "class_with_args")


class Dense(pymodels.Dense):
    """A model of the main script (pickled by value where the script is __main__): y = x @
    W(seed), with describe(point). super() makes its __init__ refer back to the class."""

    def __init__(self, seed=0, n_in=WIDTH, n_out=WIDTH):
        super().__init__(seed, n_in, n_out)


class Point:
    """An argument of this script's own class, for a pickled method call."""

    def __init__(self, x, y):
        self.x, self.y = x, y


def make_dense():
    return Dense(seed=1)


def closure_over(seed):
    def make():
        return Dense(seed=seed)
    return make


class Factory:
    def __init__(self, seed):
        self.seed = seed

    def build(self):
        return Dense(seed=self.seed)


class Loader:
    """A callable object made with __init__ arguments."""

    def __init__(self, seed, width):
        self.seed, self.width = seed, width

    def __call__(self):
        return Dense(self.seed, self.width, self.width)


def constructors():
    """kind -> (a constructor made now, in this process; the seed of the model it makes)."""
    return {
        "module_function": (pymodels.make_dense, 7),
        "main_class": (Dense, 0),
        "main_function": (make_dense, 1),
        "lambda": (lambda: Dense(seed=2), 2),
        "closure": (closure_over(3), 3),
        "partial": (functools.partial(Dense, 4, WIDTH), 4),
        "bound_method": (Factory(5).build, 5),
        "class_with_args": (Loader(6, WIDTH), 6),
    }


def check(model, seed, salt):
    """None when the model answers as numpy does, else what went wrong."""
    x = np.random.default_rng(salt).standard_normal((3, WIDTH)).astype(np.float32)
    y = np.array(model(x))
    want = x @ dense_weights(seed)
    if y.shape != want.shape or not np.allclose(y, want, rtol=1e-5, atol=1e-5):
        return f"wrong answer: {y.ravel()[:4]} against {want.ravel()[:4]}"
    got = model.describe(Point(1, 2))
    if tuple(got) != ("Point", 3, seed):
        return f"describe(Point(1, 2)) gave {got!r}"
    return None


def use(kind, prefix, make=modelshare.Shared, hold=None):
    """Acquires kind's model in this process and checks it; the error text, or None."""
    constructor, seed = constructors()[kind]
    try:
        shared = make(constructor, tag=f"{prefix}-{kind}")
        model = shared.acquire()
        try:
            return check(model, seed, os.getpid())
        finally:
            if hold is None:
                model.release()
            else:
                hold.append(model)
    except Exception as e:  # reported, cell by cell
        return f"{type(e).__name__}: {e}"[:2000]


def use_all(prefix, hold=None):
    return {kind: use(kind, prefix, hold=hold) for kind in KINDS}


def _child(prefix, results):
    results.put(use_all(prefix))


def in_children(context, n, prefix):
    """use_all in n child processes of the given start method, at once; their results."""
    ctx = multiprocessing.get_context(context)
    results = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(prefix, results)) for _ in range(n)]
    for p in procs:
        p.start()
    got = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
    return got


def merge(cells, results):
    for result in results:
        for kind, err in result.items():
            cells[kind].append(err)


def run_beam(prefix):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from modelshare.beam import MultiProcessShared

    class Predict(beam.DoFn):
        def setup(self):
            # What Beam users write: the constructor made in setup(), in each worker process.
            self.errors = {}
            self.held = []
            # keep_alive: the object outlives the workers' teardown, so that the loads can be
            # read after the pipeline (Beam's default, and the drop-in's, ends it with the last
            # release).
            drop_in = functools.partial(MultiProcessShared, keep_alive=120)
            for kind in KINDS:
                self.errors[kind] = use(kind, prefix, make=drop_in, hold=self.held)
                strict = functools.partial(MultiProcessShared, strict=True, keep_alive=120)
                self.errors[f"{kind}/strict"] = use(kind, prefix + "-strict", make=strict,
                                                    hold=self.held)

        def process(self, i):
            yield json.dumps([os.getpid(), self.errors])

        def teardown(self):
            for m in self.held:
                m.release()

    out = os.path.join(os.environ["MATRIX_TMP"], "beam-out")
    options = PipelineOptions(runner="DirectRunner", direct_running_mode="multi_processing",
                              direct_num_workers=4)
    with beam.Pipeline(options=options) as p:
        (p | beam.Create(list(range(64))) | beam.Reshuffle() | beam.ParDo(Predict())
         | beam.io.WriteToText(out))
    import glob
    rows = {}
    for f in glob.glob(out + "*"):
        for line in open(f):
            pid, errors = json.loads(line)
            rows[pid] = errors
    results = []
    for errors in rows.values():
        results.append({k: errors[k] for k in KINDS})
        results.append({k: errors[f"{k}/strict"] for k in KINDS})
    return results, len(rows)


def run_dask(prefix):
    from dask.distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        return list(client.run(use_all, prefix).values())


def main(caller, out):
    prefix = caller
    cells = {kind: [] for kind in KINDS}
    held = []  # the first caller's leases stay held while the next ones acquire
    extra = {}
    if caller in ("main", "dashc"):
        merge(cells, [use_all(prefix, hold=held)])
        merge(cells, in_children("spawn" if caller == "main" else "fork", 2, prefix))
    elif caller in ("spawn", "fork"):
        merge(cells, in_children(caller, 3, prefix))
        merge(cells, [use_all(prefix)])
    elif caller == "pool":
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(3) as pool:
            merge(cells, list(pool.map(use_all, [prefix] * 3)))
        merge(cells, [use_all(prefix)])
    elif caller == "beam":
        results, extra["beam_workers"] = run_beam(prefix)
        merge(cells, results)
    elif caller == "dask":
        merge(cells, run_dask(prefix))
        merge(cells, [use_all(prefix)])
    else:
        raise SystemExit(f"unknown caller {caller!r}")
    models = {m["tag"]: m for m in modelshare.status()["models"]}
    loads = {kind: models.get(f"{prefix}-{kind}", {}).get("loads", 0) for kind in KINDS}
    if caller == "beam":
        extra["strict_loads"] = {kind: models.get(f"{prefix}-strict-{kind}", {}).get("loads", 0)
                                 for kind in KINDS}
    for m in held:
        m.release()
    with open(out, "w") as f:
        json.dump({"cells": cells, "loads": loads, **extra}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
