"""Apache Spark on local[4]: 4 Python workers call one shared model through mapInPandas,
mapInArrow and a pandas_udf; one load per tag, every prediction checked against numpy."""
import functools
import os
import pathlib
import shutil

import numpy as np
import pytest

import modelshare
import pymodels
from conftest import Daemon

# Installed by tests/requirements.txt: a missing PySpark or PyArrow is a failure here, not a skip.
import pyarrow  # noqa: F401
import pyspark  # noqa: F401
from pyspark.sql import SparkSession

import modelshare.spark

ROWS = 20000
SLOTS = 4
HERE = pathlib.Path(__file__).resolve().parent


def _java_home():
    java = shutil.which("java")
    assert java, "Spark needs Java: scripts/install-deps.sh installs openjdk-17-jre-headless"
    return str(pathlib.Path(os.path.realpath(java)).parent.parent)


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    """One daemon and one SparkSession for the module. The JVM and its Python workers inherit
    this environment: the daemon's socket, and PYTHONPATH for pymodels."""
    d = Daemon(tmp_path_factory.mktemp("spark"))
    env = {"MODELSHARE_SOCKET": str(d.socket), "MODELSHARE_IDLE_EXIT": "0",
           "PYTHONPATH": os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH"))
                                         if p),
           "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON") or os.sys.executable,
           "JAVA_HOME": os.environ.get("JAVA_HOME") or _java_home()}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    session = (SparkSession.builder.master(f"local[{SLOTS}]").appName("modelshare-test")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", str(SLOTS))
               .config("spark.python.worker.reuse", "true")
               .config("spark.driver.memory", "1g")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()
        d.stop()
        shutil.rmtree(d.dir, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _frame(spark, n=ROWS, partitions=2 * SLOTS):
    x = np.random.default_rng(1).standard_normal((n, 4)).astype(np.float32)
    pdf = __import__("pandas").DataFrame(x, columns=["a", "b", "c", "d"])
    pdf.insert(0, "id", np.arange(n, dtype=np.int64))
    return spark.createDataFrame(pdf).repartition(partitions), x


def _expected(x, two=False):
    w, b = pymodels.linear_weights()
    y = x @ w + b
    return np.stack([y, 2 * y], axis=1) if two else y


def _with_pid(fn):
    """fn (a mapInPandas/mapInArrow function) with the worker's pid appended to each batch."""
    def run(batches):
        import pyarrow as pa
        for out in fn(batches):
            if isinstance(out, pa.RecordBatch):
                yield out.append_column("pid", pa.array([os.getpid()] * len(out), pa.int64()))
            else:
                yield out.assign(pid=os.getpid())
    return run


def _loads(tag):
    return next(m for m in modelshare.status()["models"] if m["tag"] == tag)["loads"]


def _check(rows, x, expected, array=False):
    got = {r["id"]: r["prediction"] for r in rows}
    assert sorted(got) == list(range(len(x)))
    y = np.array([got[i] for i in range(len(x))])
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    if not array:
        assert y.dtype == np.float64


@pytest.mark.parametrize("kind", ["pandas", "arrow"])
def test_map_one_load_four_workers(spark, kind):
    tag = f"spark-{kind}"
    shared = modelshare.Shared(pymodels.make_linear, tag=tag, max_batch=4096)
    predict = modelshare.spark.predictor(shared, features=["a", "b", "c", "d"])
    df, x = _frame(spark)
    schema = predict.schema(df).add("pid", "long")
    mapper = df.mapInPandas if kind == "pandas" else df.mapInArrow
    rows = mapper(_with_pid(getattr(predict, kind)), schema).collect()
    _check(rows, x, _expected(x))
    assert len({r["pid"] for r in rows}) == SLOTS  # 4 Python workers called it
    assert _loads(tag) == 1                        # and it was loaded once


def test_arrow_array_output_and_array_features(spark):
    shared = modelshare.Shared(pymodels.make_linear, tag="spark-two")
    two = modelshare.spark.predictor(shared, features=["a", "b", "c", "d"],
                                     output_type="array<float>")
    df, x = _frame(spark, n=3000)
    rows = df.mapInArrow(two.arrow, two.schema(df)).collect()
    _check(rows, x, _expected(x)[:, None], array=True)  # one value per row, as [v]
    # One array<float> column as the features (a vector column), into mapInArrow and mapInPandas.
    vec = df.selectExpr("id", "array(a, b, c, d) AS v")
    p = modelshare.spark.predictor(shared, features="v")
    for mapper in (vec.mapInArrow, vec.mapInPandas):
        fn = p.arrow if mapper == vec.mapInArrow else p.pandas
        _check(mapper(fn, p.schema(vec)).collect(), x, _expected(x))
    assert _loads("spark-two") == 1


def test_pandas_udf(spark):
    shared = modelshare.Shared(pymodels.make_linear, tag="spark-udf")
    predict = modelshare.spark.predictor(shared, features=["a", "b", "c", "d"])
    df, x = _frame(spark, n=5000)
    rows = df.withColumn("prediction", predict.udf()("a", "b", "c", "d")).collect()
    _check(rows, x, _expected(x))
    assert _loads("spark-udf") == 1


def test_several_outputs_and_errors(spark):
    shared = modelshare.Shared(functools.partial(pymodels.make_linear, two=True),
                               tag="spark-wide")
    wide = modelshare.spark.predictor(shared, features=["a", "b", "c", "d"],
                                      output_type="array<double>")
    df, x = _frame(spark, n=2000)
    for fn, mapper in ((wide.arrow, df.mapInArrow), (wide.pandas, df.mapInPandas)):
        _check(mapper(fn, wide.schema(df)).collect(), x, _expected(x, two=True), array=True)
    # One value per row asked, two given: the task fails with a message that says so.
    one = modelshare.spark.predictor(shared, features=["a", "b", "c", "d"])
    with pytest.raises(Exception, match="one value per"):
        df.mapInArrow(one.arrow, one.schema(df)).collect()
    with pytest.raises(ValueError, match="output_type"):
        modelshare.spark.predictor(shared, features=["a"], output_type="string")
    with pytest.raises(TypeError, match="modelshare.Shared"):
        modelshare.spark.predictor("model", features=["a"])
    with pytest.raises(ValueError, match="feature column"):
        modelshare.spark.predictor(shared, features=["a"], output="a")



def test_arrow_columns_read_in_place():
    import pyarrow as pa
    from modelshare.spark import _arrow_numpy
    a = np.arange(10, dtype=np.float32)
    batch = pa.RecordBatch.from_arrays([pa.array(a), pa.array([1.0, None, 3.0])[:3].take(
        [0, 1, 2, 0, 1, 2, 0, 1, 2, 0])], names=["a", "n"])
    assert np.shares_memory(_arrow_numpy(batch.column("a")), a)  # no copy
    n = _arrow_numpy(batch.column("n"))                            # nulls: converted, NaN
    assert np.isnan(n[1]) and n[0] == 1.0


def test_batches_go_into_shared_memory_once_and_are_sent_as_they_are(daemon):
    # In one process, no Spark: the Arrow and pandas paths write each feature column once into
    # the model's shared memory (model.empty) and the call copies nothing more.
    import pandas as pd
    import pyarrow as pa
    shared = modelshare.Shared(pymodels.make_linear, tag="spark-direct")
    predict = modelshare.spark.predictor(shared, features=["a", "b", "c", "d"])
    x = np.random.default_rng(3).standard_normal((500, 4)).astype(np.float32)
    batch = pa.RecordBatch.from_arrays([pa.array(x[:, j]) for j in range(4)],
                                       names=["a", "b", "c", "d"])
    (out,) = list(predict.arrow([batch]))
    np.testing.assert_allclose(out.column("prediction").to_numpy(), _expected(x), rtol=1e-5)
    (pdf,) = list(predict.pandas([pd.DataFrame(x, columns=["a", "b", "c", "d"])]))
    np.testing.assert_allclose(pdf["prediction"].to_numpy(), _expected(x), rtol=1e-5)
    rows = modelshare.spark.predictor(shared, features="v")
    vals = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 4)
    (out,) = list(rows.arrow([pa.RecordBatch.from_arrays([vals], names=["v"])]))
    np.testing.assert_allclose(out.column("prediction").to_numpy(), _expected(x), rtol=1e-5)
    assert predict.model().copied_bytes == 0 and rows.model().copied_bytes == 0
