"""Malformed method calls to a python model: bytes that are no pickle, pickles of the wrong shape,
unknown operations and names. Each comes back as the worker's ("error", exception, traceback)
answer naming what was expected, and the model keeps serving (tensor path and method calls).
Also run under AddressSanitizer by `make test-python-asan`."""
import functools
import pickle

import numpy as np

import modelshare
from modelshare import _pickling
import pymodels

CASES = [
    ("not_a_pickle", b"not a pickle at all", "UnpicklingError"),
    ("empty", b"", "EOFError"),
    ("truncated", pickle.dumps(("call", "add", (1, 2), {}))[:-3], "Error"),
    ("not_a_tuple", pickle.dumps(5), "cannot unpack non-iterable int"),
    ("short_tuple", pickle.dumps(("call", "add")), "not enough values to unpack"),
    ("unknown_op", pickle.dumps(("frobnicate", "add", (), {})), "unknown operation 'frobnicate'"),
    ("unknown_name", pickle.dumps(("call", "no_such_method", (), {})), "no_such_method"),
    ("bad_args", pickle.dumps(("call", "add", 5, {})), "argument after * must be an iterable"),
]


def test_malformed_method_calls_get_errors_and_the_model_serves(daemon):
    shared = modelshare.Shared(functools.partial(pymodels.make_scale, 3.0), tag="pickles")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with shared.acquire() as model:
        core = model._core
        for name, payload, expected in CASES:
            answer = _pickling.loads(core.call(payload))
            assert answer[0] == "error", (name, answer)
            text = f"{type(answer[1]).__name__}: {answer[1]}"
            assert expected in text, (name, text)
            np.testing.assert_array_equal(model(x), x * 3)
            assert model.add(2, b=5) == 7
