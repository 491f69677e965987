"""Dask integration: a worker plugin that makes sure each machine's daemon is up, and can
preload models, so that tasks on every Dask worker of a machine share one copy.

    from distributed import Client
    from modelshare.dask import ModelshareDaemon

    embedder = modelshare.Shared(load_embedder, tag="embedder-v3")
    client.register_plugin(ModelshareDaemon(preload=[embedder]))

    def embed(batch):
        with embedder.acquire() as model:   # one load per machine, whichever worker asks first
            return model(batch).copy()

    client.map(embed, batches)
"""
from ._client import control
from ._shared import Shared

try:
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover - the plugin is usable only with distributed
    _WorkerPlugin = object


class ModelshareDaemon(_WorkerPlugin):
    """On each Dask worker's start: connects to the machine's daemon (starting it when none
    runs) and loads every modelshare.Shared in preload (a load without a lease: it stays for its
    keep_alive). Workers of one machine share the daemon and so the models."""

    name = "modelshare-daemon"

    def __init__(self, preload=()):
        preload = list(preload)
        for s in preload:
            if not isinstance(s, Shared):
                raise TypeError(f"ModelshareDaemon(preload=...): expected modelshare.Shared "
                                f"objects, got {type(s).__name__}")
        self.preload = preload

    def setup(self, worker=None):
        control(lambda c: c.status())  # connects, starting the daemon when none runs
        for s in self.preload:
            s.load()

    def teardown(self, worker=None):
        pass
