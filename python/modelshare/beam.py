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

    # A model of keyed tensors (dicts, as PytorchModelHandlerKeyedTensor) or of text, called
    # through shared memory, batched across the machine's Beam processes with batchable=True.
    from modelshare.beam import SharedTensorHandler
    handler = SharedTensorHandler(make_encoder, tag="enc", batchable=True, max_batch_size=32)
    embeddings = dicts_of_tensors | RunInference(handler)

MultiProcessShared works without apache_beam installed; SharedModelHandler needs it.
"""
from ._beam_inference import SharedModelHandler
from ._beam_shared import MultiProcessShared
from ._beam_tensors import SharedTensorHandler

__all__ = ["MultiProcessShared", "SharedModelHandler", "SharedTensorHandler"]
