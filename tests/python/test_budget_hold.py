"""Budgets that hold for python models: the daemon cannot estimate them, so once their workers
are measured a host over its budget evicts idle ones, least recently used first, until it is not;
a tag's next load is estimated at what it measured last; a model measured over its own memory=
says so in status. Judged by the daemon's own figures (status), never the machine's free memory."""
import functools

import modelshare

import ballast
from testlib import wait_until

MIB = 1 << 20


def host_budget():
    return modelshare.status()["budgets"]["host"]


def models():
    return {m["tag"]: m for m in modelshare.status()["models"]}


def loaded(tag, mib=64, **spec):
    shared = modelshare.Shared(functools.partial(ballast.Ballast, mib), tag=tag, keep_alive=600,
                               **spec)
    shared.load()
    return shared


def evicted(daemon):
    return [ln.split('model "', 1)[1].split('"', 1)[0] for ln in daemon.log().splitlines()
            if "is over its budget as measured" in ln]


def test_python_models_over_the_host_budget_are_evicted_lru_once_measured(daemon, monkeypatch):
    monkeypatch.setenv("MODELSHARE_MEMORY", "host=300MiB")
    for i in range(4):
        loaded(f"b{i}")
        wait_until(lambda: models()[f"b{i}"]["memory_measured"], timeout=30, what="measured")
    # Four workers of 64 MiB and an interpreter each do not fit in 300 MiB: the oldest go.
    wait_until(lambda: len(evicted(daemon)) > 0, timeout=30, what="an eviction")
    gone = evicted(daemon)
    assert gone == [f"b{i}" for i in range(len(gone))], gone
    assert "b3" not in gone
    wait_until(lambda: not set(gone) & set(models()), timeout=30, what="evicted models gone")
    b = host_budget()
    assert b["used_bytes"] <= b["budget_bytes"], b
    for tag, m in models().items():
        assert m["memory_bytes"] > 64 * MIB, (tag, m)  # measured, not the estimate of 0

    # b0 again: estimated at what it measured, before its worker says anything.
    loaded("b0")
    line = [ln for ln in daemon.log().splitlines()
            if 'model "b0": estimate' in ln and "as measured at its last load" in ln]
    assert line, daemon.log()[-3000:]


def test_a_model_measured_over_its_memory_says_so(daemon):
    loaded("small", mib=64, memory=16 * MIB)
    wait_until(lambda: models()["small"]["over_memory_bytes"] > 0, timeout=30,
               what="over_memory_bytes")
    m = models()["small"]
    assert m["over_memory_bytes"] == m["memory_bytes"] - 16 * MIB
