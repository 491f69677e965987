"""The README's PyTorch and ONNX Runtime blocks run as written: each block, taken from README.md,
runs as a script of its own against this test's daemon; what the test adds before it (the file
and the input the block names) and after it (the check of its answer) is kept apart."""
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
SECTION = "#### PyTorch and ONNX Runtime"


def blocks():
    """The python blocks of the README's section on PyTorch and ONNX Runtime."""
    text = README.read_text()
    start = text.index(SECTION)
    end = text.index("\n#### ", start + len(SECTION))
    return re.findall(r"```python\n(.*?)```", text[start:end], re.S)


def run(tmp_path, before, block, after):
    script = tmp_path / "example.py"
    script.write_text("\n".join([textwrap.dedent(before), block, textwrap.dedent(after)]))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(pathlib.Path(__file__).parent), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-4000:]
    assert "checked" in r.stdout, r.stdout[-4000:]


def test_the_readme_has_both_blocks():
    torch_block, onnx_block = blocks()
    assert "torch.nn.TransformerEncoder" in torch_block
    assert "ort.InferenceSession" in onnx_block


def test_the_pytorch_block(daemon, tmp_path):
    pytest.importorskip("torch")
    run(tmp_path, "", blocks()[0], """
        import numpy as np
        with torch.no_grad():
            want = make_encoder()(x).numpy()
        np.testing.assert_allclose(h.numpy(), want, rtol=1e-4, atol=1e-5)
        assert h.data_ptr() == y.ctypes.data and y.shape == (8, 16, 64)
        print("checked")
        """)


def test_the_onnx_runtime_block(daemon, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    run(tmp_path, """
        # What the block names: model.onnx (y = x @ W + b, from tests/python/pymodels.py's
        # graph) and x.
        import numpy as np
        import pymodels
        with open("model.onnx", "wb") as f:
            f.write(pymodels.onnx_model())
        x = np.random.default_rng(5).standard_normal((6, 8)).astype(np.float32)
        """, blocks()[1], """
        w, b = pymodels.onnx_weights()
        np.testing.assert_allclose(y, x @ w + b, rtol=1e-5, atol=1e-5)
        print("checked")
        """)
