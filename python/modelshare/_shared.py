"""Shared models: a tag and a spec; acquire() gives a lease, a callable Model."""
import base64
import fcntl
import hashlib
import json
import collections.abc
import os
import sys
import threading

import numpy as np

from . import _async, _core, _identity, _multi, _pickling, _torch_input
from ._client import control

# Spec fields a caller may give as keyword arguments (backend and weights come from the factory):
# the C table's (src/common/spec.h, MS__SPEC_FIELDS).
SPEC_FIELDS = _core.SPEC_FIELDS

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


# A constructor's pickle of at most CONSTRUCTOR_INLINE_MAX bytes travels inline in the spec, as
# base64 (the spec reaches the worker on its command line; the daemon takes at most 98304
# characters there). A larger one, up to CONSTRUCTOR_MAX (the daemon's limit, 1 GiB), travels in
# a sealed memfd sent with the request (src/common/ctorfd.h): the spec then says its size and
# SHA-256, and the worker reads it from the memfd.
CONSTRUCTOR_INLINE_MAX = 73728
CONSTRUCTOR_MAX = 1 << 30
FRAMEWORKS = ("torch", "tensorflow", "jax", "onnxruntime")


class _Memfd:
    """One constructor's pickle in a memfd sealed against write, shrink and grow, as the daemon
    takes it; the descriptor is closed when this object goes. `payload` is the bytes object it
    was made from (a Shared compares it by identity to know the memfd is still its own)."""

    def __init__(self, payload):
        self.payload = payload
        self.sha256 = hashlib.sha256(payload).hexdigest()
        self.fd = -1
        fd = os.memfd_create("modelshare-constructor", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view, done = memoryview(payload), 0
            while done < len(view):
                done += os.write(fd, view[done:])
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK |
                        fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def __del__(self, _close=os.close):  # os.close kept: at exit the module may be torn down
        if self.fd >= 0:
            _close(self.fd)
            self.fd = -1


def _python_path():
    """This process's sys.path as the worker's PYTHONPATH: absolute folders that exist."""
    out, seen = [], set()
    for p in sys.path:
        p = os.path.abspath(p or os.getcwd())
        if p not in seen and ":" not in p and os.path.isdir(p):
            seen.add(p)
            out.append(p)
    return out[:256]


def _pickled(constructor, tag):
    try:
        return _pickling.dumps(constructor)
    except Exception as e:  # pickling raises many types (TypeError, PicklingError, ...)
        raise NotPicklable(
            f"Shared(tag={tag!r}): the constructor {constructor!r} cannot be pickled with "
            f"cloudpickle: {type(e).__name__}: {e}. It runs in the model's worker process, so it "
            "must be picklable: a function, lambda, class or functools.partial that loads the "
            "model, capturing nothing that cannot be pickled (a lock, an open file, a socket)"
        ) from e


KEY_MAX = 256


class Shared:
    """A model shared by tag between every process of this machine.

    Shared(constructor, tag=...) -- a Python model: constructor() builds it in a worker process
        started with this interpreter, working directory and sys.path. The constructor travels
        pickled (cloudpickle; a function or class of the main script is found in the worker
        whether this process runs the script as __main__ or as a spawn child's __mp_main__).
        Processes share the model when their constructors are the same code with the same
        captured values (a fingerprint of the code, names, closure, defaults and globals it
        uses, the same in every process) and the other spec fields agree; a genuinely different
        constructor under the same tag is refused with SpecConflict, naming what differs.
        key="..." names the identity yourself instead (constructors with the same key are one
        model). framework="torch", "tensorflow", "jax" or "onnxruntime" with memory=BYTES on a
        cuda device applies that framework's own memory cap in the worker before the
        constructor runs. A torch module (nn.Module, ScriptModule, ExportedProgram; any callable
        with framework="torch") is called with torch tensors on its device under inference mode,
        and an onnxruntime.InferenceSession as session.run(None, {its first input: x}).
    Shared.dense(weights, tag=...) -- the built-in dense backend (an MLP from safetensors).
    Spec options are keyword arguments: keep_alive, max_batch, batch_sizes, batch_delay_us,
    instances, thread_safe, threads, batchable, memory, load_timeout, call_timeout, max_restarts,
    device ("cpu", "cuda:N" or "auto"), devices (a list such as ["cuda:0", "cuda:1"], or "auto": the
    instances spread over them), output, version, pad (requests of several tensors that differ
    along one dimension share a batch, padded: {"dim": 1, "value": {"attention_mask": 0},
    "multiple": 8}), shared_with ("owner" or "group": in group mode, whether the other members
    may use the model; docs/SECURITY.md). batchable=True says each output row depends
    only on its own input row, so calls of several processes may be merged into one batch (off
    by default for python models: merging a model that normalises over its batch would change
    its answers). thread_safe=True says the model may be called
    from several threads at once: its worker then runs up to `threads` batches at once (default:
    one per CPU), each call holding the GIL only where the model does not release it (numpy,
    ONNX Runtime and PyTorch kernels do). swap() moves the tag to a new version while it serves.
    """

    def __init__(self, constructor, tag, framework=None, key=None, timeout=None, **spec):
        if not callable(constructor):
            raise TypeError(f"Shared(tag={tag!r}): constructor must be callable, got "
                            f"{type(constructor).__name__}")
        if framework is not None and framework not in FRAMEWORKS:
            raise ValueError(f"Shared(tag={tag!r}): framework: expected None or one of "
                             f"{', '.join(FRAMEWORKS)}, got {framework!r}")
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= KEY_MAX):
            raise ValueError(f"Shared(tag={tag!r}): key: expected None or a string of 1 to "
                             f"{KEY_MAX} characters, got {key!r:.80}")
        self.tag = tag
        self._timeout = _timeout_arg(timeout, f"Shared(tag={tag!r})")
        self._spec = {"backend": "python", **_spec_from(spec, "Shared")}
        self._payload = _pickled(constructor, tag)
        if len(self._payload) > CONSTRUCTOR_MAX:
            raise NotPicklable(
                f"Shared(tag={tag!r}): the constructor pickles to {len(self._payload)} bytes, "
                f"expected at most {CONSTRUCTOR_MAX} (1 GiB): each worker reads it whole before "
                "it builds the model. Pickle a function that loads the model (from a file, a "
                "registry), not one that captures the model or its weights")
        self._framework = framework
        self._key, self._outline = _identity.stated(key) if key is not None else \
            _identity.of(constructor, self._payload)

    @classmethod
    def dense(cls, weights, tag, timeout=None, **spec):
        """The dense backend: an MLP whose layers come from a safetensors file."""
        self = cls.__new__(cls)
        self.tag = tag
        self._timeout = _timeout_arg(timeout, f"Shared.dense(tag={tag!r})")
        self._spec = {"backend": "dense", "weights": os.path.abspath(os.fspath(weights)),
                      **_spec_from(spec, "Shared.dense")}
        self._payload = None
        self._framework = None
        self._key = self._outline = None
        return self

    @property
    def spec(self):
        """The spec as sent to the daemon (a copy)."""
        return dict(self._spec)

    def _spec_json(self):
        return self._request()[0]

    def _constructor(self):
        """How the constructor travels: (spec fields, None) inline, or (spec fields, _Memfd) for
        a pickle over CONSTRUCTOR_INLINE_MAX bytes. The memfd is made once and kept."""
        if len(self._payload) <= CONSTRUCTOR_INLINE_MAX:
            return {"constructor": base64.b64encode(self._payload).decode("ascii")}, None
        memfd = getattr(self, "_memfd", None)
        if memfd is None or memfd.payload is not self._payload:
            memfd = self._memfd = _Memfd(self._payload)
        return {"constructor": None, "constructor_size": len(self._payload),
                "constructor_sha256": memfd.sha256}, memfd

    def _request(self):
        """The spec as JSON text for the daemon, and the _Memfd to send with it (None: none).
        The caller keeps the _Memfd while the request is sent: its descriptor lives as long."""
        spec = dict(self._spec)
        memfd = None
        if spec["backend"] == "python":
            constructor, memfd = self._constructor()
            # Where the worker runs: this (the acquiring) process's interpreter, folder and path.
            spec["python"] = {
                **constructor,
                "framework": self._framework,
                "key": self._key,
                "identity": self._outline,
                "executable": os.path.abspath(sys.executable),
                "cwd": os.getcwd(),
                "path": _python_path(),
            }
        return json.dumps(spec, sort_keys=True), memfd

    def acquire(self, timeout=None):
        """A lease on the model, loading it first when no process has. Use it as a context
        manager, or end it with release(). timeout=S: raise Timeout when the model is not ready
        within S seconds (the load goes on for the others that wait for it)."""
        return self._acquire_as(Model, timeout)

    def _acquire_as(self, model_type, timeout=None):
        """acquire(), the lease as a model_type (Model or a subclass of it)."""
        timeout = _timeout_arg(timeout, f"acquire of {self.tag!r}")
        spec, memfd = self._request()
        return model_type(self, control(lambda c: c.acquire(self.tag, spec,
                                                             constructor_fd=_fd_of(memfd),
                                                             timeout=timeout)))

    def acquire_async(self, timeout=None):
        """acquire() for asyncio: `async with shared.acquire_async() as model:` or
        `model = await shared.acquire_async()`. The load waits off the event loop; timeout= as
        for acquire()."""
        return _async.Acquiring(self, timeout)

    def release(self, model):
        """Ends the lease of a model from acquire()."""
        model.release()

    def load(self):
        """Loads the model without holding a lease: it stays for its keep_alive."""
        spec, memfd = self._request()
        control(lambda c: c.load(self.tag, spec, constructor_fd=_fd_of(memfd)))

    def unload(self, force=False):
        """Stops the model's worker now (modelshare.Busy while leases exist, unless force)."""
        unload(self.tag, force)

    def swap(self, new=None, *, version=None, drain_first=False, key=None, **spec):
        """Moves the tag to a new version of the model while it serves: new weights (a path,
        for Shared.dense) or a new constructor (for a python model), a version label, other
        spec fields as keywords. The new version loads in new worker processes while the old
        one serves; then requests go to it, and the old workers exit once they have answered
        what they took. Leases (Model objects) of every process stay valid. Returns once the
        new version serves; this Shared then describes it (acquire() asks for it).
        A new version that fails to load raises that error, the old one serving on. When both
        do not fit the memory budget at once, modelshare.NoMemory, unless drain_first=True:
        the old version is unloaded first (requests wait until the new one serves). A new
        version that takes or gives other shapes is refused (modelshare.SpecConflict)."""
        nxt = Shared.__new__(Shared)
        nxt.__dict__.update(self.__getstate__())
        nxt._spec = {**self._spec, **_spec_from(spec, "Shared.swap")}
        if version is not None:
            nxt._spec["version"] = version
        if self._spec["backend"] == "dense":
            if key is not None:
                raise TypeError("Shared.swap: key= is for python models")
            if new is not None:
                nxt._spec["weights"] = os.path.abspath(os.fspath(new))
        elif new is not None:
            fresh = Shared(new, self.tag, framework=self._framework, key=key)
            nxt._payload, nxt._key, nxt._outline = fresh._payload, fresh._key, fresh._outline
        elif key is not None:
            nxt._key, nxt._outline = _identity.stated(key)
        changes, memfd = nxt._request()
        control(lambda c: c.swap(self.tag, changes, bool(drain_first),
                                 constructor_fd=_fd_of(memfd)))
        self.__setstate__(nxt.__getstate__())
        self._memfd = memfd

    def __repr__(self):
        return f"Shared(tag={self.tag!r}, spec={self._spec!r})"

    def __getstate__(self):
        return {"tag": self.tag, "_spec": self._spec, "_payload": self._payload,
                "_framework": self._framework, "_key": self._key, "_outline": self._outline,
                "_timeout": self._timeout}

    def __setstate__(self, state):
        self.__dict__.update({"_timeout": None, **state})


