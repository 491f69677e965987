"""The python backend's worker: `python -m modelshare.worker --tag T --spec JSON`.

modelshared starts it with the acquiring client's interpreter, working directory and sys.path
(PYTHONPATH), and with fds 3 (control), 4 (stats), 5 and 7 (door, bell page) as for
modelshare-worker, and 6 (the constructor's memfd) when the spec says python.constructor_size. The
serving
loop is the C worker's (modelshare._core.serve_worker); it calls the three functions below with the
GIL held, one at a time, or for a thread_safe spec from up to `threads` runner threads at once
(each call's own GIL hold, released wherever the model's code releases it):

    _load(spec_json) -> (True, model) | (False, error text)
    _run(model, memoryview, ms_dtype, shape, objects) -> (array, ms_dtype, shape) | error text
        | pickled answer (bytes; only when objects: the caller takes an answer that is not one
        array)
    _call(model, payload) -> pickled answer (bytes)
    _run_multi(model, form, requests) -> [(status, length)] per request | error text
        (several named tensors: _multi.py)
    _signature(model) -> JSON text of the model's named inputs and outputs | None (once, after
        _load)

Nothing else is public here.
"""
import base64
import collections.abc
import hashlib
import json
import mmap
import os
import sys
import traceback

import numpy as np

from . import _adapters, _multi, _pickling

# ms_dtype codes (modelshare.h) <-> numpy.
_DTYPES = {1: np.float32, 2: np.float16, 4: np.float64, 5: np.int8, 6: np.uint8, 7: np.int16,
           8: np.int32, 9: np.int64, 10: np.bool_}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}
# The same tables for _run's common case: ms_dtype -> numpy's dtype object, and that object's
# id -> ms_dtype (numpy's own dtype objects, kept alive here: an array of a dtype equal to one of
# them but not it is looked up in _CODES, by equality).
_NP_DTYPES = {k: np.dtype(v) for k, v in _DTYPES.items()}
_CODE_OF_ID = {id(d): k for k, d in _NP_DTYPES.items()}
BFLOAT16 = 3
try:  # pragma: no cover - optional
    import ml_dtypes
    _CODES[np.dtype(ml_dtypes.bfloat16)] = BFLOAT16
except ImportError:  # pragma: no cover
    ml_dtypes = None

# An error's text reaches the client in a record of 400 bytes (tensor path) or 1 KiB (load):
# the end of a traceback says the most, so that is what is kept.
_TEXT_MAX = 900


def _text(exc, limit=_TEXT_MAX):
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    head = f"{type(exc).__name__}: {exc}"
    body = f"{head}\nremote traceback (worker pid {os.getpid()}):\n{tb}"
    if len(body) > limit:
        keep = max(0, limit - len(head) - 40)
        body = f"{head}\nremote traceback (end):\n...{tb[-keep:]}" if keep else head[:limit]
    return body


def _cuda_index(device):
    return int(device.split(":", 1)[1]) if device.startswith("cuda:") else 0


def _nvml_total(index):
    """Total memory of GPU index from NVML, or None."""
    import ctypes
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None

    class Mem(ctypes.Structure):
        _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong),
                    ("used", ctypes.c_ulonglong)]
    handle, mem = ctypes.c_void_p(), Mem()
    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        if nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) != 0 or \
                nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(mem)) != 0:
            return None
        return mem.total
    finally:
        nvml.nvmlShutdown()


