"""Control calls of one process run concurrently: while one thread of a client waits for a load,
the other threads of that client (the same connection) do their status, acquire, calls and
release (tests/helpers/concurclient.c). Before, the client sent one request at a time and the
daemon read a connection's next request only once the pending one was answered: the second
thread waited for the whole load. No timed assertions: each bound only proves "does not hang"."""
import functools
import json
import selectors
import subprocess
import sys

from conftest import BUILD, ROOT, wait_until

sys.path.insert(0, str(ROOT / "tests" / "python"))
import modelshare  # noqa: E402
import pymodels  # noqa: E402

CONCURCLIENT = BUILD / "tests" / "ms-concurclient"
FAST = json.dumps({"backend": "identity", "keep_alive": 600})


def waits_for(flag, tag):
    """The spec of a python model y = x whose constructor returns once flag exists (it gives up
    after 120 s, and its load_timeout is longer: the bound of each line read below is shorter)."""
    shared = modelshare.Shared(functools.partial(pymodels.WaitsForFile, str(flag)), tag=tag,
                               load_timeout=300)
    return shared._spec_json()


def start(ms, *args):
    return subprocess.Popen([str(CONCURCLIENT), *args], env=ms.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def line(p, bound=90):
    """p's next line; fails when none comes within bound seconds (a client that hangs)."""
    with selectors.DefaultSelector() as sel:
        sel.register(p.stdout, selectors.EVENT_READ)
        assert sel.select(bound), f"no line from ms-concurclient within {bound} s"
    return p.stdout.readline().strip()


def stop(p):
    if p.poll() is None:
        p.kill()
    p.wait()


def test_a_threads_control_calls_go_on_while_another_thread_of_its_client_waits(ms, tmp_path):
    flag = tmp_path / "loaded"
    p = start(ms, "one", "slow", waits_for(flag, "slow"), "fast", FAST)
    try:
        # Before, the second thread's status waited for the first thread's acquire: no line came
        # until the constructor gave up.
        assert line(p) == "second done; first waits"
        assert ms.model("slow")["state"] == "loading"
        flag.write_text("go")
        assert line(p) == "first ok"
        assert p.wait(timeout=60) == 0, p.stderr.read()
    finally:
        stop(p)


def test_two_threads_of_one_client_wait_for_two_loads_at_once(ms, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    p = start(ms, "two", "slow-a", waits_for(a, "slow-a"), "slow-b", waits_for(b, "slow-b"))
    try:
        # Both acquires are in the daemon at once: before, the second stayed in the client until
        # the first was answered, and the daemon never saw "slow-b".
        wait_until(lambda: [(ms.model(t) or {}).get("state") for t in ("slow-a", "slow-b")]
                   == ["loading", "loading"], timeout=60, what="both loads to begin")
        a.write_text("go")
        b.write_text("go")
        assert line(p) == "both ok"
        # Each lease was released: the daemon holds none for the client.
        assert [ms.model(t)["leases"] for t in ("slow-a", "slow-b")] == [0, 0]
        assert p.wait(timeout=60) == 0, p.stderr.read()
    finally:
        stop(p)
