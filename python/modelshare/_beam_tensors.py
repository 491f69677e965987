"""modelshare.beam.SharedTensorHandler: RunInference on a model of keyed tensors or text, called
through shared memory.

The sibling of SharedModelHandler for models that Beam's PytorchModelHandlerKeyedTensor,
PytorchModelHandlerTensor and its text handlers (sentence-transformers, HuggingFace pipelines)
call: a constructor gives the model (an nn.Module, or any callable), and each Beam batch is one
model call of named tensors or of a list of str in the model's modelshare worker, batched with
other Beam processes' calls when the spec says batchable=True.
"""
import numpy as np

from ._beam_inference import _MAX_BATCH
from ._beam_tags import _tag, _tag_key
from ._shared import Shared

try:
    from apache_beam.ml.inference.base import ModelHandler as _ModelHandler
    from apache_beam.ml.inference.base import PredictionResult
except ImportError:  # pragma: no cover - modelshare works without Beam
    _ModelHandler = object
    PredictionResult = None

_BATCHING = ("min_batch_size", "max_batch_size", "max_batch_duration_secs", "max_batch_weight",
             "element_size_fn", "batch_length_fn", "batch_bucket_boundaries")


def _torch_tensor(x):
    t = type(x)
    return t.__module__.startswith("torch") and t.__name__ in ("Tensor", "Parameter")


def _host(x):
    """An example's tensor as a numpy array (a torch tensor read on the host, in place on the
    CPU)."""
    if _torch_tensor(x):
        return x.detach().cpu().numpy()
    if isinstance(x, (np.ndarray, np.generic)):
        return np.asarray(x)
    raise TypeError(f"modelshare.beam: expected a numpy array or a torch tensor, got "
                    f"{type(x).__name__}")


