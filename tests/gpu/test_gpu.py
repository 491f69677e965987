"""The dense backend on a real card: results equal the CPU backend's, budgets and eviction on
the card, unload gives the card's memory back, and 8 client processes share one copy and one
CUDA context. Run with `make test-gpu`."""
import json

import numpy as np
import pytest

from conftest import base

wait_until = base.wait_until
MIB = 1 << 20
GIB = 1 << 30


def spec(path, device="cuda:0", **extra):
    return {"backend": "dense", "weights": str(path), "device": device, "keep_alive": 600,
            **extra}


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-4), (np.float16, 2e-2)])
@pytest.mark.parametrize("output", ["linear", "softmax"])
def test_cuda_equals_cpu(ms, dtype, tol, output):
    w = base.save_mlp(ms.tmp / "m.safetensors", [256, 1024, 512, 10], seed=3, dtype=dtype)
    cpu = ms.session("cpu", spec(w, "cpu", output=output))
    gpu = ms.session("gpu", spec(w, output=output))
    assert cpu.ok and gpu.ok, (cpu.first, gpu.first)
    rng = np.random.default_rng(0)
    for rows in (1, 7, 64, 3000):  # 3000: more than one pass of the work buffers
        x = rng.standard_normal((rows, 256)).astype(np.float32)
        want = cpu.infer(x, ms.tmp)
        got = gpu.infer(x, ms.tmp)
        assert not isinstance(got, str), got
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    m = ms.model("gpu")
    assert m["device"] == "cuda:0" and m["budget_device"] == "cuda:0"


def test_measured_gpu_memory_is_the_workers_own(ms, nv):
    w = ms.make_dense("m.safetensors", [4096, 8192, 4096])  # 256 MiB
    assert ms.session("g", spec(w)).ok
    m = ms.model("g")
    (pid,) = m["worker_pids"]
    assert m["memory_measured"] is True
    procs = nv.processes(0)
    assert pid in procs
    assert abs(m["memory_bytes"] - procs[pid]) < 64 * MIB, (m, procs[pid])
    assert m["memory_bytes"] > 256 * MIB
    assert ms.status()["budgets"]["cuda:0"]["used_bytes"] >= m["memory_bytes"]


def test_missing_device_gives_ms_e_device(ms, nv):
    w = ms.make_dense("m.safetensors", [8, 8, 2])
    s = ms.session("x", spec(w, "cuda:63"))
    assert s.first.startswith("error MS_E_DEVICE "), s.first
    assert f"cuda:63 does not exist: {nv.count()} device" in s.first, s.first


def test_budget_and_lru_eviction_on_the_card(ms, nv):
    w = ms.make_dense("m.safetensors", [8192, 16384])  # 512 MiB of weights
    # Measure one first, then size the budget for two of them.
    probe = ms.session("probe", spec(w))
    assert probe.ok
    one = ms.model("probe")["memory_bytes"]
    assert probe.command("release") == "released"
    ms.cli("unload", "probe")
    ms.stop()
    ms.env["MODELSHARE_MEMORY"] = f"cuda:0={int(one * 2.5)}"
    for tag in ("a", "b"):
        assert ms.cli("load", tag, "--spec", json.dumps(spec(w))).returncode == 0
    ms.cli("load", "a", "--spec", json.dumps(spec(w)))  # a used again: b is LRU
    assert ms.cli("load", "c", "--spec", json.dumps(spec(w))).returncode == 0
    assert {m["tag"] for m in ms.status()["models"]} == {"a", "c"}
    assert 'model "b": evicted' in ms.log()
    b = ms.status()["budgets"]["cuda:0"]
    assert b["used_bytes"] <= b["budget_bytes"]
    # Both leased: a third waits, then fails clearly instead of a CUDA out-of-memory error.
    la, lc = ms.session("a", spec(w)), ms.session("c", spec(w))
    assert la.ok and lc.ok
    d = ms.session("d", spec(w, load_timeout=1))
    assert d.first.startswith("error MS_E_NO_MEMORY") and "cuda:0" in d.first, d.first


def test_unload_returns_the_cards_memory(ms, nv):
    w = ms.make_dense("m.safetensors", [16384, 16384, 8192])  # 1.5 GiB
    _, before = nv.memory(0)
    ms.cli("load", "big", "--spec", json.dumps(spec(w)))
    (pid,) = ms.model("big")["worker_pids"]
    _, loaded = nv.memory(0)
    assert loaded - before > 1.4 * GIB, (before, loaded)
    ms.cli("unload", "big")
    assert pid not in nv.processes(0)
    wait_until(lambda: nv.memory(0)[1] - before < 32 * MIB, timeout=10,
               what="the card's memory back to its level before the load")
    assert "NVML no longer lists it on cuda:0" in ms.log()


