"""RunInference on DirectRunner (4 processes): Beam's own sharing against SharedModelHandler.

    .venv/bin/python bench/beam_runinference.py [--rows 20000] [--table-mb 200] [--out FILE]

A hashed-features model whose weight table is --table-mb of float32 (seeded, built and saved
with np.save into a temporary folder; each load reads it whole), wrapped in a RunInference
ModelHandler of this file. The same pipeline (Create, Reshuffle, RunInference, WriteToText) runs
once per mode, each in a child process of its own:

- beam: the handler built with large_model=True: Beam's MultiProcessShared, one copy in a server
  thread of one worker process, every model call pickled to it.
- modelshare: SharedModelHandler(handler, batchable=True): one copy in a modelshare worker, the
  batches of the four processes as arrays through shared memory, merged.
- plain (--modes ...,plain): the handler as is: a copy per worker process.

Measured: wall time of the pipeline (start to end of the child), model loads (the model's
constructor logs each), requests and batches (modelshare: the daemon's status; Beam: the calls
of the model's predict, each one request and one batch), peak memory (PSS from
/proc/PID/smaps_rollup summed over the child's process tree and, for modelshare, the daemon's,
every 100 ms), and the predictions checked equal to the model run in this process.
"""
import argparse
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
FEATURES = 8
WIDTH = 16
MODES = ("beam", "modelshare", "plain")


class TableModel:
    """Hashed features: each of the 8 features picks a row of the table; the picked rows are
    summed and scored. Row-wise: each prediction depends on its own example only."""

    def __init__(self, path, log_dir):
        self.table = np.load(path)
        self.score = np.linspace(-1, 1, WIDTH, dtype=np.float32)
        self.log_dir = log_dir
        _log(log_dir, "loads", f"{os.getpid()}")

    def predict(self, x):
        bits = np.ascontiguousarray(x[:, 1:]).view(np.uint32).astype(np.uint64)
        idx = (bits * np.uint64(2654435761) + np.arange(FEATURES, dtype=np.uint64)) \
            % np.uint64(len(self.table))
        y = np.tanh(self.table[idx].sum(axis=1)) @ self.score
        _log(self.log_dir, "calls", f"{os.getpid()} {len(x)}")
        return y.astype(np.float32)


