"""Several named tensors, and lists of strings, through shared memory: model(a, b),
model(input_ids=..., attention_mask=...), model({...}), model(["a sentence", ...]); answers in the
structure the model returned (a tensor, a tuple, a list, a dict); batchable models merge the
requests of several processes. Written as users write them, against the same module run in
process."""
import multiprocessing

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import modelshare  # noqa: E402
import multimodels  # noqa: E402
from testlib import run_together  # noqa: E402
from multimodels import D_MODEL, LENGTH, VOCAB  # noqa: E402


def model_status(tag):
    return next(m for m in modelshare.status()["models"] if m["tag"] == tag)


def in_shared_memory(y):
    """An answer viewed in place (the model's shared memory), not an array of its own."""
    return isinstance(y, np.ndarray) and not y.flags.owndata and y.base is not None


class Sees:
    """Answers what reached it: each argument's type and whether numpy may write it (a copy made
    for the call may be written; an array the caller made in shared memory, passed by reference,
    is read-only)."""

    def __call__(self, *args, **kwargs):
        def what(v):
            if isinstance(v, np.ndarray):
                return np.array([v.flags.writeable, v.ndim], np.int64)
            return [type(v).__name__ + ":" + str(len(v))]
        if kwargs:
            return {k: what(v) for k, v in kwargs.items()}
        if len(args) == 1 and isinstance(args[0], dict):
            return {k: what(v) for k, v in args[0].items()}
        return tuple(what(a) for a in args)


def make_sees():
    return Sees()


def test_tensors_by_position_name_and_dict_reach_the_model_through_shared_memory(daemon):
    a, b = np.ones((2, 3), np.float32), np.zeros((2, 5), np.int64)
    with modelshare.Shared(make_sees, tag="sees").acquire() as model:
        y = model(a, b)
        assert isinstance(y, tuple) and len(y) == 2
        assert [v.tolist() for v in y] == [[1, 2], [1, 2]]  # the copies made for the call
        assert all(in_shared_memory(v) for v in y)
        z = model.empty((2, 3), np.float32)  # in shared memory already: by reference, read-only
        z[:] = 1
        y = model(input_ids=b, attention_mask=z)
        assert isinstance(y, dict) and list(y) == ["input_ids", "attention_mask"]
        assert [v.tolist() for v in y.values()] == [[1, 2], [0, 2]]
        assert model.copied_bytes == a.nbytes + 2 * b.nbytes  # z went by reference
        y = model({"pixels": z})
        assert list(y) == ["pixels"] and y["pixels"].tolist() == [0, 2]
        # Text: a list of str reaches it as a list; it answers a list of str.
        assert model(["one", "two"], ["x"]) == (["list:2"], ["list:1"])
        # Anything else still works, pickled (numpy may write its own copy there).
        assert model(a, "word")[0].tolist() == [1, 2]


def make_encoder():
    return multimodels.MaskedEncoder()


def test_a_two_input_transformer_answers_as_in_process(daemon):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, VOCAB, (3, LENGTH), generator=gen)
    mask = torch.ones(3, LENGTH, dtype=torch.int64)
    mask[1, 5:] = 0
    want = multimodels.encode_in_process(ids, mask)
    with modelshare.Shared(make_encoder, tag="enc2").acquire() as model:
        for y in (model(ids, mask), model(input_ids=ids, attention_mask=mask),
                  model(input_ids=ids.numpy(), attention_mask=mask.numpy())):
            assert in_shared_memory(y) and y.shape == (3, D_MODEL)
            np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_a_two_input_transformer_called_by_four_processes_is_batched_and_right(daemon):
    shared = modelshare.Shared(make_encoder, tag="enc4", batchable=True, max_batch=64,
                               batch_delay_us=5000)
    with shared.acquire():
        got = run_together(multimodels.encoder_calls, shared, 4, 20)
    assert got == [(i, None) for i in range(4)]
    m = model_status("enc4")
    assert m["batches"] < m["requests"], m  # requests of several processes ran together


def make_detector():
    return multimodels.Detector()


def test_a_detector_answers_a_dict_of_tensors(daemon):
    x = torch.randn(5, 3, 8, 8)
    with torch.inference_mode():
        want = multimodels.Detector()(x)
    with modelshare.Shared(make_detector, tag="det").acquire() as model:
        y = model(images=x)
        assert isinstance(y, dict) and list(y) == ["boxes", "scores", "labels"]
        assert all(in_shared_memory(v) for v in y.values())
        for k in want:
            np.testing.assert_allclose(y[k], want[k].numpy(), rtol=1e-5, atol=1e-6)
        assert y["labels"].dtype == np.int64


class Upper:
    def __call__(self, texts):
        return [t.upper() for t in texts], np.array([len(t) for t in texts], np.int64)


def make_upper():
    return Upper()