def _timeout_arg(timeout, where):
    """timeout=: None (no deadline) or seconds, a number > 0."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"{where}: timeout: expected None or seconds > 0, got {timeout!r:.80}")
    return float(timeout)


def _fd_of(memfd):
    return memfd.fd if memfd is not None else -1


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


def _tensor_arg(x):
    """Whether a python model's argument takes the tensor path (shared memory, batched): an
    array of a dtype the data plane carries. Anything else is a pickled call."""
    if isinstance(x, np.ndarray):
        return x.dtype in _PLANE_DTYPES or (_BFLOAT16 is not None and x.dtype == _BFLOAT16)
    if hasattr(x, "__array__") or hasattr(x, "__dlpack__"):
        try:
            return np.asarray(x).dtype in _PLANE_DTYPES
        except Exception:
            return False
    return False


# The dtype table's (MS_DTYPE_MAP, through _core.DTYPES) numpy view: every dtype numpy has by
# that name (bfloat16 comes from ml_dtypes, above).
_NUMPY_CODES = {np.dtype(name): code for name, code in _core.DTYPES.items() if name != "bfloat16"}
_PLANE_DTYPES = set(_NUMPY_CODES)
# The same dtypes by identity (numpy's own dtype objects, kept alive by _NUMPY_CODES): the
# cheapest test of model(x)'s common case. A dtype equal to one of these but not it (one with
# metadata) takes the general path, which looks at it by equality.
_PLANE_DTYPE_IDS = frozenset(id(d) for d in _NUMPY_CODES)
_getpid = os.getpid
_NUMPY_DTYPES = {v: k for k, v in _NUMPY_CODES.items()}
# The worker's words for a batchable model that answered one tensor with a structure (worker.py).
_STRUCTURED = "for a structured answer"


class RemoteMethod:
    """A method of a python model: calling it runs it in the model's worker (pickled call)."""

    __slots__ = ("_model", "_name")

    def __init__(self, model, name):
        self._model = model
        self._name = name

    def __call__(self, *args, **kwargs):
        return self._model._remote("call", self._name, args, kwargs)

    def __repr__(self):
        return f"<remote method {self._name!r} of {self._model!r}>"


