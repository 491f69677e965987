"""Models for the python backend's tests: importable by the workers (they get the test process's
sys.path), so constructors pickle by reference."""
import os
import time

import numpy as np


class Scale:
    """y = k * x, with a method, an attribute and a method that raises."""

    def __init__(self, k):
        self.k = np.float32(k)
        self.pid = os.getpid()
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        return x * self.k

    def vocab_size(self):
        return 30522

    def add(self, a, b=0):
        return a + b

    def fail(self, why):
        raise ValueError(f"refused: {why}")

    def environ(self, name):
        """The worker's environment variable name (None when unset)."""
        return os.environ.get(name)

    def block(self, path):
        """Says it started (writes path), then takes its time: the test kills it meanwhile."""
        with open(path, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(120)


def make_scale(k=2.0):
    return Scale(k)


def make_other(k=3.0):
    return Scale(k)


def failing_constructor():
    raise RuntimeError("the weights are not there: /nowhere/model.bin")


class Widen:
    """One row in, a row ten times wider out (float64): the output is larger than the input."""

    def __call__(self, x):
        return np.repeat(x.astype(np.float64), 10, axis=1)


class NotAnArray:
    def __call__(self, x):
        return {"sum": float(np.sum(x))}


class RaisesOnNegative:
    def __call__(self, x):
        if (x < 0).any():
            raise ValueError("negative input")
        return x + 1


def train_logistic():
    """A scikit-learn classifier trained the same way wherever it runs."""
    from sklearn.linear_model import LogisticRegression
    rng = np.random.default_rng(7)
    x = rng.standard_normal((200, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    return LogisticRegression().fit(x, y)


class Sklearn:
    def __init__(self):
        self.clf = train_logistic()

    def __call__(self, x):
        return self.clf.predict_proba(x)

    def predict(self, x):
        return self.clf.predict(x)


def onnx_weights():
    rng = np.random.default_rng(3)
    return rng.standard_normal((8, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)


class Onnx:
    """y = x @ W + b as an ONNX graph built here, run by ONNX Runtime on the CPU."""

    def __init__(self):
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
        w, b = onnx_weights()
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "W"], ["xw"]),
             helper.make_node("Add", ["xw", "b"], ["y"])],
            "affine",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
            [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        self.session = ort.InferenceSession(model.SerializeToString(),
                                            providers=["CPUExecutionProvider"])

    def __call__(self, x):
        return self.session.run(["y"], {"x": x})[0]


def onnx_session(outputs=1):
    """An onnxruntime.InferenceSession returned as it is (no wrapper) of onnx_model(outputs)."""
    import onnxruntime as ort
    return ort.InferenceSession(onnx_model(outputs), providers=["CPUExecutionProvider"])


def onnx_model(outputs=1):
    """An ONNX model's bytes, built with onnx's helpers: y = x @ W + b (x: [rows, 8]), and with
    outputs=2 also the row sums of y (a second output, "s")."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w, b = onnx_weights()
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]),
             helper.make_node("Add", ["xw", "b"], ["y"])]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")]
    if outputs == 2:
        nodes.append(helper.make_node("ReduceSum", ["y", "axes"], ["s"], keepdims=0))
        outs.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, [None]))
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
    graph = helper.make_graph(
        nodes, "affine", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])],
        outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def onnx_two_inputs():
    """An onnxruntime.InferenceSession of two named inputs: "input_ids" int64 [batch, seq] and
    "scale" float [batch, 1] (batch and seq symbolic: they vary); outputs "pooled" (the ids'
    row sums times scale, float [batch, 1]) and "ids" (the ids as they came)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    nodes = [helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["f", "axes"], ["s"], keepdims=1),
             helper.make_node("Mul", ["s", "scale"], ["pooled"]),
             helper.make_node("Identity", ["input_ids"], ["ids"])]
    graph = helper.make_graph(
        nodes, "two_inputs",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [numpy_helper.from_array(np.array([1], np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def use_in_child(shared, i, results):
    """Run in a child process: one call through the shared model."""
    try:
        x = np.full((i + 1, 4), i, dtype=np.float32)
        with shared.acquire() as model:
            results.put((i, np.array(model(x)), model.vocab_size(), None))
    except Exception as e:  # reported to the parent
        results.put((i, None, None, repr(e)))


class SeesEnvironment:
    """Remembers, when constructed, the environment variables that a framework cap sets: the cap
    must be applied before the constructor runs."""

    def __init__(self):
        self.seen = {k: v for k, v in os.environ.items() if k.startswith("XLA_PYTHON_CLIENT")}

    def __call__(self, x):
        return x


WIDTH = 32  # the compatibility matrix's models (tests/python/matrix_app.py): WIDTH > WIDTH


def dense_weights(seed, n_in=WIDTH, n_out=WIDTH):
    return np.random.default_rng(seed).standard_normal((n_in, n_out)).astype(np.float32)


class Dense:
    """y = x @ W(seed), with a method that takes an object of the caller's own classes."""

    def __init__(self, seed, n_in=WIDTH, n_out=WIDTH):
        self.w = dense_weights(seed, n_in, n_out)
        self.seed = seed

    def __call__(self, x):
        return x @ self.w

    def describe(self, point):
        return type(point).__name__, point.x + point.y, self.seed


def make_dense(seed=7):
    return Dense(seed)


class Sleepy:
    """y = x, after `delay` seconds per call: a slow model, to see an event loop keep running."""

    def __init__(self, delay):
        self.delay = delay

    def __call__(self, x):
        time.sleep(self.delay)
        return x

    def pid(self):
        return os.getpid()


class FixedShapes:
    """y = 2x, for a model compiled for fixed batch sizes: any other row count is an error.
    runs() says which row counts it ran at."""

    def __init__(self, sizes):
        self.sizes = tuple(sizes)
        self.seen = []

    def __call__(self, x):
        if x.shape[0] not in self.sizes:
            raise ValueError(f"compiled for batches of {self.sizes} rows, got {x.shape[0]}")
        self.seen.append(int(x.shape[0]))
        return x * 2

    def runs(self):
        return sorted(set(self.seen))


def linear_weights(n_in=4):
    """The Spark tests' model: y = x @ w + b, one value per row."""
    rng = np.random.default_rng(11)
    return rng.standard_normal(n_in).astype(np.float32), np.float32(0.5)


class Linear:
    """y = x @ w + b (float32, one value per row); two=True: [y, 2y] per row."""

    def __init__(self, n_in=4, two=False):
        self.w, self.b = linear_weights(n_in)
        self.two = two

    def __call__(self, x):
        y = x @ self.w + self.b
        return np.stack([y, 2 * y], axis=1) if self.two else y


def make_linear(n_in=4, two=False):
    return Linear(n_in, two)


class Gate:
    """Echoes its input and records, call by call, the first value of each row: the order in which
    the worker served the requests. A request whose first value is 0 waits until the file `opened`
    exists, so that a test can queue requests behind it."""

    def __init__(self, opened):
        self.opened = opened
        self.order = []

    def __call__(self, x):
        deadline = time.monotonic() + 60
        while x[0, 0] == 0 and not os.path.exists(self.opened) and time.monotonic() < deadline:
            time.sleep(0.001)
        self.order.extend(float(v) for v in x[:, 0])
        return x

    def served(self):
        return self.order


def call_in_child(shared, x, go, results):
    """Run in a child process: acquires and calls once (a value of 3) to be ready, then, when go
    is set, calls x once through the shared model; puts (y, error)."""
    try:
        with shared.acquire() as model:
            model(np.full((1, x.shape[1]), 3, x.dtype))
            results.put(("ready", None))
            go.wait(120)
            results.put((np.array(model(x)), None))
    except Exception as e:  # reported to the parent
        results.put((None, repr(e)))


class WaitsForFile:
    """y = x, once the file at path exists: a load that takes as long as the test wants."""

    def __init__(self, path):
        deadline = time.monotonic() + 120
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)

    def __call__(self, x):
        return x


class Overlaps:
    """y = k * x + 1, counting how many of its calls run at once (peak()). Each call sleeps
    (time.sleep lets go of the GIL, as numpy's kernels do); with company=True the first call
    waits (up to 10 s) for a second one to come in, so that a worker that may run two at once
    does, whatever the timing."""

    def __init__(self, k=2.0, sleep=0.005, company=False):
        import threading
        self.k = np.float32(k)
        self.sleep = sleep
        self.company = company
        self.lock = threading.Condition()
        self.now = self.most = self.calls = 0
        self.inline = 0  # calls run on the worker's loop thread (its main thread), not a runner

    def __call__(self, x):
        import threading
        with self.lock:
            self.now += 1
            self.calls += 1
            self.inline += threading.current_thread() is threading.main_thread()
            self.most = max(self.most, self.now)
            self.lock.notify_all()
            if self.company and self.calls == 1:
                self.lock.wait_for(lambda: self.now > 1, timeout=10)
        try:
            time.sleep(self.sleep)
            return x * self.k + 1
        finally:
            with self.lock:
                self.now -= 1

    def peak(self):
        """(most calls at once, calls)"""
        with self.lock:
            return self.most, self.calls


    def inline_calls(self):
        """Calls run on the worker's loop thread (a runner thread is not Python's main thread)."""
        with self.lock:
            return self.inline


def make_overlaps(k=2.0, sleep=0.005, company=False):
    return Overlaps(k, sleep, company)


class Turns:
    """y = k * x + 1 that takes no time until turn_slow(sleep) and then sleeps that long a call;
    for each phase, its calls, the most of them at once and how many ran on the worker's loop
    thread (Python's main thread there) rather than a runner. The first slow call that runs on a
    runner waits (up to 10 s) for a second one, so that a worker that runs slow calls on runners
    overlaps two whatever the timing."""

    def __init__(self, k=2.0):
        import threading
        self.k = np.float32(k)
        self.sleep = 0.0
        self.lock = threading.Condition()
        self.now = 0
        self.seen = {"fast": [0, 0, 0], "slow": [0, 0, 0]}  # calls, most at once, inline
        self.waited = False

    def __call__(self, x):
        import threading
        on_loop = threading.current_thread() is threading.main_thread()
        with self.lock:
            sleep = self.sleep
            seen = self.seen["slow" if sleep else "fast"]
            self.now += 1
            seen[0] += 1
            seen[1] = max(seen[1], self.now)
            seen[2] += on_loop
            self.lock.notify_all()
            if sleep and not on_loop and not self.waited:
                self.waited = True
                self.lock.wait_for(lambda: self.now > 1, timeout=10)
        try:
            if sleep:
                time.sleep(sleep)
            return x * self.k + 1
        finally:
            with self.lock:
                self.now -= 1

    def turn_slow(self, sleep):
        with self.lock:
            self.sleep = sleep

    def counts(self):
        """{"fast": [calls, most at once, inline], "slow": [...]}"""
        with self.lock:
            return self.seen


def make_turns(k=2.0):
    return Turns(k)


def overlaps_client(shared, i, n, results):
    """Acquires the model and sends n requests of its own, checking each answer (k = 2)."""
    try:
        with shared.acquire() as model:
            for r in range(n):
                x = np.full((1 + (i + r) % 3, 4), 1000 * i + r, np.float32)
                y = model(x)
                if not np.array_equal(y, x * 2 + 1):
                    raise AssertionError(f"client {i} request {r}: {y!r} for {x!r}")
        results.put((i, None))
    except Exception as e:  # reported to the parent
        results.put((i, repr(e)))


class Holds:
    """y = x; a call whose first element is 1 writes `started` and then waits (up to 60 s) for
    `release` to exist: a call in flight for as long as the test wants."""

    def __init__(self, started, release):
        self.started, self.release = started, release

    def __call__(self, x):
        if x.size and x.flat[0] == 1:
            with open(self.started, "w") as f:
                f.write(str(os.getpid()))
            deadline = time.monotonic() + 60
            while not os.path.exists(self.release) and time.monotonic() < deadline:
                time.sleep(0.01)
        return x


def make_holds(started, release):
    return Holds(started, release)


def call_held(shared):
    """A child that sends the held call (and is killed while it waits)."""
    with shared.acquire() as model:
        model(np.ones((4, 1024), np.float32))


def call_held_through(first, held):
    """A child whose held call takes the output of `first` by reference (a pipeline: first's
    shared memory linked to held's workers), killed while it waits."""
    with first.acquire() as a, held.acquire() as b:
        b(a(np.ones((4, 1024), np.float32)))


class Centered:
    """y = x - x.mean(axis=0): every output row depends on every input row of the call, so calls
    of several processes merged into one batch would give wrong answers."""

    def __call__(self, x):
        return x - x.mean(axis=0)


class Rowwise:
    """y = 2x + 1, row by row: batchable."""

    def __call__(self, x):
        return x * np.float32(2) + np.float32(1)


class AnswerBy:
    """The answer's type follows the input's first value: 0 a dict, 1 a float, 2 an array of
    strings, 3 a tuple of arrays, 4 an int64 array, 5 the input modified in place."""

    def __call__(self, x):
        k = int(x.flat[0])
        if k == 0:
            return {"sum": float(x.sum()), "rows": int(x.shape[0])}
        if k == 1:
            return float(x.sum())
        if k == 2:
            return np.array([f"row{i}" for i in range(x.shape[0])])
        if k == 3:
            return x * 2, x.sum(axis=1)
        if k == 4:
            return np.arange(x.shape[0], dtype=np.int64)
        x += 1  # the object's own copy of the input
        return x


class HoldsBytes:
    """A model built around captured bytes (a constructor too large to travel inline):
    model(x) is x plus a checksum of them; sha256() says what it holds."""

    def __init__(self, blob):
        self.blob = bytes(memoryview(blob).cast("B"))

    def checksum(self):
        return float(sum(self.blob[::4096]) % 1000)

    def __call__(self, x):
        return x + np.float32(self.checksum())

    def sha256(self):
        import hashlib
        return hashlib.sha256(self.blob).hexdigest()


class CallWaitsForFile:
    """y = x + 1, once the file at path exists (each call looks; it makes path + ".started" when
    it begins): a call that hangs as long as the test wants (at most 600 s)."""

    def __init__(self, path):
        self.path = path

    def __call__(self, x):
        open(self.path + ".started", "w").close()
        deadline = time.monotonic() + 600
        while not os.path.exists(self.path) and time.monotonic() < deadline:
            time.sleep(0.01)
        return x + 1


def never_returns():
    """A constructor that never returns (at most an hour)."""
    time.sleep(3600)


class WritesItsInputLate:
    """model(x) or model(a, b): the sum of its inputs. Given an input whose first element is -1, it
    makes path + ".started", waits for the file at path (at most 600 s), then writes 7777 over
    every input in place (the copies made for the call are its own) before it answers: a worker
    that writes into the inputs of a call that timed out meanwhile."""

    def __init__(self, path):
        self.path = path

    def __call__(self, *xs):
        if xs[0].flat[0] == -1:
            open(self.path + ".started", "w").close()
            deadline = time.monotonic() + 600
            while not os.path.exists(self.path) and time.monotonic() < deadline:
                time.sleep(0.01)
            for x in xs:
                x[...] = 7777
        return sum(x.copy() for x in xs)
