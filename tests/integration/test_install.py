"""An installed tree (cmake --install) works on its own: pkg-config builds a client, and that
client starts the installed daemon from the tree's bin/ folder."""
import os
import shutil
import subprocess

from conftest import BUILD, ROOT


def test_installed_tree_builds_and_autostarts(ms):
    prefix = ms.tmp / "prefix"
    subprocess.run(["cmake", "--install", str(BUILD), "--prefix", str(prefix)], check=True,
                   capture_output=True)
    pcdir = next(prefix.rglob("modelshare.pc")).parent
    env = dict(ms.env, PKG_CONFIG_PATH=str(pcdir))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "modelshare"], env=env,
                           check=True, capture_output=True, text=True).stdout.split()
    exe = ms.tmp / "hello"
    cc = os.environ.get("CC", "cc")
    extra = ["-fsanitize=address,undefined"] if os.environ.get("MODELSHARE_SANITIZED") else []
    subprocess.run([cc, str(ROOT / "examples" / "hello.c"), *flags, *extra,
                    f"-Wl,-rpath,{pcdir.parent}", "-o", str(exe)], check=True, env=env)
    weights = ms.make_dense("w.safetensors", [16, 8])
    r = subprocess.run([str(exe), str(weights)], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("output [2, 8]:")
    # The daemon that answered is the installed one, not the build folder's.
    pid = ms.daemon_pid()
    assert os.path.realpath(f"/proc/{pid}/exe").startswith(str(prefix.resolve()))
    shutil.rmtree(prefix)