def test_text_in_and_out(daemon):
    texts = ["héllo", "", "wörld" * 100]
    with modelshare.Shared(make_upper, tag="upper", batchable=True).acquire() as model:
        words, lens = model(texts)
        assert words == [t.upper() for t in texts]
        assert lens.tolist() == [len(t) for t in texts]
        words, lens = model([b"raw", b"\x00\xff"])
        assert words == [b"RAW", b"\x00\xff"] and lens.tolist() == [3, 2]


def make_embedder():
    return multimodels.TextEmbedder()


@pytest.mark.parametrize("batchable", [True, False])
def test_a_text_embedder_called_by_eight_processes(daemon, batchable):
    shared = modelshare.Shared(make_embedder, tag=f"embed-{batchable}", batchable=batchable,
                               max_batch=64, batch_delay_us=20000)
    ctx = multiprocessing.get_context("spawn")
    with shared.acquire() as model:
        model(["warm up"])
        ready, results = ctx.Barrier(8), ctx.Queue()
        procs = [ctx.Process(target=multimodels.embed_calls, args=(shared, i, ready, results))
                 for i in range(8)]
        for p in procs:
            p.start()
        got = sorted(results.get(timeout=300) for _ in procs)
        for p in procs:
            p.join(timeout=60)
    assert got == [(i, None) for i in range(8)]
    m = model_status(f"embed-{batchable}")
    print("requests", m["requests"], "batches", m["batches"])
    if batchable:
        assert m["batches"] < m["requests"], m  # sentences of several processes, one batch
    else:
        assert m["batches"] == m["requests"], m  # never merged


class Unequal:
    """Batchable, it says, but answers one row for the whole batch."""

    def __call__(self, x, y):
        return x.sum(axis=0, keepdims=True)


def make_unequal():
    return Unequal()


def test_too_many_inputs_or_bad_names_go_pickled(daemon):
    arrays = [np.full((1,), i, np.int64) for i in range(17)]
    with modelshare.Shared(make_sees, tag="many").acquire() as model:
        y = model(*arrays)  # 17 inputs: over the limit of 16, a pickled call
        assert len(y) == 17 and y[0].tolist() == [1, 1]
        y = model(**{"x" * 40: arrays[0]})  # a name over 31 characters: pickled
        assert list(y) == ["x" * 40]


@pytest.mark.parametrize("batchable", [False, True])
def test_one_tensor_in_a_dict_or_tuple_out(daemon, batchable):
    # model(x) with one tensor, a structure back: the first answer tells the client, and from
    # then on the answers come in shared memory in that structure.
    x = torch.randn(4, 3, 8, 8)
    with torch.inference_mode():
        want = multimodels.Detector()(x)
    with modelshare.Shared(make_detector, tag=f"det1-{batchable}",
                           batchable=batchable).acquire() as model:
        for call in range(3):
            y = model(x)
            assert isinstance(y, dict) and list(y) == ["boxes", "scores", "labels"]
            for k in want:
                np.testing.assert_allclose(y[k], want[k].numpy(), rtol=1e-5, atol=1e-6)
            if call > 0:
                assert all(in_shared_memory(v) for v in y.values())


def make_states():
    return multimodels.MaskedEncoderStates()


def test_padded_batches_of_random_lengths_answer_as_unpadded(daemon):
    # Requests of 4 to 20 tokens from 3 processes share batches, padded to the longest rounded
    # up to 8 (attention_mask 0 there, so a masked transformer ignores the padding); each caller
    # gets its own tokens back, equal to the module run on its unpadded input.
    shared = modelshare.Shared(make_states, tag="padded", batchable=True, batch_delay_us=5000,
                               pad={"dim": 1, "value": {"input_ids": 0, "attention_mask": 0},
                                    "multiple": 8, "cut": ["states"], "keep": ["pooled"]})
    ctx = multiprocessing.get_context("spawn")
    with shared.acquire():
        ready, results = ctx.Barrier(3), ctx.Queue()
        procs = [ctx.Process(target=multimodels.padded_calls, args=(shared, i, 15, ready, results))
                 for i in range(3)]
        for p in procs:
            p.start()
        got = sorted(results.get(timeout=300) for _ in procs)
        for p in procs:
            p.join(timeout=60)
    assert got == [(i, None) for i in range(3)]
    m = model_status("padded")
    assert m["spec"]["pad"] == {"dim": 1, "multiple": 8,
                                "value": {"attention_mask": 0.0, "input_ids": 0.0},
                                "cut": ["states"], "keep": ["pooled"]}
    assert m["batches"] < m["requests"], m  # requests of other lengths ran together


class PooledWidthOfTheLength:
    """Answers pooled rows whose width (6) equals the padded length of its callers' tokens: from
    its size alone it looks like a tensor to cut back."""

    def __call__(self, input_ids):
        return {"pooled": np.repeat(input_ids.sum(axis=1, keepdims=True).astype(np.float32), 6,
                                    axis=1),
                "tokens": input_ids * 2}


