"""modelshare on the models people share: a PyTorch transformer encoder called with input_ids and
attention_mask, and a text embedder called with sentences, each by 8 processes, beside Beam's
MultiProcessShared, Ray Serve with @serve.batch and a copy of the model in every process.

    make bench-real       # installs ray[serve] and apache-beam into .venv on demand, writes
                          # bench/RESULTS-real-models.md (shown in RESULTS.md)
    .venv/bin/python bench/real_models.py [--contenders modelshare,beam,ray,copies]
        [--workloads encoder,embedder] [--calls 100] [--repeat 3] [--threads N]
        [--inputs numpy|torch] [--device cpu|cuda:N] [--skip-missing] [--quick]

The models (bench/real_models_torch.py, random weights seeded): a transformer encoder (30,000
token vocabulary, 4 layers, d_model 256, 4 heads, mean-pooled over the attention mask), called as
model(input_ids=ids, attention_mask=mask) with int64 (4, L) arrays, L uniform in 16..128 per
call (the rows of a call of their own lengths up to L, padded as a tokenizer pads them); and an
embedder whose constructor builds a hashing tokenizer and the same encoder, called as
embedder([4 sentences of 16..128 words]). Every process that runs a model sets
torch.set_num_threads in the constructor, by one rule for every contender: --threads, or by
default the cores over the processes that run the model at once (a copy in each of 8 clients on
2 cores: 1 thread each; a shared model's one process: 2), since torch's threads beyond the cores
wait on each other (in a --quick run on the busy 2-core VM, 8 copies of 2 threads each made
4 rows/s, of 1 thread 78).

Every contender's code is what its users write, through public APIs only:

- modelshare: modelshare.Shared(constructor, tag=..., framework="torch", batchable=True,
  max_batch=32), plus pad={"dim": 1, ...} for the encoder where this modelshare has that spec
  field; clients call model(input_ids=..., attention_mask=...) or model([...]) on the lease.
- Beam: apache_beam.utils.multi_process_shared.MultiProcessShared(constructor, tag, path,
  always_proxy=True), one server process (started by the driver with spawn_process=True); the
  encoder's constructor wraps the module to take numpy arrays and run under
  torch.inference_mode(), without which its answer (a tensor that requires grad) cannot be
  pickled back.
- Ray Serve: a deployment of one replica whose @serve.batch method joins up to 8 requests (32
  rows) waiting at most 10 ms, padding the encoder's to the batch's longest
  (bench/real_models_ray.py); clients call handle.remote(request).result().
- copies: each client builds the model itself and calls it under torch.inference_mode().

Clients of the encoder send numpy arrays, as a tokenizer's return_tensors="np" gives them (with
--inputs torch, torch tensors: torch then imported in every client); clients of the embedder
send strings. So torch is imported only where a model runs, as a client of a shared model needs
no framework. Each (contender, workload)
runs in a fresh driver process with 8 fresh client processes (spawn). Figures: rows/s (rows or
sentences over the wall time from a common start to the last client's end), p50/p99 of the
calls' latencies (every call of every client), the memory (PSS, /proc/PID/smaps_rollup, summed
over the driver, the clients and every process the contender started: modelshare's daemon and
worker, Beam's server, Ray's GCS, raylet, Serve controller, replica and idle workers; taken after
the timed run with everything still up), and the answers of each client's first calls compared
with the same model run in this process; a wrong answer fails the bench (exit 1, nothing
written). Each timed figure is the median (by rows/s) of --repeat runs. Not part of make test.

--device cuda:N (make test-gpu runs it on cuda:0, writing bench/GPU-real-models.md, shown at the
end of RESULTS.md): every contender's model lives on that GPU as its users would write it.
modelshare: Shared(..., device="cuda:N"), whose worker sees that card alone as cuda:0, and a
constructor that returns the module .to("cuda:0") (the worker's torch adapter moves the inputs
to the module's device and the answers back); a copy: each client's module .to(device), its
inputs .to(device), its answer .cpu(); Beam: the server's wrapper moves them
(real_models_torch.InferenceMode); Ray: a replica with num_gpus=1 moves them. TF32 is turned off
in every process that runs the model and the answers are compared with rtol = atol = 1e-3 (GPU
kernels sum in other orders for other batch shapes and paddings). Beside the PSS, the GPU memory
each contender holds: NVML's used memory of each of its processes (CUDA context included), or,
where NVML does not list them by our pids (another PID namespace), the card's used memory over
what it was before the contender started. Without a usable GPU it stops at once and says why.
"""
import argparse
import datetime
import functools
import multiprocessing as mp
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import real_models_model as rm  # noqa: E402
from run import machine  # noqa: E402
from vs_peers import comm, gather, pss_bytes, show_in_results, stats, stop_all, tree  # noqa: E402

