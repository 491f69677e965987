#!/usr/bin/env python3
"""A live swap under load: N client processes (ms-swapclient) call a dense model without pause
for a while, `modelshare swap` moves the tag to new weights, they go on a while; then the figures:
requests in all and started during the swap, failures, answers of the old and the new version,
the longest call (in all, and of those started during the swap), how long the swap took.

    .venv/bin/python bench/swap_bench.py [--build build] [--clients 8] [--seconds 2]
        [--layers 1024,4096,1024] [--drain-first] [--results FILE]

Its own daemon on a private socket; nothing here is asserted (tests/integration/test_swap.py
does that): the figures are printed, and with --results appended to FILE as a Markdown line."""
import argparse
import json
import os
import pathlib
import signal
import subprocess
import tempfile
import time


def cli(build, env, *args):
    r = subprocess.run([str(build / "modelshare"), *map(str, args)], env=env,
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise SystemExit(f"modelshare {' '.join(map(str, args))}: {r.stderr.strip()}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=2.0, help="before and after the swap")
    ap.add_argument("--layers", default="1024,4096,1024")
    ap.add_argument("--drain-first", action="store_true")
    ap.add_argument("--results")
    a = ap.parse_args()
    build = pathlib.Path(a.build).resolve()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="msb-", dir="/tmp"))
    os.chmod(tmp, 0o700)
    env = dict(os.environ, MODELSHARE_SOCKET=str(tmp / "d" / "s.sock"), MODELSHARE_IDLE_EXIT="0")
    old, new = tmp / "old.safetensors", tmp / "new.safetensors"
    cli(build, env, "make-dense", old, "--layers", a.layers, "--seed", 1)
    cli(build, env, "make-dense", new, "--layers", a.layers, "--seed", 2)
    cli(build, env, "load", "m", "--spec",
        json.dumps({"backend": "dense", "weights": str(old), "version": "1"}))
    procs = [subprocess.Popen([str(build / "tests" / "ms-swapclient"), "m", str(old), str(new),
                               str(i)], stdout=subprocess.PIPE, text=True, env=env)
             for i in range(a.clients)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        time.sleep(a.seconds)
        for p in procs:
            os.kill(p.pid, signal.SIGUSR1)
        t0 = time.monotonic()
        args = ["swap", "m", "--weights", new, "--version", "2"]
        cli(build, env, *(args + (["--drain-first"] if a.drain_first else [])))
        took = time.monotonic() - t0
        for p in procs:
            os.kill(p.pid, signal.SIGUSR2)
        time.sleep(a.seconds)
        for p in procs:
            os.kill(p.pid, signal.SIGTERM)
        counts = [json.loads(p.communicate(timeout=60)[0].strip().splitlines()[-1])
                  for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        pid = (tmp / "d" / "s.sock.pid")
        if pid.exists():
            try:
                os.kill(int(pid.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
    t = {k: sum(c[k] for c in counts) for k in ("requests", "failed", "old", "new", "wrong",
                                                 "old_after_swap", "during")}
    longest = max(c["longest_us"] for c in counts) / 1000
    during = max(c["longest_during_us"] for c in counts) / 1000
    line = (f"{a.clients} clients, layers {a.layers}{', drain-first' if a.drain_first else ''}: "
            f"swap {took * 1000:.0f} ms; {t['requests']} requests, {t['during']} started during "
            f"the swap; {t['failed']} failed, {t['wrong']} wrong, {t['old_after_swap']} old "
            f"after it; old {t['old']}, new {t['new']}; longest call {longest:.1f} ms "
            f"(started during the swap: {during:.1f} ms)")
    print(line)
    if a.results:
        with open(a.results, "a") as f:
            f.write(f"- {time.strftime('%Y-%m-%d')}: {line}\n")


if __name__ == "__main__":
    main()
