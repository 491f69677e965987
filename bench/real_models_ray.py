"""Ray Serve deployments of bench/real_models.py (a module of its own, so that replicas import it
by name): one replica each, @serve.batch joining up to 8 requests (32 rows, as modelshare's
max_batch) that waited together at most 10 ms into one model call. Answers are numpy arrays, so
that the clients need no torch. On a GPU (device "cuda:N") the replica asks Ray for one GPU
(options(), as Ray's users write it) and runs the model on the one Ray gives it ("cuda": Ray
sets the replica's CUDA_VISIBLE_DEVICES; the bench starts Ray seeing cuda:N alone), the inputs
moved there and the answers back."""
import numpy as np
from ray import serve

import real_models_model as rm
from peers_ray import OPTIONS

BATCH = rm.MAX_BATCH_ROWS // rm.ROWS


def options(device):
    """The replica's ray_actor_options: OPTIONS, and one GPU on a GPU."""
    return dict(OPTIONS, num_gpus=1) if device != "cpu" else OPTIONS


def _device(device):
    return "cuda" if device != "cpu" else "cpu"


@serve.deployment(num_replicas=1, max_ongoing_requests=64, ray_actor_options=OPTIONS)
class Encoder:
    """Requests {"input_ids", "attention_mask"} of their own lengths, padded to the batch's
    longest inside the batch."""

    def __init__(self, threads, device="cpu"):
        self.model = rm.make_encoder(threads, _device(device))
        self.device = _device(device)

    @serve.batch(max_batch_size=BATCH, batch_wait_timeout_s=0.01)
    async def run(self, requests):
        import torch
        import real_models_torch
        ids, mask, rows = real_models_torch.pad_stack(requests)
        with torch.inference_mode():
            y = self.model(input_ids=ids.to(self.device),
                           attention_mask=mask.to(self.device)).cpu().numpy()
        return [part.copy() for part in np.split(y, np.cumsum(rows)[:-1])]

    async def __call__(self, request):
        return await self.run(request)


@serve.deployment(num_replicas=1, max_ongoing_requests=64, ray_actor_options=OPTIONS)
class Embedder:
    """Requests that are lists of sentences, joined into one list."""

    def __init__(self, threads, device="cpu"):
        self.model = rm.make_embedder(threads, _device(device))

    @serve.batch(max_batch_size=BATCH, batch_wait_timeout_s=0.01)
    async def run(self, lists):
        y = self.model([s for texts in lists for s in texts])
        return [part.copy() for part in np.split(y, np.cumsum([len(t) for t in lists])[:-1])]

    async def __call__(self, texts):
        return await self.run(texts)