def _padded(arrays, key, pad):
    """The examples' arrays of one key stacked into one batch; with the spec's pad, those that
    differ along its dimension padded to the longest with the key's value. ValueError when they
    differ otherwise (or without pad), saying what was expected."""
    shapes = {a.shape for a in arrays}
    if len(shapes) == 1:
        return np.stack(arrays)
    dim = pad["dim"] - 1 if pad else None  # the spec counts the batch dimension, examples do not
    ranks = {len(s) for s in shapes}
    if dim is None or len(ranks) != 1 or not 0 <= dim < ranks.pop() or \
            len({s[:dim] + s[dim + 1:] for s in shapes}) != 1:
        how = f"along dimension {pad['dim']} (the spec's pad)" if pad else \
            "(give the spec pad={'dim': ..., 'value': {...}} to pad them to the longest)"
        raise ValueError(f"modelshare.beam: the examples of one batch have {key!r} of shapes "
                         f"{sorted(shapes)}: expected one shape, or shapes that differ only "
                         f"{how}")
    longest = max(s[dim] for s in shapes)
    value = (pad.get("value") or {}).get(key, 0)
    out = np.full((len(arrays), *arrays[0].shape[:dim], longest, *arrays[0].shape[dim + 1:]),
                  value, dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[(i, *[slice(None)] * dim, slice(0, a.shape[dim]))] = a
    return out


def _row(y, i, dim, lengths):
    """Example i's row of an output the spec's pad names in "cut", cut back along the padded
    dimension to its own length (as the daemon does across callers)."""
    r = y[i]
    if lengths is not None and y.ndim > dim:
        if y.shape[dim] != max(lengths):
            raise ValueError(f"modelshare.beam: an output pad \"cut\" names has {y.shape[dim]} "
                             f"along dimension {dim}, expected the padded length {max(lengths)}")
        r = r[(*[slice(None)] * (dim - 1), slice(0, lengths[i]))]
    return r


class _Split:
    """Cuts one answer of a batch into one inference per example (numpy rows, or torch tensors
    where the examples were torch tensors): arrays by row, lists by item, dicts into a dict per
    example (as Beam's handlers do), tuples into a tuple per example."""

    def __init__(self, n, as_torch, dim=None, lengths=None, cut=()):
        self.n, self.as_torch, self.dim, self.lengths = n, as_torch, dim, lengths
        self.cut = set(cut)  # the outputs cut back along dim: named as the daemon names them

    def __call__(self, y, name="0"):
        if isinstance(y, dict):
            parts = {k: self(v, k) for k, v in y.items()}
            return [{k: v[i] for k, v in parts.items()} for i in range(self.n)]
        if isinstance(y, tuple):
            return list(zip(*(self(v, str(k)) for k, v in enumerate(y))))
        if isinstance(y, list):
            if len(y) != self.n:
                raise ValueError(f"modelshare.beam: the model answered {len(y)} items for "
                                 f"{self.n} examples: expected one per example")
            return list(y)
        y = np.array(y)  # a copy of its own: no view of the shared memory outlives the call
        if y.ndim < 1 or len(y) != self.n:
            raise ValueError(f"modelshare.beam: the model answered shape {y.shape} for "
                             f"{self.n} examples: expected one row per example")
        lengths = self.lengths if name in self.cut else None
        rows = [_row(y, i, self.dim, lengths) for i in range(self.n)]
        if self.as_torch:
            import torch
            rows = [torch.from_numpy(np.ascontiguousarray(r)) for r in rows]
        return rows


def _stack_keyed(batch, pad):
    """(the dict of stacked arrays, whether they were torch tensors, each example's length along
    the pad dimension or None) for a batch of dicts of tensors of the same keys."""
    keys = list(batch[0])
    if not keys or any(not isinstance(e, dict) or list(e) != keys for e in batch):
        seen = [list(e) if isinstance(e, dict) else type(e).__name__ for e in batch[:3]]
        raise ValueError(f"modelshare.beam: the examples of one batch are {seen}...: expected "
                         "dicts of the same keys, in the same order")
    as_torch = _torch_tensor(batch[0][keys[0]])
    columns = {k: [_host(e[k]) for e in batch] for k in keys}
    stacked = {k: _padded(v, k, pad) for k, v in columns.items()}
    lengths = None
    if pad and any(len({a.shape for a in v}) > 1 for v in columns.values()):
        d = pad["dim"] - 1
        lengths = [max(columns[k][i].shape[d] for k in keys if columns[k][i].ndim > d)
                   for i in range(len(batch))]
    return stacked, as_torch, lengths


class SharedTensorHandler(_ModelHandler):
    """A RunInference ModelHandler for a model of keyed tensors, of text or of one tensor, loaded
    once per machine in a modelshare worker and called through shared memory.

    constructor() gives the model, as to modelshare.Shared (an nn.Module as it is, or any
    callable). Each Beam batch is one call of it, made as Beam's handlers make theirs:

    - examples that are dicts of tensors (numpy arrays or torch tensors; the same keys):
      stacked per key, then model(**batch) as PytorchModelHandlerKeyedTensor calls it, or
      model(batch) with call="dict";
    - examples that are str (or bytes): model(list_of_str), as the sentence-transformers and
      HuggingFace handlers call theirs;
    - examples that are tensors: stacked, then model(batch), as PytorchModelHandlerTensor.

    Every tensor and list of str travels through shared memory; with batchable=True the worker
    merges the calls of several Beam processes into one model call. The answer (a tensor, a
    list, a tuple or a dict of them) is cut into one PredictionResult per example: a row of each
    tensor, an item of a list, a dict or a tuple of rows (torch tensors where the examples were
    torch tensors, numpy arrays otherwise), model_id the tag. inference_args become keyword
    arguments of the call (non-tensor ones make it a pickled call).

    The tensors of one key must have one shape within a Beam batch, as torch.stack needs in
    Beam's handler, unless the spec gives pad={"dim": d, "value": {key: v}, "multiple": m}:
    then they are padded to the batch's longest along dimension d (counting the batch's), and
    each example's rows of the outputs its "cut" names are cut back to its own (an output with
    that dimension named in neither "cut" nor "keep" fails the call).

    Beam's batching arguments (min_batch_size, max_batch_size, max_batch_duration_secs,
    max_batch_weight, element_size_fn, batch_length_fn, batch_bucket_boundaries, env_vars) are
    taken and honoured as by Beam's own handlers; model_copies=k becomes k modelshare instances
    (unless instances= is given) and large_model needs nothing: the model is one per machine
    already. Other keyword arguments are modelshare spec fields (batchable, max_batch,
    batch_delay_us, pad, device, keep_alive, ...); max_batch defaults to max_batch_size, else
    65536. key/strict name the identity as in SharedModelHandler."""

    def __init__(self, constructor, tag, *, call="kwargs", strict=False, key=None, **kwargs):
        if _ModelHandler is object:
            raise ImportError("modelshare.beam.SharedTensorHandler needs apache-beam "
                              "(pip install apache-beam)")
        if call not in ("kwargs", "dict"):
            raise ValueError(f"SharedTensorHandler(call={call!r}): expected 'kwargs' "
                             "(model(**batch)) or 'dict' (model(batch))")
        beam_kw = {k: kwargs.pop(k) for k in (*_BATCHING, "large_model", "model_copies",
                                               "env_vars") if k in kwargs}
        super().__init__(**beam_kw)
        self._constructor, self._tag, self._call = constructor, tag, call
        self._key = _tag_key(tag, strict, key)
        spec = {k: v for k, v in kwargs.items() if v is not None}
        copies = beam_kw.get("model_copies")
        if "instances" not in spec and copies and copies > 1:
            spec["instances"] = copies
        if "max_batch" not in spec:
            size = beam_kw.get("max_batch_size") or _MAX_BATCH
            spec["max_batch"] = max(1, min(_MAX_BATCH, int(size)))
        self._spec = spec
        self._shared = None

    def _get_shared(self):
        if self._shared is None:
            self._shared = Shared(self._constructor, tag=_tag(self._tag), key=self._key,
                                  **self._spec)
        return self._shared

    def load_model(self):
        return self._get_shared().acquire()

    def run_inference(self, batch, model, inference_args=None):
        batch = list(batch)
        if not batch:
            return []
        extra = dict(inference_args or {})
        first = batch[0]
        if isinstance(first, dict):
            stacked, as_torch, lengths = _stack_keyed(batch, self._spec.get("pad"))
            y = model(**stacked, **extra) if self._call == "kwargs" else model(stacked, **extra)
            pad = self._spec.get("pad") or {}
            split = _Split(len(batch), as_torch, pad.get("dim"), lengths, pad.get("cut") or ())
        elif isinstance(first, (str, bytes)):
            if any(type(e) is not type(first) for e in batch):
                raise ValueError("modelshare.beam: a batch of str and other examples: expected "
                                 "all str or all bytes")
            y, split = model(batch, **extra), _Split(len(batch), False)
        else:
            x = np.stack([_host(e) for e in batch])
            y, split = model(x, **extra), _Split(len(batch), _torch_tensor(first))
        return [PredictionResult(e, p, self._tag) for e, p in zip(batch, split(y))]

    # Sharing is ours: Beam need not share anything itself (model_copies became instances).
    def share_model_across_processes(self):
        return False

    def model_copies(self):
        return 1

    def should_garbage_collect_on_timeout(self):
        return False

    def validate_inference_args(self, inference_args):
        pass  # keyword arguments of the model's call

    def get_num_bytes(self, batch):
        """The bytes of the batch's tensors and strings, as Beam's tensor handlers count theirs
        (RunInference's byte metrics), not the size of its pickle."""
        def size(e):
            if isinstance(e, dict):
                return sum(size(v) for v in e.values())
            if isinstance(e, str):
                return len(e.encode())
            if isinstance(e, bytes):
                return len(e)
            if _torch_tensor(e):
                return e.element_size() * e.nelement()
            if isinstance(e, (np.ndarray, np.generic)):
                return e.nbytes
            return super(SharedTensorHandler, self).get_num_bytes([e])
        return sum(size(e) for e in batch)

    def get_metrics_namespace(self):
        return "RunInference"

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_shared"] = None  # made again where it is unpickled
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __repr__(self):
        return f"SharedTensorHandler({self._constructor!r}, tag={self._tag!r})"
