"""modelshare.beam.SharedModelHandler: RunInference with one model per machine.

A batch of numpy examples travels as one array through shared memory: model(stacked) in the Beam
process, _HandlerHost.__call__ in the modelshare worker, where the rows of several Beam processes
may be one batch (spec batchable=True). Anything else is a pickled run_inference call.
"""
import functools
import hashlib

import numpy as np

from . import _core
from ._beam_tags import _tag, _tag_key
from ._shared import _PLANE_DTYPES, Shared

try:
    from apache_beam.ml.inference.base import KeyedModelHandler as _KeyedModelHandler
    from apache_beam.ml.inference.base import ModelHandler as _ModelHandler
    from apache_beam.ml.inference.base import PredictionResult
except ImportError:  # pragma: no cover - MultiProcessShared works without Beam
    _ModelHandler = object
    _KeyedModelHandler = PredictionResult = None

# max_batch when neither the spec nor the wrapped handler's max_batch_size gives one.
_MAX_BATCH = 65536
# The head of the error the worker sends back when predictions do not stack into one array.
_NOT_ROWS = "modelshare.beam: predictions not row-wise:"
_UNKNOWN = object()


class _NotRows(TypeError):
    """The wrapped handler's predictions for a tensor batch do not stack into one array."""

    def __init__(self, why):
        super().__init__(f"{_NOT_ROWS} {why}")


def _unkeyed(handler):
    """The handler that runs the examples of a single-model KeyedModelHandler, else None."""
    if _KeyedModelHandler is not None and isinstance(handler, _KeyedModelHandler) and \
            getattr(handler, "_single_model", False) and hasattr(handler, "_unkeyed"):
        return handler._unkeyed
    return None


def _stack_examples(examples):
    """The examples as one array (a row each) when they are numpy arrays (rank 1 or more) of one
    shape, or numpy scalars of one type, of a dtype the data plane carries; None otherwise (the
    batch takes the pickled path). Stacking only what numpy gives back as the same type keeps
    every row the handler sees in the worker what it would have seen in process."""
    first = examples[0]
    if type(first) is np.ndarray:
        if first.ndim == 0 or first.dtype not in _PLANE_DTYPES:
            return None
        if any(type(e) is not np.ndarray or e.shape != first.shape or e.dtype != first.dtype
               for e in examples):
            return None
        return np.stack(examples)
    if isinstance(first, np.generic):
        kind = type(first)
        if first.dtype not in _PLANE_DTYPES or any(type(e) is not kind for e in examples):
            return None
        return np.array(examples, dtype=first.dtype)
    return None


def _arrays(example):
    """Whether an example is of a kind _stack_examples may take (a numpy array or scalar)."""
    return type(example) is np.ndarray or isinstance(example, np.generic)


def _inferences(results, n):
    """(the .inference values of n PredictionResults as one array, row i for example i, their
    model_id); _NotRows when they are not numpy values of one shape and a data-plane dtype that
    stack back into the same types on the client."""
    results = list(results)
    if len(results) != n:
        raise _NotRows(f"{len(results)} predictions for {n} examples")
    if any(type(r) is not PredictionResult for r in results):
        raise _NotRows("the handler returned something other than PredictionResults")
    model_id = results[0].model_id
    try:
        if any(r.model_id != model_id for r in results):
            raise _NotRows("predictions of one batch with different model ids")
    except _NotRows:
        raise
    except Exception as e:  # a model_id that does not compare
        raise _NotRows(f"model ids that do not compare ({type(e).__name__})") from None
    values = [r.inference for r in results]
    first = values[0]
    if isinstance(first, np.generic):
        kind = type(first)
        if any(type(v) is not kind for v in values):
            raise _NotRows("inferences of mixed types")
        out = np.array(values, dtype=first.dtype)
    elif type(first) is np.ndarray and first.ndim >= 1:
        if any(type(v) is not np.ndarray or v.shape != first.shape or v.dtype != first.dtype
               for v in values):
            raise _NotRows("inferences of different shapes or dtypes")
        out = np.stack(values)
    else:
        raise _NotRows(f"an inference of type {type(first).__name__}, expected numpy arrays "
                       "(rank 1 or more) or numpy scalars")
    if out.dtype not in _PLANE_DTYPES:
        raise _NotRows(f"inferences of dtype {out.dtype}")
    return np.ascontiguousarray(out), model_id


class _HandlerHost:
    """Lives in the modelshare worker: the wrapped handler and the model it loaded."""

    def __init__(self, handler):
        handler.set_environment_vars()  # as RunInference does before it loads
        self.handler = handler
        self.model = handler.load_model()
        self._rows = _unkeyed(handler) or handler

    def run_inference(self, batch, inference_args=None):
        return list(self.handler.run_inference(batch, self.model, inference_args))

    def __call__(self, x):
        """The tensor path: x stacks the examples of one or several Beam batches (of one or
        several processes); the answer stacks their inferences, row for row."""
        return _inferences(self._rows.run_inference(list(x), self.model), len(x))[0]

    def get_num_bytes(self, batch):
        return self.handler.get_num_bytes(batch)


