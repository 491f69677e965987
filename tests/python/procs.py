"""Functions run in child processes by the multi-process tests (importable, for spawn)."""
import os

import numpy as np


def use_shared(shared, inherited, i, results, barrier):
    """Acquires the shared model, answers one input, and holds the lease until all have."""
    x = np.random.default_rng(100 + i).standard_normal((i + 1, 64)).astype(np.float32)
    try:
        with shared.acquire() as model:
            y = model(x)
            extra = None
            if inherited is not None:  # a handle acquired by the parent before fork()
                extra = inherited(x)
            results.put((i, os.getpid(), x, np.array(y), None if extra is None else np.array(extra)))
            barrier.wait(timeout=120)
    except Exception as e:  # reported to the parent
        results.put((i, os.getpid(), None, repr(e), None))
        barrier.abort()
