"""Per-instance supervision: a worker that dies loses only the requests in flight on it, the
model's other instances go on serving, the daemon restarts it with back-off, and a worker that
keeps crashing ends with the model failed, its stderr quoted.

The daemon runs its workers through a wrapper script (MODELSHARE_WORKER) that starts slowly or
crashes at start while a marker file exists, so that a test controls what a restart does.
Timings are not asserted beyond the generous bounds the issue states (failures within 1 s: 3 s
here); the measured figures are printed.
"""
import json
import os
import re
import signal
import subprocess
import time
from datetime import datetime

import numpy as np

from conftest import BUILD, wait_until

PLANECLIENT = BUILD / "tests" / "ms-planeclient"


def wrapper(ms):
    """A worker program that sleeps 2 s before it starts while ms.dir/slow exists, and exits 3
    with a message on stderr while ms.dir/crash exists."""
    script = ms.dir / "worker.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"if [ -e '{ms.dir}/slow' ]; then sleep 2; fi\n"
        f"if [ -e '{ms.dir}/crash' ]; then\n"
        "  echo 'wrapper: simulated crash at start: cannot open /nonexistent/model' >&2\n"
        "  exit 3\n"
        "fi\n"
        f"exec '{BUILD / 'modelshare-worker'}' \"$@\"\n")
    script.chmod(0o755)
    ms.env["MODELSHARE_WORKER"] = str(script)