def apply_framework_cap(framework, device, memory):
    """Applies the framework's own memory cap for a model of `memory` bytes on `device`, before
    the constructor runs. Does nothing on the CPU or without a memory figure."""
    if not framework:
        return
    on_gpu = device.startswith("cuda")
    index = _cuda_index(device)
    if framework == "jax":
        # Read when JAX starts its backend: set before the constructor imports it.
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        if on_gpu and memory:
            total = _nvml_total(index)
            if total:
                fraction = min(1.0, memory / total)
                os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{fraction:.4f}"
        return
    if not on_gpu:
        return
    if framework == "torch":
        import torch
        if memory and torch.cuda.is_available():
            total = torch.cuda.get_device_properties(index).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, memory / total), index)
    elif framework == "tensorflow":
        import tensorflow as tf
        gpus = tf.config.list_physical_devices("GPU")
        if index < len(gpus):
            gpu = gpus[index]
            if memory:
                tf.config.set_logical_device_configuration(
                    gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=memory // (1 << 20))])
            else:
                tf.config.experimental.set_memory_growth(gpu, True)


# Where the daemon hands the worker the memfd of a constructor too large to travel inline
# (src/common/ctorfd.h: MS__WORKER_CTOR_FD).
CONSTRUCTOR_FD = 6


class BadConstructorMemfd(ValueError):
    """The constructor's memfd does not hold what the spec says (size, SHA-256)."""


def _from_memfd(size, sha256):
    """The constructor from the memfd on CONSTRUCTOR_FD, whose pickle the spec says is `size`
    bytes with SHA-256 `sha256`: checked, unpickled, and the descriptor closed. The memfd is
    mapped, not read: its file offset is shared with the daemon and every other worker."""
    try:
        try:
            have = os.fstat(CONSTRUCTOR_FD).st_size
        except OSError as e:
            raise BadConstructorMemfd(f"expected the constructor memfd on fd {CONSTRUCTOR_FD}, "
                                      f"got {e}") from None
        if have != size:
            raise BadConstructorMemfd(f"the constructor memfd (fd {CONSTRUCTOR_FD}) holds {have} "
                                      f"bytes, expected {size} (python.constructor_size)")
        data = mmap.mmap(CONSTRUCTOR_FD, size, prot=mmap.PROT_READ)
        try:
            got = hashlib.sha256(data).hexdigest()
            if got != sha256:
                raise BadConstructorMemfd(
                    f"the constructor memfd (fd {CONSTRUCTOR_FD}): expected a pickle with "
                    f"SHA-256 {sha256} (python.constructor_sha256), got {got}")
            return _pickling.loads(data)
        finally:
            try:
                data.close()
            except BufferError:  # something unpickled still views it: it stays mapped
                pass
    finally:
        try:
            os.close(CONSTRUCTOR_FD)
        except OSError:
            pass


def _load(spec_json):
    global _PAD
    try:
        spec = json.loads(spec_json)
        py = spec["python"]
        _PAD = spec.get("pad")
        apply_framework_cap(py.get("framework"), spec.get("device", "cpu"),
                            int(spec.get("memory") or 0))
        if py.get("constructor_size") is not None:
            constructor = _from_memfd(int(py["constructor_size"]), py["constructor_sha256"])
        else:
            constructor = _pickling.loads(base64.b64decode(py["constructor"]))
        # A torch module, an ONNX Runtime session, a Keras model, a TensorFlow module or function
        # or a jax.jit function is wrapped once here, to be called in its framework's own types;
        # a plain callable is called as it is (_adapters.py).
        return True, _adapters.adapt(constructor(), py.get("framework"))
    except BadConstructorMemfd as e:
        return False, f"the constructor's pickle cannot be used: {e}"
    except BaseException as e:  # the daemon gets the text; the worker exits
        return False, f"the constructor failed: {_text(e)}"


def _signature(model):
    """The model's named inputs and outputs as JSON text (src/common/signames.h), or None when
    its framework does not say them (_adapters.signature)."""
    try:
        sig = _adapters.signature(model)
    except Exception:  # a model that cannot say: served without names
        return None
    if sig is None:
        return None
    return json.dumps({k: v for k, v in zip(("inputs", "outputs"), sig) if v is not None})


def _plane_array(y):
    """y as a C-contiguous array of a plane dtype, when it is one array or tensor; else None."""
    if isinstance(y, np.generic) or not (isinstance(y, np.ndarray) or hasattr(y, "__array__") or
                                         hasattr(y, "__dlpack__")):
        return None
    try:
        a = np.ascontiguousarray(np.asarray(y))
    except Exception:  # a tensor numpy cannot read: sent as it is
        return None
    return a if a.dtype in _CODES and a.ndim <= 8 else None


def _object(y):
    """The pickled answer ("ok", y) for a caller that takes any answer."""
    try:
        return _pickling.dumps(("ok", y))
    except Exception as e:
        return (f"TypeError: the model's answer cannot be pickled: {type(e).__name__}: {e}; "
                f"answer: {y!r:.200}")


def _structure(y):
    """A tuple or a mapping of tensors: what a request of several tensors answers (_multi.py)."""
    if isinstance(y, collections.abc.Mapping):
        y = tuple(y.values())
    return isinstance(y, tuple) and len(y) > 0 and all(
        isinstance(v, np.ndarray) or hasattr(v, "__dlpack__") for v in y)


def _run(model, view, dtype, shape, objects=False):
    """A writable view is the request's own copy of the input: the model may modify it."""
    try:
        if dtype == BFLOAT16 and ml_dtypes is not None:
            x = np.frombuffer(view, dtype=ml_dtypes.bfloat16).reshape(shape)
        else:  # the request's bytes are its shape's (the worker checked): an array over them
            x = np.ndarray(shape, _NP_DTYPES[dtype], view)
        y = model(x)
        del x
        if type(y) is np.ndarray and y.flags.c_contiguous:  # the common case, with no checks
            code = _CODE_OF_ID.get(id(y.dtype)) or _CODES.get(y.dtype)
            if code is not None and y.ndim <= 8:
                return y, code, y.shape
        y = _adapters.plain(y)  # a torch tensor of a plain callable: requiring grad, on a GPU
        if objects:
            # One array (or a tensor numpy reads) of a plane dtype goes back as an array; anything
            # else (a dict, a float, strings, a tuple of arrays) as it is, pickled.
            a = _plane_array(y)
            if a is None:
                return _object(y)
            y = a
        if _structure(y):
            return (f"TypeError: the model returned a {type(y).__name__} of tensors, expected one "
                    f"array for one tensor: the caller asks again as a request of several "
                    f"tensors for a structured answer")
        if hasattr(y, "__array__") or hasattr(y, "__dlpack__") or isinstance(y, (list, tuple)):
            y = np.ascontiguousarray(np.asarray(y))
        if not isinstance(y, np.ndarray) or y.dtype.hasobject:
            return (f"TypeError: the model returned {type(y).__name__}, expected an array "
                    f"(numpy or anything numpy.asarray takes) for a tensor input; call other "
                    f"methods by name (model.method(...))")
        code = _CODES.get(y.dtype)
        if code is None:
            return (f"TypeError: the model returned an array of dtype {y.dtype}, expected one of "
                    f"{', '.join(sorted(str(d) for d in _CODES))}")
        if y.ndim > 8:
            return f"ValueError: the model returned an array of rank {y.ndim}, expected at most 8"
        return y, code, tuple(int(d) for d in y.shape)
    except Exception as e:
        return _text(e, 380)


# ms_dtype codes -> numpy for requests of several tensors, bfloat16 too when ml_dtypes is there.
_MULTI_DTYPES = {**_DTYPES, **({BFLOAT16: ml_dtypes.bfloat16} if ml_dtypes is not None else {})}
# The spec's "pad" (a request of several tensors padded along a dimension), set by _load.
_PAD = None


def _run_multi(model, form, requests):
    """Requests of several named tensors, one or a batch (_multi.py)."""
    return _multi.run(model, form, requests, _MULTI_DTYPES, _CODES, _text, _PAD)


def _call(model, payload):
    """payload: pickled (op, name, args, kwargs); op "getattr" (an attribute: its value, or
    ("method",) when it is callable) or "call". The answer: ("ok", value), ("method",) or
    ("error", exception, traceback text)."""
    try:
        op, name, args, kwargs = _pickling.loads(payload)
        if op == "getattr":
            value = getattr(model, name)
            if callable(value):
                return _pickling.dumps(("method",))
            answer = ("ok", value)
        elif op == "call":
            target = model if name == "__call__" else getattr(model, name)
            answer = ("ok", target(*args, **kwargs))
        else:
            raise ValueError(f"modelshare: unknown operation {op!r}")
    except Exception as e:
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        answer = ("error", e, tb)
    try:
        return _pickling.dumps(answer)
    except Exception as e:  # the value or the exception does not pickle
        what = "result" if answer[0] == "ok" else "exception"
        tb = answer[2] if answer[0] == "error" else ""
        return _pickling.dumps(("error", TypeError(
            f"modelshare: the {what} of the call cannot be pickled: {type(e).__name__}: {e}; "
            f"{what}: {answer[1]!r:.300}"), tb))


def main():
    from . import _core
    _pickling.LOAD_SCRIPTS = True  # a spawn child's constructor names its main script
    return _core.serve_worker(sys.argv)


if __name__ == "__main__":
    sys.exit(main())