def _log(log_dir, name, line):
    fd = os.open(os.path.join(log_dir, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


try:
    from apache_beam.ml.inference.base import ModelHandler, PredictionResult
except ImportError:  # pragma: no cover - the bench needs Beam
    ModelHandler = object


class TableHandler(ModelHandler):
    """A RunInference handler for TableModel: numpy examples, a float32 prediction each."""

    def __init__(self, path, log_dir, **kwargs):
        super().__init__(**kwargs)
        self.path = str(path)
        self.log_dir = str(log_dir)

    def load_model(self):
        return TableModel(self.path, self.log_dir)

    def run_inference(self, batch, model, inference_args=None):
        y = model.predict(np.stack(batch))
        return [PredictionResult(x, v, self.path) for x, v in zip(batch, y)]


def _line(r):
    return f"{int(r.example[0])} {float(r.inference)!r}"


def run_pipeline(mode, work, rows, delay_us):
    """In the child: one pipeline, predictions to work/pred-MODE*."""
    import apache_beam as beam
    from apache_beam.ml.inference.base import RunInference
    from apache_beam.options.pipeline_options import PipelineOptions

    import beam_runinference as me  # by name, so that Beam's workers import it too
    from modelshare.beam import SharedModelHandler

    path, log_dir = work / "table.npy", work / mode
    if mode == "beam":
        handler = me.TableHandler(path, log_dir, large_model=True)
    elif mode == "plain":
        handler = me.TableHandler(path, log_dir)
    else:
        handler = SharedModelHandler(me.TableHandler(path, log_dir), tag="bench-table",
                                     batchable=True, batch_delay_us=delay_us, keep_alive=600)
    xs = me.examples(rows)
    opts = PipelineOptions(runner="DirectRunner", direct_running_mode="multi_processing",
                           direct_num_workers=4)
    with beam.Pipeline(options=opts) as p:
        (p | beam.Create(xs) | beam.Reshuffle() | RunInference(handler)
         | beam.Map(me._line) | beam.io.WriteToText(str(work / f"pred-{mode}")))


def examples(rows):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((rows, 1 + FEATURES)).astype(np.float32)
    x[:, 0] = np.arange(rows)  # the example's index, exact in float32 below 2**24
    return list(x)


def _pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _tree(roots):
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    seen, todo = set(), [r for r in roots if r]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo += children.get(pid, [])
    return seen


class Sampler(threading.Thread):
    """Peak of the PSS summed over the process trees of roots() every 100 ms."""

    def __init__(self, roots):
        super().__init__(daemon=True)
        self.roots, self.peak_kb, self.procs, self.parts = roots, 0, 0, {}
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            pss = {p: _pss_kb(p) for p in _tree(self.roots())}
            total = sum(pss.values())
            if total > self.peak_kb:
                self.peak_kb, self.procs = total, len(pss)
                self.parts = {f"{p} {_name(p)}": kb // 1024 for p, kb in pss.items()}
            self.done.wait(0.1)


def _name(pid):
    try:
        argv = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    for w in words[1:]:  # the script or module a Python process runs
        if w.endswith(".py") or w.startswith("modelshare") or w.startswith("apache_beam"):
            return os.path.basename(w)
    return os.path.basename(words[0]) if words else "?"


def stop_daemon(sock):
    pid = _daemon_pid(sock)
    if not pid:
        return
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(150):
            os.kill(pid, 0)
            time.sleep(0.1)
    except ProcessLookupError:
        pass


def _daemon_pid(sock):
    try:
        return int(pathlib.Path(str(sock) + ".pid").read_text().strip())
    except (OSError, ValueError):
        return None


def measure(mode, work, args, env, sock):
    (work / mode).mkdir()
    cmd = [sys.executable, str(HERE / "beam_runinference.py"), "--child", mode, "--work",
           str(work), "--rows", str(args.rows), "--batch-delay-us", str(args.batch_delay_us)]
    start = time.monotonic()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    ours = mode == "modelshare"
    sampler = Sampler(lambda: [child.pid, _daemon_pid(sock) if ours else None])
    sampler.start()
    _, err = child.communicate()
    wall = time.monotonic() - start
    sampler.done.set()
    sampler.join()
    if child.returncode != 0:
        raise SystemExit(f"{mode}: the pipeline failed:\n{err[-4000:]}")
    loads = len((work / mode / "loads").read_text().splitlines())
    calls = (work / mode / "calls").read_text().splitlines()
    res = {"mode": mode, "wall_s": wall, "loads": loads, "peak_pss_mb": sampler.peak_kb / 1024,
           "processes": sampler.procs, "pss_mb_at_peak": sampler.parts,
           "model_calls": len(calls),
           "rows_called": sum(int(c.split()[1]) for c in calls)}
    if mode == "modelshare":
        import modelshare
        st = next(m for m in modelshare.status()["models"] if m["tag"] == "bench-table")
        res.update(requests=st["requests"], batches=st["batches"], daemon_loads=st["loads"])
        stop_daemon(sock)  # its memory is not the next mode's
    else:  # one pickled call (Beam) or in-process call per batch
        res.update(requests=len(calls), batches=len(calls))
    pred = {}
    for f in work.glob(f"pred-{mode}*"):
        for line in f.read_text().splitlines():
            i, v = line.split()
            pred[int(i)] = float(v)
    res["predictions"] = np.array([pred.get(i, np.nan) for i in range(args.rows)])
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--table-mb", type=int, default=200)
    ap.add_argument("--batch-delay-us", type=int, default=20000)
    ap.add_argument("--modes", default="beam,modelshare")
    ap.add_argument("--out", help="also write the markdown section to this file")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        sys.path.insert(0, str(HERE))
        return run_pipeline(args.child, pathlib.Path(args.work), args.rows, args.batch_delay_us)

    modes = [m for m in args.modes.split(",") if m]
    work = pathlib.Path(tempfile.mkdtemp(prefix="msbeam-", dir="/tmp"))
    sock_dir = work / "d"
    sock_dir.mkdir(mode=0o700)
    sock = sock_dir / "s.sock"
    env = dict(os.environ, MODELSHARE_SOCKET=str(sock), MODELSHARE_IDLE_EXIT="0",
               PYTHONPATH=os.pathsep.join([str(HERE), *filter(None, os.environ.get(
                   "PYTHONPATH", "").split(os.pathsep))]))
    os.environ.update(MODELSHARE_SOCKET=str(sock), MODELSHARE_IDLE_EXIT="0")
    try:
        rng = np.random.default_rng(1)
        table_rows = args.table_mb * (1 << 20) // (4 * WIDTH)
        table = rng.standard_normal((table_rows, WIDTH), dtype=np.float32) * 0.1
        np.save(work / "table.npy", table)
        (work / "ref").mkdir()
        ref = TableModel(work / "table.npy", work / "ref")
        want = ref.predict(np.stack(examples(args.rows)))
        del ref, table
        results = []
        for mode in modes:
            res = measure(mode, work, args, env, sock)
            got = res.pop("predictions")
            res["equal"] = bool(np.allclose(got, want, rtol=1e-5, atol=1e-6))
            res["max_abs_diff"] = float(np.nanmax(np.abs(got - want))) if \
                not np.isnan(got).any() else float("nan")
            print(json.dumps(res), flush=True)
            results.append(res)
    finally:
        stop_daemon(sock)
        shutil.rmtree(work, ignore_errors=True)
    section = table_md(results, args)
    print(section)
    if args.out:
        pathlib.Path(args.out).write_text(section)


LABELS = {"beam": "Beam sharing (`large_model=True`)",
          "modelshare": "`SharedModelHandler(batchable=True)`",
          "plain": "no sharing (a copy per process)"}


def table_md(results, args):
    lines = ["| mode | wall s | model loads | peak PSS MB (processes) | requests | batches | "
             "predictions equal |", "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        lines.append(f"| {LABELS[r['mode']]} | {r['wall_s']:.1f} | {r['loads']} | "
                     f"{r['peak_pss_mb']:,.0f} ({r['processes']}) | {r['requests']} | "
                     f"{r['batches']} | {'yes' if r['equal'] else 'NO'} "
                     f"(max diff {r['max_abs_diff']:.1g}) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
