"""Apache Beam, for real: DirectRunner in multi-processing mode with 4 worker processes."""
import glob
import os
import pathlib
import pickle

import numpy as np
import pytest

import modelshare
import pymodels

# Installed by tests/requirements.txt: a missing Beam is a failure here, not a skip.
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from modelshare.beam import MultiProcessShared, SharedModelHandler

HERE = pathlib.Path(__file__).resolve().parent
N = 200


@pytest.fixture
def beam_env(daemon, monkeypatch):
    # Beam's worker processes unpickle our DoFns: they must import pymodels too.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(HERE), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))
    return daemon


def options():
    return PipelineOptions(runner="DirectRunner", direct_running_mode="multi_processing",
                           direct_num_workers=4)


def read_lines(prefix):
    lines = []
    for f in glob.glob(str(prefix) + "*"):
        lines += pathlib.Path(f).read_text().splitlines()
    return lines


def model_status(tag):
    return next((m for m in modelshare.status()["models"] if m["tag"] == tag), None)


class Predict(beam.DoFn):
    def __init__(self, shared):
        self._shared = shared

    def setup(self):
        self._model = self._shared.acquire()

    def process(self, i):
        y = self._model(np.full((1, 4), i, dtype=np.float32))
        yield f"{i} {float(y[0, 0])} {os.getpid()}"

    def teardown(self):
        self._shared.release(self._model)


def test_multi_process_shared_drop_in(beam_env, tmp_path):
    # keep_alive: the object stays loaded between the Beam workers' leases (Beam's default, and
    # the drop-in's, destroys it with the last release).
    shared = MultiProcessShared(pymodels.make_scale, tag="beam_scale", keep_alive=60)
    out = tmp_path / "out"
    with beam.Pipeline(options=options()) as p:
        (p | beam.Create(list(range(N))) | beam.Reshuffle() | beam.ParDo(Predict(shared))
         | beam.io.WriteToText(str(out)))
    rows = [line.split() for line in read_lines(out)]
    assert sorted(int(r[0]) for r in rows) == list(range(N))
    for i, y, _ in rows:
        assert float(y) == 2.0 * int(i)
    print("beam worker processes that called the model:", len({r[2] for r in rows}))
    st = model_status(shared.shared.tag)
    assert st["loads"] == 1, st


def test_run_inference_with_sklearn_handler(beam_env, tmp_path):
    from apache_beam.ml.inference.base import RunInference
    from apache_beam.ml.inference.sklearn_inference import SklearnModelHandlerNumpy
    clf = pymodels.train_logistic()
    uri = tmp_path / "clf.pkl"
    uri.write_bytes(pickle.dumps(clf))
    handler = SharedModelHandler(SklearnModelHandlerNumpy(model_uri=str(uri)), tag="clf-v1")
    xs = np.random.default_rng(5).standard_normal((N, 4))
    out = tmp_path / "pred"
    with beam.Pipeline(options=options()) as p:
        (p | beam.Create([x for x in xs]) | beam.Reshuffle() | RunInference(handler)
         | beam.Map(lambda r: " ".join(map(repr, [*r.example.tolist(), int(r.inference)])))
         | beam.io.WriteToText(str(out)))
    got = {}
    for line in read_lines(out):
        *x, y = line.split()
        got[tuple(float(v) for v in x)] = int(y)
    expected = {tuple(x.tolist()): int(y) for x, y in zip(xs, clf.predict(xs))}
    assert got == expected
    assert model_status("clf-v1")["loads"] == 1
