"""An asyncio web server (aiohttp) awaiting a shared model: the event loop keeps serving while
calls wait for the model's worker, and concurrent requests are batched together.

    python examples/python/aiohttp_server.py            # serves on http://127.0.0.1:8081/?x=1.5
    python examples/python/aiohttp_server.py --demo     # starts, sends 50 requests at once, stops
"""
import asyncio
import sys

import numpy as np
from aiohttp import ClientSession, web

import modelshare


class Ranker:
    """Stands in for a large model: a fixed linear scorer of 8 features."""

    def __init__(self):
        self.w = np.linspace(0, 1, 8, dtype=np.float32).reshape(8, 1)

    def __call__(self, x):
        return x @ self.w


SHARED = modelshare.Shared(Ranker, tag="example-aiohttp", batchable=True, max_batch=64)


async def score(request):
    x = np.full((1, 8), float(request.query.get("x", "1")), dtype=np.float32)
    y = await request.app["model"].ainfer(x)  # waits off the loop; other requests go on
    return web.json_response({"x": float(x[0, 0]), "score": float(y[0, 0])})


async def lease(app):
    async with SHARED.acquire_async() as model:  # one lease for the server's life
        app["model"] = model
        yield


def make_app():
    app = web.Application()
    app.router.add_get("/", score)
    app.cleanup_ctx.append(lease)
    return app


async def demo():
    runner = web.AppRunner(make_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with ClientSession() as session:
        async def ask(i):
            async with session.get(f"http://127.0.0.1:{port}/?x={i}") as r:
                return await r.json()
        answers = await asyncio.gather(*(ask(i) for i in range(50)))
    expected = float(np.linspace(0, 1, 8).sum())
    assert all(abs(a["score"] - a["x"] * expected) < 1e-3 for a in answers), answers[:3]
    model = next(m for m in modelshare.status()["models"] if m["tag"] == "example-aiohttp")
    print(f"50 concurrent requests answered; worker ran {model['batches']} batches")
    print(f"loads: {model['loads']}")
    await runner.cleanup()


if __name__ == "__main__":
    if "--demo" in sys.argv:
        asyncio.run(demo())
    else:
        web.run_app(make_app(), host="127.0.0.1", port=8081)