class Model:
    """A lease on a shared model: model(x) runs it. A context manager: the lease ends at the end
    of the with block (or at release()).

    Outputs are numpy arrays that view the model's shared memory, no copy: each keeps the lease
    alive until it is freed, so a released model whose outputs are still in use ends its lease
    when the last of them goes (copy them, y.copy(), to keep them past that point).

    A python model: model(x) with one array goes through shared memory. It is merged into one
    batch with other processes' calls only when the spec says batchable=True (each output row
    depends only on its own input row; the model then returns one array with a row per input
    row); otherwise it runs alone and may return anything (an array comes back in shared memory,
    any other answer pickled) and may modify its input (the copy made for the call). Several
    tensors (model(a, b), model(input_ids=a, attention_mask=b), model({"a": a})) and lists of
    str or bytes (model(["a sentence"])) go through shared memory too, up to 16, named with 1 to
    31 characters of [A-Za-z0-9_.:-]; the model gets them in the same structure and its answer
    (a tensor, a tuple, list or dict of them, a list of strings) comes back in the structure it
    returned, merged with other processes' when batchable (spec pad: padded along a dimension).
    Any other call, method or attribute (model.vocab_size(), model.classes_) is a pickled call in
    the worker. A model's exception is raised here, with
    the remote traceback in its notes (and `remote_traceback`). When the worker dies during a
    call, that call raises WorkerLost; the daemon restarts the worker, and the next call takes a
    fresh lease (loading the model again if it failed for good).
    """

    __slots__ = ("_shared", "_core", "_pid", "_methods", "_lost", "_relock", "_device_copied",
                 "_structured", "_objects_only", "__weakref__")

    def __init__(self, shared, core):
        self._shared = shared
        self._core = core
        self._pid = os.getpid()
        self._methods = set()
        self._lost = False
        self._relock = threading.Lock()  # one thread acquires again for all (ainfer's threads)
        self._device_copied = 0  # bytes of device tensors copied into shared memory
        # The model answered model(x) with a tuple, list or dict: from then on model(x) goes as a
        # request of several tensors, whose answers come back in that structure in shared memory.
        self._structured = False
        self._objects_only = False  # a batchable model's answer to several tensors was not tensors

    def _handle(self):
        core = self._core
        if self._pid != os.getpid() or self._lost:
            if self._pid != os.getpid():  # a fork child: the parent's lock state means nothing
                self._relock = threading.Lock()
            with self._relock:
                core = self._reacquire() if self._pid != os.getpid() or self._lost else \
                    self._core
        return core

    def _guard(self, op):
        core = self._handle()
        try:
            return op(core)
        except _core.WorkerLost:
            self._lost = True  # the next call takes a fresh lease (restarted, or loaded again)
            raise

    def __call__(self, *args, timeout=None, **kwargs):
        """model(x): the model's answer. timeout=S: this call's deadline in seconds (default: the
        Shared's timeout=, else none); past it the call raises Timeout and what it held in shared
        memory is given back once its worker is done or replaced. Ctrl-C interrupts the wait at
        once (KeyboardInterrupt); the lease stays usable. A python model's own keyword arguments
        may be anything but timeout."""
        if kwargs or timeout is not None or len(args) != 1 or type(args[0]) is not np.ndarray or \
                id(args[0].dtype) not in _PLANE_DTYPE_IDS or self._structured:
            return self._call(args, kwargs, timeout, None)
        # The common call, one numpy array of a dtype the data plane carries, the short way:
        # what _call does for it, with nothing else looked at.
        return self._tensor_call(args[0], 0, self._shared._timeout, None)

    def _call(self, args, kwargs, timeout, cancel):
        """model(*args, **kwargs) with its deadline (None: the Shared's) and a cancel event."""
        timeout = _timeout_arg(timeout, f"model {self.tag!r}") or self._shared._timeout
        python = self._shared._spec["backend"] == "python"
        torch = _torch_input.tensor(args[0]) if len(args) == 1 and not kwargs else None
        if torch is not None:  # read in place on the CPU; from a device, copied here once
            host = _torch_input.host(self, torch, args[0])
            if host is not None:
                args = (host[0],)
                self._device_copied += host[1]
        if python and (kwargs or len(args) != 1 or not _tensor_arg(args[0])):
            named = self._named(args, kwargs) if not self._objects_only else None
            if named is not None:
                try:
                    return self._infer_n(*named, timeout, cancel)
                except _core.BackendError as e:
                    if _multi.NOT_TENSORS not in str(e):
                        raise
                    # A batchable model that answers other things: such calls are pickled
                    # calls from now on, as before there was a path for several tensors.
                    self._objects_only = True
            return self._remote("call", "__call__", args, kwargs, timeout, cancel)
        if kwargs or len(args) != 1:
            raise TypeError(f"model {self.tag!r}: expected model(x) with one tensor")
        data, dtype = _as_input(args[0])
        if self._structured:
            return self._infer_n(_multi.ARGS, [("0", data, dtype)], timeout, cancel)
        return self._tensor_call(data, dtype, timeout, cancel)

    def _tensor_call(self, data, dtype, timeout, cancel):
        """model(x) for one tensor (data with the buffer protocol, its dtype override or 0), not
        (yet) known to answer in a structure."""
        python = self._shared._spec["backend"] == "python"
        core = self._core
        if self._pid != _getpid() or self._lost:
            core = self._handle()
        try:
            t = core.infer(data, dtype, python, timeout=timeout, cancel=cancel) \
                if timeout is not None or cancel is not None else core.infer(data, dtype, python)
        except _core.WorkerLost:
            self._lost = True  # the next call takes a fresh lease (restarted, or loaded again)
            raise
        except _core.BackendError as e:
            if not python or _STRUCTURED not in str(e):
                raise
            self._structured = True  # a batchable model's tuple or dict: asked again that way
            return self._infer_n(_multi.ARGS, [("0", data, dtype)], timeout, cancel)
        if type(t) is bytes:  # a python model's answer that is not one array, pickled
            y = _pickling.loads(t)[1]
            values = y.values() if isinstance(y, collections.abc.Mapping) else \
                y if isinstance(y, (tuple, list)) else ()
            if values and all(isinstance(v, np.ndarray) for v in values):
                self._structured = True  # tensors in a structure: shared memory from now on
            return y
        y = np.asarray(t)
        if t.dtype == _core.BFLOAT16 and _BFLOAT16 is not None:
            y = y.view(_BFLOAT16)
        return y

    def _named(self, args, kwargs):
        """(form, [(name, value, dtype)]) when the call is several named tensors or lists of
        strings the data plane carries (model(a, b), model(ids=a, mask=b), model({...}),
        model(["text", ...])); None when anything else is among them (a pickled call)."""
        if kwargs and args:
            return None
        if kwargs:
            form, items = _multi.KWARGS, list(kwargs.items())
        elif len(args) == 1 and type(args[0]) is dict:
            form, items = _multi.DICT, list(args[0].items())
        else:
            form, items = _multi.ARGS, [(str(i), a) for i, a in enumerate(args)]
        if not 0 < len(items) <= _multi.MAX:
            return None
        named = []
        for name, value in items:
            if not _multi.name_ok(name):
                return None
            if _multi.text_list(value):
                named.append((name, value, 0))
                continue
            torch = _torch_input.tensor(value)
            if torch is not None:
                host = _torch_input.host(self, torch, value)
                if host is None:
                    return None
                value = host[0]
                self._device_copied += host[1]
            if not _tensor_arg(value):
                return None
            named.append((name, *_as_input(value)))
        return form, named

    def _infer_n(self, form, named, timeout=None, cancel=None):
        """Several named tensors through shared memory; the answer in the structure the model
        returned, every array a view of the shared memory."""
        got, outputs, t = self._guard(lambda core: core.infer_n(named, form, True, timeout=timeout,
                                                                cancel=cancel))
        values = []
        for out in outputs:
            if len(out) == 2:  # a list of strings
                values.append(out)
                continue
            name, dtype, shape, offset, nbytes = out
            dt = _BFLOAT16 if dtype == _core.BFLOAT16 and _BFLOAT16 is not None else \
                _NUMPY_DTYPES[dtype]
            a = np.frombuffer(t, dt, nbytes // dt.itemsize, offset).reshape(shape)
            values.append((name, a))
        if got == _multi.OBJECT:
            return _pickling.loads(values[0][1].tobytes())[1]
        if got == _multi.ONE:
            return values[0][1]
        if got == _multi.DICT:
            return dict(values)
        return (tuple if got == _multi.TUPLE else list)(v for _, v in values)

    def _remote(self, op, name, args=(), kwargs=None, timeout=None, cancel=None):
        if self._shared._spec["backend"] != "python":
            raise AttributeError(
                f"model {self.tag!r} has no attribute {name!r}: the {self._shared._spec['backend']}"
                " backend is called as model(x) only")
        try:
            payload = _pickling.dumps((op, name, tuple(args), dict(kwargs or {})))
        except Exception as e:
            raise NotPicklable(f"model {self.tag!r}: the arguments of {name!r} cannot be "
                               f"pickled: {type(e).__name__}: {e}") from e
        timeout = timeout or self._shared._timeout
        answer = _pickling.loads(self._guard(lambda core: core.call(payload, timeout=timeout,
                                                                    cancel=cancel)))
        if answer[0] == "ok":
            return answer[1]
        if answer[0] == "method":
            self._methods.add(name)
            return RemoteMethod(self, name)
        exc, tb = answer[1], answer[2]
        try:
            exc.remote_traceback = tb
        except Exception:  # pragma: no cover - exceptions without a __dict__
            pass
        if hasattr(exc, "add_note"):
            exc.add_note(f"remote traceback (model {self.tag!r}, in its worker):\n{tb}")
        raise exc

    def _reacquire(self):
        # A handle inherited across fork(), or one whose worker died: a lease of our own.
        if self._core.released:
            raise _core.InvalidArgument(f"model {self._core.tag!r} was released: acquire it again")
        tag, (spec, memfd) = self._shared.tag, self._shared._request()
        old = self._core
        self._core = control(lambda c: c.acquire(tag, spec, constructor_fd=_fd_of(memfd)))
        if self._lost:
            old.release()  # after fork() this is a no-op: the parent's lease stays the parent's
        self._pid = os.getpid()
        self._lost = False
        return self._core

    def release(self):
        """Ends the lease (once no output array of it is in use). Idempotent."""
        self._core.release()

    async def ainfer(self, *args, timeout=None, **kwargs):
        """await model.ainfer(x): model(x) for asyncio. The call waits in a thread of
        modelshare's pool, off the event loop; concurrent coroutines are batched together.
        timeout= as for model(x). Cancelling the task (asyncio.wait_for's timeout too) cancels
        the call: its pool thread is free again within 100 ms."""
        return await _async.cancellable(lambda ev: self._call(args, kwargs, timeout, ev))

    async def acall(self, name, *args, **kwargs):
        """await model.acall("method", ...): model.method(...) for asyncio, off the loop;
        cancelled with its task, as ainfer()."""
        return await _async.cancellable(
            lambda ev: self._remote("call", name, args, kwargs, None, ev))

    async def arelease(self):
        """release() for asyncio."""
        await _async.run(self.release)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def empty(self, shape, dtype=np.float32):
        """An uninitialised array in this model's shared memory: fill it in place, then model(x)
        sends it with no copy (as it does an output of this model). Anything else model(x) copies
        once. The array keeps the lease alive while it is in use, as outputs do."""
        dt = np.dtype(dtype)
        code = _core.BFLOAT16 if _BFLOAT16 is not None and dt == _BFLOAT16 else _NUMPY_CODES.get(dt)
        if code is None:
            raise TypeError(f"model {self.tag!r}: empty(): dtype {dt} is not one the data plane "
                            f"carries ({', '.join(sorted(str(d) for d in _PLANE_DTYPES))})")
        shape = (shape,) if isinstance(shape, int) else tuple(int(d) for d in shape)
        y = np.asarray(self._guard(lambda core: core.empty(shape, code)))
        return y.view(_BFLOAT16) if code == _core.BFLOAT16 else y

    @property
    def copied_bytes(self):
        """Input bytes model(x) has copied into shared memory on this lease (a tensor on a
        device, such as cuda:0: its one copy to the host); an array from empty(), or an output
        of this model, is sent with none."""
        return self._core.copied_bytes + self._device_copied

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

    def named_signature(self):
        """(inputs, outputs) as the model says them, each a list of TensorInfo(name, dtype,
        shape) in the model's order (a tuple answer's order for outputs): the named tensors of
        an ONNX Runtime session, a Keras model or a tf.function's input_signature, one unnamed
        (name None) for a dense model, [] when the model does not say (other python models).
        dtype is a dtype name ("str" or "bytes" for a list of strings; None when not known),
        shape a tuple with None for a dimension that varies (None when not known). Not
        inputs()/outputs(): those stay the model's own attributes (a Keras model's)."""
        ins, outs = self._core.tensors()
        return [_tensor_info(t) for t in ins], [_tensor_info(t) for t in outs]

    def __getattr__(self, name):
        if name.startswith("__") or name in Model.__slots__:
            raise AttributeError(name)
        if name in self._methods:
            return RemoteMethod(self, name)
        return self._remote("getattr", name)

    def __repr__(self):
        state = "released" if self._core.released else "held"
        return f"<modelshare.Model {self._core.tag!r} {state}>"


TensorInfo = collections.namedtuple("TensorInfo", "name dtype shape")
TensorInfo.__doc__ = "What a model says of one input or output (Model.inputs, Model.outputs)."
_TEXT_KINDS = {64: "str", 65: "bytes"}  # MS_TEXT_UTF8, MS_TEXT_BYTES


def _tensor_info(t):
    name, code, shape = t
    dtype = _TEXT_KINDS.get(code) or (_core.dtype_name(code) if code else None)
    return TensorInfo(name, dtype, shape)


def status():
    """The daemon's status as a dict (as `modelshare status --json`): models, budgets."""
    return json.loads(control(lambda c: c.status()))


def unload(tag, force=False):
    """Stops the model's worker now; refused with modelshare.Busy while leases exist unless
    force (the holders' next calls then fail with modelshare.Unloaded)."""
    control(lambda c: c.unload(tag, bool(force)))
