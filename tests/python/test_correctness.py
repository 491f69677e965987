"""Never a wrong answer: a python model's calls are merged with other callers' only when its spec
says batchable; the Beam drop-in behaves as Beam's MultiProcessShared where users rely on it."""
import functools

import numpy as np
import pytest

import modelshare
from modelshare.beam import MultiProcessShared
from procs import acquire_beam, acquire_shared, call_after, centered_calls, spawn_all
from pymodels import AnswerBy, Centered, Rowwise, make_scale

PROCS = 4
CALLS = 400


def model_status(tag):
    return next(m for m in modelshare.status()["models"] if m["tag"] == tag)


def run_callers(make):
    got, _ = spawn_all(centered_calls, [(make, i, CALLS) for i in range(PROCS)])
    errors = [e for _, _, e in sorted(got) if e is not None]
    assert not errors, errors
    return [wrong for _, wrong, _ in sorted(got)]


@pytest.mark.parametrize("api", ["Shared", "beam"])
def test_a_model_whose_rows_depend_on_each_other_is_never_merged(daemon, api):
    # x - x.mean(axis=0) from 4 processes at once: merged calls would give wrong answers (the
    # issue measured ~50 % wrong per process when python models were batched by default).
    if api == "Shared":
        make = functools.partial(acquire_shared, modelshare.Shared(Centered, tag="centered",
                                                                    batch_delay_us=200))
    else:
        make = functools.partial(acquire_beam, MultiProcessShared(Centered, tag="centered",
                                                                  keep_alive=30,
                                                                  batch_delay_us=200))
    holder = make()[0]  # keeps the model loaded between the callers' leases
    try:
        assert run_callers(make) == [0] * PROCS
        m = model_status("centered")
        assert m["spec"]["batchable"] is False
        assert m["batches"] == m["requests"] >= PROCS * CALLS
    finally:
        holder.release()


def test_a_batchable_model_is_merged_and_right(daemon):
    # The same callers on a model that says batchable=True: merged (fewer batches than
    # requests, with batch_delay_us giving the others time to join) and every answer right.
    shared = modelshare.Shared(Rowwise, tag="rowwise", batchable=True, batch_delay_us=2000)
    with shared.acquire():
        got, _ = spawn_all(_rowwise_calls, [(shared, i) for i in range(PROCS)])
        assert all(e is None for e in got), got
        m = model_status("rowwise")
        assert m["spec"]["batchable"] is True
        assert m["batches"] < m["requests"], m


def _rowwise_calls(shared, i, results):
    rng = np.random.default_rng(i)
    try:
        with shared.acquire() as model:
            for _ in range(200):
                x = rng.standard_normal((3, 8)).astype(np.float32)
                np.testing.assert_allclose(model(x), x * 2 + 1, rtol=1e-6)
        results.put(None)
    except Exception as e:
        results.put(repr(e))


def test_obj_of_x_returns_whatever_the_object_returns(daemon):
    mps = MultiProcessShared(AnswerBy, tag="answers")
    obj = mps.acquire()
    try:
        x = np.zeros((3, 4), np.float32)
        x[1:] = 1.5
        assert obj(x) == {"sum": 12.0, "rows": 3}
        x[0, 0] = 1
        assert obj(x) == pytest.approx(13.0) and isinstance(obj(x), float)
        x[0, 0] = 2
        assert list(obj(x)) == ["row0", "row1", "row2"]
        x[0, 0] = 3
        a, b = obj(x)
        np.testing.assert_array_equal(a, x * 2)
        np.testing.assert_array_equal(b, x.sum(axis=1))
        x[0, 0] = 4
        y = obj(x)
        assert y.dtype == np.int64 and list(y) == [0, 1, 2]
    finally:
        mps.release(obj)


def test_the_object_may_modify_its_input_never_the_callers(daemon):
    with modelshare.Shared(AnswerBy, tag="inplace").acquire() as model:
        x = np.full((2, 3), 5, np.float32)
        y = model(x)
        np.testing.assert_array_equal(y, np.full((2, 3), 6, np.float32))
        np.testing.assert_array_equal(x, np.full((2, 3), 5, np.float32))  # the caller's intact
        # An input already in shared memory (empty()) is passed by reference: the model gets it
        # read-only, so the caller's memory cannot change under it.
        e = model.empty((2, 3))
        e[:] = 5
        with pytest.raises(modelshare.BackendError, match="read-only"):
            model(e)
        np.testing.assert_array_equal(e, np.full((2, 3), 5, np.float32))


def test_release_twice_raises_and_the_object_goes_with_the_last_lease(daemon):
    mps = MultiProcessShared(AnswerBy, tag="twice")
    first, second = mps.acquire(), mps.acquire()
    mps.release(first)
    with pytest.raises(modelshare.InvalidArgument, match="released already"):
        mps.release(first)
    pid = model_status("twice")["worker_pids"][0]
    mps.release(second)
    # keep_alive 0, as Beam: the last release ends the object; the next acquire builds another.
    left = [m["state"] for m in modelshare.status()["models"] if m["tag"] == "twice"]
    assert left in ([], ["unloading"]), left
    again = mps.acquire()
    assert model_status("twice")["worker_pids"][0] != pid
    mps.release(again)


def test_path_scopes_the_tag_and_hard_delete_of_an_unheld_tag_does_nothing(daemon, tmp_path):
    a = MultiProcessShared(AnswerBy, tag="scoped", path=str(tmp_path / "a"))
    b = MultiProcessShared(AnswerBy, tag="scoped", path=str(tmp_path / "b"))
    oa, ob = a.acquire(), b.acquire()
    assert oa.tag != ob.tag
    assert len([m for m in modelshare.status()["models"] if m["tag"].startswith("scoped")]) == 2
    MultiProcessShared(AnswerBy, tag="nobody-holds-this").unsafe_hard_delete()
    assert oa(np.zeros((1, 2), np.float32)) == {"sum": 0.0, "rows": 1}  # still served
    a.release(oa)
    b.release(ob)


def test_the_drop_in_is_generic_like_beams():
    assert MultiProcessShared[AnswerBy] is not None


def test_a_request_sent_during_the_batch_delay_joins_that_batch(daemon):
    # B's request comes 0.1 s into A's batch's wait of up to 1 s for more rows. Before, the wait
    # looked only at the clients whose rings held requests when it began: B's (known by its hint
    # bit alone) ran in a batch of its own once A's wait had ended.
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    shared = modelshare.Shared(make_scale, tag="delay", batchable=True, batch_delay_us=1_000_000)
    warmed, started = ctx.Barrier(2), ctx.Event()
    got, _ = spawn_all(call_after, [(shared, warmed, started, True, 0, 1.0),
                                    (shared, warmed, started, False, 0.1, 3.0)])
    got = sorted(got)
    assert [(v, y) for v, y, _ in got] == [(1.0, [[2.0] * 4]), (3.0, [[6.0] * 4])], got
    requests, batches = got[0][2]
    m = model_status("delay")
    assert (m["requests"] - requests, m["batches"] - batches) == (2, 1), m
