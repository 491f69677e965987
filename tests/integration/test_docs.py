"""Every C and sh block of README.md and docs/*.md runs as written (tests/docblocks.py finds
them), against the build in $MODELSHARE_BUILD and this test's daemon: a C block compiled against
the built library, an sh block run by bash -e in a folder where `build/` is that build. What the
test writes before a block (the files it names) and checks after it is kept apart, chosen by the
block's `<!-- doc-test: NAME -->` marker. The python blocks run in tests/python/test_docs.py."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import BUILD, ROOT
from testlib import mlp_reference

sys.path.insert(0, str(ROOT / "tests"))
from docblocks import blocks  # noqa: E402

C_PRELUDE = """\
#include <stdint.h>
#include <stdio.h>
{includes}

static void fill(float *p) /* what the block calls: 8 rows of 1024 */
{{
    for (int i = 0; i < 8 * 1024; i++)
        p[i] = (float)(i % 7) / 7.0f;
}}

int main(void)
{{
{body}
    return rc;
}}
"""


def c_fragment(ms, block):
    """Statements of a function: wrapped in main() beside their includes and a fill()."""
    ms.make_dense("mlp.safetensors", [1024, 64, 10], seed=3)
    lines = block.code.splitlines()
    includes = "\n".join(x for x in lines if x.startswith("#include"))
    body = "\n".join(x for x in lines if not x.startswith("#include"))
    src = ms.tmp / "block.c"
    src.write_text(C_PRELUDE.format(includes=includes, body=body))
    exe = ms.tmp / "block"
    extra = ["-fsanitize=address,undefined"] if os.environ.get("MODELSHARE_SANITIZED") else []
    subprocess.run([os.environ.get("CC", "cc"), "-std=c11", "-Wall", "-Werror", str(src),
                    f"-I{ROOT / 'include'}", f"-I{BUILD / 'include'}", f"-L{BUILD}",
                    "-lmodelshare", f"-Wl,-rpath,{BUILD}", *extra, "-o", str(exe)], check=True)
    r = subprocess.run([str(exe)], cwd=ms.tmp, env=ms.env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    m = ms.model("mlp")
    assert m["loads"] == 1 and m["requests"] >= 1 and m["leases"] == 0, m


def sh(ms, block):
    (ms.tmp / "build").symlink_to(BUILD)
    r = subprocess.run(["bash", "-e", "-c", block.code], cwd=ms.tmp, env=ms.env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return r


def cli(ms, block):
    x = np.random.default_rng(2).standard_normal((3, 1024)).astype(np.float32)
    np.save(ms.tmp / "x.npy", x)               # what the block names: x, float32 [batch, 1024]
    r = sh(ms, block)
    assert "mlp" in r.stdout, r.stdout          # status lists it
    np.testing.assert_allclose(np.load(ms.tmp / "y.npy"),
                               mlp_reference(ms.tmp / "mlp.safetensors", x), rtol=1e-4, atol=1e-4)
    assert ms.model("mlp") is None              # unloaded


def swap(ms, block):
    for seed, name in enumerate(["v1", "v2", "v3"]):   # what the block names: three versions
        ms.make_dense(f"{name}.safetensors", [16, 32, 8], seed=seed)
    sh(ms, block)
    m = ms.model("mlp")
    assert m["version"] == "2" and m["spec"]["weights"].endswith("v3.safetensors"), m


CASES = {"c-fragment": c_fragment, "cli": cli, "swap": swap}
RUN = [b for b in blocks({"c", "sh"}) if not b.skip]


def test_every_c_and_sh_block_is_run_or_says_why_not():
    for b in blocks({"c", "sh"}):
        assert b.skip or b.name in CASES, f"{b.id}: no doc-test case and no not-run reason"
        assert not b.skip or re.search(r"\w", b.skip)
    assert {b.name for b in RUN} == set(CASES), "a case without its block"


@pytest.mark.parametrize("block", RUN, ids=[b.id for b in RUN])
def test_c_and_sh_block(ms, block):
    CASES[block.name](ms, block)