def test_pad_cuts_only_the_outputs_its_spec_names(daemon):
    # Callers of 2 and 6 tokens in one batch, padded to 6: "tokens" is cut back to each caller's
    # length, "pooled" (width 6, the padded length) is kept whole.
    shared = modelshare.Shared(PooledWidthOfTheLength, tag="pad-named", batchable=True,
                               batch_delay_us=200000,
                               pad={"dim": 1, "cut": ["tokens"], "keep": ["pooled"]})
    short, long = np.array([[1, 2]], np.int64), np.arange(1, 7, dtype=np.int64)[None]
    with shared.acquire() as model, ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda x: model(input_ids=x), [short, long])
    np.testing.assert_array_equal(a["tokens"], short * 2)
    np.testing.assert_array_equal(a["pooled"], np.full((1, 6), 3, np.float32))
    np.testing.assert_array_equal(b["tokens"], long * 2)
    np.testing.assert_array_equal(b["pooled"], np.full((1, 6), 21, np.float32))


def test_pad_refuses_an_output_it_does_not_name(daemon):
    shared = modelshare.Shared(PooledWidthOfTheLength, tag="pad-unnamed", batchable=True,
                               pad={"dim": 1, "cut": ["tokens"]})
    with shared.acquire() as model:
        with pytest.raises(modelshare.BackendError, match="'pooled'.*cut.*keep"):
            model(input_ids=np.array([[1, 2]], np.int64))


def test_pad_needs_batchable(daemon):
    with pytest.raises(modelshare.SpecError, match="pad.*batchable"):
        modelshare.Shared(make_states, tag="pad-nb", pad={"dim": 1}).acquire()
    with pytest.raises(modelshare.SpecError, match="pad"):
        modelshare.Shared(make_states, tag="pad-bad", batchable=True, pad={"dim": 0}).acquire()


class RefusesNegatives:
    """Batchable; raises when any row of x is negative."""

    def __call__(self, x, y):
        if (x < 0).any():
            raise ValueError("a negative row")
        return x + y


def make_refuses():
    return RefusesNegatives()


def test_a_request_the_model_refuses_fails_alone(daemon):
    # Six threads' requests merged into batches (batch_delay_us); one of them has a negative
    # row. A merged call that raises runs its requests one by one: only that caller fails.
    import threading
    shared = modelshare.Shared(make_refuses, tag="refuses", batchable=True, batch_delay_us=50000)
    got = {}
    with shared.acquire() as model:
        def call(i):
            x = np.full((2, 3), -1.0 if i == 3 else float(i), np.float32)
            try:
                got[i] = model(x, np.ones((2, 3), np.float32))
            except modelshare.BackendError as e:
                got[i] = e
        threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert isinstance(got[3], modelshare.BackendError) and "a negative row" in str(got[3])
    for i in (0, 1, 2, 4, 5):
        np.testing.assert_array_equal(got[i], np.full((2, 3), i + 1.0, np.float32))


class Scores:
    """Batchable, but answers a float for several tensors (as it did when they were pickled)."""

    def __call__(self, x, y):
        return float((x * y).sum())


def make_scores():
    return Scores()


def test_a_batchable_model_that_answers_a_float_still_does(daemon):
    with modelshare.Shared(make_scores, tag="scores", batchable=True).acquire() as model:
        for _ in range(2):  # the first asks again by a pickled call, the second goes there
            assert model(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32)) == 4.0


def make_double():
    return lambda x: x * 2


def test_another_models_output_is_one_of_several_tensors_with_no_copy(daemon):
    # y = A(x) lies in A's shared memory; B(y, z) names it there (a linked arena), no copy.
    with modelshare.Shared(make_double, tag="first").acquire() as a, \
            modelshare.Shared(make_sees, tag="second").acquire() as b:
        for _ in range(3):
            y = a(np.ones((2, 3), np.float32))
            got = b(y, np.zeros((2, 1), np.float32))
            assert [v.tolist() for v in got] == [[0, 2], [1, 2]]  # y by reference: read-only
        assert b.copied_bytes == 3 * 8  # only z was copied


def make_add():
    return lambda a, b: (a + b, a)


def test_bfloat16_among_several(daemon):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    a = np.arange(6, dtype=np.float32).reshape(2, 3).astype(ml_dtypes.bfloat16)
    with modelshare.Shared(make_add, tag="bf16").acquire() as model:
        s, back = model(a, a)
        assert back.dtype == ml_dtypes.bfloat16 and s.dtype == ml_dtypes.bfloat16
        np.testing.assert_array_equal(back.astype(np.float32), a.astype(np.float32))
        np.testing.assert_array_equal(s.astype(np.float32), 2 * a.astype(np.float32))
