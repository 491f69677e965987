"""Apache Beam integration: one model per machine for every Beam worker process of it.

    # was: from apache_beam.utils.multi_process_shared import MultiProcessShared
    from modelshare.beam import MultiProcessShared

    shared = MultiProcessShared(load_model, tag="my-model")
    model = shared.acquire()        # a modelshare.Model: model(x), model.method(...)
    ...
    shared.release(model)

    # RunInference: load_model runs once per machine in a modelshare worker; run_inference runs
    # there, on the batches of every Beam worker process of the machine.
    from modelshare.beam import SharedModelHandler
    handler = SharedModelHandler(SklearnModelHandlerNumpy(model_uri=...), tag="clf-v1")
    predictions = examples | RunInference(handler)

MultiProcessShared works without apache_beam installed; SharedModelHandler needs it.
"""
import functools
import hashlib
import re
import tempfile

from ._shared import Shared, unload

_TAG_OK = re.compile(r"^[A-Za-z0-9._:/@+-]{1,128}$")


def _tag(tag):
    """Beam tags are any string; modelshare's are [A-Za-z0-9._:/@+-]{1,128}. A tag that does not
    fit is mapped to one that does, the same in every process."""
    text = str(tag)
    if _TAG_OK.match(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return re.sub(r"[^A-Za-z0-9._:/@+-]", "-", text)[:100] + "-" + digest


def _tag_key(tag, strict, key):
    """The identity under which Beam's integrations share: the tag, as in Beam, unless strict
    (the constructor's fingerprint, as modelshare.Shared) or a key of the user's."""
    if key is not None or strict:
        return key
    return f"modelshare.beam tag {tag}"[:256]


class MultiProcessShared:
    """A drop-in for apache_beam.utils.multi_process_shared.MultiProcessShared: the same
    arguments, acquire() and release(obj). The object lives in a modelshare worker process (one
    per machine and tag); acquire() returns a modelshare.Model whose calls and methods run there.

    As in Beam, the tag alone is the identity: the first constructor acquired under a tag is
    the one loaded, and later ones (the same lambda made again in each worker's DoFn.setup(),
    say) are not compared. strict=True compares them as modelshare.Shared does (their code and
    captured values; SpecConflict when they differ); key="..." names the identity yourself.

    path, always_proxy and spawn_process are accepted for compatibility and change nothing: the
    object is always in its own process and every call goes through the proxy. Other keyword
    arguments are modelshare spec fields (keep_alive, max_batch, memory, device, ...).
    """

    def __init__(self, constructor, tag, *, path=tempfile.gettempdir(), always_proxy=None,
                 spawn_process=False, strict=False, key=None, **spec):
        self._tag = tag
        self._path = path
        self._always_proxy = always_proxy
        self._spawn_process = spawn_process
        self._shared = Shared(constructor, tag=_tag(tag), key=_tag_key(tag, strict, key), **spec)

    @property
    def shared(self):
        """The modelshare.Shared behind it."""
        return self._shared

    def acquire(self):
        """A lease on the object (loaded first when no process of the machine has it)."""
        return self._shared.acquire()

    def release(self, obj):
        """Ends the lease of an object from acquire()."""
        obj.release()

    def unsafe_hard_delete(self):
        """Stops the object's worker now, whoever holds it (their next calls fail)."""
        unload(self._shared.tag, force=True)


class _HandlerHost:
    """Lives in the modelshare worker: the wrapped handler and the model it loaded."""

    def __init__(self, handler):
        self.handler = handler
        self.model = handler.load_model()

    def run_inference(self, batch, inference_args=None):
        return list(self.handler.run_inference(batch, self.model, inference_args))

    def get_num_bytes(self, batch):
        return self.handler.get_num_bytes(batch)


class _RemoteModel:
    """What SharedModelHandler.load_model returns in a Beam worker: a lease on the host."""

    def __init__(self, model):
        self.model = model

    def __getstate__(self):
        raise TypeError("a modelshare lease cannot be pickled: acquire it in each process")


try:
    from apache_beam.ml.inference.base import ModelHandler as _ModelHandler
except ImportError:  # pragma: no cover - MultiProcessShared works without Beam
    _ModelHandler = object


class SharedModelHandler(_ModelHandler):
    """Wraps a RunInference ModelHandler: handler.load_model() runs once per machine, in a
    modelshare worker, and handler.run_inference() runs there on the batches of every Beam worker
    process of the machine (examples and predictions travel pickled). Batching, metrics names,
    pre/post-processing and inference-argument checks stay the wrapped handler's. As with
    MultiProcessShared, the tag is the identity (strict=True compares the handlers; key="..."
    names it). Keyword arguments are modelshare spec fields (keep_alive, memory, device, ...)."""

    def __init__(self, handler, tag, *, strict=False, key=None, **spec):
        if _ModelHandler is object:
            raise ImportError("modelshare.beam.SharedModelHandler needs apache-beam "
                              "(pip install apache-beam)")
        self._handler = handler
        self._tag = tag
        self._key = _tag_key(tag, strict, key)
        self._spec = spec
        self._shared = None

    def _get_shared(self):
        if self._shared is None:
            self._shared = Shared(functools.partial(_HandlerHost, self._handler),
                                  tag=_tag(self._tag), key=self._key, **self._spec)
        return self._shared

    def load_model(self):
        return _RemoteModel(self._get_shared().acquire())

    def run_inference(self, batch, model, inference_args=None):
        return model.model.run_inference(list(batch), inference_args)

    # Sharing is ours: Beam need not share anything itself.
    def share_model_across_processes(self):
        return False

    def model_copies(self):
        return 1

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

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_shared"] = None  # made again (from the same handler) where it is unpickled
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __repr__(self):
        return f"SharedModelHandler({self._handler!r}, tag={self._tag!r})"
