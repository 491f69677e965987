"""The extension releases the GIL while it waits: other Python threads run during an infer."""
import sys
import threading

import numpy as np

import modelshare
from conftest import save_mlp


def test_other_threads_run_during_infer(daemon):
    # A model big enough that one call takes a while (about 100 MB of weights).
    weights = save_mlp(daemon.tmp / "big.safetensors", [1024, 4096, 4096, 1024])
    x = np.ones((32, 1024), np.float32)
    count = 0
    go = threading.Event()

    def counter():
        nonlocal count
        go.wait()
        for _ in range(1000):
            count += 1

    old = sys.getswitchinterval()
    with modelshare.Shared.dense(weights, tag="big").acquire() as model:
        model(x)  # loaded and warm
        t = threading.Thread(target=counter)
        # With a switch interval this long, the interpreter never takes the GIL from a running
        # thread: the counter can only run while this thread lets go of the GIL by itself.
        sys.setswitchinterval(1000)
        try:
            t.start()  # waits (without the GIL) until the thread runs; it then waits on go
            go.set()   # does not let go of the GIL
            seen = []
            for _ in range(20):
                model(x)
                seen.append(count)  # read before anything else could let go of the GIL
                if count:
                    break
        finally:
            sys.setswitchinterval(old)
            go.set()
            t.join()
    assert seen[-1] > 0, f"the counter thread never ran during {len(seen)} infer calls"
