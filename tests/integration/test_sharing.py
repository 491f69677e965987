"""Many processes, one model: loaded once, every caller gets the model's right answer."""
import json

import numpy as np

from conftest import mlp_reference, save_mlp, wait_until


def dense_spec(path, **extra):
    return {"backend": "dense", "weights": str(path), **extra}


def test_eight_processes_share_one_load(ms):
    weights = ms.make_dense("m.safetensors", [64, 128, 10], seed=1)
    spec = dense_spec(weights)
    sessions = [ms.session("shared", spec) for _ in range(8)]
    for s in sessions:
        assert s.ok, s.first
    m = ms.model("shared")
    assert m["loads"] == 1
    assert m["leases"] == 8
    assert len(m["worker_pids"]) == 1
    assert m["state"] == "ready"
    # Each process gets its own input's answer, computed from the same single copy.
    rng = np.random.default_rng(0)
    for i, s in enumerate(sessions):
        x = rng.standard_normal((i + 1, 64)).astype(np.float32)
        y = s.infer(x, ms.tmp)
        assert isinstance(y, np.ndarray), y
        np.testing.assert_allclose(y, mlp_reference(weights, x), rtol=1e-4, atol=1e-5)
    assert ms.model("shared")["requests"] >= 8


def test_concurrent_acquire_from_eight_processes_loads_once(ms):
    weights = ms.make_dense("m.safetensors", [32, 64, 8])
    spec = json.dumps(dense_spec(weights))
    # Start all eight before any has its answer: they race to load the same tag.
    import subprocess
    from conftest import TESTCLIENT
    procs = [subprocess.Popen([str(TESTCLIENT), "session", "race", spec], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=ms.env) for _ in range(8)]
    try:
        answers = [p.stdout.readline().strip() for p in procs]
        assert answers == ["acquired"] * 8, answers
        m = ms.model("race")
        assert m["loads"] == 1 and m["leases"] == 8 and len(m["worker_pids"]) == 1
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(timeout=10)
            p.stdout.close()


def test_cli_infer_matches_numpy(ms):
    weights = ms.make_dense("m.safetensors", [100, 300, 200, 7], seed=3)
    x = np.random.default_rng(5).standard_normal((13, 100)).astype(np.float32)
    np.save(ms.tmp / "x.npy", x)
    ms.cli("infer", "mlp", "--weights", weights, "--input", ms.tmp / "x.npy",
           "--output", ms.tmp / "y.npy")
    y = np.load(ms.tmp / "y.npy")
    assert y.dtype == np.float32 and y.shape == (13, 7)
    np.testing.assert_allclose(y, mlp_reference(weights, x), rtol=1e-4, atol=1e-5)


def test_pytorch_style_file_with_prefix_and_softmax(ms):
    # A file written by the safetensors package itself, names like a wrapped nn.Sequential.
    weights = save_mlp(ms.tmp / "torchlike.safetensors", [20, 40, 30, 5], prefix="model.net.")
    spec = json.dumps(dense_spec(weights, output="softmax"))
    x = np.random.default_rng(2).standard_normal((4, 20)).astype(np.float32)
    np.save(ms.tmp / "x.npy", x)
    ms.cli("infer", "soft", "--spec", spec, "--input", ms.tmp / "x.npy", "--output",
           ms.tmp / "y.npy")
    y = np.load(ms.tmp / "y.npy")
    np.testing.assert_allclose(y, mlp_reference(weights, x, "softmax"), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


def test_float16_weights_are_served(ms):
    weights = save_mlp(ms.tmp / "half.safetensors", [16, 32, 4], dtype=np.float16)
    x = np.random.default_rng(3).standard_normal((3, 16)).astype(np.float32)
    np.save(ms.tmp / "x.npy", x)
    ms.cli("infer", "half", "--weights", weights, "--input", ms.tmp / "x.npy", "--output",
           ms.tmp / "y.npy")
    np.testing.assert_allclose(np.load(ms.tmp / "y.npy"), mlp_reference(weights, x),
                               rtol=1e-3, atol=1e-4)


def test_infer_without_spec_attaches_to_loaded_model(ms):
    weights = ms.make_dense("m.safetensors", [8, 8, 3])
    ms.cli("load", "pre", "--backend", "dense", "--weights", weights, "--keep-alive", "60")
    x = np.ones((2, 8), np.float32)
    np.save(ms.tmp / "x.npy", x)
    ms.cli("infer", "pre", "--input", ms.tmp / "x.npy", "--output", ms.tmp / "y.npy")
    np.testing.assert_allclose(np.load(ms.tmp / "y.npy"), mlp_reference(weights, x), rtol=1e-4,
                               atol=1e-6)
    m = ms.model("pre")
    assert m["loads"] == 1 and m["leases"] == 0


def test_status_json_contract(ms):
    weights = ms.make_dense("m.safetensors", [8, 16, 4])
    s = ms.session("contract", dense_spec(weights))
    assert s.ok, s.first
    st = ms.status()
    assert isinstance(st["models"], list) and isinstance(st["budgets"], dict)
    m = st["models"][0]
    for field in ("tag", "backend", "state", "device", "memory_bytes", "leases", "worker_pids",
                  "loads", "requests", "batches"):
        assert field in m, field
    assert m["tag"] == "contract" and m["backend"] == "dense" and m["device"] == "cpu"
    assert m["memory_bytes"] > 0
    for budget in st["budgets"].values():
        assert budget["budget_bytes"] > 0 and "used_bytes" in budget
    # The human-readable table names the model too.
    assert "contract" in ms.cli("status").stdout


def test_c_example_runs_and_matches_numpy(ms):
    import subprocess
    from conftest import BUILD
    weights = ms.make_dense("hello.safetensors", [16, 32, 8], seed=4)
    r = subprocess.run([str(BUILD / "examples" / "hello"), str(weights)], capture_output=True,
                       text=True, env=ms.env, timeout=60)
    assert r.returncode == 0, r.stderr
    head, values = r.stdout.split(":", 1)
    assert head == "output [2, 8]"
    x = (np.arange(2 * 16) % 7 / 7.0).astype(np.float32).reshape(2, 16)
    expected = mlp_reference(weights, x)[0, :5]
    got = np.array([float(v) for v in values.split() if v != "..."])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert ms.model("hello-mlp")["loads"] == 1


def test_one_client_used_from_many_threads(ms):
    import subprocess
    from conftest import TESTCLIENT
    weights = ms.make_dense("t.safetensors", [32, 64, 16], seed=6)
    spec = json.dumps(dense_spec(weights))
    r = subprocess.run([str(TESTCLIENT), "threads", "threaded", spec, "6", "40"],
                       capture_output=True, text=True, env=ms.env, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok 480", r.stdout + r.stderr
    # The worker counts a request just after it answered it: the last count may lag a moment.
    m = wait_until(lambda: (x := ms.model("threaded"))["requests"] >= 480 + 240 and x,
                   timeout=10, what="the worker's request count")
    assert m["loads"] == 1
