"""modelshare beside its peers, measured in the same run: the same numpy MLP (bench/peers_model.py)
served by (a) plain per-process loads, (b) Apache Beam's MultiProcessShared, (c) a Ray Serve
deployment called through a DeploymentHandle, (d) modelshare's python backend.

    make bench-peers      # installs ray[serve] into .venv on demand, writes bench/PEERS.md
    .venv/bin/python bench/vs_peers.py [--systems plain,beam,ray,modelshare]
        [--workloads lat,in16,big8,multi,mem] [--calls 1000] [--repeat 3] [--scale 0.3]
        [--max-s 4]

Every client is a process of its own (multiprocessing, spawn), the same 8 for every workload of a
system; each system's run starts in a fresh driver process, and its memory figure is the sum of
the proportional set size (/proc/PID/smaps_rollup) of every process that run started: the
driver, the 8 clients, and what the system started beside them (Beam: one server process per
model; Ray: GCS, raylet, dashboard and its agents, the Serve controller, the replicas, idle
workers; modelshare: the daemon and one worker per model).

Workloads: lat: batch-1 calls through a 256 > 256 > 256 MLP from N = 1, 4, 8 processes;
in16: 16 MB float32 inputs (16 x 262144) through a cheap model (x + 0, as large an output), 1
process; big8: 8 processes x batch 1 through a 4096 > 4096 > 4096 MLP (rows/s; Ray with
@serve.batch, modelshare with its dynamic batching); multi: 8 processes, each call to one of 4
small MLPs in turn (Ray with model multiplexing); mem: memory with every model loaded, N = 8.
Each timed figure is the median (by calls/s) of --repeat runs; a client ends a run after
--calls calls or --max-s seconds, whichever comes first (Ray's calls are slow here). Not part of
`make test`.
"""
import argparse
import functools
import json
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import peers_model  # noqa: E402

SYSTEMS = ("plain", "beam", "ray", "modelshare")
NAMES = {"plain": "plain per-process loads", "beam": "Beam MultiProcessShared",
         "ray": "Ray Serve (DeploymentHandle)", "modelshare": "modelshare (python backend)"}
CLIENTS = 8
SERVED = ("small", "cheap", "big", "m0", "m1", "m2", "m3")


# ----------------------------------------------------------------------------------- clients

def open_models(system, ctx):
    """name -> callable in a client process, and a function that lets them go."""
    if system == "plain":
        return {n: peers_model.make(n) for n in SERVED}, lambda: None
    if system == "beam":
        from apache_beam.utils.multi_process_shared import MultiProcessShared
        shared = {n: MultiProcessShared(functools.partial(peers_model.make, n), tag=tag,
                                        path=ctx["path"], always_proxy=True)
                  for n, tag in ctx["tags"].items()}
        held = {n: s.acquire() for n, s in shared.items()}
        return held, lambda: [shared[n].release(m) for n, m in held.items()]
    if system == "ray":
        import ray
        from ray import serve
        ray.init(address=ctx["address"], log_to_driver=False, logging_level="ERROR")
        models = {}
        for n in ("small", "cheap", "big"):
            h = serve.get_app_handle(n)
            models[n] = lambda x, h=h: h.remote(x).result()
        multi = serve.get_app_handle("multi")
        for n in ("m0", "m1", "m2", "m3"):
            h = multi.options(multiplexed_model_id=n)
            models[n] = lambda x, h=h: h.remote(x).result()
        return models, ray.shutdown
    import modelshare
    # The MLPs are row-wise: their calls may be merged across processes (batchable).
    shared = {n: modelshare.Shared(functools.partial(peers_model.make, n), tag=tag,
                                   batchable=True, **ctx["spec"].get(n, {}))
              for n, tag in ctx["tags"].items()}
    held = {n: s.acquire() for n, s in shared.items()}
    return held, lambda: [m.release() for m in held.values()]


