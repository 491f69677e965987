"""modelshared --metrics: /metrics in the Prometheus text format, scraped over HTTP while client
processes send requests and parsed with prometheus_client's own parser."""
import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import BUILD, CLI, TESTCLIENT, pid_alive, wait_until

DAEMON = BUILD / "modelshared"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_daemon(ms, *extra):
    return subprocess.run([str(DAEMON), "--socket", str(ms.socket), *extra], env=ms.env,
                          capture_output=True, text=True, timeout=30)


@pytest.fixture
def metrics(ms):
    """A daemon with --metrics on a free loopback port; yields its /metrics URL."""
    port = free_port()
    r = start_daemon(ms, "--metrics", f"127.0.0.1:{port}")
    assert r.returncode == 0, r.stderr
    yield f"http://127.0.0.1:{port}"


def scrape(url):
    """{(sample name, sorted labels): value} of one scrape, and the families by name."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    samples, families = {}, {}
    for fam in text_string_to_metric_families(text):
        families[fam.name] = fam
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, families


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def check_histograms(families):
    """Every histogram series: buckets cumulative, +Inf last and equal to _count."""
    for name in ("modelshare_batch_rows", "modelshare_queue_wait_seconds",
                 "modelshare_run_seconds"):
        fam = families[name]
        assert fam.type == "histogram"
        series = {}
        for s in fam.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            series.setdefault(key, {"buckets": []})
            if s.name.endswith("_bucket"):
                series[key]["buckets"].append((float(s.labels["le"]), s.value))
            else:
                series[key][s.name[len(name):]] = s.value
        assert series, name
        for key, h in series.items():
            bounds = [b for b, _ in h["buckets"]]
            counts = [c for _, c in h["buckets"]]
            assert bounds == sorted(bounds) and bounds[-1] == float("inf"), (name, key)
            assert counts == sorted(counts), (name, key, counts)
            assert counts[-1] == h["_count"], (name, key)


def bench(ms, tag, weights, clients, requests, batch):
    return subprocess.Popen(
        [str(CLI), "bench", tag, "--weights", str(weights), "--clients", str(clients),
         "--requests", str(requests), "--batch", str(batch), "--warmup", "0", "--json"],
        env=ms.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_counts_during_and_after_load_equal_the_requests_sent(ms, metrics):
    weights = ms.make_dense("m.safetensors", [64, 32, 8])
    ms.cli("load", "m", "--weights", weights)
    clients, requests, batch = 3, 400, 4
    runs = [bench(ms, "m", weights, clients, requests, batch) for _ in range(2)]
    seen = []
    while any(p.poll() is None for p in runs):
        samples, families = scrape(metrics)
        check_histograms(families)
        seen.append(value(samples, "modelshare_requests_total", tag="m", instance="0") or 0)
    for p in runs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert json.loads(out)["requests"] == requests  # per client
    assert seen == sorted(seen), "a counter went down between scrapes"

    samples, families = scrape(metrics)
    check_histograms(families)
    sent = 2 * clients * requests
    inst = {"tag": "m", "instance": "0"}
    assert value(samples, "modelshare_requests_total", **inst) == sent
    assert value(samples, "modelshare_rows_total", **inst) == sent * batch
    batches = value(samples, "modelshare_batches_total", **inst)
    assert 1 <= batches <= sent
    # One observation per backend run, whose rows add up to every row sent; one queue wait per
    # request.
    assert value(samples, "modelshare_batch_rows_count", **inst) == batches
    assert value(samples, "modelshare_batch_rows_sum", **inst) == sent * batch
    assert value(samples, "modelshare_batch_rows_bucket", le="2", **inst) == 0
    assert value(samples, "modelshare_run_seconds_count", **inst) == batches
    assert value(samples, "modelshare_queue_wait_seconds_count", **inst) == sent
    assert value(samples, "modelshare_loads_total", tag="m") == 1
    assert value(samples, "modelshare_ready", tag="m") == 1
    assert value(samples, "modelshare_leases", tag="m") == 0
    assert value(samples, "modelshare_restarts_total", **inst) == 0
    assert value(samples, "modelshare_memory_bytes", tag="m", device="host") > 0
    budget = value(samples, "modelshare_device_budget_bytes", device="host")
    used = value(samples, "modelshare_device_used_bytes", device="host")
    assert budget > 0 and used > 0
    assert value(samples, "modelshare_device_free_bytes", device="host") == budget - used
    # What status says agrees.
    st = ms.model("m")
    assert st["requests"] == sent and st["rows"] == sent * batch


def test_errors_by_code_and_a_restart_after_kill_9(ms, metrics, tmp_path):
    weights = ms.make_dense("m.safetensors", [16, 8])
    s = ms.session("m", {"backend": "dense", "weights": str(weights)})
    assert s.ok, s.first
    good = np.ones((2, 16), np.float32)
    for _ in range(5):
        assert isinstance(s.infer(good, tmp_path), np.ndarray)
    answer = s.infer(np.ones((2, 15), np.float32), tmp_path)
    assert isinstance(answer, str) and "MS_E_SHAPE" in answer, answer

    samples, _ = scrape(metrics)
    inst = {"tag": "m", "instance": "0"}
    assert value(samples, "modelshare_errors_total", code="MS_E_SHAPE", **inst) == 1
    assert value(samples, "modelshare_requests_total", **inst) == 6
    assert value(samples, "modelshare_leases", tag="m") == 1

    pid = ms.model("m")["worker_pids"][0]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: value(scrape(metrics)[0], "modelshare_restarts_total", **inst) == 1,
               what="the restart counted")
    wait_until(lambda: ms.model("m")["instances"][0]["state"] == "up", what="instance up")
    assert not pid_alive(pid)
    assert isinstance(s.infer(good, tmp_path), np.ndarray)
    samples, _ = scrape(metrics)
    # The dead worker's counters are kept: its 6 requests and the one after the restart.
    assert value(samples, "modelshare_requests_total", **inst) == 7
    assert value(samples, "modelshare_errors_total", code="MS_E_SHAPE", **inst) == 1


def test_other_paths_are_404_and_other_methods_405(metrics):
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(metrics + "/", timeout=10)
    assert e.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(metrics + "/metrics/x", timeout=10)
    assert e.value.code == 404
    req = urllib.request.Request(metrics + "/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 405


@pytest.mark.parametrize("addr, says", [
    (":9464", "no host"),
    ("127.0.0.1:0", "port from 1 to 65535"),
    ("127.0.0.1:99999", "port from 1 to 65535"),
    ("example.com:9464", "expected an IPv4 address"),
    ("::1:9464", "IPv6 address goes in brackets"),
    ("[::1:9464", "no closing bracket"),
    ("", "got nothing"),
])
def test_a_bad_metrics_address_is_a_usage_error(ms, addr, says):
    r = start_daemon(ms, "--metrics", addr)
    assert r.returncode == 2, r
    assert says in r.stderr, r.stderr
    assert ms.daemon_pid() is None


def test_a_busy_port_fails_the_start_clearly(ms):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = start_daemon(ms, "--metrics", f"127.0.0.1:{port}")
    assert r.returncode == 1
    assert f"127.0.0.1:{port}" in r.stderr and "Address already in use" in r.stderr, r.stderr
    # The daemon that said so exits (its starter returns as soon as it hears why).
    wait_until(lambda: ms.daemon_pid() is None, what="the failed daemon's exit")
    assert not ms.socket.exists()


def test_no_tcp_listener_without_metrics(ms):
    r = subprocess.run([str(TESTCLIENT), "connect"], env=ms.env, capture_output=True, text=True,
                       timeout=30)  # starts a daemon without --metrics
    assert r.stdout.startswith("connected"), r
    pid = ms.daemon_pid()
    assert pid
    inodes = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    sockets = {i[len("socket:["):-1] for i in inodes if i.startswith("socket:[")}
    with open("/proc/net/tcp") as f4, open("/proc/net/tcp6") as f6:
        rows = [line.split() for line in f4.readlines()[1:] + f6.readlines()[1:]]
    assert not [r for r in rows if r[9] in sockets], "the daemon has a TCP socket"


def test_an_eviction_is_counted(ms):
    port = free_port()
    # Room for two models of 64 MiB of weights (about 65 MiB measured each), not three.
    r = start_daemon(ms, "--metrics", f"127.0.0.1:{port}", "--memory", "host=150MiB")
    assert r.returncode == 0, r.stderr
    url = f"http://127.0.0.1:{port}"
    weights = ms.make_dense("m64.safetensors", [4096, 4096])
    for tag in ("a", "b", "c"):
        ms.cli("load", tag, "--spec", json.dumps({"backend": "dense", "weights": str(weights),
                                                  "keep_alive": 600}))
    samples, _ = scrape(url)
    assert value(samples, "modelshare_daemon_evictions_total") == 1
    # "a" went for good, and its counters stay: a counter never goes down.
    assert value(samples, "modelshare_evictions_total", tag="a") == 1
    assert value(samples, "modelshare_loads_total", tag="a") == 1
    assert value(samples, "modelshare_ready", tag="a") is None
    assert value(samples, "modelshare_loads_total", tag="b") == 1
    assert value(samples, "modelshare_evictions_total", tag="c") == 0
    # Loaded again: its loads go on from where they were.
    ms.cli("load", "a", "--spec", json.dumps({"backend": "dense", "weights": str(weights),
                                              "keep_alive": 600}))
    samples, _ = scrape(url)
    assert value(samples, "modelshare_loads_total", tag="a") == 2
    assert value(samples, "modelshare_evictions_total", tag="b") == 1
    assert value(samples, "modelshare_daemon_evictions_total") == 2
    assert value(samples, "modelshare_device_budget_bytes", device="host") == 150 << 20


def test_memory_follows_each_instances_device(ms):
    # Two instances on two (budgeted, not real) cards: each card's series has its instance's
    # share, and each device's used bytes count it.
    ms.env["MODELSHARE_MEMORY"] = "host=8GiB,cuda:0=4GiB,cuda:1=4GiB"
    port = free_port()
    r = start_daemon(ms, "--metrics", f"127.0.0.1:{port}")
    assert r.returncode == 0, r.stderr
    spec = {"backend": "identity", "instances": 2, "devices": ["cuda:0", "cuda:1"],
            "memory": 2 << 30, "keep_alive": 600}
    ms.cli("load", "two", "--spec", json.dumps(spec))
    samples, _ = scrape(f"http://127.0.0.1:{port}")
    for dev in ("cuda:0", "cuda:1"):
        assert value(samples, "modelshare_memory_bytes", tag="two", device=dev) == 1 << 30
        assert value(samples, "modelshare_device_used_bytes", device=dev) == 1 << 30
