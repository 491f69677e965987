"""Every python block of README.md and docs/*.md runs as written (tests/docblocks.py finds them):
each as a script of its own against this test's daemon. What the test writes before a block (the
files and inputs it names) and after it (the check of its answers) is kept apart, chosen by the
block's `<!-- doc-test: NAME -->` marker. The C and sh blocks run in
tests/integration/test_docs.py."""
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from docblocks import blocks  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent

EMBEDDER = """
    import numpy as np
    import modelshare

    class Embedder:
        def __init__(self):
            self.w = np.arange(12, dtype=np.float32).reshape(4, 3)

        def __call__(self, x):
            return x @ self.w

        def vocab_size(self):
            return 30522

    def load_embedder():
        return Embedder()

    x = np.linspace(-1, 1, 20, dtype=np.float32).reshape(5, 4)
    """
EMBEDDER_CHECK = """
    np.testing.assert_allclose(y, x @ Embedder().w, rtol=1e-6)
    assert v == 30522, v
    print("checked")
    """

# name: (modules it needs, before, after). The after part sees the block's names.
CASES = {
    "two-input-transformer": (("torch",), "", """
        import numpy as np
        with torch.inference_mode():
            want = Encoder().eval()(ids, mask)
        assert list(out) == ["last_hidden_state", "pooled"]
        np.testing.assert_allclose(pooled, want["pooled"].numpy(), rtol=1e-4, atol=1e-5)
        assert pooled.shape == (4, 64) and not pooled.flags.owndata
        print("checked")
        """),
    "keras-model": (("keras", "tensorflow"), "", """
        want = make_model()({"tokens": t, "features": f})
        assert list(out) == ["logits"] and out["logits"].shape == (2, 3)
        np.testing.assert_allclose(out["logits"], want["logits"].numpy(), rtol=1e-5, atol=1e-5)
        assert names == ["tokens", "features"], names
        print("checked")
        """),
    "jax-function": (("jax",), "", """
        want = np.ones((4, 8), np.float32) @ np.asarray(
            np.random.default_rng(0).standard_normal((8, 3)), np.float32)
        np.testing.assert_allclose(out["y"], want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out["norm"], np.linalg.norm(want, axis=1), rtol=1e-5)
        assert isinstance(out["y"], np.ndarray)
        print("checked")
        """),
    "text-embedder": ((), "", """
        want = make_embedder()(["the cat sat", "on a mat", "a dog barked"])
        np.testing.assert_allclose(vectors, want, rtol=1e-6)
        assert vectors.shape == (3, 64)
        print("checked")
        """),
    "quickstart": ((), """
        # What the block names: mlp.safetensors (1024 inputs) and x.
        import numpy as np
        from testlib import mlp_reference, save_mlp
        save_mlp("mlp.safetensors", [1024, 64, 10], seed=2)
        x = np.random.default_rng(1).standard_normal((4, 1024)).astype(np.float32)
        """, """
        np.testing.assert_allclose(y, mlp_reference("mlp.safetensors", x), rtol=1e-4, atol=1e-5)
        print("checked")
        """),
    "python-model": ((), EMBEDDER, EMBEDDER_CHECK),
    "async": ((), textwrap.dedent(EMBEDDER)
              + 'shared = modelshare.Shared(load_embedder, tag="embedder")\n', EMBEDDER_CHECK),
    "readme-torch": (("torch",), "", """
        import numpy as np
        with torch.no_grad():
            want = make_classifier()(x).numpy()
        np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-5)
        assert scores.shape == (8, 4) and scores.dtype == np.float32
        print("checked")
        """),
    "torch-encoder": (("torch",), "", """
        import numpy as np
        with torch.no_grad():
            want = make_encoder()(x).numpy()
        np.testing.assert_allclose(h.numpy(), want, rtol=1e-4, atol=1e-5)
        assert h.data_ptr() == y.ctypes.data and y.shape == (8, 16, 64)
        print("checked")
        """),
    "onnx-session": (("onnxruntime", "onnx"), """
        # What the block names: model.onnx (y = x @ W + b, from tests/python/pymodels.py's
        # graph) and x.
        import numpy as np
        import pymodels
        with open("model.onnx", "wb") as f:
            f.write(pymodels.onnx_model())
        x = np.random.default_rng(5).standard_normal((6, 8)).astype(np.float32)
        """, """
        w, b = pymodels.onnx_weights()
        np.testing.assert_allclose(y, x @ w + b, rtol=1e-5, atol=1e-5)
        print("checked")
        """),
    "beam-dask": (("apache_beam", "sklearn", "dask.distributed"), """
        # What the block names: load_model, a pickled scikit-learn model at uri, a PCollection
        # of examples, a Dask client and a modelshare.Shared to preload.
        import os
        import pickle
        import numpy as np
        import apache_beam as beam
        from apache_beam.ml.inference.base import RunInference
        from apache_beam.ml.inference.sklearn_inference import SklearnModelHandlerNumpy
        from apache_beam.testing.util import assert_that, equal_to
        from dask.distributed import Client, LocalCluster
        from sklearn.linear_model import LinearRegression
        import modelshare

        class Answer:
            def value(self):
                return 42

        def load_model():
            return Answer()

        uri = os.path.abspath("clf.pkl")
        with open(uri, "wb") as f:
            pickle.dump(LinearRegression().fit([[0.0], [1.0], [2.0]], [1.0, 3.0, 5.0]), f)
        pipeline = beam.Pipeline()
        examples = pipeline | beam.Create([np.array([3.0]), np.array([4.0])])
        client = Client(LocalCluster(n_workers=1, threads_per_worker=1, processes=False))
        shared_model = modelshare.Shared(lambda: np.float32(1.0), tag="preloaded",
                                         keep_alive=600)
        """, """
        obj = shared.acquire()
        assert obj.value() == 42
        shared.release(obj)
        assert_that(predictions | beam.Map(lambda p: round(float(p.inference), 6)),
                    equal_to([7.0, 9.0]))
        pipeline.run().wait_until_finish()
        tags = {m["tag"]: m for m in modelshare.status()["models"]}
        assert tags["clf-v1"]["loads"] == 1, tags
        assert "preloaded" in tags, tags        # loaded by the plugin's setup, no lease held
        client.close()
        print("checked")
        """),
    "beam-tensors": (("apache_beam", "torch"), """
        # What the block names: make_encoder (a masked transformer answering pooled rows and
        # every token's state), make_embedder (a text embedder) and two PCollections of them.
        import numpy as np
        import torch
        import apache_beam as beam
        from apache_beam.ml.inference.base import RunInference
        from apache_beam.testing.util import assert_that
        import modelshare
        import multimodels

        def make_encoder():
            return multimodels.MaskedEncoderStates()

        def make_embedder():
            return multimodels.TextEmbedder()

        lengths = [3, 7, 12, 5, 16, 9]
        examples = [{"input_ids": torch.arange(1, n + 1), "attention_mask": torch.ones(n).long()}
                    for n in lengths]
        texts = [" ".join(multimodels.sentences(i, 1)) for i in range(10)]
        pipeline = beam.Pipeline()
        tokens = pipeline | "tokens" >> beam.Create(examples)
        sentences = pipeline | "texts" >> beam.Create(texts)
        """, """
        def check_encoded(results):
            assert sorted(len(r.example["input_ids"]) for r in results) == sorted(lengths)
            for r in results:
                want = multimodels.states_in_process(r.example["input_ids"][None],
                                                     r.example["attention_mask"][None])
                assert r.inference["states"].shape == want["states"][0].shape
                np.testing.assert_allclose(r.inference["pooled"], want["pooled"][0],
                                           rtol=1e-4, atol=1e-5)

        def check_vectors(results):
            assert sorted(r.example for r in results) == sorted(texts)
            for r in results:
                want = multimodels.TextEmbedder()([r.example])[0]
                np.testing.assert_allclose(r.inference, want, rtol=1e-4, atol=1e-5)

        assert_that(encoded, check_encoded, label="encoded")
        assert_that(vectors, check_vectors, label="vectors")
        pipeline.run().wait_until_finish()
        tags = {m["tag"]: m for m in modelshare.status()["models"]}
        assert tags["encoder"]["rows"] >= len(lengths), tags   # through shared memory
        assert tags["sentences"]["rows"] >= len(texts), tags
        print("checked")
        """),
    "spark": (("pyspark", "pyarrow"), """
        # What the block names: a Shared model of three features and a Spark DataFrame with
        # those columns (local[2]; its Python workers get this test's socket and PYTHONPATH).
        import functools
        import os
        import pathlib
        import shutil
        import sys
        import numpy as np
        import pandas as pd
        from pyspark.sql import SparkSession
        import modelshare
        import pymodels
        java = pathlib.Path(os.path.realpath(shutil.which("java")))
        os.environ.setdefault("JAVA_HOME", str(java.parent.parent))
        os.environ["PYSPARK_PYTHON"] = sys.executable
        spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
                 .config("spark.driver.memory", "1g").getOrCreate())
        x = np.random.default_rng(3).standard_normal((500, 3)).astype(np.float32)
        df = spark.createDataFrame(pd.DataFrame(x, columns=["a", "b", "c"])).repartition(2)
        shared = modelshare.Shared(functools.partial(pymodels.Linear, 3), tag="spark-doc")
        """, """
        # out keeps the last of the block's three frames (the pandas_udf); its first two are
        # made again here, as the block makes them, to collect them too.
        w, b = pymodels.linear_weights(3)
        for frame in (df.mapInArrow(predict.arrow, predict.schema(df)),
                      df.mapInPandas(predict.pandas, predict.schema(df)), out):
            rows = frame.collect()
            got = np.array([[r["a"], r["b"], r["c"], r["score"]] for r in rows], np.float64)
            np.testing.assert_allclose(got[:, 3], got[:, :3].astype(np.float32) @ w + b,
                                       rtol=1e-5, atol=1e-5)
            assert len(rows) == len(x)
        spark.stop()
        print("checked")
        """),
}

PYTHON = [b for b in blocks({"python"}) if not b.skip]


def test_every_python_block_is_run_or_says_why_not():
    for b in blocks({"python"}):
        assert b.skip or b.name in CASES, f"{b.id}: no doc-test case and no not-run reason"
    assert {b.name for b in PYTHON} == set(CASES), "a case without its block"


@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
def test_python_block(daemon, tmp_path, block):
    needs, before, after = CASES[block.name]
    for module in needs:
        pytest.importorskip(module)
    body = block.code
    if block.name == "async":
        body = ("import asyncio\n\nasync def _main():\n"
                + textwrap.indent(body + textwrap.dedent(after), "    ")
                + "\n\nasyncio.run(_main())\n")
        after = ""
    script = tmp_path / "example.py"
    script.write_text("\n".join([textwrap.dedent(before), body, textwrap.dedent(after)]))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-4000:]
    assert "checked" in r.stdout, r.stdout[-4000:]
    if block.name == "quickstart":
        assert r.stdout.splitlines()[0] == "1", r.stdout[-4000:]   # loads, as the block says