def timed_calls(models, job):
    names = job["models"]
    xs = {n: peers_model.input_for(n, job["batch"], job.get("width")) for n in set(names)}
    for i in range(job["warmup"]):
        n = names[i % len(names)]
        y = models[n](xs[n])
        del y
    while time.monotonic() < job["start_at"]:
        time.sleep(0.001)
    lat = []
    t_start = time.monotonic()
    for i in range(job["calls"]):
        if i > 0 and time.monotonic() - t_start > job["max_s"]:
            break  # a slow system: fewer calls, the same figures
        n = names[i % len(names)]
        t0 = time.perf_counter_ns()
        y = models[n](xs[n])
        del y
        lat.append(time.perf_counter_ns() - t0)
    return {"lat": lat, "start": t_start, "end": time.monotonic()}


def serve_jobs(run, let_go, jobs, results):
    """A ready client's loop: run(job) for each job until None, each answer (or the error) on
    results, then let_go()."""
    results.put(("ready", os.getpid()))
    while True:
        job = jobs.get()
        if job is None:
            break
        try:
            results.put(("done", run(job)))
        except Exception:
            results.put(("error", traceback.format_exc()))
    let_go()
    results.put(("gone", os.getpid()))


def client_main(system, ctx, jobs, results):
    try:
        models, let_go = open_models(system, ctx)
    except Exception:
        results.put(("error", traceback.format_exc()))
        return
    serve_jobs(lambda job: timed_calls(models, job), let_go, jobs, results)


# ----------------------------------------------------------------------------------- memory

def children_of():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(roots):
    kids, seen, todo = children_of(), set(), list(roots)
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo += kids.get(p, [])
    return seen


