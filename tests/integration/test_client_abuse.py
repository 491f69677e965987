"""Hostile and concurrent use of the client library and the worker (tests/helpers/abuseclient.c)."""
import json
import subprocess

from conftest import BUILD

ABUSECLIENT = BUILD / "tests" / "ms-abuseclient"


def run(ms, *args, timeout=120):
    r = subprocess.run([str(ABUSECLIENT), *map(str, args)], capture_output=True, text=True,
                       env=ms.env, timeout=timeout)
    return r


def spec_for(ms, name, layers, seed=0):
    weights = ms.make_dense(name, layers, seed=seed)
    return json.dumps({"backend": "dense", "weights": str(weights), "keep_alive": 30})


def test_acquire_and_release_from_many_threads_of_one_client(ms):
    spec = spec_for(ms, "c.safetensors", [8, 16, 4], seed=1)
    r = run(ms, "churn", "churn", spec, 6, 15)
    assert r.returncode == 0 and r.stdout.strip() == "ok 90", r.stdout + r.stderr
    assert ms.model("churn")["leases"] == 0


def test_hostile_channel_records_do_not_hurt_other_clients(ms):
    spec = spec_for(ms, "e.safetensors", [4, 8, 2], seed=2)
    r = run(ms, "evil", "evil", spec)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
    m = ms.model("evil")
    assert m["state"] == "ready" and len(m["worker_pids"]) == 1


def test_errmsg_is_empty_after_a_successful_call(ms):
    spec = spec_for(ms, "m.safetensors", [4, 8, 2], seed=3)
    r = run(ms, "errmsg", "errmsg", spec)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
