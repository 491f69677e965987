"""Plain multiprocessing: 4 processes share one copy of a model.

    python examples/python/multiprocessing_pool.py
"""
import multiprocessing

import numpy as np

import modelshare


class Embedder:
    """Stands in for a large model: a fixed random projection."""

    def __init__(self, dim=16):
        self.w = np.random.default_rng(0).standard_normal((8, dim)).astype(np.float32)

    def __call__(self, x):
        return x @ self.w

    def dim(self):
        return self.w.shape[1]


SHARED = modelshare.Shared(Embedder, tag="example-embedder", batchable=True, keep_alive=0)


def embed(i):
    with SHARED.acquire() as model:  # every process: the same model, loaded once
        y = model(np.full((4, 8), i, dtype=np.float32))
        return i, y.shape, model.dim()


if __name__ == "__main__":
    with SHARED.acquire():  # hold a lease for the whole run, so the model stays loaded
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            for i, shape, dim in pool.map(embed, range(8)):
                print(f"task {i}: output {shape}, dim {dim}")
        model = next(m for m in modelshare.status()["models"] if m["tag"] == "example-embedder")
        print(f"loads: {model['loads']}")
