"""Ray Serve deployments of bench/vs_peers.py (a module of its own, so that replicas import it by
name). One replica each, as modelshare runs one worker per model; no HTTP proxy (the clients call
through DeploymentHandles)."""
import numpy as np
from ray import serve

import peers_model

# The replica's numpy may use both cores, as a modelshare worker's or a Beam server's does.
OPTIONS = {"num_cpus": 2}


@serve.deployment(num_replicas=1, max_ongoing_requests=64, ray_actor_options=OPTIONS)
class Plain:
    """One request, one model call."""

    def __init__(self, name):
        self.model = peers_model.make(name)

    def __call__(self, x):
        return self.model(x)


@serve.deployment(num_replicas=1, max_ongoing_requests=64, ray_actor_options=OPTIONS)
class Batched:
    """@serve.batch: up to 8 requests waiting together (10 ms at most) run as one model call."""

    def __init__(self, name):
        self.model = peers_model.make(name)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def run(self, xs):
        sizes = [len(x) for x in xs]
        y = self.model(np.concatenate(xs))
        return np.split(y, np.cumsum(sizes)[:-1])

    async def __call__(self, x):
        return await self.run(x)


@serve.deployment(num_replicas=1, max_ongoing_requests=64, ray_actor_options=OPTIONS)
class Multiplexed:
    """Model multiplexing: the model id comes with each request (handle.options(
    multiplexed_model_id=...)); the replica keeps up to 4 loaded, LRU."""

    @serve.multiplexed(max_num_models_per_replica=4)
    async def get(self, model_id):
        return peers_model.make(model_id)

    async def __call__(self, x):
        model = await self.get(serve.get_multiplexed_model_id())
        return model(x)
