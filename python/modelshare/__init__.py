"""modelshare: each model loaded once per machine, in its own worker process, and shared by tag
with every process through shared memory.

    import modelshare
    mlp = modelshare.Shared.dense("mlp.safetensors", tag="mlp")
    with mlp.acquire() as model:
        y = model(x)            # numpy in, numpy out (read in place from shared memory)

    shared = modelshare.Shared(load_my_model, tag="embedder-v3")   # any Python model
    with shared.acquire() as model:
        y = model(x)            # arrays: shared memory, batched across processes
        v = model.vocab_size()  # any other method or attribute: a pickled call in the worker

Integrations: modelshare.beam (MultiProcessShared, SharedModelHandler, SharedTensorHandler),
modelshare.dask (ModelshareDaemon worker plugin), modelshare.spark (predictor(): mapInArrow,
mapInPandas, pandas_udf).

Errors are modelshare.Error subclasses, one per MS_E_* code of the C library (SpecConflict,
NoMemory, WorkerLost, Timeout, UnknownTag, ShapeError, DtypeError, ...), each with `code` (the
MS_E_* name) and the daemon's message.
"""
from . import _core
from ._core import Error
from ._shared import Model, NotPicklable, RemoteMethod, Shared, TensorInfo, status, unload

__version__ = _core.library_version

# One exception class per code of the C library's error table (modelshare.SpecConflict, ...).
for _type in _core.error_types.values():
    globals()[_type.__name__] = _type
del _type

__all__ = ["Shared", "Model", "RemoteMethod", "TensorInfo", "status", "unload", "Error",
           "NotPicklable",
           *sorted(t.__name__ for t in _core.error_types.values())]