class _RemoteModel:
    """What SharedModelHandler.load_model returns in a Beam worker: a lease on the host. A model
    update (update_model_path, update_model_paths) moves it to the new model's lease."""

    def __init__(self, model, tag):
        self.model = model
        self.tag = tag
        self.model_id = _UNKNOWN  # learned from this lease's first (pickled) batch
        self.dtype = None  # the inferences' dtype, as numpy named it there

    def _rebind(self, model, tag):
        old, self.model, self.tag, self.model_id = self.model, model, tag, _UNKNOWN
        self.dtype = None
        old.release()  # a call in flight on it still ends; later ones use the new lease

    def _use(self, op):
        m = self.model
        try:
            return op(m)
        except _core.Error:
            if self.model is m:
                raise
            return op(self.model)  # the lease moved to a new model while this call started

    def __getstate__(self):
        raise TypeError("a modelshare lease cannot be pickled: acquire it in each process")


class _ManagerStandIn:
    """Passed as the model to the wrapped handler's update_model_paths: the real one (Beam's
    per-key model manager) lives in the worker, made again from the updated handler."""

    def update_model_handler(self, *args, **kwargs):
        pass

    def all_models(self):
        return []


def _scope_of(paths):
    text = paths if isinstance(paths, str) else repr(list(paths))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class SharedModelHandler(_ModelHandler):
    """Wraps a RunInference ModelHandler: handler.load_model() runs once per machine, in a
    modelshare worker, and the batches of every Beam worker process of the machine run there.

    A batch whose examples are numpy arrays of one shape (or numpy scalars of one type) and of a
    dtype the data plane carries (float16/32/64, int8/16/32/64, uint8, bool) goes to the worker
    stacked, through shared memory; the worker runs the wrapped handler's run_inference on it
    and the Beam process rebuilds each PredictionResult(example, inference, model_id) around its
    own examples. With batchable=True the worker merges the batches of several processes into
    one run_inference call (up to max_batch rows; batch_delay_us waits for more): a promise that
    each prediction depends on its own example only (true of a classifier's predict, false of a
    handler that normalises over its batch). Without it, each Beam batch runs alone. Other
    batches (examples that are dicts, strings, tuples, tensors; predictions that do not stack
    into one numeric array; inference_args) are pickled run_inference calls, one at a time.
    Answers are the wrapped handler's, as run in process.

    Model updates (RunInference's model_metadata_pcoll side input) reach the wrapped handler:
    update_model_path(p) or update_model_paths(...), then the next load_model() loads the new
    model, under the tag scoped by the path (tag@hash), in one worker for every process, and
    the old lease ends. KeyedModelHandler works inside (SharedModelHandler(KeyedModelHandler(h))
    sends the examples without their keys) and outside (KeyedModelHandler(SharedModelHandler(h))).
    A wrapped handler built with large_model=True or model_copies=k is served by k modelshare
    instances (unless instances= is given): Beam's own sharing is not used.

    As with MultiProcessShared, the tag is the identity (strict=True compares the handlers;
    key="..." names it). Keyword arguments are modelshare spec fields (batchable, max_batch,
    batch_delay_us, instances, keep_alive, memory, device, ...). max_batch, the most rows the
    model takes at once, merged or not, defaults to the wrapped handler's max_batch_size when
    it sets one, else to 65536: give a larger one to merge full Beam batches.
    Batching, metrics names, pre/post-processing and inference-argument checks stay the
    wrapped handler's."""

    def __init__(self, handler, tag, *, strict=False, key=None, **spec):
        if _ModelHandler is object:
            raise ImportError("modelshare.beam.SharedModelHandler needs apache-beam "
                              "(pip install apache-beam)")
        self._handler = handler
        self._tag = tag
        self._key = _tag_key(tag, strict, key)
        spec = {k: v for k, v in spec.items() if v is not None}
        if "instances" not in spec and handler.share_model_across_processes():
            copies = handler.model_copies()
            if copies > 1:
                spec["instances"] = copies
        if "max_batch" not in spec:
            size = handler.batch_elements_kwargs().get("max_batch_size") or _MAX_BATCH
            spec["max_batch"] = max(1, min(_MAX_BATCH, int(size)))
        self._spec = spec
        self._scope = None  # a hash of the model path(s) given by update_model_path(s)
        self._shared = None
        self._loaded = None  # the last _RemoteModel this handler gave out
        self._tensor = None  # False once a batch showed the tensor path does not fit

    def _model_tag(self):
        return _tag(self._tag if self._scope is None else f"{self._tag}@{self._scope}")

    def _get_shared(self):
        if self._shared is None:
            self._shared = Shared(functools.partial(_HandlerHost, self._handler),
                                  tag=self._model_tag(), key=self._key, **self._spec)
        return self._shared

    def load_model(self):
        shared = self._get_shared()
        last = self._loaded
        if last is not None and last.tag != shared.tag:
            # A model update: the lease this handler gave out moves to the new model (every
            # holder of it in this process with it), and the old one ends.
            last._rebind(shared.acquire(), shared.tag)
            return last
        self._loaded = _RemoteModel(shared.acquire(), shared.tag)
        return self._loaded

    def run_inference(self, batch, model, inference_args=None):
        batch = list(batch)
        if batch and not inference_args and self._tensor is not False:
            done = self._run_rows(batch, model)
            if done is not None:
                return done
        return model._use(lambda m: m.run_inference(batch, inference_args))

    def _run_rows(self, batch, model):
        """The tensor path for one batch, or None where it does not apply."""
        keyed = _unkeyed(self._handler) is not None
        if keyed:
            if any(type(e) is not tuple or len(e) != 2 for e in batch):
                self._tensor = False
                return None
            keys, examples = [e[0] for e in batch], [e[1] for e in batch]
        else:
            keys, examples = None, batch
        if not _arrays(examples[0]):
            self._tensor = False  # dicts, strings, tensors, ...: the pickled path from now on
            return None
        x = _stack_examples(examples)
        if x is None:
            return None
        if model.model_id is _UNKNOWN:
            # The lease's first batch is a pickled call: its predictions give the model id
            # (the wrapped handler's), and show whether they stack at all.
            results = model._use(lambda m: m.run_inference(batch))
            try:
                y, model.model_id = _inferences([r[1] for r in results] if keyed else results,
                                                len(batch))
                model.dtype = y.dtype
            except (_NotRows, TypeError, IndexError):
                self._tensor = False
            return results
        try:
            y = np.array(model._use(lambda m: m(x)))  # a copy: no view of shared memory leaks
        except (_core.Error, TypeError) as e:  # the worker's _NotRows, as its text or itself
            if _NOT_ROWS not in str(e):
                raise
            self._tensor = False
            return None
        if y.ndim < 1 or len(y) != len(examples):
            self._tensor = False
            return None
        if y.dtype == model.dtype:
            # Shared memory says int64 as "q" (numpy.longlong): the scalar type the handler
            # gave in process (numpy.int64) is the dtype's own.
            y = y.view(model.dtype)
        model_id = model.model_id
        results = [PredictionResult(e, y[i], model_id) for i, e in enumerate(examples)]
        return results if keys is None else list(zip(keys, results))

    def update_model_path(self, model_path=None):
        self._handler.update_model_path(model_path=model_path)
        if model_path:  # None or "": the handler keeps its model
            self._rescope(_scope_of(model_path))

    def update_model_paths(self, model, model_paths=None):
        if not model_paths:
            return
        self._handler.update_model_paths(_ManagerStandIn(), model_paths)
        self._rescope(_scope_of(model_paths))
        if isinstance(model, _RemoteModel) and model.tag != self._model_tag():
            # Beam updates a loaded per-key model in place: so does this.
            model._rebind(self._get_shared().acquire(), self._model_tag())
            self._loaded = model

    def _rescope(self, scope):
        if scope != self._scope:
            self._scope = scope
            self._shared = None  # made again from the updated handler, under the new tag
            self._tensor = None

    # Sharing is ours: Beam need not share anything itself (model_copies becomes instances).
    def share_model_across_processes(self):
        return False

    def model_copies(self):
        return 1

    def should_garbage_collect_on_timeout(self):
        return False  # nothing of Beam's multi-process sharing to collect

    def get_num_bytes(self, batch):
        return self._handler.get_num_bytes(batch)

    def get_metrics_namespace(self):
        return self._handler.get_metrics_namespace()

    def get_resource_hints(self):
        return self._handler.get_resource_hints()

    def batch_elements_kwargs(self):
        return self._handler.batch_elements_kwargs()

    def validate_inference_args(self, inference_args):
        return self._handler.validate_inference_args(inference_args)

    def get_preprocess_fns(self):
        return self._handler.get_preprocess_fns()

    def get_postprocess_fns(self):
        return self._handler.get_postprocess_fns()

    def should_skip_batching(self):
        return self._handler.should_skip_batching()

    def set_environment_vars(self):
        return self._handler.set_environment_vars()

    def override_metrics(self, metrics_namespace=""):
        return self._handler.override_metrics(metrics_namespace)

    # with_preprocess_fn, with_postprocess_fn and with_no_batching are ModelHandler's own: they
    # wrap this handler, which answers the calls above.

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_shared"] = None  # made again (from the same handler) where it is unpickled
        state["_loaded"] = None  # leases are per process
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __repr__(self):
        return f"SharedModelHandler({self._handler!r}, tag={self._tag!r})"
