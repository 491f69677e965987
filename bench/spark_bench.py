"""Spark on local[N]: one scoring job, the model loaded per partition (what Spark users write
today: the constructor called inside mapInPandas) against modelshare (one load per machine;
mapInPandas and mapInArrow). Prints wall time and peak memory: the sum of the PSS of Spark's
Python workers (pyspark.daemon and its forks), the modelshare worker and modelshared, sampled
from /proc/*/smaps_rollup every 50 ms during the job (the JVM is left out: it is the same in
every run).

    .venv/bin/python bench/spark_bench.py --rows 2000000 --partitions 16 --weights-mb 256
"""
import argparse
import functools
import os
import pathlib
import shutil
import signal
import sys
import tempfile
import threading
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
FEATURES = [f"f{i}" for i in range(8)]


class Hashed:
    """A linear model over hashed features: a weight table of a few hundred MB (read from a
    .npy file, as a model is loaded from disk), a cheap lookup per row."""

    def __init__(self, path):
        self.table = np.load(path)

    def __call__(self, x):
        idx = (np.abs(x) * 1e6).astype(np.int64)
        idx += np.arange(x.shape[1], dtype=np.int64) * 7919
        return self.table[idx % len(self.table)].sum(axis=1, dtype=np.float32)


def load_hashed(path):
    return Hashed(path)


def _pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _watched(pid):
    try:
        cmd = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return (b"pyspark.daemon" in cmd or b"pyspark.worker" in cmd or
            b"modelshare.worker" in cmd or b"modelshared" in cmd)


def _total_kb():
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    return sum(_pss_kb(p) for p in pids if _watched(p))


class Sampler(threading.Thread):
    """The peak of the summed PSS of the watched processes, and the most Python workers seen."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak_kb = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak_kb = max(self.peak_kb, _total_kb())
            self.stop.wait(0.05)


def per_partition(path):
    def run(batches):  # what a Spark user writes: the model built in each task
        model = load_hashed(path)
        for pdf in batches:
            yield pdf.assign(prediction=model(pdf[FEATURES].to_numpy(np.float32))
                             .astype(np.float64))
    return run


def _stop_daemon(socket):
    try:
        os.kill(int(pathlib.Path(socket + ".pid").read_text().strip()), signal.SIGTERM)
    except (OSError, ValueError):
        pass


def _session(args):
    from pyspark.sql import SparkSession
    spark = (SparkSession.builder.master(f"local[{args.slots}]").appName("modelshare-bench")
             .config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", str(args.slots))
             .config("spark.driver.memory", "2g").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _measure(name, job, reference):
    """(name, wall s, PSS MB before, peak PSS MB) of one job, its predictions."""
    before = _total_kb() / 1024
    sampler = Sampler()
    sampler.start()
    t0 = time.perf_counter()
    out = job().select("id", "prediction").toPandas().sort_values("id")
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    y = out["prediction"].to_numpy()
    # float32 sums of 8 values: the batched order may differ in the last bits
    assert reference is None or np.allclose(y, reference, rtol=1e-5, atol=1e-4), \
        f"{name}: predictions differ"
    return (name, wall, before, sampler.peak_kb / 1024), y


def _jobs(args, spark, weights):
    import modelshare
    import modelshare.spark
    import spark_bench  # this file as a module: the Spark workers import it by name

    df = (spark.range(args.rows).repartition(args.partitions)
          .selectExpr("id", *[f"CAST(abs(hash(id, {i})) % 1000000 / 10000.0 AS FLOAT) AS {f}"
                              for i, f in enumerate(FEATURES)]).cache())
    df.count()
    shared = modelshare.Shared(functools.partial(spark_bench.load_hashed, str(weights)),
                               tag="bench-hashed", keep_alive=600, batchable=True)
    predict = modelshare.spark.predictor(shared, features=FEATURES)
    schema = predict.schema(df)
    runs = [("model loaded per partition (mapInPandas)",
             lambda: df.mapInPandas(spark_bench.per_partition(str(weights)), schema)),
            ("modelshare, mapInPandas", lambda: df.mapInPandas(predict.pandas, schema)),
            ("modelshare, mapInArrow", lambda: df.mapInArrow(predict.arrow, schema))]
    # Warm-up: every run finds the Python workers started (pandas and pyarrow imported).
    df.mapInPandas(lambda batches: batches, df.schema).select("id").toPandas()
    results, reference = [], None
    for name, job in runs:
        row, reference = _measure(name, job, reference)
        results.append(row)
    loads = next(m for m in modelshare.status()["models"] if m["tag"] == "bench-hashed")["loads"]
    return results, loads


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--slots", type=int, default=4, help="local[N]")
    ap.add_argument("--weights-mb", type=int, default=256)
    args = ap.parse_args()

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="msb-", dir="/tmp"))
    socket = str(tmp / "d" / "modelshared.sock")
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    os.environ.update(MODELSHARE_SOCKET=socket, MODELSHARE_IDLE_EXIT="0", PYTHONPATH=path)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    java = shutil.which("java")
    if "JAVA_HOME" not in os.environ and java:
        os.environ["JAVA_HOME"] = str(pathlib.Path(os.path.realpath(java)).parents[1])
    sys.path.insert(0, str(HERE))
    weights = tmp / "table.npy"
    np.save(weights, np.random.default_rng(0).standard_normal(
        args.weights_mb * 2**20 // 4).astype(np.float32))
    spark = _session(args)
    try:
        results, loads = _jobs(args, spark, weights)
    finally:
        spark.stop()
        _stop_daemon(socket)  # its workers with it
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{args.rows} rows x {len(FEATURES)} features, {args.partitions} partitions, "
          f"local[{args.slots}], a {args.weights_mb} MB weight table (modelshare loads: {loads})")
    print("| job | wall s | PSS MB before | peak PSS MB (Python workers + modelshare) |")
    print("| --- | ---: | ---: | ---: |")
    for name, wall, before, peak in results:
        print(f"| {name} | {wall:.1f} | {before:.0f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
