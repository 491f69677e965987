"""Apache Spark integration: every Python worker of a machine's executors calls one shared model.

    import modelshare, modelshare.spark

    shared = modelshare.Shared(load_model, tag="clf-v1")        # load_model() -> model
    predict = modelshare.spark.predictor(shared, features=["a", "b", "c"], output="score")

    out = df.mapInArrow(predict.arrow, predict.schema(df))      # Arrow columns, no pandas
    out = df.mapInPandas(predict.pandas, predict.schema(df))    # the same through pandas
    out = df.withColumn("score", predict.udf()("a", "b", "c"))  # a pandas_udf

Each Spark Python worker process acquires the model once, on its first batch, and keeps the
lease for its life (Spark reuses its Python workers across tasks; a worker forked from another
acquires its own). Every batch's feature columns become one 2-D array of the model's input dtype
(float32 when the model does not say) and go to the model in one call through shared memory; the
workers' batches are merged in the model's worker when its Shared says batchable=True (each
prediction depends on its own row only). mapInArrow reads each numeric
column of the RecordBatch in place (pyarrow's zero-copy to_numpy; a column with nulls or of
another type is converted, nulls becoming NaN) and stacks them once. The prediction is appended
to the batch as a new column `output` of `output_type`: a scalar type ("double", "float", "int",
"long", ...) for a model that returns one value per row, or "array<float>"/"array<double>" for
one that returns several. features may also name one array column (a Spark ML-style vector held
as array<float> or array<double>): its rows are the model's input rows.

The model's worker loads it from the constructor once per machine; the lease ends when the
Spark Python worker exits.
"""
import os
import threading

import numpy as np

from ._shared import Shared

# Spark SQL type name -> numpy dtype of the output column (array<...>: of its elements).
_OUTPUT_TYPES = {"float": np.float32, "double": np.float64, "int": np.int32,
                 "bigint": np.int64, "long": np.int64, "smallint": np.int16, "short": np.int16,
                 "tinyint": np.int8, "byte": np.int8, "boolean": np.bool_}

_lock = threading.Lock()  # guards _key_locks only, never held across a control call
_key_locks = {}  # (socket, tag, identity) -> Lock: one thread acquires each model for all
_leases = {}  # (socket, tag, identity) -> (pid, Model): this process's lease on each model


def lease(shared):
    """This process's lease on shared, acquired on first use and kept for the process's life.
    A forked child (its pid differs from the one that acquired) acquires its own."""
    key = (os.environ.get("MODELSHARE_SOCKET", ""), shared.tag, shared._key or shared._spec_json())
    pid = os.getpid()
    got = _leases.get(key)
    if got is not None and got[0] == pid:
        return got[1]
    with _lock:
        key_lock = _key_locks.setdefault(key, threading.Lock())
    # Per model: a thread that acquires one model (a slow load) holds up no other model's.
    with key_lock:
        got = _leases.get(key)
        if got is None or got[0] != pid:
            got = (pid, shared.acquire())
            _leases[key] = got
        return got[1]


def _after_fork_in_child():
    global _lock, _key_locks
    # Another thread may have held a lock at fork(): start afresh (the leases are re-taken).
    _lock = threading.Lock()
    _key_locks = {}


os.register_at_fork(after_in_child=_after_fork_in_child)


def _output_type(text):
    """("double", float64, False) or ("array<float>", float32, True)."""
    t = text.strip().lower().replace(" ", "")
    array = t.startswith("array<") and t.endswith(">")
    base = t[6:-1] if array else t
    if base not in _OUTPUT_TYPES:
        raise ValueError(f"modelshare.spark: output_type: expected one of "
                         f"{', '.join(sorted(_OUTPUT_TYPES))} or array<float|double|...>, "
                         f"got {text!r}")
    return t, np.dtype(_OUTPUT_TYPES[base]), array


