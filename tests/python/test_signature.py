"""What a model says of its inputs and outputs: names, dtypes and shapes (-1, in Python None, for a
dimension that varies), from Python (Model.named_signature) and from C
(ms_model_inputs_count, ms_model_input, ...: tests/helpers/sigclient.c)."""
import os
import pathlib
import subprocess

import numpy as np
import pytest

import modelshare
import pymodels

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("MODELSHARE_BUILD", ROOT / "build")).resolve()
CLIENT = BUILD / "tests" / "ms-sigclient"
needs_client = pytest.mark.skipif(not CLIENT.exists(), reason=f"{CLIENT} not built (make build)")
try:
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    needs_onnx = pytest.mark.skipif(False, reason="")
except ImportError:  # pragma: no cover
    needs_onnx = pytest.mark.skip(reason="onnx and onnxruntime are not installed")


def c_lines(tag):
    p = subprocess.run([str(CLIENT), tag], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout.splitlines()


@needs_onnx
def test_an_onnx_session_says_its_named_inputs_and_outputs(daemon):
    shared = modelshare.Shared(pymodels.onnx_two_inputs, tag="sig-onnx", keep_alive=60)
    with shared.acquire() as model:
        T = modelshare.TensorInfo
        inputs, outputs = model.named_signature()
        assert inputs == [T("input_ids", "int64", (None, None)), T("scale", "float32", (None, 1))]
        assert outputs == [T("pooled", "float32", (None, 1)), T("ids", "int64", (None, None))]
        # The names are the ones the model is called with.
        ids = np.arange(6, dtype=np.int64).reshape(2, 3)
        pooled, same = model(input_ids=ids, scale=np.full((2, 1), 2, np.float32))
        np.testing.assert_allclose(pooled, [[6], [24]])
        np.testing.assert_array_equal(same, ids)


@needs_onnx
@needs_client
def test_a_c_client_reads_the_names_in_order(daemon):
    modelshare.Shared(pymodels.onnx_two_inputs, tag="sig-onnx-c", keep_alive=60).load()
    assert c_lines("sig-onnx-c") == [
        "input input_ids int64 [-1,-1]", "input scale float32 [-1,1]",
        "output pooled float32 [-1,1]", "output ids int64 [-1,-1]",
        "past the end MS_E_INVAL"]


@needs_client
def test_the_dense_backend_says_its_one_unnamed_tensor_as_before(daemon, mlp):
    shared = modelshare.Shared.dense(str(mlp), tag="sig-dense", keep_alive=60)
    with shared.acquire() as model:
        assert model.signature() == (("float32", (None, 64)), ("float32", (None, 10)))
        assert model.named_signature() == ([modelshare.TensorInfo(None, "float32", (None, 64))],
                                           [modelshare.TensorInfo(None, "float32", (None, 10))])
    assert c_lines("sig-dense") == ["input - float32 [-1,64]", "output - float32 [-1,10]",
                                    "past the end MS_E_INVAL"]


def plain():
    return lambda a, b: a + b


@needs_client
def test_a_python_model_that_does_not_say_has_none(daemon):
    shared = modelshare.Shared(plain, tag="sig-plain", keep_alive=60)
    with shared.acquire() as model:
        assert model.named_signature() == ([], [])
        assert model.signature() == (("unknown", ()), ("unknown", ()))  # as before
    assert c_lines("sig-plain") == ["past the end MS_E_INVAL"]
