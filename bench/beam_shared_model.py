"""The model of bench/beam_shared.py, importable by Beam's and modelshare's workers."""
import os

import numpy as np


def make_mlp(counter):
    with open(counter, "a") as f:  # one line per load
        f.write(f"{os.getpid()}\n")
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((64, 256)).astype(np.float32)
    w2 = rng.standard_normal((256, 10)).astype(np.float32)
    return lambda x: np.maximum(x @ w1, 0) @ w2
