"""asyncio callers: await model.ainfer(x) and async with shared.acquire_async(), off the loop."""
import asyncio
import functools

import numpy as np
import pytest

import modelshare
import pymodels


def model_status(tag):
    return next((m for m in modelshare.status()["models"] if m["tag"] == tag), None)


async def ticking(until):
    """Counts the loop's turns until the event is set: a loop blocked by a call counts none."""
    ticks = 0
    while not until.is_set():
        await asyncio.sleep(0.005)
        ticks += 1
    return ticks


def test_hundred_coroutines_one_process(daemon):
    shared = modelshare.Shared(functools.partial(pymodels.Scale, 3.0), tag="async", max_batch=64)

    async def main():
        async with shared.acquire_async() as model:
            async def one(i):
                x = np.full((1 + i % 3, 4), i, np.float32)
                return i, x, await model.ainfer(x)
            results = await asyncio.gather(*(one(i) for i in range(100)))
            vocab = await model.acall("vocab_size")
        return model, results, vocab
    model, results, vocab = asyncio.run(main())
    assert len(results) == 100 and vocab == 30522
    for i, x, y in results:
        np.testing.assert_array_equal(y, x * 3)
    assert model.released
    del results, x, y  # the outputs view the model's memory: the lease ends with the last one
    st = model_status("async")
    assert st["loads"] == 1 and st["leases"] == 0, st
    assert st["requests"] >= 100, st
    print("100 coroutines: worker batches", st["batches"], "for", st["requests"], "requests")


def test_the_loop_runs_while_a_call_waits(daemon):
    shared = modelshare.Shared(functools.partial(pymodels.Sleepy, 0.3), tag="sleepy")

    async def main():
        model = await shared.acquire_async()
        done = asyncio.Event()
        ticker = asyncio.create_task(ticking(done))
        y = await model.ainfer(np.ones((2, 2), np.float32))
        done.set()
        await model.arelease()
        return y, await ticker
    y, ticks = asyncio.run(main())
    np.testing.assert_array_equal(y, np.ones((2, 2), np.float32))
    # The call took 0.3 s in the worker; a loop blocked by it could not have turned at all.
    assert ticks >= 5, ticks
    print("loop turns during one 0.3 s call:", ticks)


def test_async_errors_are_the_same_errors(daemon, mlp):
    async def main():
        async with modelshare.Shared.dense(mlp, tag="mlp").acquire_async() as model:
            with pytest.raises(modelshare.ShapeError, match="64"):
                await model.ainfer(np.zeros((1, 65), np.float32))
            return await model.ainfer(np.zeros((1, 64), np.float32))
    assert asyncio.run(main()).shape == (1, 10)
    with pytest.raises(modelshare.SpecConflict):
        async def conflict():
            async with modelshare.Shared.dense(mlp, tag="mlp").acquire_async():
                async with modelshare.Shared.dense(mlp, tag="mlp", max_batch=2).acquire_async():
                    pass
        asyncio.run(conflict())
