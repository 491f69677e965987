"""Bad input gets a specific error and a message that says what was expected; the daemon and the
worker go on serving everyone else."""
import json

import numpy as np
import pytest

from conftest import mlp_reference


def spec(path, **extra):
    return {"backend": "dense", "weights": str(path), **extra}


def test_spec_conflict_shows_both_specs(ms):
    a = ms.make_dense("a.safetensors", [8, 8, 2])
    b = ms.make_dense("b.safetensors", [8, 8, 2], seed=1)
    s = ms.session("t", spec(a))
    assert s.ok
    other = ms.session("t", spec(b))
    assert other.first.startswith("error MS_E_SPEC_CONFLICT"), other.first
    assert str(a) in other.first and str(b) in other.first
    assert ms.model("t")["loads"] == 1


def test_unknown_tag_without_spec(ms):
    import numpy as np
    np.save(ms.tmp / "x.npy", np.ones((1, 4), np.float32))
    r = ms.cli("infer", "nothing-here", "--input", ms.tmp / "x.npy", check=False)
    assert r.returncode == 1
    assert "nothing-here" in r.stderr


def test_invalid_spec_names_the_field(ms):
    s = ms.session("t", '{"backend": "dense", "weigths": "x.safetensors"}')
    assert s.first.startswith("error MS_E_SPEC "), s.first
    assert "weigths" in s.first
    s = ms.session("t", {"backend": "dense", "weights": "/x", "max_batch": "ten"})
    assert s.first.startswith("error MS_E_SPEC ") and "max_batch" in s.first, s.first
    s = ms.session("t", "not json")
    assert s.first.startswith("error MS_E_SPEC"), s.first


def test_weights_errors(ms):
    missing = ms.session("m", spec(ms.tmp / "missing.safetensors"))
    assert missing.first.startswith("error MS_E_WEIGHTS"), missing.first
    assert "missing.safetensors" in missing.first
    junk = ms.tmp / "junk.safetensors"
    junk.write_bytes(b"this is not a safetensors file at all" * 10)
    s = ms.session("j", spec(junk))
    assert s.first.startswith("error MS_E_WEIGHTS"), s.first
    assert "safetensors" in s.first
    # Shapes that do not chain: 8 -> 16, then a layer expecting 9 inputs.
    from safetensors.numpy import save_file
    bad = ms.tmp / "chain.safetensors"
    save_file({"0.weight": np.zeros((16, 8), np.float32),
               "2.weight": np.zeros((4, 9), np.float32)}, str(bad))
    s = ms.session("c", spec(bad))
    assert s.first.startswith("error MS_E_WEIGHTS"), s.first
    # The failed load is visible, and a good model still loads on the same daemon.
    good = ms.make_dense("good.safetensors", [8, 8, 2])
    ok = ms.session("g", spec(good))
    assert ok.ok, ok.first


def test_wrong_shape_and_dtype_keep_worker_serving(ms):
    weights = ms.make_dense("m.safetensors", [8, 16, 3])
    s = ms.session("s", spec(weights))
    assert s.ok
    (worker,) = ms.model("s")["worker_pids"]
    wrong_shape = s.infer(np.ones((2, 9), np.float32), ms.tmp)
    assert isinstance(wrong_shape, str) and wrong_shape.startswith("error MS_E_SHAPE"), wrong_shape
    assert "8" in wrong_shape and "9" in wrong_shape
    wrong_dtype = s.infer(np.ones((2, 8), np.float64), ms.tmp)
    assert isinstance(wrong_dtype, str) and wrong_dtype.startswith("error MS_E_DTYPE")
    assert "float32" in wrong_dtype and "float64" in wrong_dtype
    wrong_rank = s.infer(np.ones((8,), np.float32), ms.tmp)
    assert isinstance(wrong_rank, str) and wrong_rank.startswith("error MS_E_SHAPE")
    x = np.ones((2, 8), np.float32)
    np.testing.assert_allclose(s.infer(x, ms.tmp), mlp_reference(weights, x), rtol=1e-4,
                               atol=1e-6)
    assert ms.model("s")["worker_pids"] == [worker]


def test_cli_usage_errors_exit_2(ms):
    assert ms.cli("load", check=False).returncode == 2
    assert ms.cli("frobnicate", check=False).returncode == 2
    assert ms.cli("make-dense", ms.tmp / "x.safetensors", check=False).returncode == 2
    assert ms.cli("infer", "t", check=False).returncode == 2


@pytest.mark.parametrize("args, message", [
    (("top", "--count", "0"), "--count: expected an integer from 1 to 1000000, got \"0\""),
    (("top", "--interval", "0.01"), "--interval: expected seconds from 0.1 to 3600"),
    (("bench", "t", "--clients", "x"), "--clients: expected an integer from 1 to 1024"),
    (("demo", "--batch", "0"), "--batch: expected an integer from 1 to 65536"),
    (("make-dense", "o.st", "--seed", "-1"), "--seed: expected an integer from 0 to"),
    (("status", "--json=1"), "option '--json' takes no value"),
    (("unload", "--frob", "t"), "unknown option '--frob'"),
    (("swap", "t", "-x"), "unknown option '-x'"),
    (("load", "t", "--spec"), "option '--spec' needs a value"),
    (("swap",), "missing TAG"),
    (("make-dense",), "missing OUT.safetensors"),
    (("status", "extra"), "unexpected argument \"extra\""),
])
def test_cli_options_are_checked_with_one_wording(ms, args, message):
    r = ms.cli(*args, check=False)
    assert r.returncode == 2, r
    assert f"modelshare {args[0]}: {message}" in r.stderr, r.stderr
    assert "usage: modelshare " + args[0] in r.stderr


def test_cli_status_without_daemon_does_not_start_one(ms):
    r = ms.cli("status", "--json")
    assert json.loads(r.stdout)["models"] == []
    assert ms.daemon_pid() is None
