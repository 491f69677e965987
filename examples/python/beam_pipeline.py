"""Apache Beam RunInference with scikit-learn: the model is loaded once per machine and serves
every Beam worker process (DirectRunner, multi-processing mode, 4 workers).

    python examples/python/beam_pipeline.py
"""
import os
import pickle
import tempfile

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import RunInference
from apache_beam.ml.inference.sklearn_inference import SklearnModelHandlerNumpy
from apache_beam.options.pipeline_options import PipelineOptions
from sklearn.linear_model import LogisticRegression

import modelshare
from modelshare.beam import SharedModelHandler

if __name__ == "__main__":
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 4))
    clf = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    folder = tempfile.mkdtemp()
    model_uri = os.path.join(folder, "model.pkl")
    with open(model_uri, "wb") as f:
        pickle.dump(clf, f)

    handler = SharedModelHandler(SklearnModelHandlerNumpy(model_uri=model_uri), tag="example-clf")
    options = PipelineOptions(direct_running_mode="multi_processing", direct_num_workers=4)
    out = os.path.join(folder, "predictions")
    with beam.Pipeline(options=options) as p:
        (p | beam.Create(list(x[:100])) | beam.Reshuffle() | RunInference(handler)
         | beam.Map(lambda r: int(r.inference)) | beam.io.WriteToText(out))

    lines = [line for name in os.listdir(folder) if name.startswith("predictions")
             for line in open(os.path.join(folder, name))]
    print(f"{len(lines)} predictions")
    model = next(m for m in modelshare.status()["models"] if m["tag"] == "example-clf")
    print(f"loads: {model['loads']}")
    modelshare.unload("example-clf")
