#!/usr/bin/env python3
"""GPU benchmark: rows/s of a dense model on cuda:0 served by modelshare to N client processes
(dynamic batching across them) against one process calling cuBLAS directly (ms-backend-bench,
the same backend code in-process); then the host-device copies of 16 MiB requests, straight
from the client's shared memory (registered with cudaHostRegister) against staged through a
pinned buffer ($MODELSHARE_CUDA_REGISTER=0). Prints Markdown tables for bench/GPU.md (shown in
bench/RESULTS.md).

    MODELSHARE_BUILD=build .venv/bin/python bench/gpu_bench.py [--layers 4096,4096,4096,1000]
        [--clients 8] [--batch 8] [--seconds 10]
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUILD = pathlib.Path(os.environ.get("MODELSHARE_BUILD", ROOT / "build")).resolve()


def run(cmd, env=None):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", default="4096,4096,4096,1000")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8, help="rows per request of each client")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--requests", type=int, default=2000)
    a = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="msgb-", dir="/tmp"))
    os.chmod(tmp, 0o700)
    weights = tmp / "m.safetensors"
    run([BUILD / "modelshare", "make-dense", weights, "--layers", a.layers, "--seed", "1"])
    spec = {"backend": "dense", "weights": str(weights), "device": "cuda:0",
            "max_batch": a.clients * a.batch, "batch_delay_us": 200}
    env = dict(os.environ, MODELSHARE_SOCKET=str(tmp / "d" / "modelshared.sock"),
               MODELSHARE_CUDA_BACKEND=str(BUILD / "libmodelshare-cuda.so"),
               MODELSHARE_IDLE_EXIT="30")
    rows = []
    for b in (a.batch, a.batch * a.clients):
        out = json.loads(run([BUILD / "tests" / "ms-backend-bench", json.dumps(spec), "--batch", b,
                              "--seconds", a.seconds], env))
        rows.append(("one process, cuBLAS directly", 1, b, out["rows_per_s"], out["p50_us"],
                     out["p99_us"]))
    help_text = subprocess.run([BUILD / "modelshare", "--help"], capture_output=True,
                               text=True).stdout + subprocess.run(
        [BUILD / "modelshare"], capture_output=True, text=True).stderr
    if " bench" in help_text:
        out = json.loads(run([BUILD / "modelshare", "bench", "gpu-bench", "--spec",
                              json.dumps(spec), "--clients", a.clients, "--requests",
                              a.requests, "--batch", a.batch, "--json"], env))
        rows.append((f"modelshare, {a.clients} client processes, batching", a.clients, a.batch,
                     out["rows_per_s"], out["p50_us"], out["p99_us"]))
    else:
        print("note: this build has no `modelshare bench` verb: modelshare rows not measured",
              file=sys.stderr)
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip() or "unknown GPU"
    print(f"GPU: {gpu}; model dense {a.layers.replace(',', ' > ')} float32\n")
    print("| setup | processes | rows per request | rows/s | p50 µs | p99 µs |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, procs, b, rps, p50, p99 in rows:
        print(f"| {name} | {procs} | {b} | {rps:,.0f} | {p50:,.0f} | {p99:,.0f} |")
    transfers(tmp, a)
    subprocess.run(["rm", "-rf", str(tmp)])


def transfers(tmp, a):
    """GB/s through a 4096 > 4096 layer with 1024-row requests: 16 MiB in, 16 MiB out, each way
    by DMA from the arena or staged. Each setting gets its own daemon: the worker reads
    $MODELSHARE_CUDA_REGISTER from the daemon's environment."""
    weights = tmp / "wide.safetensors"
    run([BUILD / "modelshare", "make-dense", weights, "--layers", "4096,4096", "--seed", "2"])
    spec = {"backend": "dense", "weights": str(weights), "device": "cuda:0", "max_batch": 1024}
    mib = 1024 * 4096 * 4 / 2**20
    print(f"\nHost-device copies: requests of 1024 rows x 4096 float32 ({mib:.0f} MiB in, "
          f"{mib:.0f} MiB out), one client\n")
    print("| input and output | requests/s | effective GB/s (in + out, with the run) | p50 µs |")
    print("| --- | ---: | ---: | ---: |")
    for register, name in (("1", "DMA from shared memory (registered)"),
                           ("0", "staged through a pinned buffer")):
        env = dict(os.environ, MODELSHARE_SOCKET=str(tmp / f"r{register}" / "modelshared.sock"),
                   MODELSHARE_CUDA_BACKEND=str(BUILD / "libmodelshare-cuda.so"),
                   MODELSHARE_IDLE_EXIT="30", MODELSHARE_CUDA_REGISTER=register)
        out = json.loads(run([BUILD / "modelshare", "bench", f"copy{register}", "--spec",
                              json.dumps(spec), "--clients", 1, "--requests",
                              max(a.requests // 10, 50), "--batch", 1024, "--json"], env))
        gbs = out["requests_per_s"] * 2 * 1024 * 4096 * 4 / 1e9
        print(f"| {name} | {out['requests_per_s']:,.1f} | {gbs:,.2f} | {out['p50_us']:,.0f} |")


if __name__ == "__main__":
    main()
