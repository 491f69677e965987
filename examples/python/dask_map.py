"""Dask distributed: 4 worker processes map a function that uses one shared model.

    python examples/python/dask_map.py
"""
import numpy as np
from distributed import Client, LocalCluster

import modelshare
from modelshare.dask import ModelshareDaemon


def load_model():
    w = np.random.default_rng(0).standard_normal((8, 2)).astype(np.float32)
    return lambda x: x @ w


SHARED = modelshare.Shared(load_model, tag="example-dask")


def score(i):
    with SHARED.acquire() as model:
        return float(model(np.full((1, 8), i, dtype=np.float32)).sum())


if __name__ == "__main__":
    with LocalCluster(n_workers=4, processes=True, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.register_plugin(ModelshareDaemon(preload=[SHARED]))  # loaded before any task
        scores = client.gather(client.map(score, range(32)))
    print(f"{len(scores)} scores, first {scores[:3]}")
    model = next(m for m in modelshare.status()["models"] if m["tag"] == "example-dask")
    print(f"loads: {model['loads']}")
    modelshare.unload("example-dask")
