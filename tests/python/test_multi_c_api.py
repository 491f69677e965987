"""ms_infer_n from C (tests/helpers/multiclient.c) through the real daemon and a python worker:
named tensors and a list of strings in, a dict of a tensor and a list out; the dense backend,
which takes one tensor, refuses it with a message."""
import os
import pathlib
import subprocess

import numpy as np
import pytest

import modelshare

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("MODELSHARE_BUILD", ROOT / "build")).resolve()
CLIENT = BUILD / "tests" / "ms-multiclient"

pytestmark = pytest.mark.skipif(not CLIENT.exists(), reason=f"{CLIENT} not built (make build)")


class Echo:
    """Answers a dict: a * 2 plus b as a column, and the texts upper-cased."""

    def __call__(self, a, b, texts):
        return {"y": a * 2 + b[:, None].astype(np.float32), "upper": [t.upper() for t in texts]}


def make_echo():
    return Echo()


def run(tag):
    p = subprocess.run([str(CLIENT), tag], capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout.splitlines()


def test_a_c_client_calls_a_python_model_with_named_tensors_and_text(daemon):
    shared = modelshare.Shared(make_echo, tag="echo-c", keep_alive=60)
    shared.load()
    code, lines = run("echo-c")
    assert code == 0, lines
    assert lines == ["form 2 outputs 2", "y float32 [2,3] 7 9 11 14 16 18",
                     "upper text [2] HÉLLO X"]


def test_the_dense_backend_takes_one_tensor(daemon, mlp):
    modelshare.Shared.dense(str(mlp), tag="dense-c", keep_alive=60).load()
    code, lines = run("dense-c")
    assert code == 1
    assert lines[0].startswith("error MS_E_INVAL the dense backend takes one tensor"), lines
