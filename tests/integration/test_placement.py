"""Several GPUs without a GPU: the daemon is given budgets for cuda:0 and cuda:1 (--memory), and
identity models (which never touch CUDA) are placed by device "auto" and devices. Each instance's
worker must be pinned to its card through CUDA_VISIBLE_DEVICES (read from /proc/PID/environ) and
status must say each instance's device. A GPU model's host memory is charged to the host budget."""
import json
import os
import signal
import subprocess

from conftest import CLI, wait_until

GIB = 1 << 30
MIB = 1 << 20


def budgets(ms, text="host=8GiB,cuda:0=1GiB,cuda:1=2GiB"):
    ms.env["MODELSHARE_MEMORY"] = text
    ms.env.pop("CUDA_VISIBLE_DEVICES", None)


def load(ms, tag, **spec):
    spec = {"backend": "identity", "keep_alive": 600, **spec}
    return ms.cli("load", tag, "--spec", json.dumps(spec), check=False)


def environ(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        items = f.read().split(b"\0")
    return dict(i.decode(errors="replace").split("=", 1) for i in items if b"=" in i)


def worker_spec(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = [a.decode() for a in f.read().split(b"\0")]
    return json.loads(argv[argv.index("--spec") + 1])


def test_devices_auto_spreads_instances_by_free_budget_and_pins_each(ms):
    budgets(ms)
    # 3 GiB for 3 instances: 1 GiB each. cuda:1 (2 GiB free) takes the first; then both have
    # 1 GiB free (a tie: cuda:0, listed first); then cuda:1 again.
    r = load(ms, "spread", instances=3, devices="auto", memory=3 * GIB)
    assert r.returncode == 0, r.stderr
    m = ms.model("spread")
    devices = [i["device"] for i in m["instances"]]
    assert devices == ["cuda:1", "cuda:0", "cuda:1"], m["instances"]
    assert m["device"] == "cuda:1"  # the first instance's
    for inst in m["instances"]:
        env = environ(inst["pid"])
        assert env["CUDA_VISIBLE_DEVICES"] == inst["device"].split(":")[1], inst
        assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        spec = worker_spec(inst["pid"])  # the worker sees its one card as cuda:0
        assert spec["device"] == "cuda:0" and spec["devices"] is None, spec
    st = ms.status()
    assert st["budgets"]["cuda:1"]["models"]["spread"] == 2 * GIB
    assert st["budgets"]["cuda:0"]["models"]["spread"] == 1 * GIB
    assert m["spec"]["devices"] == "auto"
    text = ms.cli("status").stdout
    assert "cuda:1,cuda:0,cuda:1" in text, text


def test_device_auto_puts_the_model_where_it_fits(ms):
    budgets(ms)
    # 1.5 GiB fits only cuda:1; every instance goes there.
    r = load(ms, "big", device="auto", instances=2, memory=3 * GIB // 2)
    assert r.returncode == 0, r.stderr
    m = ms.model("big")
    assert [i["device"] for i in m["instances"]] == ["cuda:1", "cuda:1"]
    assert all(environ(i["pid"])["CUDA_VISIBLE_DEVICES"] == "1" for i in m["instances"])
    # Now cuda:0 has the most free (1 GiB against 0.5): a small model goes there.
    r = load(ms, "small", device="auto", memory=256 * MIB)
    assert r.returncode == 0, r.stderr
    assert ms.model("small")["device"] == "cuda:0"
    # Nothing can ever hold 3 GiB: a clear error naming the devices.
    r = load(ms, "huge", device="auto", memory=3 * GIB)
    assert r.returncode == 1
    assert "no device has room for the model's 3.0 GiB: cuda:0" in r.stderr, r.stderr


def test_explicit_devices_list_and_cpu_instances_keep_the_environment(ms):
    budgets(ms, "host=8GiB,cuda:0=1GiB")
    ms.env["CUDA_VISIBLE_DEVICES"] = "7"  # the daemon's own: a CPU instance keeps it
    r = load(ms, "mixed", instances=2, devices=["cuda:0", "cpu"], memory=2 * 512 * MIB)
    assert r.returncode == 0, r.stderr
    m = ms.model("mixed")
    by_dev = {i["device"]: i for i in m["instances"]}
    assert set(by_dev) == {"cpu", "cuda:0"}, m["instances"]
    assert environ(by_dev["cuda:0"]["pid"])["CUDA_VISIBLE_DEVICES"] == "0"
    assert environ(by_dev["cpu"]["pid"])["CUDA_VISIBLE_DEVICES"] == "7"
    assert worker_spec(by_dev["cpu"]["pid"])["device"] == "cpu"


def test_auto_without_any_gpu_is_the_cpu(ms):
    budgets(ms, "host=8GiB")
    r = load(ms, "c", device="auto", instances=2)
    assert r.returncode == 0, r.stderr
    m = ms.model("c")
    assert m["device"] == "cpu" and [i["device"] for i in m["instances"]] == ["cpu", "cpu"]
    assert "CUDA_VISIBLE_DEVICES" not in environ(m["instances"][0]["pid"])


def test_a_gpu_models_host_memory_is_charged_to_host(ms):
    budgets(ms)
    r = load(ms, "g", device="cuda:1", memory=64 * MIB)
    assert r.returncode == 0, r.stderr
    # Measured every 2 s: the worker's PSS lands in the host budget beside the card's bytes.
    wait_until(lambda: ms.model("g").get("host_bytes", 0) > 0, timeout=10, what="host bytes")
    st = ms.status()
    m = next(x for x in st["models"] if x["tag"] == "g")
    assert st["budgets"]["host"]["models"]["g"] == m["host_bytes"]
    assert st["budgets"]["host"]["used_bytes"] >= m["host_bytes"] > 0
    assert st["budgets"]["cuda:1"]["models"]["g"] == 64 * MIB
    assert m["memory_by_device"] == {"cuda:1": 64 * MIB, "host": m["host_bytes"]}


def test_host_memory_of_gpu_models_counts_in_admission(ms):
    # A host budget of 64 MiB: once the GPU model's worker is measured on the host, a host model
    # of 64 MiB less 64 KiB fits the empty budget but not beside that worker's PSS: it waits
    # (then fails, naming the GPU model) while the GPU model holds a lease.
    budgets(ms, "host=64MiB,cuda:0=1GiB")
    g = {"backend": "identity", "device": "cuda:0", "memory": 64 * MIB, "keep_alive": 600}
    s = ms.session("g", g)  # a lease: g cannot be evicted
    assert s.ok, s.first
    wait_until(lambda: ms.model("g").get("host_bytes", 0) > 0, timeout=10, what="host bytes")
    assert ms.model("g")["host_bytes"] > 256 * 1024  # a process's PSS: far more than the margin
    r = load(ms, "h", device="cpu", memory=64 * MIB - 64 * 1024, load_timeout=0.5)
    assert r.returncode == 1, r.stdout
    assert "not enough memory on host" in r.stderr and '"g"' in r.stderr, r.stderr


def test_an_idle_gpu_model_is_not_evicted_for_host_memory(ms):
    # The GPU model's workers' PSS counts as used on the host, but evicting the GPU model would
    # free only that for a host model: it is not done. The host model waits, then fails naming
    # it, and the GPU model stays loaded on its card.
    budgets(ms, "host=60MB,cuda:0=10GB")
    r = load(ms, "g", device="cuda:0", memory=GIB)
    assert r.returncode == 0, r.stderr
    wait_until(lambda: ms.model("g").get("host_bytes", 0) > 0, timeout=10, what="host bytes")
    assert ms.model("g")["host_bytes"] > 256 * 1024  # a process's PSS: far more than the margin
    r = load(ms, "c", device="cpu", memory=60_000_000 - 64 * 1024, load_timeout=0.5)
    assert r.returncode == 1, r.stdout
    assert "not enough memory on host" in r.stderr and '"g"' in r.stderr, r.stderr
    assert 'model "g": evicted' not in ms.log()
    assert ms.model("g")["state"] == "ready"
    assert ms.model("c") is None or ms.model("c")["state"] == "failed"


def test_swap_keeps_each_instances_device(ms):
    budgets(ms, "host=8GiB,cuda:0=4GiB,cuda:1=4GiB")
    r = load(ms, "s", instances=2, devices=["cuda:0", "cuda:1"], version="1")
    assert r.returncode == 0, r.stderr
    before = [i["device"] for i in ms.model("s")["instances"]]
    assert before == ["cuda:0", "cuda:1"]
    r = ms.cli("swap", "s", "--spec", json.dumps({"version": "2"}), check=False)
    assert r.returncode == 0, r.stderr
    m = ms.model("s")
    assert m["version"] == "2"
    assert [i["device"] for i in m["instances"]] == before
    for inst in m["instances"]:
        assert environ(inst["pid"])["CUDA_VISIBLE_DEVICES"] == inst["device"][-1]
    r = ms.cli("swap", "s", "--spec", json.dumps({"devices": ["cuda:1", "cuda:0"]}), check=False)
    assert r.returncode == 1 and "devices" in r.stderr, r.stderr


def test_a_restarted_instance_keeps_its_card(ms):
    budgets(ms, "host=8GiB,cuda:0=4GiB,cuda:1=4GiB")
    r = load(ms, "r", instances=2, devices=["cuda:0", "cuda:1"])
    assert r.returncode == 0, r.stderr
    old = ms.model("r")["instances"][1]
    assert old["device"] == "cuda:1"
    os.kill(old["pid"], signal.SIGKILL)

    def restarted():
        inst = ms.model("r")["instances"][1]
        return inst["state"] == "up" and inst["pid"] not in (None, old["pid"])

    wait_until(restarted, timeout=20, what="instance 1 restarted")
    new = ms.model("r")["instances"][1]
    assert new["device"] == "cuda:1" and new["restarts"] == 1
    assert environ(new["pid"])["CUDA_VISIBLE_DEVICES"] == "1"


def test_auto_when_no_card_has_room_now_evicts_like_any_load(ms):
    # Both cards are full of idle models: "auto" places by budget alone (a tie: cuda:0) and the
    # load evicts the idle model there, least recently used first.
    budgets(ms, "host=8GiB,cuda:0=1GiB,cuda:1=1GiB")
    assert load(ms, "a", device="cuda:0", memory=1 << 30).returncode == 0
    assert load(ms, "b", device="cuda:1", memory=1 << 30).returncode == 0
    r = load(ms, "c", device="auto", memory=1 << 30)
    assert r.returncode == 0, r.stderr
    assert ms.model("c")["device"] == "cuda:0"
    assert ms.model("a") is None and ms.model("b")["state"] == "ready"
    assert 'model "a": evicted (idle, least recently used, 1.0 GiB on cuda:0)' in ms.log()


def leased_card_and_idle_card(ms):
    """cuda:0 (20 GB) mostly held by a leased model "l" (its session returned, keep it), cuda:1
    (16 GB) mostly by an idle model "i"."""
    budgets(ms, "host=8GiB,cuda:0=20GB,cuda:1=16GB")
    leased = {"backend": "identity", "device": "cuda:0", "memory": 18_000_000_000,
              "keep_alive": 600}
    s = ms.session("l", leased)
    assert s.ok, s.first
    assert load(ms, "i", device="cuda:1", memory=14_000_000_000).returncode == 0
    return s


def test_auto_when_no_card_has_room_now_goes_where_eviction_makes_room(ms):
    # cuda:0 is the larger card but a leased model holds most of it; cuda:1 holds an idle model.
    # "auto" goes where evicting idle models makes room (cuda:1), not to the largest budget,
    # where it would wait for the lease.
    leased_card_and_idle_card(ms)
    r = load(ms, "m", device="auto", memory=6_000_000_000, load_timeout=1)
    assert r.returncode == 0, r.stderr
    assert ms.model("m")["device"] == "cuda:1"
    assert ms.model("i") is None and ms.model("l")["state"] == "ready"
    assert 'model "i": evicted (idle, least recently used' in ms.log()


def test_devices_auto_when_no_card_has_room_now_spreads_where_eviction_makes_room(ms):
    # Two instances of 6 GB: cuda:0 can hold neither beside its leased model, cuda:1 both once
    # its idle model is evicted.
    leased_card_and_idle_card(ms)
    r = load(ms, "m", devices="auto", instances=2, memory=12_000_000_000, load_timeout=1)
    assert r.returncode == 0, r.stderr
    assert [i["device"] for i in ms.model("m")["instances"]] == ["cuda:1", "cuda:1"]
    assert ms.model("i") is None and ms.model("l")["state"] == "ready"


def test_a_swap_charges_the_new_versions_estimate_on_cards_nvml_cannot_measure(ms):
    # Without NVML listing the workers, a GPU model is charged its estimate: after a swap, the
    # new version's.
    budgets(ms, "host=8GiB,cuda:0=4GiB,cuda:1=4GiB")
    r = load(ms, "s", instances=2, devices=["cuda:0", "cuda:1"], memory=1_500_000_000)
    assert r.returncode == 0, r.stderr
    st = ms.status()
    assert st["budgets"]["cuda:0"]["models"]["s"] == 750_000_000
    r = ms.cli("swap", "s", "--spec", json.dumps({"memory": 1_200_000_000}), check=False)
    assert r.returncode == 0, r.stderr
    m = ms.model("s")
    assert m["memory_bytes"] == 1_200_000_000 and m["estimate_bytes"] == 1_200_000_000, m
    st = ms.status()
    for dev in ("cuda:0", "cuda:1"):
        assert st["budgets"][dev]["models"]["s"] == 600_000_000, st["budgets"]
        assert st["budgets"][dev]["used_bytes"] == 600_000_000, st["budgets"]


def test_an_auto_model_that_waits_has_no_budget_device_until_placed(ms):
    budgets(ms, "host=8GiB,cuda:0=1GiB")
    leased = {"backend": "identity", "device": "cuda:0", "memory": GIB, "keep_alive": 600}
    s = ms.session("l", leased)
    assert s.ok, s.first
    spec = {"backend": "identity", "device": "auto", "memory": 512 * MIB, "load_timeout": 60}
    p = subprocess.Popen([str(CLI), "load", "w", "--spec", json.dumps(spec)], env=ms.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (ms.model("w") or {}).get("state") == "waiting", timeout=20,
                   what="w waiting for memory")
        m = ms.model("w")
        assert m["device"] == "auto" and m["budget_device"] is None, m
        assert s.command("release") == "released"
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    m = ms.model("w")
    assert m["device"] == "cuda:0" and m["budget_device"] == "cuda:0", m
