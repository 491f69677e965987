"""modelshare.beam.SharedModelHandler: RunInference with one model per machine."""
import functools

from ._beam_tags import _tag, _tag_key
from ._shared import Shared


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
