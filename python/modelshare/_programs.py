"""The console scripts `modelshared` and `modelshare` of an installed package: they run the
programs that travel inside it (modelshare/modelshared, modelshare/modelshare), replacing this
Python process, so that `modelshared --foreground` as a container's entrypoint is the daemon itself
(PID 1, its signals and its children)."""
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent


def _exec(name):
    path = HERE / name
    if not os.access(path, os.X_OK):
        sys.exit(f"modelshare: {path} is missing: this installation of the package has no "
                 f"{name} (install the wheel, or pip install ./python from a checkout)")
    os.execv(path, [name, *sys.argv[1:]])


def modelshared():
    _exec("modelshared")


def modelshare():
    _exec("modelshare")