def start(ms, *args):
    return subprocess.Popen([str(PLANECLIENT), *map(str, args)], env=ms.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def requests_of(m, pid):
    for p, r in zip(m["worker_pids"], m["worker_requests"]):
        if p == pid:
            return r
    return -1


def test_a_killed_instance_fails_only_its_requests_and_comes_back(ms):
    wrapper(ms)
    # Each request waits in its worker for more rows (batch_delay_us): every client nearly
    # always has one request in flight, on one instance or the other.
    spec = json.dumps({"backend": "identity", "instances": 2, "keep_alive": 60,
                       "batch_delay_us": 20000, "max_batch": 64})
    stop = ms.tmp / "stop"
    clients = 6
    procs = [start(ms, "survive", "sup", spec, stop, seed + 1, 4) for seed in range(clients)]
    for p in procs:
        assert p.stdout.readline().strip() == "started", p.stderr.read()
    # Past 64 requests per client and instance: the restarted worker must go on from where each
    # ring stands, not from its start.
    wait_until(lambda: all(r > 70 * clients for r in ms.model("sup")["worker_requests"]),
               timeout=60, what="both instances to serve a while")
    (ms.dir / "slow").touch()  # a restart takes 2 s: time to see the other instance serve alone
    kills = []
    for round_ in range(2):
        m = ms.model("sup")
        victim, survivor = m["instances"][0]["pid"], m["instances"][1]["pid"]
        before = requests_of(m, survivor)
        kills.append(time.time())
        os.kill(victim, signal.SIGKILL)

        def survivor_alone():
            s = ms.model("sup")
            return (s["instances"][0]["state"] != "up" and
                    requests_of(s, survivor) >= before + 20 and s)

        s = wait_until(survivor_alone, timeout=10,
                       what="the other instance to serve while the killed one restarts")
        assert s["state"] == "ready", s

        def back():
            s = ms.model("sup")
            inst = s["instances"][0]
            return (inst["state"] == "up" and inst["pid"] not in (None, victim) and
                    requests_of(s, inst["pid"]) > 0 and s)

        s = wait_until(back, timeout=30, what="the restarted instance to serve again")
        assert s["instances"][0]["restarts"] == round_ + 1, s["instances"]
        assert s["instances"][0]["last_crash"] == "SIGKILL", s["instances"]
    stop.touch()
    lost, latencies = 0, []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, f"a client saw an error other than MS_E_WORKER_LOST:\n{out}{err}"
        lines = out.strip().splitlines()
        ok, mine = map(int, re.fullmatch(r"ok (\d+) lost (\d+)", lines[-1]).groups())
        assert ok > 0
        # One request in flight at a time: at most one lost per kill (a client that went on
        # sending to the dead instance would lose more).
        assert mine <= len(kills), out
        for line in lines:
            if line.startswith("lost "):
                t0, t1 = map(float, line.split()[1:3])
                assert "instance 0" in line, line
                kill = max(k for k in kills if k <= t1 + 0.05)
                assert t0 <= kill + 1.0, f"sent {t0 - kill:.3f} s after the kill: {line}"
                latencies.append(t1 - kill)
        lost += mine
    print(f"lost {lost} requests over {len(kills)} kills; each failed "
          f"{max(latencies, default=0):.3f} s after its kill at most")
    assert lost >= 1, "no request was in flight on the killed instance"
    assert max(latencies) < 3.0, latencies  # the issue says within 1 s
    m = ms.model("sup")
    assert m["loads"] == 1 and m["restarts"] == 2 and m["instances"][1]["restarts"] == 0, m


def log_times(log, pattern):
    """The timestamps (s) of the daemon's log lines that match pattern."""
    out = []
    for line in log.splitlines():
        if re.search(pattern, line):
            stamp = line.split(" ", 1)[0].rstrip("Z")
            out.append(datetime.fromisoformat(stamp).timestamp())
    return out


def test_a_worker_that_crashes_at_every_start_fails_the_model_after_max_restarts(ms):
    wrapper(ms)
    spec = {"backend": "identity", "keep_alive": 60, "max_restarts": 3}
    s = ms.session("crashy", spec)
    assert s.ok, s.first
    (worker,) = ms.model("crashy")["worker_pids"]
    (ms.dir / "crash").touch()
    os.kill(worker, signal.SIGKILL)
    m = wait_until(lambda: (x := ms.model("crashy"))["state"] == "failed" and x, timeout=60,
                   what="the model to fail")
    assert m["error_code"] == -15, m  # MS_E_WORKER_LOST
    assert "max_restarts 3" in m["error"], m["error"]
    assert "exited with status 3" in m["error"], m["error"]
    assert "simulated crash at start: cannot open /nonexistent/model" in m["error"], m["error"]
    assert m["instances"][0]["restarts"] == 3 and m["instances"][0]["last_crash"] == "exit 3"
    log = ms.log()
    # Still logged as before: the worker's stderr goes through to the daemon's log.
    assert log.count("simulated crash at start") >= 3, log[-3000:]
    # Back-off: each restart waited at least twice as long as the one before (0.1, 0.2, 0.4 s).
    planned = log_times(log, r'"crashy": instance 0: worker \d+ .* restarting it in')
    started = log_times(log, r'"crashy": started worker \d+ for instance 0')[1:]
    assert len(planned) == 3 and len(started) == 3, log[-3000:]
    waits = [b - a for a, b in zip(planned, started)]
    print("restart delays (s):", ", ".join(f"{w:.3f}" for w in waits))
    for k, w in enumerate(waits):
        assert w >= 0.1 * 2 ** k - 0.002, waits  # log stamps are to the millisecond
    # The lease holder's handle says the model is gone; a new acquire loads it again.
    answer = s.infer(np.ones((1, 4), np.float32), ms.tmp)
    assert isinstance(answer, str) and answer.startswith("error MS_E_WORKER_LOST"), answer
    (ms.dir / "crash").unlink()
    s2 = ms.session("crashy", spec)
    assert s2.ok, s2.first
    m = ms.model("crashy")
    assert m["state"] == "ready" and m["loads"] == 2 and m["restarts"] == 0, m


def test_restarts_left_are_counted_per_window_not_per_instance(ms):
    # Two instances crash once each with max_restarts 1: the second crash within the window
    # fails the model (the count is the model's).
    wrapper(ms)
    spec = {"backend": "identity", "instances": 2, "keep_alive": 60, "max_restarts": 1}
    s = ms.session("two", spec)
    assert s.ok, s.first
    a, b = ms.model("two")["worker_pids"]
    os.kill(a, signal.SIGKILL)
    wait_until(lambda: ms.model("two")["restarts"] == 1, timeout=20, what="the first restart")
    os.kill(b, signal.SIGKILL)
    m = wait_until(lambda: (x := ms.model("two"))["state"] == "failed" and x, timeout=20,
                   what="the model to fail")
    assert "max_restarts 1" in m["error"], m["error"]
