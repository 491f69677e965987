"""device and devices with the python backend, without a GPU: the daemon is given budgets for two
cards, and a python model that never touches CUDA tells, from inside its worker, which card the
worker was pinned to (CUDA_VISIBLE_DEVICES) and which device its spec names."""
import numpy as np

import modelshare
import pymodels


def test_python_workers_are_pinned_to_their_cards(daemon, monkeypatch):
    monkeypatch.setenv("MODELSHARE_MEMORY", "host=8GiB,cuda:0=4GiB,cuda:1=4GiB")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    shared = modelshare.Shared(pymodels.make_scale, tag="pinned", devices="auto", instances=2)
    with shared.acquire() as model:
        np.testing.assert_allclose(model(np.ones((2, 3), np.float32)), 2.0)
        m = next(x for x in modelshare.status()["models"] if x["tag"] == "pinned")
        assert [i["device"] for i in m["instances"]] == ["cuda:0", "cuda:1"], m["instances"]
        # A call goes to one of the instances; the worker reports what it was given.
        seen = {model.environ("CUDA_VISIBLE_DEVICES") for _ in range(20)}
        assert seen and seen <= {"0", "1"}, seen
        assert model.environ("CUDA_DEVICE_ORDER") == "PCI_BUS_ID"
        # Both python workers: pinned, with PYTHONPATH (their launch's own environment) kept.
        for inst in m["instances"]:
            with open(f"/proc/{inst['pid']}/environ", "rb") as f:
                env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
            assert env[b"CUDA_VISIBLE_DEVICES"] == inst["device"][-1].encode()
            assert b"PYTHONPATH" in env
