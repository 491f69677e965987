"""The wheel of `make wheel` (dist/modelshare-*-manylinux*.whl) on a machine that never built
anything: installed into a fresh virtualenv inside a mount namespace that hides the compiler, the
headers, the -dev packages, the system's copies of the libraries the wheel carries and this
checkout (hide.py says how), a Shared model serves 4 processes from it. And a source build that
lacks libraries fails at once, naming them all and the command that installs them.
Run by `make test-packaging` (after `make wheel`)."""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import hide
from conftest import HERE, ROOT
from testlib import mlp_reference, save_mlp

WHEELS = sorted((ROOT / "dist").glob("modelshare-*-manylinux*.whl"))


def base_python():
    """The interpreter this virtualenv was made from: a fresh virtualenv is made from it too."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


@pytest.fixture
def wheel():
    if not WHEELS:
        pytest.skip("no dist/modelshare-*-manylinux*.whl: run make wheel "
                    "(make test-packaging does)")
    return WHEELS[-1]


def test_wheel_installs_and_serves_four_processes_without_compiler_or_dev_files(wheel, tmp_path):
    why = hide.available()
    if why:
        pytest.skip(why)
    assert not str(tmp_path).startswith(str(ROOT))
    shutil.copy(wheel, tmp_path)
    shutil.copy(HERE / "serve4.py", tmp_path)
    weights = save_mlp(tmp_path / "m.safetensors", [16, 32, 4], seed=3)
    out = tmp_path / "out"
    out.mkdir()
    venv = tmp_path / "venv"
    sock = tmp_path / "sock" / "modelshared.sock"
    script = f"""
set -e
# Nothing to build with here:
! cc --version >/dev/null 2>&1
! cmake --version >/dev/null 2>&1
test ! -e /usr/include/stdio.h
test ! -e {ROOT}/CMakeLists.txt
{base_python()} -m venv {venv}
{venv}/bin/pip install -q --disable-pip-version-check --only-binary=:all: {tmp_path / wheel.name}
cd {tmp_path}
{venv}/bin/python serve4.py {weights} {out}
{venv}/bin/modelshare status --json > {out}/status.json
"""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path),
           "MODELSHARE_SOCKET": str(sock), "PIP_CACHE_DIR": os.path.expanduser("~/.cache/pip"),
           "LANG": "C.UTF-8"}
    t0 = time.monotonic()
    r = hide.run(["sh", "-c", script], ROOT, env=env, timeout=600)
    took = time.monotonic() - t0
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        assert report["errors"] == [] and report["exitcodes"] == [0] * 4, report
        package = report["package"]
        assert package.startswith(str(venv)), package
        for tag in ("affine", "mlp"):
            m = report["models"][tag]
            assert m["loads"] == 1 and m["leases"] == 4 and len(m["worker_pids"]) == 1, m
        # The daemon and the dense worker are the wheel's programs; the python backend's worker
        # is the virtualenv's python running the wheel's extension.
        exes = report["exes"]
        assert exes[str(report["daemon_pid"])] == f"{package}/modelshared"
        assert exes[str(report["models"]["mlp"]["worker_pids"][0])] == \
            f"{package}/modelshare-worker"
        # The libraries came from the wheel (the system's copies are hidden anyway).
        libs = report["daemon_libs"]
        for name in ("libjansson", "libmicrohttpd"):
            assert any(f"{package}.libs/{name}" in p or f"/modelshare.libs/{name}" in p
                       for p in libs), libs
        assert not any(p.startswith("/usr/lib/x86_64-linux-gnu/libjansson") for p in libs), libs
        w = np.random.default_rng(7).standard_normal((16, 5)).astype(np.float32)
        for i in range(4):
            x = np.load(out / f"x.{i}.npy")
            np.testing.assert_allclose(np.load(out / f"py.{i}.npy"), x @ w + 1, rtol=1e-5,
                                       atol=1e-5)
            np.testing.assert_allclose(np.load(out / f"dense.{i}.npy"), mlp_reference(weights, x),
                                       rtol=1e-4, atol=1e-5)
        status = json.loads((out / "status.json").read_text())
        assert {m["tag"] for m in status["models"]} == {"affine", "mlp"}
        print(f"wheel {wheel.name} ({wheel.stat().st_size / 2**20:.1f} MiB): fresh virtualenv, "
              f"install and 4 processes served in {took:.1f} s without compiler or -dev files")
    finally:
        if report.get("daemon_pid"):
            try:
                os.kill(report["daemon_pid"], 15)
            except ProcessLookupError:
                pass


def test_source_build_without_libraries_says_what_is_missing_first(tmp_path):
    """As a new user without the -dev packages: pkg-config finds none of them."""
    empty = tmp_path / "pkgconfig"
    empty.mkdir()
    env = dict(os.environ, PKG_CONFIG_LIBDIR=str(empty), PKG_CONFIG_PATH="")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation",
                        "--no-deps", "--disable-pip-version-check", "--target",
                        str(tmp_path / "site"), "--config-settings",
                        f"build-dir={tmp_path / 'build'}", str(ROOT / "python")],
                       capture_output=True, text=True, env=env, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if "lacks what the build needs" in line)
    assert first < 40, out  # among the first lines of what pip shows
    message = "\n".join(lines[first:first + 16])
    for what in ("jansson", "openblas", "libmicrohttpd", "make deps",
                 "apt-get install libjansson-dev libopenblas-dev libmicrohttpd-dev"):
        assert what in message, message