def test_fifty_cycles_leave_the_card_where_it_was(ms, nv):
    w = ms.make_dense("m.safetensors", [4096, 4096, 1024])
    ms.cli("load", "c", "--spec", json.dumps(spec(w)))
    ms.cli("unload", "c")
    _, before = nv.memory(0)
    for _ in range(50):
        ms.cli("load", "c", "--spec", json.dumps(spec(w)))
        ms.cli("unload", "c")
    wait_until(lambda: nv.memory(0)[1] - before < 32 * MIB, timeout=10, what="card memory")


def test_eight_processes_share_one_copy_and_one_context(ms, nv):
    # 3 GiB of float32 weights.
    w = ms.make_dense("m3g.safetensors", [16384, 16384, 16384, 16384])
    _, before = nv.memory(0)
    sessions = [ms.session("shared", spec(w)) for _ in range(8)]
    assert all(s.ok for s in sessions), [s.first for s in sessions]
    m = ms.model("shared")
    assert m["leases"] == 8 and m["loads"] == 1
    (worker,) = m["worker_pids"]
    procs = nv.processes(0)
    clients = {s.proc.pid for s in sessions}
    assert worker in procs
    assert not clients & set(procs), "a client process made a CUDA context of its own"
    x = np.ones((4, 16384), np.float32)
    outs = [s.infer(x, ms.tmp) for s in sessions]
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    _, after = nv.memory(0)
    # One copy: the card holds ~3 GiB more, not 8 x 3 GiB.
    assert after - before < 4.5 * GIB, (before, after)
    assert procs[worker] < 4.5 * GIB


def _environ(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        items = f.read().split(b"\0")
    return dict(i.decode(errors="replace").split("=", 1) for i in items if b"=" in i)


def test_auto_pins_the_worker_and_charges_its_host_memory(ms, nv):
    # device "auto" on this machine's cards; the worker sees its card alone (as cuda:0), NVML
    # lists it on the real index, and its host memory is charged to the host budget.
    w = ms.make_dense("m.safetensors", [1024, 1024, 16])
    s = ms.session("a", spec(w, "auto"))
    assert s.ok, s.first
    m = ms.model("a")
    (inst,) = m["instances"]
    index = int(inst["device"].split(":")[1])
    assert _environ(inst["pid"])["CUDA_VISIBLE_DEVICES"] == str(index)
    assert inst["pid"] in nv.processes(index)
    x = np.random.default_rng(0).standard_normal((4, 1024)).astype(np.float32)
    cpu = ms.session("c", spec(w, "cpu"))
    np.testing.assert_allclose(s.infer(x, ms.tmp), cpu.infer(x, ms.tmp), rtol=1e-4, atol=1e-4)
    wait_until(lambda: ms.model("a").get("host_bytes", 0) > 0, timeout=10, what="host bytes")
    st = ms.status()
    assert st["budgets"]["host"]["models"]["a"] == ms.model("a")["host_bytes"]


def test_two_devices_each_instance_on_its_card(ms, nv):
    if nv.count() < 2:
        pytest.skip(f"needs 2 GPUs, this machine has {nv.count()}")
    w = ms.make_dense("m.safetensors", [1024, 1024, 16])
    s = ms.session("two", spec(w, device="auto", devices=["cuda:0", "cuda:1"], instances=2))
    assert s.ok, s.first
    m = ms.model("two")
    assert sorted(i["device"] for i in m["instances"]) == ["cuda:0", "cuda:1"], m["instances"]
    for inst in m["instances"]:
        index = int(inst["device"].split(":")[1])
        assert _environ(inst["pid"])["CUDA_VISIBLE_DEVICES"] == str(index)
        assert inst["pid"] in nv.processes(index), (inst, nv.processes(index))
    st = ms.status()
    assert st["budgets"]["cuda:0"]["models"]["two"] > 0
    assert st["budgets"]["cuda:1"]["models"]["two"] > 0
    cpu = ms.session("c", spec(w, "cpu"))
    x = np.random.default_rng(1).standard_normal((8, 1024)).astype(np.float32)
    for _ in range(4):  # requests go to both instances
        np.testing.assert_allclose(s.infer(x, ms.tmp), cpu.infer(x, ms.tmp), rtol=1e-4, atol=1e-4)
