"""The installed package is complete on its own: it starts its own daemon and worker, with no
build tree anywhere to be found."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np

from conftest import ROOT, mlp_reference, save_mlp

SCRIPT = """
import json, sys
import numpy as np
import modelshare
x = np.load(sys.argv[2])
with modelshare.Shared.dense(sys.argv[1], tag="standalone").acquire() as model:
    np.save(sys.argv[3], model(x))
s = modelshare.status()
print(json.dumps({"package": modelshare.__file__, "daemon_pid": s["daemon_pid"],
                  "worker_pids": s["models"][0]["worker_pids"]}))
"""


def run_standalone(daemon, pythonpath=None):
    weights = save_mlp(daemon.tmp / "m.safetensors", [16, 32, 4], seed=3)
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    np.save(daemon.tmp / "x.npy", x)
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"),
           "MODELSHARE_SOCKET": str(daemon.socket), "MODELSHARE_IDLE_EXIT": "0"}
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(weights), str(daemon.tmp / "x.npy"),
                        str(daemon.tmp / "y.npy")], env=env, cwd=daemon.tmp,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    np.testing.assert_allclose(np.load(daemon.tmp / "y.npy"), mlp_reference(weights, x),
                               rtol=1e-4, atol=1e-5)
    package = pathlib.Path(info["package"]).parent
    # The daemon and the worker that answered are the package's own programs.
    assert os.path.realpath(f"/proc/{info['daemon_pid']}/exe") == str(package / "modelshared")
    for pid in info["worker_pids"]:
        assert os.path.realpath(f"/proc/{pid}/exe") == str(package / "modelshare-worker")
    return package


def test_installed_package_starts_its_own_daemon(daemon):
    package = run_standalone(daemon)
    assert not str(package).startswith(str(ROOT / "build"))


def test_pip_install_from_a_clean_copy_works_without_the_sources(daemon):
    # What a clean clone holds: the files git knows (committed or not yet), nothing built.
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"],
                           check=True, capture_output=True, text=True).stdout.split("\n")
    src = daemon.tmp / "src"
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    site = daemon.tmp / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--no-build-isolation", "--disable-pip-version-check",
                        "--target", str(site), str(src / "python")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    shutil.rmtree(src)  # the sources and the build folder go: the package stands alone
    package = run_standalone(daemon, pythonpath=site)
    assert package == site / "modelshare"
