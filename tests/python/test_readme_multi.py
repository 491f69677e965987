"""The README's blocks on several tensors and text run as written: each block, taken from
README.md, runs as a script of its own against this test's daemon; the check of its answer is
added after it."""
import pathlib
import re

import pytest

from test_readme_frameworks import run

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
SECTION = "#### Several tensors, and text"


def blocks():
    text = README.read_text()
    start = text.index(SECTION)
    end = text.index("\n#### ", start + len(SECTION))
    return re.findall(r"```python\n(.*?)```", text[start:end], re.S)


def test_the_two_input_transformer_block(daemon, tmp_path):
    pytest.importorskip("torch")
    run(tmp_path, "", blocks()[0], """
        import numpy as np
        with torch.inference_mode():
            want = Encoder().eval()(ids, mask)
        assert list(out) == ["last_hidden_state", "pooled"]
        np.testing.assert_allclose(pooled, want["pooled"].numpy(), rtol=1e-4, atol=1e-5)
        assert pooled.shape == (4, 64) and not pooled.flags.owndata
        print("checked")
        """)


def test_the_text_embedder_block(daemon, tmp_path):
    run(tmp_path, "", blocks()[1], """
        want = make_embedder()(["the cat sat", "on a mat", "a dog barked"])
        np.testing.assert_allclose(vectors, want, rtol=1e-6)
        assert vectors.shape == (3, 64)
        print("checked")
        """)
