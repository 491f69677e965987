"""The usual Python answer, measured: one model object in a server process, called from client
processes through a pickling proxy over a localhost socket (multiprocessing.managers, which is
what Apache Beam's MultiProcessShared uses underneath).

    python bench/pickle_proxy.py --clients 4 --requests 5000 --batch 1 --width 256 [--json]

The model is the identity (it returns its input), as with modelshare's identity backend, so what
is measured is the transport. Prints p50/p99 latency and requests/s, or one JSON object.
"""
import argparse
import json
import multiprocessing as mp
import time
from multiprocessing.managers import BaseManager

import numpy as np


class Identity:
    def __call__(self, x):
        return x


class ModelManager(BaseManager):
    pass


ModelManager.register("Identity", Identity, exposed=["__call__"])


def client(address, authkey, shape, requests, warmup, barrier, out):
    m = ModelManager(address=address, authkey=authkey)
    m.connect()
    model = m.Identity()
    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    for _ in range(warmup):
        model(x)
    barrier.wait()
    lat = []
    for _ in range(requests):
        t = time.perf_counter_ns()
        model(x)
        lat.append(time.perf_counter_ns() - t)
    out.put((lat, time.perf_counter_ns()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    manager = ModelManager(address=("127.0.0.1", 0), authkey=b"bench")
    manager.start()
    barrier = mp.Barrier(a.clients + 1)
    out = mp.Queue()
    procs = [mp.Process(target=client,
                        args=(manager.address, b"bench", (a.batch, a.width), a.requests,
                              min(1000, a.requests // 10), barrier, out))
             for _ in range(a.clients)]
    for p in procs:
        p.start()
    barrier.wait()
    t0 = time.perf_counter_ns()
    lat, last = [], t0
    for _ in procs:
        got, end = out.get()
        lat += got
        last = max(last, end)
    for p in procs:
        p.join()
    manager.shutdown()
    lat.sort()
    wall = (last - t0) / 1e9
    res = {"mode": "pickle proxy", "clients": a.clients, "requests": a.requests,
           "batch": a.batch, "width": a.width,
           "requests_per_s": len(lat) / wall, "rows_per_s": len(lat) * a.batch / wall,
           "p50_us": lat[len(lat) // 2] / 1e3, "p99_us": lat[int((len(lat) - 1) * 0.99)] / 1e3,
           "mean_us": sum(lat) / len(lat) / 1e3, "wall_s": wall}
    if a.json:
        print(json.dumps(res))
    else:
        print(f"pickle proxy: {a.clients} client(s) x {a.requests} requests x batch {a.batch}")
        print(f"  latency   p50 {res['p50_us']:.1f} us   p99 {res['p99_us']:.1f} us")
        print(f"  rate      {res['requests_per_s']:.0f} requests/s")


if __name__ == "__main__":
    main()
