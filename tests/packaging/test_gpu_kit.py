"""`make gpu-kit`'s folder (build/gpu-kit) as the GPU machine will see it: copied out of the
tree, run with no network (unshare -n), this checkout, the compiler, the headers and the system's
copies of the kit's libraries hidden (hide.py), with a bare python3 that has no numpy, no pytest
and no virtualenv (pyenv's 3.12 when there is one: the GPU machine's version): its run.sh finds
every library of the kit's programs in the kit and reaches "no GPU here" cleanly. Each program
also answers --help from the copy."""
import glob
import os
import shutil
import sys

import pytest

import hide
from conftest import ROOT

KIT = ROOT / "build" / "gpu-kit"


def bare_python():
    for p in sorted(glob.glob("/root/.pyenv/versions/3.12*/bin/python3.12")) + \
            [os.path.realpath(getattr(sys, "_base_executable", sys.executable))]:
        if os.access(p, os.X_OK):
            return p


def test_kit_runs_offline_from_a_copy_and_says_no_gpu(tmp_path):
    if not (KIT / "run.sh").exists():
        pytest.skip("no build/gpu-kit: run make gpu-kit (make test-packaging does)")
    why = hide.available()
    if why:
        pytest.skip(why)
    size = sum(f.stat().st_size for f in KIT.rglob("*") if f.is_file())
    assert size <= 64 << 20, f"{size / 2**20:.1f} MiB"
    kit = tmp_path / "kit"
    shutil.copytree(KIT, kit, symlinks=True)
    py = bare_python()
    script = f"""
set -e
{kit}/build/modelshare --help >/dev/null 2>&1 || test $? -eq 2
{kit}/build/modelshared --help >/dev/null 2>&1 || test $? -eq 2
! {py} -c 'import numpy' 2>/dev/null || echo "note: this python has numpy"
PYTHON={py} {kit}/run.sh
"""
    r = hide.run(["sh", "-c", script], ROOT, unshare=["-n"], timeout=120,
                 env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "gpu-kit: no GPU here (" in r.stdout, r.stdout + r.stderr
    print(f"gpu kit: {size / 2**20:.1f} MiB; {r.stdout.strip()}")
