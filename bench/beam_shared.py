"""The same Beam pipeline (DirectRunner, multi-processing mode, 4 workers) with Beam's own
MultiProcessShared and with modelshare.beam.MultiProcessShared: how many times the model is
loaded, and the pipeline's wall time.

    .venv/bin/python bench/beam_shared.py [--elements 4000] [--repeat 3]

Each element is one row through a numpy MLP (64 > 256 > 10) held by the shared object. Loads are
counted by the constructor itself (a line appended to a file), the same way for both.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils.multi_process_shared import MultiProcessShared as BeamShared

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from beam_shared_model import make_mlp  # noqa: E402  (importable by Beam's workers)

from modelshare.beam import MultiProcessShared as ModelshareShared  # noqa: E402


class Predict(beam.DoFn):
    def __init__(self, shared):
        self._shared = shared

    def setup(self):
        self._model = self._shared.acquire()

    def process(self, i):
        x = np.full((1, 64), (i % 97) / 97.0, dtype=np.float32)
        yield int(np.argmax(self._model(x)))

    def teardown(self):
        self._shared.release(self._model)


def run(kind, elements, counter):
    import functools
    ctor = functools.partial(make_mlp, counter)
    tag = f"bench-{kind}-{os.getpid()}-{time.monotonic_ns()}"
    shared = BeamShared(ctor, tag=tag) if kind == "beam" else ModelshareShared(ctor, tag=tag)
    opts = PipelineOptions(direct_running_mode="multi_processing", direct_num_workers=4)
    t0 = time.perf_counter()
    with beam.Pipeline(options=opts) as p:
        (p | beam.Create(list(range(elements))) | beam.Reshuffle() | beam.ParDo(Predict(shared))
         | beam.combiners.Count.Globally() | beam.Map(lambda n: n))
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--elements", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    results = {}
    for kind in ("beam", "modelshare"):
        times, loads = [], []
        for _ in range(args.repeat):
            with tempfile.NamedTemporaryFile(delete=False) as f:
                counter = f.name
            times.append(run(kind, args.elements, counter))
            with open(counter) as f:
                loads.append(len(f.read().split()))
            os.unlink(counter)
        results[kind] = {"wall_s_median": sorted(times)[len(times) // 2], "wall_s": times,
                         "loads": loads}
    print(json.dumps({"elements": args.elements, "workers": 4, **results}, indent=1))


if __name__ == "__main__":
    main()
