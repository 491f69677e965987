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
from apache_beam.ml.inference.base import (KeyedModelHandler, ModelHandler, PredictionResult,
                                            RunInference)
from apache_beam.ml.inference.sklearn_inference import SklearnModelHandlerNumpy
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


# --- SharedModelHandler: the batches of every Beam process to one model, merged if batchable ---


ROWS = 1500


def predict_proba(model, batch, inference_args=None):
    """An inference_fn for SklearnModelHandlerNumpy: a row of probabilities per example."""
    return model.predict_proba(np.stack(batch))


def save_classifier(path, flip=False):
    from sklearn.linear_model import LogisticRegression
    rng = np.random.default_rng(7)
    x = rng.standard_normal((200, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    clf = LogisticRegression().fit(x, 1 - y if flip else y)
    pathlib.Path(path).write_bytes(pickle.dumps(clf))
    return clf


def examples(n=ROWS, seed=5):
    return list(np.random.default_rng(seed).standard_normal((n, 4)))


def check_proba(got, xs, clf):
    """got: {example tuple: probabilities}; equal to the in-process model's within float error
    (batches of other compositions may round the last bits otherwise)."""
    assert len(got) == len(xs)
    want = clf.predict_proba(np.stack(xs))
    for x, w in zip(xs, want):
        np.testing.assert_allclose(got[tuple(x.tolist())], w, rtol=1e-9, atol=1e-12)


def proba_line(r):
    return repr((r.example.tolist(), r.inference.tolist(), r.model_id))


def read_proba(prefix):
    got, ids = {}, set()
    for line in read_lines(prefix):
        x, y, model_id = eval(line)  # our own repr of lists of floats and a string
        got[tuple(x)] = np.array(y)
        ids.add(model_id)
    return got, ids


def run_proba(tmp_path, handler, xs, name):
    out = tmp_path / name
    with beam.Pipeline(options=options()) as p:
        (p | beam.Create(xs) | beam.Reshuffle() | RunInference(handler)
         | beam.Map(proba_line) | beam.io.WriteToText(str(out)))
    return read_proba(out)


def proba_handler(uri, **kw):
    # Small Beam batches: many requests, so that those of the four processes meet in the worker.
    return SklearnModelHandlerNumpy(model_uri=str(uri), inference_fn=predict_proba,
                                    min_batch_size=5, max_batch_size=20, **kw)


def test_run_inference_batchable_merges_across_processes(beam_env, tmp_path):
    uri = tmp_path / "clf.pkl"
    clf = save_classifier(uri)
    xs = examples()
    # Beam batches of up to 20 rows, merged up to 1000 rows (max_batch defaults to the Beam
    # batch's limit), waiting up to 20 ms for more.
    handler = SharedModelHandler(proba_handler(uri), tag="proba-merged", batchable=True,
                                 max_batch=1000, batch_delay_us=20000)
    got, ids = run_proba(tmp_path, handler, xs, "merged")
    check_proba(got, xs, clf)
    assert ids == {str(uri)}  # the wrapped handler's model_id
    st = model_status("proba-merged")
    print("requests", st["requests"], "batches", st["batches"], "rows", st.get("rows"))
    assert st["loads"] == 1, st
    # Rows of several Beam processes ran in one run_inference call at least once.
    assert st["batches"] < st["requests"], st


def test_run_inference_not_batchable_runs_each_batch_alone(beam_env, tmp_path):
    uri = tmp_path / "clf.pkl"
    clf = save_classifier(uri)
    xs = examples(600)
    handler = SharedModelHandler(proba_handler(uri), tag="proba-alone", batchable=False,
                                 max_batch=1000, batch_delay_us=20000)
    got, _ = run_proba(tmp_path, handler, xs, "alone")
    check_proba(got, xs, clf)
    st = model_status("proba-alone")
    assert st["loads"] == 1, st
    assert st["batches"] == st["requests"], st


def test_run_inference_batchable_not_given(beam_env, tmp_path):
    """batchable not given: python models are not merged (modelshare's default, opt-in)."""
    uri = tmp_path / "clf.pkl"
    clf = save_classifier(uri)
    xs = examples(600)
    handler = SharedModelHandler(proba_handler(uri), tag="proba-default", max_batch=1000,
                                 batch_delay_us=20000)
    got, _ = run_proba(tmp_path, handler, xs, "default")
    check_proba(got, xs, clf)
    st = model_status("proba-default")
    assert st["loads"] == 1, st
    assert st["spec"]["batchable"] is False, st  # python models merge only when they say so
    assert st["batches"] == st["requests"], st


def keyed_line(kv):
    key, r = kv
    return repr((key, r.example.tolist(), r.inference.tolist(), r.model_id))


def test_run_inference_keyed_handlers(beam_env, tmp_path):
    uri = tmp_path / "clf.pkl"
    clf = save_classifier(uri)
    xs = examples(600)
    keyed = [(f"k{i % 7}", x) for i, x in enumerate(xs)]
    outer = KeyedModelHandler(SharedModelHandler(proba_handler(uri), tag="keyed-outer",
                                                 batchable=True))
    inner = SharedModelHandler(KeyedModelHandler(proba_handler(uri)), tag="keyed-inner",
                               batchable=True)
    out1, out2 = tmp_path / "outer", tmp_path / "inner"
    with beam.Pipeline(options=options()) as p:
        rows = p | beam.Create(keyed) | beam.Reshuffle()
        rows | "outer" >> RunInference(outer) | "f1" >> beam.Map(keyed_line) \
            | "w1" >> beam.io.WriteToText(str(out1))
        rows | "inner" >> RunInference(inner) | "f2" >> beam.Map(keyed_line) \
            | "w2" >> beam.io.WriteToText(str(out2))
    want = {tuple(x.tolist()): (f"k{i % 7}", w)
            for i, (x, w) in enumerate(zip(xs, clf.predict_proba(np.stack(xs))))}
    for out, tag in ((out1, "keyed-outer"), (out2, "keyed-inner")):
        lines = read_lines(out)
        assert len(lines) == len(xs)
        for line in lines:
            key, x, y, model_id = eval(line)
            wkey, wy = want[tuple(x)]
            assert key == wkey and model_id == str(uri)
            np.testing.assert_allclose(y, wy, rtol=1e-9, atol=1e-12)
        assert model_status(tag)["loads"] == 1


def test_update_model_path_moves_to_the_new_model(daemon, tmp_path):
    p1, p2 = tmp_path / "a.pkl", tmp_path / "b.pkl"
    clf1, clf2 = save_classifier(p1), save_classifier(p2, flip=True)
    xs = examples(50)
    handler = SharedModelHandler(SklearnModelHandlerNumpy(model_uri=str(p1)), tag="upd",
                                 batchable=True)
    model = handler.load_model()
    for tensor in (False, True):  # a lease's first batch is a pickled call, the next arrays
        got = handler.run_inference(xs, model)
        assert [int(r.inference) for r in got] == clf1.predict(np.stack(xs)).tolist()
        assert all(r.model_id == str(p1) for r in got)
        assert all(np.array_equal(r.example, x) and (r.example is x or not tensor)
                   for r, x in zip(got, xs))
        assert all(type(r.inference) is np.int64 for r in got)
    old_tag = model_status("upd")["tag"]
    handler.update_model_path(str(p2))
    again = handler.load_model()
    for _ in range(2):
        got = handler.run_inference(xs, again)
        assert [int(r.inference) for r in got] == clf2.predict(np.stack(xs)).tolist()
        assert all(r.model_id == str(p2) for r in got)
    # The model Beam already holds moved too (one lease per handler), and the old lease ended.
    assert again is model
    assert model_status(old_tag)["leases"] == 0
    new = [m for m in modelshare.status()["models"] if m["tag"].startswith("upd@")]
    assert len(new) == 1 and new[0]["leases"] == 1 and new[0]["loads"] == 1
    # The same path again (Beam gives it twice): the same model, not a third one.
    handler.update_model_path(str(p2))
    assert handler.load_model().tag == model.tag
    assert len([m for m in modelshare.status()["models"] if m["tag"].startswith("upd")]) == 2
    # Through a KeyedModelHandler outside.
    keyed = KeyedModelHandler(SharedModelHandler(SklearnModelHandlerNumpy(model_uri=str(p1)),
                                                 tag="upd-k", batchable=True))
    m = keyed.load_model()
    keyed.update_model_path(str(p2))
    m = keyed.load_model()
    got = list(keyed.run_inference([("a", x) for x in xs], m))
    assert [int(r.inference) for _, r in got] == clf2.predict(np.stack(xs)).tolist()


class DictHandler(ModelHandler):
    """Examples are dicts (or strings); predictions plain Python values."""

    def load_model(self):
        return {"scale": 3.0}

    def run_inference(self, batch, model, inference_args=None):
        out = []
        for e in batch:
            value = len(e) if isinstance(e, str) else model["scale"] * e["a"] + e["b"]
            out.append(PredictionResult(e, value, "dict-model"))
        return out


class LabelHandler(ModelHandler):
    """Array examples, string predictions: these cannot come back as one numeric array."""

    def load_model(self):
        return None

    def run_inference(self, batch, model, inference_args=None):
        suffix = (inference_args or {}).get("suffix", "")
        return [PredictionResult(x, f"row{float(x.sum()):.3f}{suffix}", None) for x in batch]


def test_non_array_examples_take_the_pickled_path(beam_env, tmp_path):
    rows = [{"a": float(i), "b": 1.0} for i in range(200)] + [f"s{'x' * i}" for i in range(50)]
    handler = SharedModelHandler(DictHandler(), tag="dicts", batchable=True)
    out = tmp_path / "dicts"
    with beam.Pipeline(options=options()) as p:
        (p | beam.Create(rows) | beam.Reshuffle() | RunInference(handler)
         | beam.Map(lambda r: repr((r.example, r.inference, r.model_id)))
         | beam.io.WriteToText(str(out)))
    got = sorted(read_lines(out))
    want = sorted(repr((r.example, r.inference, r.model_id))
                  for r in DictHandler().run_inference(rows, {"scale": 3.0}))
    assert got == want
    assert model_status("dicts")["loads"] == 1


def test_predictions_that_do_not_stack_fall_back(daemon):
    handler = SharedModelHandler(LabelHandler(), tag="labels", batchable=True)
    model = handler.load_model()
    xs = examples(10)

    def same(got, want):
        return [(r.inference, r.model_id) for r in got] == \
            [(r.inference, r.model_id) for r in want]

    want = LabelHandler().run_inference(xs, None)
    for _ in range(3):
        assert same(handler.run_inference(xs, model), want)
    assert handler._tensor is False  # learned once, from the first batch
    # inference_args: the pickled path, whatever the examples.
    handler._tensor = None
    want = LabelHandler().run_inference(xs, None, {"suffix": "!"})
    assert same(handler.run_inference(xs, model, {"suffix": "!"}), want)
    assert handler._tensor is None
    # Numpy scalars: one array of a row each, numpy scalars back.
    scalars = SharedModelHandler(ScalarHandler(), tag="scalars", batchable=True)
    model = scalars.load_model()
    xs = [np.float32(i) / 3 for i in range(10)]
    want = ScalarHandler().run_inference(xs, None)
    for _ in range(2):
        got = scalars.run_inference(xs, model)
        assert got == want and [type(r.inference) for r in got] == [np.float64] * len(xs)
    assert scalars._tensor is None  # never refused
    assert model_status("scalars")["rows"] >= len(xs)  # pickled calls carry no rows


class ScalarHandler(ModelHandler):
    def load_model(self):
        return None

    def run_inference(self, batch, model, inference_args=None):
        return [PredictionResult(x, np.float64(x) * 2, "twice") for x in batch]


def test_model_copies_become_instances(daemon, tmp_path):
    uri = tmp_path / "clf.pkl"
    clf = save_classifier(uri)
    handler = SharedModelHandler(SklearnModelHandlerNumpy(model_uri=str(uri), model_copies=2),
                                 tag="copies", batchable=True)
    assert handler._spec["instances"] == 2
    assert not handler.share_model_across_processes() and handler.model_copies() == 1
    model = handler.load_model()
    xs = examples(20)
    for _ in range(2):
        got = handler.run_inference(xs, model)
        assert [int(r.inference) for r in got] == clf.predict(np.stack(xs)).tolist()
    st = model_status("copies")
    assert len(st["worker_pids"]) == 2, st
    big = SharedModelHandler(SklearnModelHandlerNumpy(model_uri=str(uri), large_model=True),
                             tag="big")
    assert "instances" not in big._spec
    given = SharedModelHandler(SklearnModelHandlerNumpy(model_uri=str(uri), model_copies=3),
                               tag="given", instances=1)
    assert given._spec["instances"] == 1


def test_every_model_handler_method_is_ours():
    """Each method of Beam's ModelHandler is passed through to the wrapped handler or
    deliberately answered by SharedModelHandler; the with_* helpers wrap it as they are."""
    helpers = {"with_preprocess_fn", "with_postprocess_fn", "with_no_batching"}
    names = {n for n, v in vars(ModelHandler).items() if callable(v) and not n.startswith("_")}
    missing = sorted(names - helpers - set(vars(SharedModelHandler)))
    assert not missing, missing
    inner = SklearnModelHandlerNumpy(model_uri="x", max_batch_size=33, env_vars={"A": "1"})
    h = SharedModelHandler(inner, tag="t")
    assert h.batch_elements_kwargs() == inner.batch_elements_kwargs()
    assert h._spec["max_batch"] == 33
    assert h.get_metrics_namespace() == inner.get_metrics_namespace()
    assert h.should_garbage_collect_on_timeout() is False
    assert isinstance(h.with_postprocess_fn(lambda r: r), ModelHandler)
