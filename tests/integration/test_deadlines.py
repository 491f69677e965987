"""Nothing waits forever: calls with a deadline on a worker that stopped answering fail with
MS_E_TIMEOUT however many there are, and give back what they held once the worker is back or
replaced (tests/helpers/deadlineclient.c)."""
import json
import os
import signal

from conftest import BUILD, LineClient, pid_alive, wait_until

DEADLINECLIENT = BUILD / "tests" / "ms-deadlineclient"


class DeadlineClient(LineClient):
    """An ms-deadlineclient (tests/helpers/deadlineclient.c) holding a lease, driven by lines."""

    def __init__(self, env, tag, spec):
        super().__init__([DEADLINECLIENT, tag, json.dumps(spec)], env)

    def close(self):
        super().close(timeout=60, check=True)


def test_200_timed_out_calls_in_c_on_a_stopped_worker_then_it_answers_again(ms):
    spec = {"backend": "identity", "keep_alive": 60}
    client = DeadlineClient(ms.env, "stopped", spec)
    (pid,) = ms.model("stopped")["worker_pids"]
    os.kill(pid, signal.SIGSTOP)
    try:
        # Each call waits at most 20 ms: more than the 64 slots of the ring, which the stopped
        # worker holds, once hung here for good (the 65th call waited for a slot forever).
        assert client.command("timeouts 200 20000") == "timeouts 200 other 0"
    finally:
        os.kill(pid, signal.SIGCONT)
    # The worker answers the requests it was given (their answers are discarded), and the slots
    # come back: a call with a deadline of 30 s is answered, with its own row.
    assert client.command("call 30000000") == "ok"
    assert client.command("timeouts 1 30000000") == "timeouts 0 other 1"
    client.close()


def stuck_s(ms, tag):
    m = ms.model(tag)
    return max((i.get("stuck_s", 0.0) for i in m["instances"]), default=0.0) if m else 0.0


def test_a_stopped_worker_is_shown_stuck_killed_past_call_timeout_and_restarted(ms):
    spec = {"backend": "identity", "keep_alive": 60, "call_timeout": 3}
    client = DeadlineClient(ms.env, "hung", spec)
    assert client.command("call 30000000") == "ok"
    (pid,) = ms.model("hung")["worker_pids"]
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: stuck_s(ms, "hung") >= 1.0, timeout=30, what="stuck_s in the status")
        assert "stuck" in ms.cli("status").stdout
        # A call with a deadline longer than call_timeout: the watchdog kills the worker first,
        # and the call says so (before, it waited its whole deadline, or forever without one).
        answer = client.command("call 60000000")
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGCONT)
    assert answer.startswith("error MS_E_TIMEOUT"), answer
    assert '"hung"' in answer and "call_timeout of 3 s" in answer, answer
    wait_until(lambda: ms.model("hung")["instances"][0]["state"] == "up"
               and ms.model("hung")["worker_pids"] not in ([], [pid]),
               timeout=60, what="the restarted worker")
    m = ms.model("hung")
    assert m["state"] == "ready" and m["restarts"] == 1
    assert m["instances"][0]["last_crash"] == "SIGKILL"
    assert client.command("call 30000000") == "ok"
    assert "call_timeout" in ms.log()
    client.close()