def pss_bytes(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


# ----------------------------------------------------------------------------------- a system

class System:
    """Starts what a system runs beside its clients; ctx is what a client needs to reach it."""

    def __init__(self, system, tmp):
        self.system, self.tmp, self.ctx, self.extra_roots, self.keep = system, tmp, {}, [], []
        tags = {n: f"peers-{n}-{os.getpid()}" for n in SERVED}
        if system == "beam":
            from apache_beam.utils.multi_process_shared import MultiProcessShared
            self.ctx = {"path": tmp, "tags": tags}
            for n, tag in tags.items():  # one server process per model, started here
                s = MultiProcessShared(functools.partial(peers_model.make, n), tag=tag, path=tmp,
                                       always_proxy=True, spawn_process=True)
                self.keep.append((s, s.acquire()))
        elif system == "ray":
            import ray
            from ray import serve
            import peers_ray
            ray.init(num_cpus=16, log_to_driver=False, logging_level="ERROR")
            serve.start(proxy_location="Disabled")
            for n in ("small", "cheap"):
                serve.run(peers_ray.Plain.bind(n), name=n, route_prefix=None)
            serve.run(peers_ray.Batched.bind("big"), name="big", route_prefix=None)
            serve.run(peers_ray.Multiplexed.bind(), name="multi", route_prefix=None)
            self.ctx = {"address": ray.get_runtime_context().gcs_address}
        elif system == "modelshare":
            self.ctx = {"tags": tags, "spec": {"big": {"max_batch": 64}}}
            self.socket = os.environ["MODELSHARE_SOCKET"]

    def roots(self):
        if self.system != "modelshare":
            return []
        try:
            with open(self.socket + ".pid") as f:
                return [int(f.read().strip())]
        except (OSError, ValueError):
            return []

    def stop(self):
        if self.system == "beam":
            for s, m in self.keep:
                s.release(m)
        elif self.system == "ray":
            import ray
            from ray import serve
            serve.shutdown()
            ray.shutdown()
        elif self.system == "modelshare":
            for pid in self.roots():
                os.kill(pid, signal.SIGTERM)


def stats(runs, rows_per_call):
    lat = sorted(x for r in runs for x in r["lat"])
    wall = max(r["end"] for r in runs) - min(r["start"] for r in runs)
    calls = len(lat)
    return {"p50_us": lat[calls // 2] / 1e3, "p99_us": lat[min(calls - 1, int(calls * 0.99))] / 1e3,
            "mean_us": statistics.fmean(lat) / 1e3, "calls_per_s": calls / wall,
            "rows_per_s": calls * rows_per_call / wall, "calls": calls}


def workloads(args):
    """(key, label, clients, job) for each timed figure asked for."""
    out = []
    s = args.scale
    if "lat" in args.workloads:
        for n in (1, 4, 8):
            out.append((f"lat{n}", f"batch 1, 256>256>256 MLP, {n} client{'s' * (n > 1)}", n,
                        {"models": ["small"], "batch": 1, "calls": max(50, int(args.calls * s)),
                         "warmup": 50}))
    if "in16" in args.workloads:
        out.append(("in16", "16 MB float32 input (16 x 262144), cheap model, 1 client", 1,
                    {"models": ["cheap"], "batch": 16, "width": 262144,
                     "calls": max(5, int(40 * s)), "warmup": 3}))
    if "big8" in args.workloads:
        out.append(("big8", "8 clients x batch 1, 4096>4096>4096 MLP", 8,
                    {"models": ["big"], "batch": 1, "calls": max(4, int(25 * s)), "warmup": 3}))
    if "multi" in args.workloads:
        out.append(("multi", "8 clients x batch 1, 4 MLPs 256>256>256 in turn", 8,
                    {"models": ["m0", "m1", "m2", "m3"], "batch": 1,
                     "calls": max(40, int(args.calls * s / 2)), "warmup": 40}))
    return out


def gather(results, n, what):
    got = []
    while len(got) < n:
        kind, payload = results.get(timeout=600)
        if kind == "error":
            raise RuntimeError(payload)
        if kind == what:
            got.append(payload)
    return got


def run_system(system, args, out):
    """In a fresh driver process: start the system, its 8 clients, every workload, the memory."""
    tmp = tempfile.mkdtemp(prefix="peers-", dir="/tmp")
    os.environ["MODELSHARE_SOCKET"] = os.path.join(tmp, "d", "s.sock")
    os.environ["MODELSHARE_IDLE_EXIT"] = "0"
    res = {"system": system}
    sysm = None
    ctx = mp.get_context("spawn")
    clients = []
    try:
        t0 = time.monotonic()
        sysm = System(system, tmp)
        results = ctx.Queue()
        jobs = [ctx.Queue() for _ in range(CLIENTS)]
        for i in range(CLIENTS):
            p = ctx.Process(target=client_main, args=(system, sysm.ctx, jobs[i], results))
            p.start()
            clients.append(p)
        gather(results, CLIENTS, "ready")
        res["start_s"] = time.monotonic() - t0
        for key, label, n, job in workloads(args):
            runs = []
            for _ in range(args.repeat):
                job = dict(job, start_at=time.monotonic() + 0.3, max_s=args.max_s)
                for q in jobs[:n]:
                    q.put(job)
                runs.append(stats(gather(results, n, "done"), job["batch"]))
            res[key] = sorted(runs, key=lambda r: r["calls_per_s"])[len(runs) // 2]
            res[key]["runs"] = [round(r["calls_per_s"], 1) for r in runs]
            print(f"  {system:10} {label}: p50 {res[key]['p50_us']:.1f} us, "
                  f"{res[key]['calls_per_s']:.0f} calls/s", flush=True)
        if "mem" in args.workloads:
            pids = tree([os.getpid()] + sysm.roots())
            per = sorted(((pss_bytes(p), comm(p)) for p in pids), reverse=True)
            res["mem"] = {"pss_bytes": sum(b for b, _ in per), "processes": len(per),
                          "top": [(c, b) for b, c in per[:12]]}
            print(f"  {system:10} memory, N = 8: {res['mem']['pss_bytes'] / 2**20:.0f} MiB in "
                  f"{len(per)} processes", flush=True)
        for q in jobs:
            q.put(None)
        gather(results, CLIENTS, "gone")
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
        print(f"  {system}: failed: {res['error']}", flush=True)
    finally:
        failed = stop_all(sysm, clients)
        if failed:
            print(f"  {system}: {failed}", flush=True)
        shutil.rmtree(tmp, ignore_errors=True)
    out.put(res)


def stop_all(sysm, clients):
    """The clients joined (killed after 30 s), the system stopped, and whatever this process
    started that outlived its stop killed. What went wrong stopping the system, or None."""
    for p in clients:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
    failed = None
    if sysm is not None:
        try:
            sysm.stop()
        except Exception as e:  # a failed stop must not hide the figures
            failed = f"stop failed: {e}"
    time.sleep(1)
    for pid in tree([os.getpid()]) - {os.getpid()}:  # whatever outlived its stop
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return failed


# ----------------------------------------------------------------------------------- the table

def cell(r, key):
    if r is None or key not in r:
        return "failed" if r is not None and "error" in r else "—"
    f = r[key]
    if key == "mem":
        return f"{f['pss_bytes'] / 2**20:,.0f} MiB ({f['processes']} processes)"
    if key == "big8":
        return f"{f['rows_per_s']:,.0f} rows/s (p50 {f['p50_us'] / 1e3:.1f} ms)"
    if key == "in16":
        return f"{f['p50_us'] / 1e3:.2f} / {f['p99_us'] / 1e3:.2f} ms, {f['calls_per_s']:,.0f}/s"
    return f"{f['p50_us']:,.1f} / {f['p99_us']:,.1f} µs, {f['calls_per_s']:,.0f}/s"


def ratio(res, key, against):
    """modelshare's figure over the best of `against`: lower is better for p50 and memory,
    higher for calls/s and rows/s."""
    ms = res.get("modelshare", {}).get(key)
    peers = [(s, res[s][key]) for s in against if key in res.get(s, {})]
    if ms is None or not peers:
        return "—"
    if key == "mem":
        s, p = min(peers, key=lambda t: t[1]["pss_bytes"])
        return f"{ms['pss_bytes'] / p['pss_bytes']:.2f}x memory of {s}"
    if key == "big8":
        s, p = max(peers, key=lambda t: t[1]["rows_per_s"])
        return f"{ms['rows_per_s'] / p['rows_per_s']:.2f}x rows/s of {s}"
    s, p = min(peers, key=lambda t: t[1]["p50_us"])
    s2, p2 = max(peers, key=lambda t: t[1]["calls_per_s"])
    return (f"p50 {ms['p50_us'] / p['p50_us']:.2g}x of {s}; "
            f"calls/s {ms['calls_per_s'] / p2['calls_per_s']:.2g}x of {s2}")


ROWS = [("lat1", "batch 1, 256>256>256 MLP, 1 client: p50 / p99, calls/s", "lat"),
        ("lat4", "batch 1, 256>256>256 MLP, 4 clients", "lat"),
        ("lat8", "batch 1, 256>256>256 MLP, 8 clients", "lat"),
        ("in16", "16 MB float32 input, cheap model, 1 client: p50 / p99, calls/s", "in16"),
        ("big8", "8 clients x batch 1, 4096>4096>4096 MLP", "big8"),
        ("multi", "8 clients x batch 1, 4 MLPs in turn (Ray: multiplexing)", "multi"),
        ("mem", "memory, 8 clients, every model loaded (PSS of every process)", "mem")]


def table(res, args):
    cols = [s for s in SYSTEMS if s in res]
    lines = ["| figure | " + " | ".join(NAMES[s] for s in cols)
             + " | modelshare vs best peer (Beam, Ray) | vs plain | command |",
             "| --- |" + " ---: |" * len(cols) + " --- | --- | --- |"]
    for key, label, w in ROWS:
        if not any(key in res[s] for s in cols):
            continue
        cmd = f"`.venv/bin/python bench/vs_peers.py --workloads {w}" + (
            ",mem" if w != "mem" else "") + (f" --scale {args.scale}" if args.scale != 1 else "") \
            + "`"
        lines.append(f"| {label} | " + " | ".join(cell(res[s], key) for s in cols)
                     + f" | {ratio(res, key, ('beam', 'ray'))} | {ratio(res, key, ('plain',))}"
                     f" | {cmd} |")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--workloads", default="lat,in16,big8,multi,mem")
    ap.add_argument("--calls", type=int, default=1000, help="batch-1 calls per client per run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiplies every call count (0.2: a quick look; 3: steadier figures)")
    ap.add_argument("--max-s", type=float, default=4.0,
                    help="a client stops a run after this many seconds even if calls remain")
    ap.add_argument("--out", default=os.path.join(HERE, "PEERS.md"))
    ap.add_argument("--json", action="store_true", help="also print every figure as JSON")
    args = ap.parse_args()
    args.workloads = args.workloads.split(",")
    # Beam's servers, Ray's replicas and modelshare's workers import peers_model by name.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")]))
    ctx = mp.get_context("spawn")
    res = {}
    t0 = time.monotonic()
    for system in args.systems.split(","):
        print(f"{NAMES[system]}:", flush=True)
        q = ctx.Queue()
        p = ctx.Process(target=run_system, args=(system, args, q))
        p.start()
        try:
            res[system] = q.get(timeout=1800)
        except Exception as e:
            res[system] = {"error": f"no result: {e}"}
        p.join(timeout=60)
    lines = ["# modelshare beside Beam and Ray Serve (issue 12)", "",
             "Written by `bench/vs_peers.py` (`make bench-peers`), "
             f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, "
             f"{time.monotonic() - t0:.0f} s in all. " + peers_notes(args), ""]
    lines += table(res, args)
    fails = [f"- {NAMES[s]}: {r['error']}" for s, r in res.items() if "error" in r]
    if fails:
        lines += ["", "Failed:", ""] + fails
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    if os.path.abspath(args.out) == os.path.join(HERE, "PEERS.md"):
        show_in_results(lines)
    print("\n".join(lines))
    if args.json:
        print(json.dumps(res))


def show_in_results(lines, at_end=False):
    """Puts the table in bench/RESULTS.md as bench/run.py does (its title one level down), in
    place of the one there and before the GPU figures (at_end: after them, for GPU figures), so
    that make bench-peers (and bench-real) need not run make bench again."""
    path = os.path.join(HERE, "RESULTS.md")
    if not os.path.exists(path):
        return
    with open(path) as f:
        old = f.read().split("\n")
    title = "#" + lines[0]
    keep, skipping = [], False
    for line in old:
        if line == title:
            skipping = True
        elif skipping and line.startswith(("# ", "## ")):
            skipping = False
        if not skipping:
            keep.append(line)
    at = len(keep) if at_end else next(
        (i for i, line in enumerate(keep) if line.startswith(("# GPU", "## GPU"))), len(keep))
    keep[at:at] = [title] + lines[1:] + [""]
    with open(path, "w") as f:
        f.write("\n".join(keep))


def peers_notes(args):
    return ("Figures on the 2-core VM (AMD EPYC, 2 CPUs; no other load unless said); each timed "
            f"figure is the median (by calls/s) of {args.repeat} runs; p50 and p99 over every call "
            "of every client, calls/s "
            "from a common start to the last client's end. Every client is its own process. "
            "Plain: each client loads its own copy. Beam: MultiProcessShared(spawn_process=True, "
            "always_proxy=True), one server process per model. Ray 2.60 Serve: ray.init("
            "num_cpus=16: logical CPUs, so that every replica fits), one replica per model "
            "(num_cpus=2: two BLAS threads), no HTTP proxy, clients call "
            "handle.remote(x).result() after ray.init(address=...); the 4096 model with "
            "@serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01), the four small models in "
            "one @serve.multiplexed deployment. modelshare: the python backend holding the same "
            "numpy object (Shared(constructor, tag, batchable=True)), max_batch 64 for the 4096 "
            "model. Memory: "
            "PSS summed over the driver, the 8 clients and every process the system started.")


if __name__ == "__main__":
    main()