class Predictor:
    """Functions for Spark that call a shared model on the feature columns of each batch.
    Build it with predictor(); it pickles to Spark's workers (the model stays in its own)."""

    def __init__(self, shared, features, output="prediction", output_type="double", dtype=None):
        if not isinstance(shared, Shared):
            raise TypeError(f"modelshare.spark.predictor: expected a modelshare.Shared, got "
                            f"{type(shared).__name__}")
        if isinstance(features, str):
            features = [features]
        features = list(features)
        if not features or not all(isinstance(f, str) for f in features):
            raise ValueError(f"modelshare.spark.predictor: features: expected column names, "
                             f"got {features!r}")
        if output in features:
            raise ValueError(f"modelshare.spark.predictor: output {output!r} is a feature column")
        self.shared = shared
        self.features = features
        self.output = output
        self.output_type, self._out_dtype, self._out_array = _output_type(output_type)
        self.dtype = None if dtype is None else np.dtype(dtype)

    def model(self):
        """This process's lease on the model (acquired on first use)."""
        return lease(self.shared)

    def _input_dtype(self, model):
        if self.dtype is None:
            (name, _), _ = model.signature()
            try:
                self.dtype = np.dtype(name)
            except TypeError:  # 'unknown' (a python model says nothing): float32
                self.dtype = np.dtype(np.float32)
        return self.dtype

    def predict(self, x):
        """The model on a 2-D array: one output row per input row, as the output column's dtype
        (a copy, out of shared memory)."""
        n = len(x)
        if n == 0:  # an empty batch (a partition's last, a filter's): no call
            return np.empty((0, 0) if self._out_array else 0, self._out_dtype)
        model = self.model()
        y = model(np.ascontiguousarray(x, dtype=self._input_dtype(model)))
        if y.ndim == 0 or y.shape[0] != n:
            raise ValueError(f"model {self.shared.tag!r}: {n} rows in, output of shape "
                             f"{tuple(y.shape)} out: expected one output row per input row")
        if not self._out_array:
            if y.ndim > 2 or (y.ndim == 2 and y.shape[1] != 1):
                raise ValueError(f"model {self.shared.tag!r}: output of shape {tuple(y.shape)} "
                                 f"for output_type {self.output_type!r}: expected one value per "
                                 f"row (use output_type='array<float>' for several)")
            return np.array(y.reshape(n), dtype=self._out_dtype)
        return np.array(y.reshape(n, -1), dtype=self._out_dtype)

    # -- pandas: mapInPandas and pandas_udf --------------------------------------------------

    def _pandas_matrix(self, pdf):
        model = self.model()
        dtype = self._input_dtype(model)
        if len(self.features) == 1 and pdf[self.features[0]].dtype == object:
            col = pdf[self.features[0]]  # an array column: one list (or array) per row
            return np.stack([np.asarray(v, dtype=dtype) for v in col]) if len(col) else \
                np.empty((0, 0), dtype)
        # Straight into the model's shared memory: one copy, and model(x) sends it as it is.
        x = model.empty((len(pdf), len(self.features)), dtype)
        for j, name in enumerate(self.features):
            x[:, j] = pdf[name].to_numpy()
        return x

    def _pandas_column(self, y):
        return list(y) if self._out_array else y

    def pandas(self, batches):
        """For df.mapInPandas(predict.pandas, predict.schema(df)): each pandas DataFrame with
        the prediction column appended."""
        for pdf in batches:
            y = self.predict(self._pandas_matrix(pdf))
            yield pdf.assign(**{self.output: self._pandas_column(y)})

    def udf(self):
        """A pandas_udf over the feature columns, in the order of features:
        df.withColumn("score", predict.udf()("a", "b"))."""
        import pandas as pd
        from pyspark.sql.functions import pandas_udf
        this = self

        def run(*cols: pd.Series) -> pd.Series:
            pdf = pd.concat(cols, axis=1, keys=this.features) if len(cols) > 1 else \
                cols[0].to_frame(this.features[0])
            return pd.Series(this._pandas_column(this.predict(this._pandas_matrix(pdf))))

        return pandas_udf(run, self.output_type)

    # -- Arrow: mapInArrow ---------------------------------------------------------------------

    def _arrow_matrix(self, batch):
        import pyarrow as pa
        model = self.model()
        dtype = self._input_dtype(model)
        cols = [batch.column(name) for name in self.features]
        if len(cols) == 1 and (pa.types.is_list(cols[0].type) or
                               pa.types.is_fixed_size_list(cols[0].type) or
                               pa.types.is_large_list(cols[0].type)):
            return _arrow_rows(cols[0], self.features[0], dtype, model)
        if not cols or len(batch) == 0:
            return np.empty((len(batch), len(cols)), dtype)
        # Each column written once, straight into the model's shared memory (no pandas, no
        # intermediate matrix): model(x) then sends it with no copy.
        x = model.empty((len(batch), len(cols)), dtype)
        for j, c in enumerate(cols):
            x[:, j] = _arrow_numpy(c)
        return x

    def arrow(self, batches):
        """For df.mapInArrow(predict.arrow, predict.schema(df)): each pyarrow RecordBatch with
        the prediction column appended; the features go to the model without pandas."""
        import pyarrow as pa
        for batch in batches:
            y = self.predict(self._arrow_matrix(batch))
            if self._out_array:
                width = y.shape[1]
                offsets = np.arange(0, y.size + 1, max(width, 1), dtype=np.int32)[:len(y) + 1]
                column = pa.ListArray.from_arrays(offsets, pa.array(y.reshape(-1)))
            else:
                column = pa.array(y)
            yield batch.append_column(self.output, column)

    # -- schema ------------------------------------------------------------------------------

    def schema(self, df_or_schema):
        """The output schema for mapInPandas/mapInArrow: the input's (a DataFrame or a
        StructType) with the prediction column appended."""
        from pyspark.sql.types import StructField, StructType, _parse_datatype_string
        schema = getattr(df_or_schema, "schema", df_or_schema)
        if not isinstance(schema, StructType):
            raise TypeError(f"modelshare.spark: schema(): expected a DataFrame or StructType, "
                            f"got {type(df_or_schema).__name__}")
        return StructType(list(schema.fields) +
                          [StructField(self.output, _parse_datatype_string(self.output_type))])

    def __repr__(self):
        return (f"modelshare.spark.Predictor({self.shared.tag!r}, features={self.features!r}, "
                f"output={self.output!r}, output_type={self.output_type!r})")


