"""Constructors as users write them: the compatibility matrix, genuine conflicts, identity.

The matrix runs tests/python/matrix_app.py -- a user's main script -- once per caller, each with
a daemon of its own; every cell (constructor kind x caller) asserts one load, right answers in
every process (numpy's, and a pickled method call with an object of the script's own class) and
no conflict.
"""
import functools
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import modelshare
import pymodels
from conftest import Daemon
from modelshare import _identity
from modelshare.beam import MultiProcessShared

HERE = pathlib.Path(__file__).resolve().parent
APP = HERE / "matrix_app.py"
KINDS = ("module_function", "main_class", "main_function", "lambda", "closure", "partial",
         "bound_method", "class_with_args")
# caller -> how many processes acquire each model (the first ones before the rest)
CALLERS = {"main": 3, "spawn": 4, "fork": 4, "pool": 4, "beam": 2, "dask": 3, "dashc": 3}


def _run_caller(caller, tmp):
    d = Daemon(tmp)
    out = tmp / f"{caller}.json"
    env = dict(os.environ, MODELSHARE_SOCKET=str(d.socket), MODELSHARE_IDLE_EXIT="0",
               MATRIX_TMP=str(tmp),
               PYTHONPATH=os.pathsep.join([str(HERE), *filter(None, os.environ.get(
                   "PYTHONPATH", "").split(os.pathsep))]))
    for var in ("MODELSHARE_DAEMON", "MODELSHARE_WORKER", "MODELSHARE_NO_AUTOSTART"):
        env.pop(var, None)
    # python -c: the same script with no file behind __main__ (as in Jupyter).
    argv = [sys.executable, "-c", APP.read_text()] if caller == "dashc" else \
        [sys.executable, str(APP)]
    try:
        proc = subprocess.run([*argv, caller, str(out)], env=env, cwd=tmp, capture_output=True,
                              text=True, timeout=600)
        if proc.returncode != 0 or not out.exists():
            return {"failed": f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n"
                              f"{proc.stderr[-6000:]}\ndaemon log:\n{d.log()[-3000:]}"}
        return json.loads(out.read_text())
    finally:
        d.stop()
        shutil.rmtree(d.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """caller -> the app's report, run on first use."""
    runs = {}

    def get(caller):
        if caller not in runs:
            runs[caller] = _run_caller(caller, tmp_path_factory.mktemp(caller))
        return runs[caller]
    return get


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("caller", list(CALLERS))
def test_matrix_cell(matrix, caller, kind):
    report = matrix(caller)
    assert "failed" not in report, report.get("failed")
    errors = report["cells"][kind]
    assert len(errors) >= CALLERS[caller], f"{len(errors)} processes reported: {errors}"
    assert errors == [None] * len(errors), [e for e in errors if e]
    assert report["loads"][kind] == 1, report["loads"]
    if caller == "beam":  # strict=True: the constructors compared, as modelshare.Shared does
        assert report["strict_loads"][kind] == 1, report["strict_loads"]


# Genuine conflicts: a different model under one tag is refused, naming what differs.

def loader_for(path):
    def load():
        return pymodels.Dense(seed=len(path))
    return load


def test_closure_over_another_path_conflicts(daemon):
    with modelshare.Shared(loader_for("/data/a.safetensors"), tag="c").acquire() as model:
        with pytest.raises(modelshare.SpecConflict) as e:
            modelshare.Shared(loader_for("/data/bb.safetensors"), tag="c").acquire()
        msg = str(e.value)
        assert ("constructor part closure.path: loaded '/data/a.safetensors', asked "
                "'/data/bb.safetensors'") in msg, msg
        assert "key=" in msg, msg
        # The same closure made again is the same model.
        with modelshare.Shared(loader_for("/data/a.safetensors"), tag="c").acquire() as again:
            x = np.ones((1, pymodels.WIDTH), np.float32)
            np.testing.assert_array_equal(again(x), model(x))
    assert model_status("c")["loads"] == 1


def test_another_class_conflicts(daemon):
    with modelshare.Shared(functools.partial(pymodels.Dense, 1), tag="k").acquire():
        with pytest.raises(modelshare.SpecConflict) as e:
            modelshare.Shared(functools.partial(pymodels.Scale, 1), tag="k").acquire()
        msg = str(e.value)
        assert ("constructor: loaded functools.partial of class pymodels.Dense, asked "
                "functools.partial of class pymodels.Scale") in msg, msg

    # Two classes of one name, written differently, are two models.
    def first():
        class Model:
            def __call__(self, x):
                return x
        return Model

    def second():
        class Model:
            def __call__(self, x):
                return x + 1
        return Model
    with modelshare.Shared(first(), tag="local").acquire():
        with pytest.raises(modelshare.SpecConflict, match="constructor part body: loaded class"):
            modelshare.Shared(second(), tag="local").acquire()


def test_spec_field_conflict_names_the_field(daemon):
    with modelshare.Shared(pymodels.make_scale, tag="f", max_batch=8).acquire():
        with pytest.raises(modelshare.SpecConflict) as e:
            modelshare.Shared(pymodels.make_scale, tag="f", max_batch=16).acquire()
        msg = str(e.value)
        assert "max_batch: loaded 8, asked 16" in msg, msg
        assert "constructor" not in msg.split(".")[0], msg  # only the field that differs


def test_key_names_the_identity(daemon):
    two = modelshare.Shared(lambda: pymodels.Scale(2), tag="kk", key="scale-v1")
    three = modelshare.Shared(lambda: pymodels.Scale(3), tag="kk", key="scale-v1")
    with two.acquire(), three.acquire() as model:  # one key, one model: the first one's
        np.testing.assert_array_equal(model(np.ones((1, 1), np.float32)), [[2.0]])
        with pytest.raises(modelshare.SpecConflict) as e:
            modelshare.Shared(lambda: pymodels.Scale(2), tag="kk", key="scale-v2").acquire()
        assert "constructor part key: loaded 'scale-v1', asked 'scale-v2'" in str(e.value)
    assert model_status("kk")["loads"] == 1
    with pytest.raises(ValueError, match="key"):
        modelshare.Shared(pymodels.make_scale, tag="kk", key="")


def test_beam_tag_is_the_identity(daemon):
    first = MultiProcessShared(pymodels.make_scale, tag="beam-tag")
    with first.acquire() as model:
        # Another constructor under the tag: Beam's rule, the first one is used.
        other = MultiProcessShared(pymodels.make_other, tag="beam-tag").acquire()
        np.testing.assert_array_equal(other(np.ones((1, 1), np.float32)), [[2.0]])
        other.release()
        with pytest.raises(modelshare.SpecConflict, match="make_other"):
            MultiProcessShared(pymodels.make_other, tag="beam-tag", strict=True).acquire()
        np.testing.assert_array_equal(model(np.ones((1, 1), np.float32)), [[2.0]])
    assert model_status("beam-tag")["loads"] == 1


def model_status(tag):
    return next((m for m in modelshare.status()["models"] if m["tag"] == tag), None)


# The fingerprint itself (no daemon).

def key(c):
    return _identity.of(c, b"")[0]


def test_fingerprint_is_stable_and_tells_apart():
    assert key(lambda: pymodels.Scale(2)) == key(lambda: pymodels.Scale(2))
    assert key(lambda: pymodels.Scale(2)) != key(lambda: pymodels.Scale(3))
    assert key(loader_for("/a")) == key(loader_for("/a")) != key(loader_for("/b"))
    assert key(functools.partial(pymodels.Scale, k=1)) != key(functools.partial(pymodels.Scale, 2))
    assert key(pymodels.make_scale) != key(pymodels.make_other)
    w = np.arange(6.0)
    v = w.copy()
    assert key(over(w)) == key(over(v))
    v[0] = 9
    assert key(over(w)) != key(over(v))  # arrays by content
    assert key(over({"b", "a", "c"})) == key(over({"c", "b", "a"}))  # sets in any order
    assert key(over({"a": 1, "b": 2})) == key(over({"b": 2, "a": 1}))


def over(value):
    return lambda: value


def test_fingerprint_of_cycles_and_large_objects():
    ring = []
    ring.append(ring)
    assert key(over(ring)) == key(over(ring))
    big = list(range(_identity.NODES_MAX + 10))
    k, outline = _identity.of(over(big), b"the pickle")
    assert "too large to fingerprint" in outline["pickle"], outline
    assert k == _identity.of(over(big), b"the pickle")[0]


def test_outline_fits_the_daemon():
    many = {f"v{i}": i for i in range(40)}

    class Many:
        def __init__(self):
            self.__dict__.update(many)

        def __call__(self):
            return None
    _, outline = _identity.of(Many(), b"")
    assert len(outline) <= 32 and "more" in outline, outline
    assert all(len(k) <= 64 and len(v) <= 200 for k, v in outline.items())
