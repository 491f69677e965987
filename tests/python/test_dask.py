"""Dask distributed: 4 worker processes map a function over a Shared model: one load."""
import numpy as np
import pytest

import modelshare
import pymodels

# Installed by tests/requirements.txt: a missing Dask is a failure here, not a skip.
import distributed
from modelshare.dask import ModelshareDaemon

SHARED = modelshare.Shared(pymodels.make_scale, tag="dask-scale")


def predict(i):
    import os
    with SHARED.acquire() as model:
        return i, float(model(np.full((1, 2), i, dtype=np.float32))[0, 0]), os.getpid()


def test_local_cluster_one_load(daemon):
    with distributed.LocalCluster(n_workers=4, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        client.register_plugin(ModelshareDaemon(preload=[SHARED]))
        results = client.gather(client.map(predict, range(64)))
    assert sorted(i for i, _, _ in results) == list(range(64))
    for i, y, _ in results:
        assert y == 2.0 * i
    m = next(m for m in modelshare.status()["models"] if m["tag"] == "dask-scale")
    assert m["loads"] == 1
    with pytest.raises(TypeError, match="modelshare.Shared"):
        ModelshareDaemon(preload=["not a model"])
