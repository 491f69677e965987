"""The short version of each chaos scenario (tests/chaos/chaos.py, same code, smaller counts):
a few seconds each, run by make test (test-integration). `make chaos` runs the full counts."""

import chaos

ms = chaos.INTEGRATION.ms  # the integration tests' fixture: a private daemon, stopped after
SEED = 9


def check(ms, name):
    figures, losses = chaos.run_with(ms, name, "short", SEED)
    assert not losses, f"{name} (seed {SEED}) lost:\n" + "\n".join(losses) + f"\n{figures}"


def test_client_kills(ms):
    check(ms, "client_kills")


def test_worker_kills(ms):
    check(ms, "worker_kills")


def test_daemon_kills(ms):
    check(ms, "daemon_kills")


def test_load(ms):
    check(ms, "load")


def test_stall(ms):
    check(ms, "stall")


def test_stuck(ms):
    check(ms, "stuck")
