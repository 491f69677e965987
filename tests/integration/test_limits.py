"""Limits that fail one client, not everyone: a daemon, a worker or a client short of file
descriptors refuses the one acquire or connection that needs more with MS_E_LIMIT naming its
RLIMIT_NOFILE, and every other client keeps its leases and its answers; the daemon's log says so a
few times, not once per refusal (tests/helpers/abuseclient.c: fdflood, fdself)."""
import json
import resource
import subprocess
import time

from conftest import BUILD, wait_until

ABUSECLIENT = BUILD / "tests" / "ms-abuseclient"
DAEMON = BUILD / "modelshared"
IDENTITY = json.dumps({"backend": "identity", "keep_alive": 600})


def nofile(n):
    """A preexec_fn: the child's RLIMIT_NOFILE is n (soft and hard)."""
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


def start_daemon(ms, limit):
    """This test's daemon, started by hand under `ulimit -n limit` (it daemonizes)."""
    subprocess.run([str(DAEMON), "--socket", str(ms.socket)], env=ms.env, check=True,
                   preexec_fn=nofile(limit), timeout=30)
    wait_until(lambda: ms.daemon_pid() is not None, timeout=30, what="daemon start")


def roomy():
    """A preexec_fn: the flooding client itself has all the descriptors it may have."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Held:
    """An ms-abuseclient process that holds what it acquired until its stdin ends."""

    def __init__(self, ms, *args, preexec_fn=None):
        self.proc = subprocess.Popen([str(ABUSECLIENT), *map(str, args)], env=ms.env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
        self.lines = {}

    def read_until(self, key):
        while key not in self.lines:
            line = self.proc.stdout.readline()
            assert line, f"ms-abuseclient ended early: {self.proc.stderr.read()}"
            k, _, v = line.strip().partition(" ")
            self.lines.setdefault(k, v)
        return self.lines

    def end(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()
        assert self.proc.returncode == 0


def limit_lines(log):
    return [ln for ln in log.splitlines() if "limit of open files" in ln]


def flood(ms, tag, n):
    """ms-abuseclient fdflood: its report, and how long it took to get it."""
    began = time.monotonic()
    held = Held(ms, "fdflood", tag, IDENTITY, n,
                preexec_fn=roomy)
    got = held.read_until("held")
    words = got["ok"].split()
    counts = dict(zip(words[1::2], map(int, words[2::2])), ok=int(words[0]))
    assert counts["other"] == 0, got["other"]
    assert counts["ok"] > 0 and counts["limit"] > 0, got
    assert counts["infer"] == counts["ok"], got  # every client that was let in is served
    assert "RLIMIT_NOFILE = " in got["limit"] and "ulimit -n" in got["limit"], got["limit"]
    return held, got, counts, time.monotonic() - began


def test_daemon_and_worker_short_of_descriptors_refuse_one_client_and_keep_the_others(ms):
    start_daemon(ms, 64)
    ms.cli("load", "fd", "--spec", IDENTITY)
    worker = ms.model("fd")["worker_pids"][0]
    # First the worker at a limit of its own, lower than the daemon's.
    resource.prlimit(worker, resource.RLIMIT_NOFILE, (32, 64))
    held, got, counts, elapsed = flood(ms, "fd", 100)
    assert "the worker of model \"fd\"" in got["limit"] and "= 32" in got["limit"], got
    held.end()
    # Then the daemon's own limit.
    resource.prlimit(worker, resource.RLIMIT_NOFILE, (64, 64))
    held, got, counts2, elapsed2 = flood(ms, "fd", 300)
    assert got["limit"].startswith("refusing a new client: modelshared is at its limit") and \
        "RLIMIT_NOFILE = 64" in got["limit"], got["limit"]
    held.end()
    m = ms.model("fd")
    assert m["state"] == "ready" and m["worker_pids"] == [worker] and m["leases"] == 0
    # Rate-limited: at most one line a second of each kind, never one per refusal.
    lines = limit_lines(ms.log())
    refused = counts["limit"] + counts2["limit"]
    assert 0 < len(lines) <= 2 * (elapsed + elapsed2 + 4), "\n".join(lines[:20])
    assert len(lines) * 10 < refused, (len(lines), refused)
    # The worker takes new clients again once the others left.
    s = ms.session("fd", json.loads(IDENTITY))
    assert s.ok, s.first


def test_a_client_at_its_own_limit_gets_ms_e_limit_and_keeps_its_connection(ms):
    ms.cli("load", "own", "--spec", IDENTITY)
    held = Held(ms, "fdself", "own", IDENTITY, 1000, preexec_fn=nofile(48))
    got = held.read_until("held")
    assert "this process" in got["limit"] and "RLIMIT_NOFILE = 48" in got["limit"], got
    assert got["again"] == "ok", got
    n = int(got["held"])
    assert int(got["infer"]) == n
    # The daemon counts the leases the client holds: none granted whose doors never came.
    assert ms.model("own")["leases"] == n
    held.end()
    assert ms.model("own")["leases"] == 0


def test_the_model_count_limit_evicts_idle_models_in_lru_order_before_refusing(ms):
    """300 idle models (identity: cheap), then a 301st: the least recently used idle ones make
    room (256 at most count); one with a lease is never evicted; none is refused."""
    held = ms.session("m0", json.loads(IDENTITY))  # m0 is the oldest, but in use
    assert held.ok, held.first
    for i in range(1, 301):
        r = ms.cli("load", f"m{i}", "--spec", IDENTITY, check=False)
        assert r.returncode == 0, f"m{i}: {r.stderr}"
    evicted = [ln.split('model "', 1)[1].split('"', 1)[0] for ln in ms.log().splitlines()
               if "at the limit of 256 models" in ln]
    # 301 models were registered, 256 may count: the 45 oldest idle ones went, oldest first.
    assert evicted == [f"m{i}" for i in range(1, 46)], evicted
    wait_until(lambda: len(ms.status()["models"]) == 256, timeout=60, what="evicted models gone")
    tags = {m["tag"] for m in ms.status()["models"]}
    assert "m0" in tags and "m300" in tags and "m45" not in tags and "m46" in tags
    assert ms.model("m0")["leases"] == 1


def test_a_client_writing_garbage_into_its_ring_does_not_flood_the_log(ms):
    began = time.monotonic()
    r = subprocess.run([str(ABUSECLIENT), "garbage", "junk", IDENTITY, "3000"], env=ms.env,
                       capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - began
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
    lines = [ln for ln in ms.log().splitlines() if "published slot 999" in ln]
    # 3000 bad entries, each a warning: at most one line a second, each counting the others.
    assert 0 < len(lines) <= elapsed + 2, len(lines)
    assert any("suppressed" in ln for ln in lines) or len(lines) == 1, lines[:3]
