"""A long load made visible: `status --json` gives a loading model's phase (here the python
backend's constructor runs), and `modelshare load` adds no progress line when its output is piped,
one on a terminal."""
import functools
import os
import pathlib
import pty
import select
import subprocess

import modelshare
import pymodels
import pytest

from conftest import ROOT, wait_until

CLI = pathlib.Path(os.environ.get("MODELSHARE_BUILD", ROOT / "build")) / "modelshare"


def loading(tag):
    for m in modelshare.status()["models"]:
        if m["tag"] == tag and m["state"] == "loading":
            return m
    return None


@pytest.fixture
def slow(daemon, tmp_path):
    """A spec whose constructor waits for a file; yields (spec JSON, the file)."""
    if not CLI.exists():
        pytest.skip(f"{CLI} is missing: build first (make build)")
    flag = tmp_path / "go"
    shared = modelshare.Shared(functools.partial(pymodels.WaitsForFile, str(flag)), tag="slow")
    modelshare.status()  # the package's daemon, started
    yield shared._spec_json(), flag


def test_status_shows_the_phase_and_a_piped_load_prints_no_progress(slow):
    spec, flag = slow
    p = subprocess.Popen([str(CLI), "load", "slow", "--spec", spec], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    m = wait_until(lambda: (m := loading("slow")) and m.get("load_phase") == "constructing" and m,
                   what="the constructor's phase in status")
    assert m["instances"][0]["load_phase"] == "constructing"
    flag.touch()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert out == "loaded slow\n"
    assert err == ""
    m = [m for m in modelshare.status()["models"] if m["tag"] == "slow"][0]
    assert m["state"] == "ready" and "load_phase" not in m


def test_load_on_a_terminal_shows_the_phase_then_erases_it(slow):
    spec, flag = slow
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(str(CLI), [str(CLI), "load", "slow", "--spec", spec])
    seen = b""
    try:
        while b"constructing" not in seen:
            r, _, _ = select.select([fd], [], [], 60)
            assert r, f"no progress line on the terminal: {seen!r}"
            seen += os.read(fd, 4096)
        flag.touch()
        while b"loaded slow" not in seen:
            r, _, _ = select.select([fd], [], [], 60)
            assert r, seen
            seen += os.read(fd, 4096)
    finally:
        flag.touch()  # a failed test does not wait out the constructor
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b"slow loading: constructing" in seen
    # The line is erased before the result is printed.
    assert seen.rindex(b"\r\x1b[K") < seen.index(b"loaded slow")
