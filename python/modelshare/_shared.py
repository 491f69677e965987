"""Shared models: a tag and a spec; acquire() gives a lease, a callable Model."""
import json
import os
import pickle

import numpy as np

from . import _core
from ._client import control

# Spec fields a caller may give as keyword arguments (backend and weights come from the factory).
SPEC_FIELDS = ("device", "output", "keep_alive", "max_batch", "batch_delay_us", "instances",
               "thread_safe", "batchable", "memory", "load_timeout")

try:  # bfloat16 arrays, when the package that defines them is there
    import ml_dtypes as _ml_dtypes
    _BFLOAT16 = np.dtype(_ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - optional
    _BFLOAT16 = None


class NotPicklable(_core.InvalidArgument):
    """The constructor given to Shared() cannot be pickled, so it cannot reach a worker."""


def _spec_from(kwargs, where):
    unknown = sorted(set(kwargs) - set(SPEC_FIELDS))
    if unknown:
        raise TypeError(f"{where}: unexpected keyword argument(s) {', '.join(unknown)}; spec "
                        f"fields are {', '.join(SPEC_FIELDS)}")
    return {k: v for k, v in kwargs.items() if v is not None}


def _pickled(constructor, tag):
    try:
        import cloudpickle
        dumps, how = cloudpickle.dumps, "cloudpickle"
    except ImportError:
        dumps, how = (lambda obj: pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)), "pickle"
    try:
        return dumps(constructor)
    except Exception as e:  # pickling raises many types (TypeError, PicklingError, ...)
        hint = "" if how == "cloudpickle" else \
            " (install cloudpickle to send lambdas and closures)"
        raise NotPicklable(
            f"Shared(tag={tag!r}): the constructor {constructor!r} cannot be pickled with {how}: "
            f"{type(e).__name__}: {e}. It runs in the model's worker process, so it must be "
            f"picklable: a module-level function or class, or a functools.partial of one{hint}"
        ) from e


class Shared:
    """A model shared by tag between every process of this machine.

    Shared(constructor, tag=...) -- a Python model: constructor() builds it in a worker process.
    Shared.dense(weights, tag=...) -- the built-in dense backend (an MLP from safetensors).
    Spec options are keyword arguments: keep_alive, max_batch, batch_delay_us, instances,
    thread_safe, batchable, memory, load_timeout, device, output.
    """

    def __init__(self, constructor, tag, **spec):
        if not callable(constructor):
            raise TypeError(f"Shared(tag={tag!r}): constructor must be callable, got "
                            f"{type(constructor).__name__}")
        self.tag = tag
        self._spec = {"backend": "python", **_spec_from(spec, "Shared")}
        self._payload = _pickled(constructor, tag)

    @classmethod
    def dense(cls, weights, tag, **spec):
        """The dense backend: an MLP whose layers come from a safetensors file."""
        self = cls.__new__(cls)
        self.tag = tag
        self._spec = {"backend": "dense", "weights": os.path.abspath(os.fspath(weights)),
                      **_spec_from(spec, "Shared.dense")}
        self._payload = None
        return self

    @property
    def spec(self):
        """The spec as sent to the daemon (a copy)."""
        return dict(self._spec)

    def _spec_json(self):
        if self._spec["backend"] == "python":
            raise NotImplementedError(
                f"Shared(tag={self.tag!r}): Python constructors need the python backend, which "
                "this version does not have yet; Shared.dense() models work")
        return json.dumps(self._spec, sort_keys=True)

    def acquire(self):
        """A lease on the model, loading it first when no process has. Use it as a context
        manager, or end it with release()."""
        spec = self._spec_json()
        return Model(self, control(lambda c: c.acquire(self.tag, spec)))

    def release(self, model):
        """Ends the lease of a model from acquire()."""
        model.release()

    def load(self):
        """Loads the model without holding a lease: it stays for its keep_alive."""
        spec = self._spec_json()
        control(lambda c: c.load(self.tag, spec))

    def unload(self, force=False):
        """Stops the model's worker now (modelshare.Busy while leases exist, unless force)."""
        unload(self.tag, force)

    def __repr__(self):
        return f"Shared(tag={self.tag!r}, spec={self._spec!r})"


def _as_input(x):
    """Something with the buffer protocol, and its ms_dtype override (0: from the buffer)."""
    if isinstance(x, np.ndarray):
        if _BFLOAT16 is not None and x.dtype == _BFLOAT16:
            return x.view(np.uint16), _core.BFLOAT16
        return x, 0
    try:
        memoryview(x).release()
        return x, 0
    except TypeError:
        pass
    if hasattr(x, "__dlpack__"):
        try:
            return _as_input(np.from_dlpack(x))
        except (TypeError, RuntimeError, BufferError, ValueError):
            if not hasattr(x, "__array__"):
                raise
    return _as_input(np.asarray(x))


class Model:
    """A lease on a shared model: model(x) runs it. A context manager: the lease ends at the end
    of the with block (or at release()).

    Outputs are numpy arrays that view the model's shared memory, no copy: each keeps the lease
    alive until it is freed, so a released model whose outputs are still in use ends its lease
    when the last of them goes (copy them, y.copy(), to keep them past that point).
    """

    __slots__ = ("_shared", "_core", "_pid", "__weakref__")

    def __init__(self, shared, core):
        self._shared = shared
        self._core = core
        self._pid = os.getpid()

    def __call__(self, x):
        core = self._core
        if self._pid != os.getpid():
            core = self._reacquire()
        data, dtype = _as_input(x)
        t = core.infer(data, dtype)
        y = np.asarray(t)
        if t.dtype == _core.BFLOAT16 and _BFLOAT16 is not None:
            y = y.view(_BFLOAT16)
        return y

    def _reacquire(self):
        # A handle inherited across fork(): this process takes a lease of its own.
        if self._core.released:
            raise _core.InvalidArgument(f"model {self._core.tag!r} was released: acquire it again")
        tag, spec = self._shared.tag, self._shared._spec_json()
        self._core = control(lambda c: c.acquire(tag, spec))
        self._pid = os.getpid()
        return self._core

    def release(self):
        """Ends the lease (once no output array of it is in use). Idempotent."""
        self._core.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    @property
    def tag(self):
        return self._core.tag

    @property
    def released(self):
        """release() was called."""
        return self._core.released

    @property
    def held(self):
        """The lease is still held (by this handle or by output arrays still in use)."""
        return self._core.held

    def signature(self):
        """((input dtype name, shape), (output dtype name, shape)); None for a dimension that
        varies (the batch)."""
        (idt, ishape), (odt, oshape) = self._core.signature()
        return (_core.dtype_name(idt), ishape), (_core.dtype_name(odt), oshape)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError(
            f"model {self._core.tag!r} has no attribute {name!r}: the dense backend is called as "
            "model(x) only")

    def __repr__(self):
        state = "released" if self._core.released else "held"
        return f"<modelshare.Model {self._core.tag!r} {state}>"


def status():
    """The daemon's status as a dict (as `modelshare status --json`): models, budgets."""
    return json.loads(control(lambda c: c.status()))


def unload(tag, force=False):
    """Stops the model's worker now; refused with modelshare.Busy while leases exist unless
    force (the holders' next calls then fail with modelshare.Unloaded)."""
    control(lambda c: c.unload(tag, bool(force)))
