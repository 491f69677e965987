"""asyncio callers: awaiting a shared model without blocking the event loop.

A call waits in a thread of modelshare's own pool, off the loop, with the GIL released while it
waits for the worker (the C call releases it), so a hundred coroutines of one process can have
requests in flight at once and the worker batches them like requests of many processes. The pool
has one thread per ring slot (64): more coroutines than that queue for a thread.
"""
import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor

THREADS = 64  # one per ring slot of an instance (MS__RING_SLOTS)

_lock = threading.Lock()
_pool = None
_pool_pid = None


def _executor():
    """This process's pool (a fork child makes its own: the parent's threads are not there)."""
    global _pool, _pool_pid
    with _lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="modelshare")
            _pool_pid = os.getpid()
        return _pool


async def run(fn, *args):
    """fn(*args) in the pool, awaited from the running loop."""
    return await asyncio.get_running_loop().run_in_executor(_executor(), fn, *args)


async def cancellable(fn):
    """fn(event) in the pool, awaited from the running loop. When the awaiting task is cancelled
    (asyncio.wait_for's timeout included), event (a threading.Event) is set: the call fn makes
    looks at it while it waits (every 100 ms at most) and ends, so no pool thread stays stuck
    with a call nobody awaits; a call not started yet never starts."""
    event = threading.Event()
    try:
        return await asyncio.get_running_loop().run_in_executor(_executor(), fn, event)
    except asyncio.CancelledError:
        event.set()
        raise


class Acquiring:
    """What Shared.acquire_async() returns: `async with` it (the lease ends at the end of the
    block) or `await` it (a Model, ended with `await model.arelease()` or release())."""

    __slots__ = ("_shared", "_model", "_timeout")

    def __init__(self, shared, timeout=None):
        self._shared = shared
        self._model = None
        self._timeout = timeout

    def __await__(self):
        return run(self._shared.acquire, self._timeout).__await__()

    async def __aenter__(self):
        self._model = await run(self._shared.acquire, self._timeout)
        return self._model

    async def __aexit__(self, *exc):
        model, self._model = self._model, None
        if model is not None:
            await run(model.release)
        return False