CONTENDERS = ("modelshare", "beam", "ray", "copies")
NAMES = {"modelshare": "modelshare", "beam": "Beam MultiProcessShared",
         "ray": "Ray Serve @serve.batch", "copies": "a copy per process"}
WORKLOADS = {"encoder": "transformer encoder, model(input_ids=, attention_mask=), L 16..128",
             "embedder": "text embedder, embedder([4 sentences of 16..128 words])"}
CLIENTS = 8
POOL = 16  # distinct requests per client, called in turn
RTOL = ATOL = 1e-4  # float32 through other batch compositions and paddings
GPU_RTOL = GPU_ATOL = 1e-3  # the same on a GPU, TF32 off: its kernels differ more by shape


def threads_for(contender, threads):
    """torch threads in each process that runs the model: --threads, or the cores shared by the
    processes that run it at once (a copy per client: 8 on 2 cores, 1 each; a shared model's
    one process: every core). More threads than cores make torch's threads wait on each other."""
    if threads:
        return threads
    return max(1, len(os.sched_getaffinity(0)) // (CLIENTS if contender == "copies" else 1))


def tolerance(device):
    return (RTOL, ATOL) if device == "cpu" else (GPU_RTOL, GPU_ATOL)


def constructor(contender, workload, threads, device="cpu"):
    """The model's constructor in the contender's processes. A modelshare worker of a model on
    cuda:N sees that card alone, as cuda:0."""
    if contender == "modelshare" and device != "cpu":
        device = "cuda:0"
    if workload == "embedder":
        return functools.partial(rm.make_embedder, threads, device)
    make = rm.make_encoder_inference if contender == "beam" else rm.make_encoder
    return functools.partial(make, threads, device)


# ----------------------------------------------------------------------------------- clients

def open_model(contender, workload, ctx):
    """(a function that makes one call, one that lets the model go, what the client saw)."""
    ctor = constructor(contender, workload, ctx["threads"], ctx["device"])
    encoder = workload == "encoder"
    if contender == "copies":
        model = ctor()
        import real_models_torch  # after the constructor, which imported torch
        import torch
        device = real_models_torch.device_of(model) if encoder else None

        def call(req):  # the inputs to the module's device, its answer back to the host
            with torch.inference_mode():
                return model(**real_models_torch.tensors(req, device)).cpu() if encoder else \
                    model(req)
        return call, lambda: None, {}
    if contender == "beam":
        from apache_beam.utils.multi_process_shared import MultiProcessShared
        shared = MultiProcessShared(ctor, tag=ctx["tag"], path=ctx["path"], always_proxy=True)
        model = shared.acquire()
        return (lambda req: model(**req) if encoder else model(req)), \
            lambda: shared.release(model), {}
    if contender == "ray":
        import ray
        from ray import serve
        ray.init(address=ctx["address"], log_to_driver=False, logging_level="ERROR")
        handle = serve.get_app_handle(ctx["app"])
        return (lambda req: handle.remote(req).result()), ray.shutdown, {}
    import modelshare
    spec = dict(tag=ctx["tag"], framework="torch", batchable=True, max_batch=rm.MAX_BATCH_ROWS)
    if ctx["device"] != "cpu":
        spec["device"] = ctx["device"]
    seen = {"pad": False}
    try:  # the spec field that lets requests of other lengths share a batch, where it exists
        shared = modelshare.Shared(ctor, pad=rm.PAD, **spec) if encoder else None
        seen["pad"] = encoder
    except TypeError:
        shared = None
    shared = shared or modelshare.Shared(ctor, **spec)
    model = shared.acquire()
    return (lambda req: model(**req) if encoder else model(req)), model.release, seen


def requests(workload, client, inputs):
    """The client's requests: lists of sentences, or input_ids and attention_mask as numpy
    arrays (as a tokenizer's return_tensors="np" gives them) or, with --inputs torch, tensors."""
    if workload == "embedder":
        return [rm.sentences(client, j) for j in range(POOL)]
    reqs = [rm.encoder_request(client, j) for j in range(POOL)]
    if inputs == "torch":
        import torch
        reqs = [{k: torch.from_numpy(v) for k, v in r.items()} for r in reqs]
    return reqs


def timed_calls(call, reqs, job):
    for i in range(job["warmup"]):
        call(reqs[-1 - i % POOL])
    while time.monotonic() < job["start_at"]:
        time.sleep(0.001)
    lat, checked = [], []
    t_start = time.monotonic()
    for i in range(job["calls"]):
        if i > 0 and time.monotonic() - t_start > job["max_s"]:
            break  # a slow contender: fewer calls, the same figures
        t0 = time.perf_counter_ns()
        y = call(reqs[i % POOL])
        lat.append(time.perf_counter_ns() - t0)
        if i < job["check"]:
            checked.append((i % POOL, np.array(y, dtype=np.float32)))
        del y
    return {"lat": lat, "start": t_start, "end": time.monotonic(), "checked": checked}


def client_main(contender, workload, ctx, index, jobs, results):
    try:
        call, let_go, seen = open_model(contender, workload, ctx)
        reqs = requests(workload, index, ctx["inputs"])
        results.put(("ready", seen))
    except Exception:
        results.put(("error", traceback.format_exc()))
        return
    while (job := jobs.get()) is not None:
        try:
            results.put(("done", dict(timed_calls(call, reqs, job), client=index)))
        except Exception:
            results.put(("error", traceback.format_exc()))
    let_go()
    results.put(("gone", os.getpid()))


# ----------------------------------------------------------------------------------- a contender

class Contender:
    """What a contender runs beside its clients (started in the driver), and ctx, what a client
    needs to reach it."""

    def __init__(self, contender, workload, tmp, threads, inputs, device):
        self.contender, self.keep = contender, None
        self.ctx = {"threads": threads, "tag": f"real-{workload}-{os.getpid()}", "path": tmp,
                    "inputs": inputs, "device": device}
        if contender == "beam":
            from apache_beam.utils.multi_process_shared import MultiProcessShared
            s = MultiProcessShared(constructor(contender, workload, threads, device),
                                   tag=self.ctx["tag"], path=tmp, always_proxy=True,
                                   spawn_process=True)
            self.keep = (s, s.acquire())
        elif contender == "ray":
            import ray
            from ray import serve

            import real_models_ray
            gpus = {}
            if device != "cpu":  # Ray's GPU 0 is this card, which its replica gets (num_gpus=1)
                os.environ["CUDA_VISIBLE_DEVICES"] = device.split(":")[1]
                gpus = {"num_gpus": 1}
            ray.init(num_cpus=16, log_to_driver=False, logging_level="ERROR", **gpus)
            serve.start(proxy_location="Disabled")
            app = real_models_ray.Encoder if workload == "encoder" else real_models_ray.Embedder
            app = app.options(ray_actor_options=real_models_ray.options(device))
            serve.run(app.bind(threads, device), name=f"real-{workload}", route_prefix=None)
            self.ctx.update(address=ray.get_runtime_context().gcs_address,
                            app=f"real-{workload}")

    def roots(self):
        if self.contender != "modelshare":
            return []
        try:
            with open(os.environ["MODELSHARE_SOCKET"] + ".pid") as f:
                return [int(f.read().strip())]
        except (OSError, ValueError):
            return []

    def batches(self):
        """modelshare's requests and batches of the model (its status), else None."""
        if self.contender != "modelshare":
            return None
        import modelshare
        st = next((m for m in modelshare.status()["models"] if m["tag"] == self.ctx["tag"]), {})
        return {"requests": st.get("requests"), "batches": st.get("batches")}

    def stop(self):
        if self.contender == "beam":
            self.keep[0].release(self.keep[1])
        elif self.contender == "ray":
            import ray
            from ray import serve
            serve.shutdown()
            ray.shutdown()
        else:
            for pid in self.roots():
                os.kill(pid, signal.SIGTERM)


class GPU:
    """The GPU memory a contender holds, by NVML (tests/gpu/nvml.py; no CUDA context of its
    own): on the CPU, or without NVML, nothing."""

    def __init__(self, device):
        self.nv, self.index, self.before = None, 0, 0
        if device == "cpu":
            return
        sys.path.insert(0, os.path.join(HERE, os.pardir, "tests", "gpu"))
        try:
            from nvml import probe
            self.nv = probe()[0]
            self.index = int(device.split(":")[1])  # NVML's order: the same on one card
            self.before = self.nv.memory(self.index)[1] if self.nv else 0
        except (ImportError, OSError, AssertionError):
            self.nv = None

    def used(self, pids):
        """{"bytes", "processes" (with a CUDA context), "how"}, or None: NVML's used memory of
        each of pids, else (NVML lists none of them: another PID namespace; or cannot say per
        process) the card's used memory over what it was before."""
        if self.nv is None:
            return None
        try:
            listed = self.nv.processes(self.index)
            card = self.nv.memory(self.index)[1]
        except AssertionError:
            return None
        ours = {p: b for p, b in listed.items() if p in set(pids)}
        if ours and all(b < 1 << 62 for b in ours.values()):  # NVML_VALUE_NOT_AVAILABLE: ~0
            return {"bytes": sum(ours.values()), "processes": len(ours), "how": "NVML per process"}
        return {"bytes": max(0, card - self.before), "processes": len(ours) or None,
                "how": "the card's used memory over before"}


def timed_runs(jobs, results, args):
    """The timed runs: the median by rows/s, with every client's checked answers."""
    runs, checked = [], []
    for _ in range(args.repeat):
        job = {"warmup": args.warmup, "calls": args.calls, "check": args.check,
               "max_s": args.max_s, "start_at": time.monotonic() + 0.5}
        for q in jobs:
            q.put(job)
        done = gather(results, CLIENTS, "done")
        checked += [(d["client"], j, y) for d in done for j, y in d["checked"]]
        runs.append(stats(done, rm.ROWS))
    best = sorted(runs, key=lambda r: r["rows_per_s"])[len(runs) // 2]
    return dict(best, runs=[round(r["rows_per_s"], 1) for r in runs]), checked


def run_one(contender, workload, args, out):
    """In a fresh driver process: the contender, its 8 clients, the timed runs, the memory."""
    tmp = tempfile.mkdtemp(prefix="realbench-", dir="/tmp")
    os.environ.update(MODELSHARE_SOCKET=os.path.join(tmp, "d", "s.sock"),
                      MODELSHARE_IDLE_EXIT="0")
    res, sysm, clients = {"contender": contender, "workload": workload}, None, []
    ctx = mp.get_context("spawn")
    gpu = GPU(args.device)
    try:
        t0 = time.monotonic()
        res["threads"] = threads_for(contender, args.threads)
        sysm = Contender(contender, workload, tmp, res["threads"], args.inputs, args.device)
        results, jobs = ctx.Queue(), [ctx.Queue() for _ in range(CLIENTS)]
        for i in range(CLIENTS):
            clients.append(ctx.Process(target=client_main, args=(
                contender, workload, sysm.ctx, i, jobs[i], results)))
            clients[-1].start()
        res["seen"] = gather(results, CLIENTS, "ready")[0]
        res["start_s"] = time.monotonic() - t0
        res["timed"], res["checked"] = timed_runs(jobs, results, args)
        pids = tree([os.getpid()] + sysm.roots())
        per = sorted(((pss_bytes(p), comm(p)) for p in pids), reverse=True)
        res["mem"] = {"pss_bytes": sum(b for b, _ in per), "processes": len(per),
                      "top": [(c, b) for b, c in per[:12]], "gpu": gpu.used(pids)}
        res["batches"] = sysm.batches()
        for q in jobs:
            q.put(None)
        gather(results, CLIENTS, "gone")
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        failed = stop_all(sysm, clients)
        if failed:
            res.setdefault("error", failed)
        shutil.rmtree(tmp, ignore_errors=True)
    out.put(res)


# ----------------------------------------------------------------------------------- checks

def check_answers(results, threads, device):
    """Each checked answer against the model run in this process (on the same device) on that
    request alone: a list of what differed (empty: every answer right)."""
    import torch
    from real_models_torch import tensors
    models, wrong = {}, []
    rtol, atol = tolerance(device)
    for r in results:
        w = r["workload"]
        if w not in models:
            models[w] = (rm.make_embedder if w == "embedder" else rm.make_encoder)(threads, device)
        for client, j, got in r.get("checked", []):
            if w == "embedder":
                want = models[w](rm.sentences(client, j))
            else:
                with torch.inference_mode():
                    req = tensors(rm.encoder_request(client, j), torch.device(device))
                    want = models[w](**req).cpu().numpy()
            if got.shape != want.shape or not np.allclose(got, want, rtol=rtol, atol=atol):
                diff = np.abs(got - want).max() if got.shape == want.shape else "shape"
                wrong.append(f"{NAMES[r['contender']]}, {w}, client {client} request {j}: "
                             f"shape {got.shape} (expected {want.shape}), max diff {diff}")
        r["answers"] = len(r.get("checked", []))
    return wrong


# ----------------------------------------------------------------------------------- the table

def gpu_cell(m):
    g = m.get("gpu")
    if g is None:
        return "n/a (no NVML)"
    n = f" ({g['processes']})" if g["processes"] else ""
    return f"{g['bytes'] / 2**20:,.0f}{n}{'' if g['how'].startswith('NVML') else ' card'}"


def row(r, gpu=False):
    if "error" in r:
        return f"| {WORKLOADS[r['workload']]} | {NAMES[r['contender']]} | failed: " \
               f"{r['error'].splitlines()[-1][:200]} | | | {'| ' * gpu}| | |"
    t, m = r["timed"], r["mem"]
    notes = [f"{r['threads']} torch thread{'s' * (r['threads'] > 1)}"]
    if r["batches"]:
        notes.append(f"{r['batches']['requests']} requests in {r['batches']['batches']} batches")
    if r["workload"] == "encoder" and r["contender"] == "modelshare":
        notes.append("pad" if r["seen"].get("pad") else "no pad field in this modelshare")
    return (f"| {WORKLOADS[r['workload']]} | {NAMES[r['contender']]} | {t['rows_per_s']:,.1f} | "
            f"{t['p50_us'] / 1e3:,.1f} / {t['p99_us'] / 1e3:,.1f} | "
            f"{m['pss_bytes'] / 2**20:,.0f} ({m['processes']}) | "
            f"{gpu_cell(m) + ' | ' if gpu else ''}{r['answers']} right | "
            f"{t['calls']} | {'; '.join(notes)} |")


def goals(res):
    """modelshare against Beam (rows/s) and the copies (rows/s, memory), per workload."""
    out = []
    for w in WORKLOADS:
        got = {r["contender"]: r for r in res if r["workload"] == w and "error" not in r}
        ms = got.get("modelshare")
        if ms is None:
            continue
        rate = ms["timed"]["rows_per_s"]
        if "beam" in got:
            x = rate / got["beam"]["timed"]["rows_per_s"]
            out.append(f"| {w} | rows/s over Beam's | >= 3x | {x:.2f}x | "
                       f"{'met' if x >= 3 else '**not met**'} |")
        if "copies" in got:
            x = rate / got["copies"]["timed"]["rows_per_s"]
            mx = ms["mem"]["pss_bytes"] / got["copies"]["mem"]["pss_bytes"]
            met = x >= 1 and mx <= 0.25
            out.append(f"| {w} | rows/s and memory of the copies' | >= 1x at <= 0.25x memory | "
                       f"{x:.2f}x at {mx:.2f}x | {'met' if met else '**not met**'} |")
            gm, gc = ms["mem"].get("gpu"), got["copies"]["mem"].get("gpu")
            if gm and gc and gc["bytes"]:
                x = gm["bytes"] / gc["bytes"]
                out.append(f"| {w} | GPU memory of the copies' (one copy, not 8) | <= 0.25x | "
                           f"{x:.2f}x | {'met' if x <= 0.25 else '**not met**'} |")
    return out


def report(res, args, took):
    try:  # the GPU kit has no checkout, maybe no git
        commit = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    import torch
    gpu = args.device != "cpu"
    rtol, atol = tolerance(args.device)
    lines = [
        f"# {'GPU: ' if gpu else ''}modelshare on real models"
        f"{' on ' + args.device if gpu else ''}: a PyTorch transformer encoder and a text "
        "embedder, 8 processes (issue 19)", "",
        f"Written by `bench/real_models.py` (`make {'test-gpu' if gpu else 'bench-real'}`): "
        f"`{shlex.join(['python', 'bench/real_models.py', *sys.argv[1:]])}`, "
        f"{took:.0f} s in all.{' A --quick smoke run: not figures.' if args.quick else ''}", "",
        f"- machine: {machine()}",
        *([f"- device: {args.device} ({torch.cuda.get_device_name(args.device)}, CUDA "
           f"{torch.version.cuda}), every contender's model on it; TF32 off in every process "
           "that runs it; GPU memory: NVML's used memory of the contender's processes (CUDA "
           "contexts included; \"card\": the card's used memory over before), with the "
           "processes holding a CUDA context"] if gpu else []),
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit "
        f"{commit}; torch {torch.__version__}; torch.set_num_threads in each process that runs "
        "a model: " + (f"{args.threads}" if args.threads else "the cores over the processes "
                       "that run it at once (a copy per client: 1; a shared model: every core)"),
        "- encoder inputs: " + ("torch tensors in every client" if args.inputs == "torch" else
                                "numpy int64 arrays from every client (a tokenizer's "
                                "return_tensors=\"np\"); a copy turns them into tensors in place"),
        f"- 8 client processes, each making up to {args.calls} calls of {rm.ROWS} rows after "
        f"{args.warmup} warm-up calls (or stopping after {args.max_s:g} s); the median (by rows/s) "
        f"of {args.repeat} run(s); p50 / p99 over every call of every client; memory: PSS "
        "summed over the driver, the clients and every process the contender started, after "
        "the timed runs; answers: each client's first calls against the model in-process "
        f"(rtol {rtol:g}, atol {atol:g})",
        "- modelshare: Shared(constructor, tag, framework=\"torch\", batchable=True, "
        f"max_batch={rm.MAX_BATCH_ROWS}{f', device={args.device!r}' if gpu else ''}), "
        f"pad={rm.PAD} for the encoder where the field exists; "
        "Beam: MultiProcessShared(always_proxy=True), one server process; Ray Serve: one replica "
        f"(num_cpus=2{', num_gpus=1' if gpu else ''}), "
        f"@serve.batch(max_batch_size={rm.MAX_BATCH_ROWS // rm.ROWS}, "
        "batch_wait_timeout_s=0.01) padding inside; copies: the model built in every client",
        "", "| workload | contender | rows/s | p50 / p99 ms | memory MiB (processes) | "
        f"{'GPU MiB (processes) | ' if gpu else ''}answers | calls | notes |",
        f"| --- | --- | ---: | ---: | ---: | {'---: | ' if gpu else ''}--- | ---: | --- |"]
    lines += [row(r, gpu) for r in res]
    g = goals(res)
    if g:
        lines += ["", "| workload | goal (issue 19) | wanted | measured | |",
                  "| --- | --- | --- | --- | --- |"] + g
    return lines


def no_driver():
    """NVML's word on why there is no GPU (tests/gpu/nvml.py), or ""."""
    sys.path.insert(0, os.path.join(HERE, os.pardir, "tests", "gpu"))
    try:
        from nvml import probe
        return probe()[1] or ""
    except (ImportError, OSError, AssertionError):
        return ""


def installed(contenders):
    """contenders less Beam and Ray where their packages are not installed, said on stdout."""
    import importlib.util
    need = {"beam": "apache_beam", "ray": "ray"}
    out = [c for c in contenders if c not in need or importlib.util.find_spec(need[c])]
    for c in sorted(set(contenders) - set(out)):
        print(f"{NAMES[c]}: left out ({need[c]} is not installed)", flush=True)
    return out


def check_device(ap, device):
    """--device: cpu, or cuda:N that this torch can use; else the bench stops at once, saying
    why."""
    if device == "cpu":
        return
    m = re.fullmatch(r"cuda:(\d+)", device)
    if m is None:
        ap.error(f"--device {device}: expected cpu or cuda:N (cuda:0 for the first GPU)")
    try:
        import torch
    except ImportError as e:
        ap.error(f"--device {device}: the bench needs torch ({e})")
    if torch.version.cuda is None:
        ap.error(f"--device {device}: this torch ({torch.__version__}) is a CPU-only build")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n == 0:
        why = "; ".join(str(w.message).strip().splitlines()[0] for w in said) or no_driver()
        ap.error(f"--device {device}: no GPU that torch {torch.__version__} (CUDA "
                 f"{torch.version.cuda}) can use here"
                 f"{': ' + why if why else ' (torch.cuda.is_available() is False)'}")
    if int(m[1]) >= n:
        ap.error(f"--device {device}: this machine has {n} GPU(s), cuda:0..cuda:{n - 1}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--calls", type=int, default=100, help="timed calls per client per run")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--check", type=int, default=4, help="answers checked per client per run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch threads in every process that runs a "
                    "model (default: the cores over the processes that run it at once)")
    ap.add_argument("--inputs", choices=("numpy", "torch"), default="numpy",
                    help="what the encoder's clients send: numpy arrays or torch tensors")
    ap.add_argument("--max-s", type=float, default=60.0,
                    help="a client stops a run after this many seconds even if calls remain")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 6 calls, 1 warm-up, 1 run; writes no file unless --out")
    ap.add_argument("--device", default="cpu",
                    help="cpu or cuda:N: where every contender's model runs (default cpu)")
    ap.add_argument("--out", help="default: bench/RESULTS-real-models.md, with --device cuda:N "
                    "bench/GPU-real-models.md (not with --quick)")
    ap.add_argument("--skip-missing", action="store_true",
                    help="leave out Beam and Ray where they are not installed (make test-gpu)")
    args = ap.parse_args()
    if args.device != "cpu":  # cuda:N is NVML's N (modelshare's device field) in every process
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    check_device(ap, args.device)
    args.contenders, args.workloads = args.contenders.split(","), args.workloads.split(",")
    if args.skip_missing:
        args.contenders = installed(args.contenders)
    for name, known in (("contenders", CONTENDERS), ("workloads", WORKLOADS)):
        bad = set(getattr(args, name)) - set(known)
        if bad:
            ap.error(f"--{name}: unknown {', '.join(sorted(bad))}; expected some of "
                     f"{', '.join(known)}")
    if args.quick:
        args.calls, args.warmup, args.check, args.repeat = 6, 1, 2, 1
    elif args.out is None:
        args.out = os.path.join(HERE, "RESULTS-real-models.md" if args.device == "cpu" else
                                "GPU-real-models.md")
    # Beam's server, Ray's replicas and modelshare's worker import the models by name.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")]))
    ctx = mp.get_context("spawn")
    res, t0 = [], time.monotonic()
    for workload in args.workloads:
        for contender in args.contenders:
            print(f"{NAMES[contender]}, {workload}:", flush=True)
            q = ctx.Queue()
            p = ctx.Process(target=run_one, args=(contender, workload, args, q))
            p.start()
            try:
                r = q.get(timeout=3600)
            except Exception as e:
                r = {"contender": contender, "workload": workload, "error": f"no result: {e}"}
            p.join(timeout=60)
            res.append(r)
            print("  " + (r["error"] if "error" in r else
                          f"{r['timed']['rows_per_s']:.1f} rows/s, p50 "
                          f"{r['timed']['p50_us'] / 1e3:.1f} ms, "
                          f"{r['mem']['pss_bytes'] / 2**20:.0f} MiB"), flush=True)
    wrong = check_answers(res, threads_for("reference", args.threads), args.device)
    lines = report(res, args, time.monotonic() - t0)
    print("\n".join(lines))
    if wrong:
        sys.exit("WRONG ANSWERS (nothing written):\n" + "\n".join(wrong))
    if args.out:
        pathlib.Path(args.out).write_text("\n".join(lines) + "\n")
        if os.path.abspath(args.out) == os.path.join(HERE, "RESULTS-real-models.md"):
            show_in_results(lines)
        elif os.path.abspath(args.out) == os.path.join(HERE, "GPU-real-models.md"):
            show_in_results(lines, at_end=True)
        print(f"wrote {args.out}")
    if any("error" in r for r in res):
        sys.exit("some contenders failed (above)")


if __name__ == "__main__":
    main()
