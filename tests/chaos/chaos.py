"""The chaos and load suite: clients, workers and the daemon killed at random, load from many
processes, and clients that stall the control socket. Each scenario runs with a fixed seed
(printed), prints its figures and returns the losses it saw; the same code runs the short counts
(tests/chaos/test_chaos.py, in make test) and the full ones (make chaos):

    MODELSHARE_BUILD=build .venv/bin/python tests/chaos/chaos.py [--full] [--seed N]
        [--only NAME[,NAME]] [--results FILE]

Every scenario gets a private daemon (the integration tests' Modelshare: its own socket in a
fresh directory) and drives ms-chaosclient processes (tests/helpers/chaosclient.c).
"""
import argparse
import importlib.util
import json
import os
import pathlib
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from testlib import pid_alive, wait_until  # noqa: E402


def _integration():
    """tests/integration/conftest.py under a name of its own: its Modelshare and ms fixture."""
    spec = importlib.util.spec_from_file_location(
        "ms_integration_conftest", ROOT / "tests" / "integration" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


INTEGRATION = _integration()
Modelshare = INTEGRATION.Modelshare
BUILD = INTEGRATION.BUILD
CHAOS = BUILD / "tests" / "ms-chaosclient"

# Counts of each scenario: "short" runs in make test (a few seconds each), "full" in make chaos.
COUNTS = {
    "short": {"client_kills": 40, "worker_kills": 4, "daemon_kills": 3,
              "load": (8, 1000), "stall": (4, 200), "stops": 3},
    "full": {"client_kills": 1000, "worker_kills": 100, "daemon_kills": 20,
             "load": (32, 20000), "stall": (16, 2000), "stops": 20},
}
IDENTITY = {"backend": "identity", "keep_alive": 3600}
RSS_SLACK_KIB = 4096  # the daemon's RSS may end this much above its start figure (malloc's pools)
CALL_BOUND_S = 10.0   # the longest any one call may take before it counts as a hang
PHASES = {"c": "connect", "a": "acquire", "t": "tensor", "i": "infer", "r": "release",
          "d": "disconnect", "\0": "exec"}


def say(*args):
    print(*args, flush=True)


def pct(values, q):
    return float(np.percentile(values, q)) if len(values) else float("nan")


class Client:
    """One ms-chaosclient process; its stdout lines are collected as they come."""

    def __init__(self, env, *args):
        self.proc = subprocess.Popen([str(CHAOS), *map(str, args)], env=env, text=True,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.lines = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.lock:
                self.lines.append(line.rstrip("\n"))

    def count(self, prefix):
        with self.lock:
            return sum(1 for x in self.lines if x.startswith(prefix))

    def stamps(self, *prefixes):
        """The times (CLOCK_MONOTONIC ns, the last word) of the lines that start with a prefix."""
        with self.lock:
            return [int(x.split()[-1]) for x in self.lines if x.startswith(prefixes)]

    def last(self, prefix):
        with self.lock:
            found = [x for x in self.lines if x.startswith(prefix)]
        return found[-1] if found else None

    def finish(self, timeout=60, term=True):
        """Stops the process (SIGTERM when term) and returns its last JSON line, or None."""
        if term and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=10)
        return self.summary()

    def summary(self):
        with self.lock:
            for line in reversed(self.lines):
                if line.startswith("{"):
                    return json.loads(line)
        return None

    def output(self):
        with self.lock:
            return "\n".join(self.lines[-20:])


# --- what the daemon holds ----------------------------------------------------------------

def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def arena_maps(pid):
    """Distinct client arenas mapped in a process."""
    with open(f"/proc/{pid}/maps") as f:
        return len({tuple(x.split()[3:5]) for x in f if "modelshare-arena" in x})


def shm_files():
    return set(os.listdir("/dev/shm"))


def shm_held(pids):
    """/dev/shm files that these processes map or hold open."""
    held = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as f:
                held |= {x.split()[-1] for x in f if "/dev/shm/" in x}
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("/dev/shm/"):
                    held.add(target)
        except OSError:
            pass
    return held


def check_shm(before, pids, losses):
    """Nothing of ours left in /dev/shm (other users' files on a shared machine are not ours)."""
    new = {n for n in shm_files() - before if "modelshare" in n or n.startswith("ms")}
    new |= shm_held(pids)
    if new:
        losses.append(f"files left in /dev/shm: {sorted(new)}")
    return len(new)


def model_of(ms, tag):
    return ms.model(tag)


def snapshot(ms, tag):
    st = ms.status()
    m = next(x for x in st["models"] if x["tag"] == tag)
    pid = st["daemon_pid"]
    return {"daemon_pid": pid, "fds": fd_count(pid), "rss_kib": rss_kib(pid),
            "clients": st["clients"], "leases": sum(x["leases"] for x in st["models"]),
            "worker_pids": list(m["worker_pids"]),
            "arenas": sum(arena_maps(w) for w in m["worker_pids"])}


# --- 1: clients killed at random points -----------------------------------------------------

def client_kills(ms, n, seed, parallel=4):
    """n clients kill -9'd at random points of connect/acquire/infer/release: the daemon keeps
    its pid and answers, and leases, clients, fds, worker arenas, RSS and /dev/shm come back to
    their start figures."""
    rng = random.Random(seed)
    losses, figures = [], {"kills": 0}
    tag = "kills"
    ms.cli("load", tag, "--spec", json.dumps(IDENTITY))
    phase_files = []
    for k in range(parallel):
        p = ms.tmp / f"phase{k}"
        p.write_bytes(b"\0" * 4096)
        phase_files.append(p)
    shm0 = shm_files()
    spec = json.dumps(IDENTITY)
    # One round first, so that what the daemon allocates once is there before the start figure.
    _kill_round(ms, tag, spec, rng, phase_files[:1], 0.05, seed, {}, losses)
    wait_until(lambda: (lambda f: f["leases"] == 0 and f["arenas"] == 0)(snapshot(ms, tag)),
               timeout=20, what="warm-up: no lease, no arena left in the worker")
    start = snapshot(ms, tag)
    say(f"  start: daemon {start['daemon_pid']} fds {start['fds']} rss {start['rss_kib']} KiB "
        f"clients {start['clients']} arenas {start['arenas']}")
    phases = {}
    t0 = time.monotonic()
    while figures["kills"] < n and len(losses) < 5:
        batch = phase_files[:min(parallel, n - figures["kills"])]
        figures["kills"] += _kill_round(ms, tag, spec, rng, batch, 0.04, seed + figures["kills"],
                                        phases, losses)
        if figures["kills"] % 100 < parallel and ms.daemon_pid() != start["daemon_pid"]:
            losses.append(f"the daemon {start['daemon_pid']} is gone after "
                          f"{figures['kills']} kills")
            break
    figures["kill_s"] = round(time.monotonic() - t0, 1)
    figures["phases"] = dict(sorted(phases.items()))
    end = _settle(ms, tag, start)
    figures["start"], figures["end"] = start, end
    _compare_figures(start, end, losses)
    figures["shm_left"] = check_shm(shm0, [end["daemon_pid"], *end["worker_pids"]], losses)
    # The model still serves, and serves right.
    c = Client(ms.env, "load", tag, spec, seed, 200, ms.tmp / "after.lat", 0)
    s = c.finish(timeout=60, term=False)
    if not s or s["ok"] != 200:
        losses.append(f"after the kills, 200 checked requests gave {s}: {c.output()}")
    say(f"  {figures['kills']} kills in {figures['kill_s']} s, by phase {figures['phases']}")
    say(f"  end: daemon {end['daemon_pid']} fds {end['fds']} rss {end['rss_kib']} KiB "
        f"(+{end['rss_kib'] - start['rss_kib']}) clients {end['clients']} leases {end['leases']} "
        f"arenas {end['arenas']} shm left {figures['shm_left']}")
    return figures, losses


def _kill_round(ms, tag, spec, rng, phase_files, max_delay, seed, phases, losses):
    """Starts one cycle client per phase file, kills each at a random time; returns the kills."""
    clients = []
    for k, pf in enumerate(phase_files):
        pf.write_bytes(b"\0" * 4096)
        clients.append((rng.uniform(0.002, max_delay), pf,
                        Client(ms.env, "cycle", tag, spec, seed * 16 + k, pf)))
    t0 = time.monotonic()
    kills = 0
    for delay, pf, c in sorted(clients, key=lambda x: x[0]):
        time.sleep(max(0.0, t0 + delay - time.monotonic()))
        if c.proc.poll() is not None:
            losses.append(f"a cycle client stopped by itself ({c.proc.returncode}): "
                          f"{c.output()}")
            continue
        c.proc.kill()
        c.proc.wait()
        kills += 1
        name = PHASES.get(pf.read_bytes()[:1].decode(errors="replace"), "?")
        phases[name] = phases.get(name, 0) + 1
    for _, _, c in clients:
        c.finish(timeout=10, term=False)
    return kills


def _settle(ms, tag, start):
    """Waits (up to 20 s) for the figures to come back to start's; returns the last ones."""
    last = {}

    def back():
        last.update(snapshot(ms, tag))
        return (last["leases"] == 0 and last["clients"] == start["clients"]
                and last["fds"] <= start["fds"] and last["arenas"] <= start["arenas"])
    try:
        wait_until(back, timeout=20, interval=0.2, what="the daemon's figures")
    except AssertionError:
        pass
    return dict(last)


def _compare_figures(start, end, losses):
    for key in ("daemon_pid", "worker_pids", "clients"):
        if end[key] != start[key]:
            losses.append(f"{key}: {start[key]} at the start, {end[key]} at the end")
    for key in ("fds", "arenas"):  # a leak is more at the end; fewer is not
        if end[key] > start[key]:
            losses.append(f"{key}: {start[key]} at the start, {end[key]} at the end")
    if end["leases"] != 0:
        losses.append(f"{end['leases']} leases left")
    # Under ASan freed memory waits in its quarantine: RSS says nothing there; LeakSanitizer's
    # report in the daemon's log (the ms fixture looks) does.
    if not INTEGRATION.SANITIZED and end["rss_kib"] > start["rss_kib"] + RSS_SLACK_KIB:
        losses.append(f"the daemon's RSS grew from {start['rss_kib']} to {end['rss_kib']} KiB "
                      f"(slack {RSS_SLACK_KIB} KiB)")


# --- 2: workers killed mid-batch -----------------------------------------------------------

def start_busy(ms, tag, spec, n, seed, *extra):
    clients = [Client(ms.env, "busy", tag, json.dumps(spec), seed * 100 + k, *extra)
               for k in range(n)]
    wait_until(lambda: all(c.count("connected") for c in clients) or
               any(c.proc.poll() is not None for c in clients), timeout=60,
               what="busy clients connected")
    return clients


def finish_busy(clients, losses, timeouts=False):
    """Stops busy clients and adds up their counts; a loss for each wrong answer, unexpected
    error, hang, and (unless timeouts) MS_E_TIMEOUT."""
    total = {"ok": 0, "wrong": 0, "worker_lost": 0, "daemon_lost": 0, "timeout": 0, "other": 0,
             "max_infer_us": 0, "max_acquire_us": 0, "max_connect_us": 0}
    first_timeout = ""
    for c in clients:
        s = c.finish(timeout=60)
        if s is None:
            losses.append(f"a busy client ended without its counts: {c.output()}")
            continue
        for k in total:
            total[k] = max(total[k], s[k]) if k.startswith("max") else total[k] + s[k]
        if s["wrong"] or s["other"]:
            losses.append(f"a busy client saw {s['wrong']} wrong answers and {s['other']} "
                          f"other errors (first: {s['first_error']})")
        if s["timeout"] and not timeouts:
            losses.append(f"a busy client saw {s['timeout']} MS_E_TIMEOUT (first: "
                          f"{s['first_timeout']})")
        first_timeout = first_timeout or s["first_timeout"]
    for k in ("max_infer_us", "max_acquire_us", "max_connect_us"):
        if total[k] > CALL_BOUND_S * 1e6:
            losses.append(f"a call took {total[k] / 1e6:.1f} s ({k}): a hang")
    if first_timeout:
        total["first_timeout"] = first_timeout
    return total


def worker_kills(ms, n, seed, nclients=8):
    """n workers kill -9'd under nclients busy clients: every request answered right or failed
    with MS_E_WORKER_LOST, and the model serves again after each kill."""
    rng = random.Random(seed)
    losses, figures = [], {"kills": 0, "recovery_s": []}
    w = ms.make_dense("chaos.safetensors", [64, 256, 256, 32], seed=seed)
    tag = "workers"
    spec = {"backend": "dense", "weights": str(w), "instances": 2, "keep_alive": 3600}
    clients = start_busy(ms, tag, spec, nclients, seed)
    for i in range(n):
        time.sleep(rng.uniform(0.05, 0.25))
        m = model_of(ms, tag)
        pids = m["worker_pids"] if m and m["state"] == "ready" else []
        if not pids:
            losses.append(f"before kill {i}: the model is {m and m['state']}, no worker")
            break
        victim = rng.choice(pids)
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        figures["kills"] += 1

        def serving():
            x = model_of(ms, tag)
            # Every instance up again, the victim's replaced (worker_pids lists the instances
            # that are up: with the victim gone alone, the other one would pass at once).
            return (x and x["state"] == "ready" and victim not in x["worker_pids"]
                    and len(x["worker_pids"]) == spec["instances"]
                    and all(pid_alive(p) for p in x["worker_pids"]))
        try:
            wait_until(serving, timeout=30, interval=0.02, what="the model serving again")
        except AssertionError:
            losses.append(f"after kill {i} (worker {victim}) the model did not serve again "
                          f"within 30 s: {model_of(ms, tag)}")
            break
        figures["recovery_s"].append(time.monotonic() - t0)
    total = finish_busy(clients, losses)
    figures.update(total)
    if total["ok"] == 0:
        losses.append("no request was answered")
    rec = figures.pop("recovery_s")
    figures["recovery_p50_s"] = round(pct(rec, 50), 3)
    figures["recovery_max_s"] = round(max(rec), 3) if rec else None
    say(f"  {figures['kills']} worker kills under {nclients} clients: {total['ok']} answered "
        f"right, {total['worker_lost']} MS_E_WORKER_LOST, {total['wrong']} wrong, "
        f"{total['other']} other errors; back to serving p50 {figures['recovery_p50_s']} s, "
        f"max {figures['recovery_max_s']} s; longest infer {total['max_infer_us'] / 1e3:.0f} ms")
    return figures, losses


# --- 3: workers stopped (SIGSTOP) under load: the watchdog ---------------------------------

STUCK_CALL_TIMEOUT_S = 1.5  # the models' call_timeout
STUCK_DEADLINE_MS = 5000    # the clients' deadline on each call (ms_set_timeout)
# A call may end this much past its deadline (a busy 2-core machine; more under the sanitizers).
STUCK_SLACK_S = 5.0 if INTEGRATION.SANITIZED else 2.0


def stuck(ms, n, seed, nmodels=4, per_model=2):
    """n workers SIGSTOPped, one at a time, under busy clients whose calls have a deadline:
    nmodels one-instance dense models with a call_timeout of STUCK_CALL_TIMEOUT_S, per_model
    clients each, the stops going round the models (so that each model's restart back-off,
    which doubles per crash within 60 s, stays that of a few crashes). Every call is answered
    right or fails with MS_E_TIMEOUT naming its model or MS_E_WORKER_LOST within its deadline
    plus STUCK_SLACK_S, the watchdog restarts the stopped instance (one restart in status per
    stop) and the model serves again. Per stop: the time from the SIGSTOP to its callers' first
    error and to the first right answer after it (the restarted instance serving)."""
    rng = random.Random(seed)
    losses, figures = [], {"stops": 0, "first_error_s": [], "serving_s": []}
    w = ms.make_dense("stuck.safetensors", [64, 256, 256, 32], seed=seed)
    spec = {"backend": "dense", "weights": str(w), "instances": 1, "keep_alive": 3600,
            "call_timeout": STUCK_CALL_TIMEOUT_S, "max_restarts": 100}
    tags = [f"stuck{k}" for k in range(min(nmodels, n))]
    clients = {t: start_busy(ms, t, {**spec}, per_model, seed * 10 + k, STUCK_DEADLINE_MS)
               for k, t in enumerate(tags)}
    stops = dict.fromkeys(tags, 0)
    for i in range(n):
        tag = tags[i % len(tags)]
        time.sleep(rng.uniform(0.05, 0.25))
        stamps = _stop_one(ms, tag, clients[tag], i, losses)
        if stamps is None:
            break
        stops[tag] += 1
        figures["stops"] += 1
        figures["first_error_s"].append(stamps[0])
        figures["serving_s"].append(stamps[1])
    for tag in tags:
        m = model_of(ms, tag)
        if not m or m["state"] != "ready" or m["restarts"] != stops[tag]:
            losses.append(f"{tag} after {stops[tag]} stops: {m and m['state']}, "
                          f"{m and m['restarts']} restarts in status")
    total = finish_busy([c for t in tags for c in clients[t]], losses, timeouts=True)
    figures.update(total)
    bound_us = (STUCK_DEADLINE_MS / 1e3 + STUCK_SLACK_S) * 1e6
    if total["max_infer_us"] > bound_us:
        losses.append(f"a call took {total['max_infer_us'] / 1e6:.2f} s, past its deadline of "
                      f"{STUCK_DEADLINE_MS} ms + {STUCK_SLACK_S} s")
    if total["ok"] == 0:
        losses.append("no request was answered")
    for key in ("first_error_s", "serving_s"):
        v = figures.pop(key)
        figures[key.replace("_s", "_p50_s")] = round(pct(v, 50), 3)
        figures[key.replace("_s", "_max_s")] = round(max(v), 3) if v else None
    figures.update(call_timeout_s=STUCK_CALL_TIMEOUT_S, deadline_ms=STUCK_DEADLINE_MS,
                   models=len(tags), clients=len(tags) * per_model)
    say(f"  {figures['stops']} SIGSTOPs of workers (call_timeout {STUCK_CALL_TIMEOUT_S} s) under "
        f"{figures['clients']} clients with a {STUCK_DEADLINE_MS} ms deadline: {total['ok']} "
        f"answered right, {total['timeout']} MS_E_TIMEOUT, {total['worker_lost']} "
        f"MS_E_WORKER_LOST, {total['wrong']} wrong, {total['other']} other errors; stop to the "
        f"first error p50 {figures['first_error_p50_s']} s max {figures['first_error_max_s']} s, "
        f"to serving again p50 {figures['serving_p50_s']} s max {figures['serving_max_s']} s; "
        f"longest infer {total['max_infer_us'] / 1e3:.0f} ms")
    return figures, losses


def _stop_one(ms, tag, clients, i, losses):
    """SIGSTOPs tag's worker and waits for the watchdog's restart and a right answer after its
    callers' first error; returns (seconds to that error, seconds to that answer), or None (a
    loss said why)."""
    m = model_of(ms, tag)
    if not m or m["state"] != "ready" or len(m["worker_pids"]) != 1:
        losses.append(f"before stop {i}: {tag} is {m and m['state']}, workers "
                      f"{m and m['worker_pids']}")
        return None
    victim, restarts = m["worker_pids"][0], m["restarts"]
    t0 = time.monotonic_ns()
    os.kill(victim, signal.SIGSTOP)
    got = {}

    def serving():
        errs = [t for c in clients for t in c.stamps("timeout", "lost worker") if t >= t0]
        served = [t for c in clients for t in c.stamps("served") if errs and t >= min(errs)]
        x = model_of(ms, tag) if served else None  # a status call only once it may be done
        if not (x and x["state"] == "ready" and x["restarts"] > restarts
                and x["worker_pids"] and victim not in x["worker_pids"]):
            return False
        got.update(error=min(errs), served=min(served), restarts=x["restarts"])
        return True
    try:
        wait_until(serving, timeout=STUCK_CALL_TIMEOUT_S + 60, interval=0.02,
                   what="an error, the watchdog's restart and a right answer again")
    except AssertionError:
        losses.append(f"stop {i} (worker {victim} of {tag}): no error, restart and right answer "
                      f"within {STUCK_CALL_TIMEOUT_S + 60} s: {model_of(ms, tag)}; a client: "
                      f"{clients[0].output()}")
        return None
    finally:
        if pid_alive(victim):
            os.kill(victim, signal.SIGCONT)
    if got["restarts"] != restarts + 1:
        losses.append(f"stop {i}: {tag}'s restarts went from {restarts} to {got['restarts']}")
    return round((got["error"] - t0) / 1e9, 3), round((got["served"] - t0) / 1e9, 3)


# --- 4: the daemon killed under load -------------------------------------------------------

def daemon_kills(ms, n, seed, nclients=4):
    """n daemons kill -9'd under nclients busy clients: the clients get MS_E_DAEMON_LOST (every
    call bounded), the workers are gone within a few seconds, the clients' next connect starts
    a new daemon on the same socket, and nothing is left in /dev/shm."""
    rng = random.Random(seed)
    losses = []
    figures = {"kills": 0, "workers_gone_s": [], "new_daemon_s": []}
    tag = "daemon"
    shm0 = shm_files()
    clients = start_busy(ms, tag, IDENTITY, nclients, seed)
    for i in range(n):
        time.sleep(rng.uniform(0.1, 0.4))
        st = ms.status()
        old = st["daemon_pid"]
        workers = [p for m in st["models"] for p in m["worker_pids"]]
        lost0 = [c.count("lost daemon") for c in clients]
        t0 = time.monotonic()
        os.kill(old, signal.SIGKILL)
        figures["kills"] += 1
        try:
            wait_until(lambda: not any(pid_alive(p) for p in workers), timeout=10,
                       interval=0.01, what="the workers' exit")
            figures["workers_gone_s"].append(time.monotonic() - t0)
        except AssertionError:
            losses.append(f"kill {i}: workers {[p for p in workers if pid_alive(p)]} of daemon "
                          f"{old} still run 10 s after it died")
        try:
            wait_until(lambda: all(c.count("lost daemon") > l0 for c, l0 in zip(clients, lost0))
                       and ms.daemon_pid() not in (None, old), timeout=30, interval=0.01,
                       what="every client told and a new daemon")
            new = ms.daemon_pid()
            figures["new_daemon_s"].append(time.monotonic() - t0)
            wait_until(lambda: all(c.last("connected") == f"connected {new}" for c in clients),
                       timeout=30, what="every client on the new daemon")
        except AssertionError as e:
            told = [c.count("lost daemon") - l0 for c, l0 in zip(clients, lost0)]
            losses.append(f"kill {i}: {e}; MS_E_DAEMON_LOST per client {told}, daemon now "
                          f"{ms.daemon_pid()}; a client: {clients[0].output()}")
            break
        if ms.status()["socket"] != str(ms.socket):
            losses.append(f"kill {i}: the new daemon is on {ms.status()['socket']}")
    total = finish_busy(clients, losses)
    figures.update(total)
    figures["shm_left"] = check_shm(shm0, [], losses)
    for key in ("workers_gone_s", "new_daemon_s"):
        v = figures.pop(key)
        figures[key.replace("_s", "_max_s")] = round(max(v), 3) if v else None
        figures[key.replace("_s", "_p50_s")] = round(pct(v, 50), 3)
    bound = 3.0  # the "within 1 s", with slack
    if figures["workers_gone_max_s"] is not None and figures["workers_gone_max_s"] > bound:
        losses.append(f"workers took {figures['workers_gone_max_s']} s to exit (bound {bound} s)")
    say(f"  {figures['kills']} daemon kills under {nclients} clients: {total['daemon_lost']} "
        f"MS_E_DAEMON_LOST, {total['ok']} answered, {total['other']} other errors; workers gone "
        f"p50 {figures['workers_gone_p50_s']} s max {figures['workers_gone_max_s']} s; new daemon "
        f"p50 {figures['new_daemon_p50_s']} s max {figures['new_daemon_max_s']} s; longest call "
        f"{max(total['max_infer_us'], total['max_acquire_us'], total['max_connect_us']) / 1e3:.0f}"
        f" ms; shm left {figures['shm_left']}")
    return figures, losses


# --- 5 and 6: load, and load with stalling clients -------------------------------------------

LAT = np.dtype([("ns", "<u8"), ("bytes", "<u4"), ("kind", "<u4")])
SMALL = 16 * 1024  # requests of up to 16 rows


def run_load(ms, procs, requests, seed, ctrl_every, tag="load", abusers=()):
    """procs load clients of requests each; returns (figures, losses)."""
    losses = []
    spec = json.dumps({**IDENTITY, "instances": 2})
    ms.cli("load", tag, "--spec", spec)
    stall = [Client(ms.env, mode, ms.socket) for mode in abusers]
    time.sleep(0.3 if abusers else 0)
    t0 = time.monotonic()
    clients = [Client(ms.env, "load", tag, spec, seed * 1000 + p, requests,
                      ms.tmp / f"{tag}-{p}.lat", ctrl_every) for p in range(procs)]
    total = {"ok": 0, "lost": 0, "mismatched": 0, "status_failed": 0}
    for c in clients:
        s = c.finish(timeout=3600, term=False)
        if s is None or c.proc.returncode != 0:
            losses.append(f"a load client failed ({c.proc.returncode}): {c.output()}")
            continue
        for k in total:
            total[k] += s[k]
        if s["first_error"]:
            losses.append(f"a load client: {s['first_error']}")
    wall = time.monotonic() - t0
    dropped = {}
    for mode, c in zip(abusers, stall):
        c.finish(timeout=30)
        last = c.last("dropped")
        dropped[mode] = int(last.split()[1]) if last else None
    recs = np.concatenate([np.fromfile(ms.tmp / f"{tag}-{p}.lat", dtype=LAT)
                           for p in range(procs) if (ms.tmp / f"{tag}-{p}.lat").exists()]
                          or [np.zeros(0, LAT)])
    inf = recs[recs["kind"] == 0]
    ctl = recs[recs["kind"] == 1]
    small = inf[inf["bytes"] <= SMALL]
    us = 1e-3
    figures = {**total, "requests": int(procs * requests), "processes": procs,
               "wall_s": round(wall, 1), "requests_per_s": round(len(inf) / wall),
               "mb_per_s": round(float(inf["bytes"].sum()) / wall / 1e6),
               "p50_us": round(pct(inf["ns"], 50) * us, 1),
               "p99_us": round(pct(inf["ns"], 99) * us, 1),
               "small_p50_us": round(pct(small["ns"], 50) * us, 1),
               "small_p99_us": round(pct(small["ns"], 99) * us, 1),
               "max_bytes": int(inf["bytes"].max()) if len(inf) else 0,
               "status_calls": int(len(ctl)),
               "status_p50_us": round(pct(ctl["ns"], 50) * us, 1),
               "status_p99_us": round(pct(ctl["ns"], 99) * us, 1)}
    if dropped:
        figures["abusers_dropped"] = dropped
    expected = procs * requests
    if total["ok"] != expected:
        losses.append(f"{expected - total['ok']} of {expected} requests not answered right: "
                      f"{total['lost']} lost, {total['mismatched']} mismatched")
    if total["status_failed"]:
        losses.append(f"{total['status_failed']} status calls failed")
    return figures, losses


def load(ms, procs, requests, seed):
    """procs processes × requests checksummed requests of mixed sizes: 0 lost, 0 mismatched."""
    figures, losses = run_load(ms, procs, requests, seed, ctrl_every=0)
    say(f"  {figures['processes']} processes x {requests} requests (1 KiB to "
        f"{figures['max_bytes'] >> 20} MiB) in {figures['wall_s']} s: {figures['ok']} right, "
        f"{figures['lost']} lost, {figures['mismatched']} mismatched; "
        f"{figures['requests_per_s']} requests/s, {figures['mb_per_s']} MB/s; "
        f"p50 {figures['p50_us']} us p99 {figures['p99_us']} us (up to 16 KiB: p50 "
        f"{figures['small_p50_us']} us p99 {figures['small_p99_us']} us)")
    return figures, losses


def stall(ms, procs, requests, seed):
    """The same load twice, with a status call every 20 requests: alone, then beside a slow
    reader and a half-frame sender. The others' p99 (requests and status calls) must stay
    within noise: at most 3 times the figure without them, plus 50 ms."""
    base, losses = run_load(ms, procs, requests, seed, ctrl_every=20, tag="quiet")
    with_, losses2 = run_load(ms, procs, requests, seed, ctrl_every=20, tag="stalled",
                              abusers=("slowreader", "halfframe"))
    losses += losses2
    for key in ("small_p99_us", "status_p99_us"):
        bound = 3 * base[key] + 50000
        if with_[key] > bound:
            losses.append(f"{key}: {with_[key]} us beside the stalling clients, {base[key]} us "
                          f"without (bound {bound:.0f} us)")
    figures = {"without": base, "with": with_}
    say(f"  {procs} processes x {requests} requests, a status call every 20: without the "
        f"stalling clients small p99 {base['small_p99_us']} us, status p50/p99 "
        f"{base['status_p50_us']}/{base['status_p99_us']} us; beside a slow reader and a "
        f"half-frame sender small p99 {with_['small_p99_us']} us, status p50/p99 "
        f"{with_['status_p50_us']}/{with_['status_p99_us']} us; abusers dropped "
        f"{with_.get('abusers_dropped')}")
    return figures, losses


SCENARIOS = {
    "client_kills": lambda ms, c, seed: client_kills(ms, c["client_kills"], seed),
    "worker_kills": lambda ms, c, seed: worker_kills(ms, c["worker_kills"], seed),
    "daemon_kills": lambda ms, c, seed: daemon_kills(ms, c["daemon_kills"], seed),
    "stuck": lambda ms, c, seed: stuck(ms, c["stops"], seed),
    "load": lambda ms, c, seed: load(ms, *c["load"], seed),
    "stall": lambda ms, c, seed: stall(ms, *c["stall"], seed),
}


def run_with(ms, name, size="short", seed=9):
    """Runs one scenario against the daemon of ms (a Modelshare); returns (figures, losses)."""
    assert CHAOS.exists(), f"{CHAOS} is missing: build first (make build)"
    say(f"chaos {name} ({size}), seed {seed}")
    t0 = time.monotonic()
    figures, losses = SCENARIOS[name](ms, COUNTS[size], seed)
    figures["seconds"] = round(time.monotonic() - t0, 1)
    for loss in losses:
        say(f"  LOSS: {loss}")
    say(f"  {'FAIL' if losses else 'ok'} in {figures['seconds']} s")
    return figures, losses


def run(name, size="short", seed=9):
    """run_with() on a private daemon of its own, stopped at the end."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="msc-"))
    ms = Modelshare(tmp)
    try:
        return run_with(ms, name, size, seed)
    finally:
        ms.stop()
        subprocess.run(["rm", "-rf", str(ms.dir), str(tmp)])


def write_results(path, results, command, note="", keep=False):
    """Writes the figures of results to the Markdown file path. keep (a run of some scenarios
    only): the file's other sections stay as they are, and each section written says the command
    that made it; else the whole file is written anew."""
    when = f"on {time.strftime('%Y-%m-%d %H:%M')} ({os.cpu_count()} CPUs{note and ', ' + note})"
    head = ["# modelshare — chaos and load figures", "",
            f"Written by `{command}` {when}. Every scenario's seed is printed; a loss fails the "
            "run.", ""]
    old = pathlib.Path(path).read_text().split("\n## ") if keep and os.path.exists(path) else []
    sections = {x.split(":", 1)[0]: "## " + x.rstrip("\n") + "\n" for x in old[1:]}
    for name, (figures, losses) in results.items():
        lines = [f"## {name}: {'FAIL' if losses else 'ok'}", ""]
        if keep:
            lines += [f"Written by `{command}` {when}.", ""]
        lines += ["```", json.dumps(figures, indent=1, default=str), "```", ""]
        lines += [f"- LOSS: {x}" for x in losses] + ([""] if losses else [])
        sections[name] = "\n".join(lines)
    text = old[0].rstrip("\n") + "\n" if old else "\n".join(head)
    pathlib.Path(path).write_text(text + "\n" + "\n".join(sections.values()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="the full counts (make chaos)")
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--only", default=",".join(SCENARIOS))
    ap.add_argument("--results", help="write the figures to this Markdown file (with --only: "
                    "its sections of the other scenarios are kept)")
    ap.add_argument("--note", default="", help="words on the machine, for the results file")
    a = ap.parse_args()
    size = "full" if a.full else "short"
    names = a.only.split(",")
    results = {name: run(name, size, a.seed) for name in names}
    if a.results:
        command = "python " + shlex.join(sys.argv)
        every = set(names) == set(SCENARIOS)
        write_results(a.results, results,
                      f"make chaos` (`{command}" if a.full and every else command, a.note,
                      keep=not every)
    failed = [n for n, (_, losses) in results.items() if losses]
    say(f"chaos: {len(results) - len(failed)} of {len(results)} scenarios without loss"
        + (f"; lost: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