def _arrow_numpy(col):
    """A numeric Arrow column as numpy: in place when it has no nulls and a primitive type,
    else converted (nulls become NaN)."""
    if hasattr(col, "combine_chunks"):  # a ChunkedArray
        col = col.combine_chunks()
    if col.null_count == 0:
        try:
            return col.to_numpy(zero_copy_only=True)
        except Exception:  # booleans, decimals, ...: not a plain buffer
            pass
    return col.to_numpy(zero_copy_only=False)


def _arrow_rows(col, name, dtype, model):
    """An Arrow list column whose rows all have one length: the 2-D array of its values, in the
    model's shared memory."""
    if hasattr(col, "combine_chunks"):
        col = col.combine_chunks()
    n = len(col)
    if col.null_count:
        raise ValueError(f"modelshare.spark: feature column {name!r} has {col.null_count} "
                         f"null rows")
    values = _arrow_numpy(col.flatten())
    if n == 0:
        return np.empty((0, 0), dtype)
    if values.size % n:
        raise ValueError(f"modelshare.spark: feature column {name!r}: rows of different "
                         f"lengths ({values.size} values in {n} rows)")
    width = values.size // n
    if hasattr(col, "offsets") and (np.diff(col.offsets.to_numpy()) != width).any():
        raise ValueError(f"modelshare.spark: feature column {name!r}: rows of different "
                         f"lengths")
    x = model.empty((n, width), dtype)
    x[...] = values.reshape(n, width)
    return x


def predictor(shared, features, output="prediction", output_type="double", dtype=None):
    """A Predictor: predict.arrow for mapInArrow, predict.pandas for mapInPandas, predict.udf()
    for a pandas_udf, predict.schema(df) for their output schema.

    shared: a modelshare.Shared. features: the input column names, in the model's column order
    (or one array column). output: the new column's name; output_type: its Spark SQL type
    ("double", "float", "int", "long", "array<float>", ...). dtype: the model's input dtype
    (default: what the model declares, else float32)."""
    return Predictor(shared, features, output, output_type, dtype)
