"""modelshare.beam.SharedTensorHandler: RunInference of keyed tensors (as Beam's
PytorchModelHandlerKeyedTensor) and of text, through shared memory, for real: DirectRunner in
multi-processing mode with 4 worker processes, answers checked against the module in process."""
import os
import pathlib

import numpy as np
import pytest
import torch

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerKeyedTensor

import multimodels
from modelshare.beam import SharedTensorHandler
from test_beam import model_status, options, read_lines
from testlib import assert_close_across_batches

HERE = pathlib.Path(__file__).resolve().parent
D = multimodels.D_MODEL
PAD = {"dim": 1, "multiple": 8, "value": {"input_ids": 0, "attention_mask": 0},
       "cut": ["states"], "keep": ["pooled"]}


@pytest.fixture
def beam_env(daemon, monkeypatch):
    # Beam's worker processes unpickle our functions: they import multimodels and testlib too.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(HERE), str(HERE.parent),
         *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))
    return daemon


def make_states():
    return multimodels.MaskedEncoderStates()


def make_embedder():
    return multimodels.TextEmbedder()


def token_examples(n, seed=0):
    """n examples of input_ids and attention_mask (torch, 1-D) of 3 to 24 tokens."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(3, 25, (1,), generator=gen))
        ids = torch.randint(1, multimodels.VOCAB, (k,), generator=gen)
        out.append({"input_ids": ids, "attention_mask": torch.ones(k, dtype=torch.int64)})
    return out


def states_line(kv):
    key, r = kv
    return repr((key, r.inference["pooled"].tolist(), r.inference["states"].tolist(),
                 r.model_id))


def test_keyed_tensors_of_random_lengths_through_run_inference(beam_env, tmp_path):
    # Beam batches of 4 to 8 examples of their own lengths, padded by the spec's pad; the
    # worker merges the batches of the 4 Beam processes (batchable) into one module call.
    xs = token_examples(160)
    handler = KeyedModelHandler(SharedTensorHandler(
        make_states, tag="beam-states", batchable=True, pad=PAD, max_batch=64,
        batch_delay_us=20000, min_batch_size=4, max_batch_size=8))
    out = tmp_path / "states"
    with beam.Pipeline(options=options()) as p:
        (p | beam.Create(list(enumerate(xs))) | beam.Reshuffle() | RunInference(handler)
         | beam.Map(states_line) | beam.io.WriteToText(str(out)))
    got = {}
    for line in read_lines(out):
        key, pooled, states, model_id = eval(line)  # our own repr of lists of floats
        got[key] = (np.array(pooled, np.float32), np.array(states, np.float32))
        assert model_id == "beam-states"
    assert sorted(got) == list(range(len(xs)))
    for i, x in enumerate(xs):  # each example alone, unpadded, in process
        want = multimodels.states_in_process(x["input_ids"][None], x["attention_mask"][None])
        pooled, states = got[i]
        assert states.shape == (len(x["input_ids"]), D)  # cut back to its own length
        assert_close_across_batches(pooled, want["pooled"][0], reduction=D * 32)
        assert_close_across_batches(states, want["states"][0], reduction=D * 32)
    st = model_status("beam-states")
    print("requests", st["requests"], "batches", st["batches"], "rows", st.get("rows"))
    assert st["loads"] == 1, st
    assert st["rows"] >= len(xs), st  # through shared memory: pickled calls carry no rows
    assert st["batches"] < st["requests"], st  # batches of several Beam processes, one call


def test_text_through_run_inference(beam_env, tmp_path):
    texts = [s for i in range(40) for s in multimodels.sentences(i)]
    texts = list(dict.fromkeys(texts))  # each once: the answer is looked up by its sentence
    handler = SharedTensorHandler(make_embedder, tag="beam-embed", batchable=True, max_batch=64,
                                  batch_delay_us=20000, min_batch_size=2, max_batch_size=6)
    out = tmp_path / "embed"
    with beam.Pipeline(options=options()) as p:
        (p | beam.Create(texts) | beam.Reshuffle() | RunInference(handler)
         | beam.Map(lambda r: repr((r.example, r.inference.tolist())))
         | beam.io.WriteToText(str(out)))
    got = dict(eval(line) for line in read_lines(out))
    assert sorted(got) == sorted(texts)
    embedder = multimodels.TextEmbedder()
    for t in texts:
        assert_close_across_batches(np.array(got[t], np.float32), embedder([t])[0],
                                    reduction=D * 16)
    st = model_status("beam-embed")
    print("requests", st["requests"], "batches", st["batches"], "rows", st.get("rows"))
    assert st["loads"] == 1, st
    assert st["rows"] >= len(texts), st
    assert st["batches"] < st["requests"], st


# --- run_inference in this process: the splitting of answers and the batching arguments ---


class Heads(torch.nn.Module):
    def forward(self, input_ids, attention_mask):
        return input_ids * 2, {"n": attention_mask.sum(dim=1)}


def make_heads():
    return Heads()


class Pairs:
    def __call__(self, batch):  # call="dict": the stacked dict as one argument
        return {"sum": batch["a"] + batch["b"]}


def make_pairs():
    return Pairs()


def test_answers_split_per_example(daemon):
    handler = SharedTensorHandler(make_heads, tag="heads")
    model = handler.load_model()
    xs = [{"input_ids": torch.tensor([i, i + 1]), "attention_mask": torch.tensor([1, i % 2])}
          for i in range(5)]
    got = handler.run_inference(xs, model)
    assert [r.example for r in got] == xs and {r.model_id for r in got} == {"heads"}
    for i, r in enumerate(got):
        twice, d = r.inference  # a tuple of the example's rows, a dict of them inside
        assert isinstance(twice, torch.Tensor) and twice.tolist() == [2 * i, 2 * i + 2]
        assert d["n"].item() == 1 + i % 2
    with pytest.raises(ValueError, match="shapes.*give the spec pad"):
        handler.run_inference(xs + [{"input_ids": torch.tensor([1, 2, 3]),
                                     "attention_mask": torch.tensor([1, 1, 1])}], model)
    assert model_status("heads")["rows"] >= len(xs)
    assert handler.get_num_bytes(xs) == sum(8 * 4 for _ in xs)  # two int64 pairs each
    model.release()
    pairs = SharedTensorHandler(make_pairs, tag="pairs", call="dict")
    model = pairs.load_model()
    xs = [{"a": np.float32(i) * np.ones(3, np.float32), "b": np.ones(3, np.float32)}
          for i in range(4)]
    got = pairs.run_inference(xs, model)
    assert [r.inference["sum"].tolist() for r in got] == [[i + 1.0] * 3 for i in range(4)]
    assert isinstance(got[0].inference["sum"], np.ndarray)
    model.release()


class Upper:
    def __call__(self, texts):
        return [t.upper() for t in texts]


def make_upper():
    return Upper()


def test_text_answered_with_text(daemon):
    handler = SharedTensorHandler(make_upper, tag="upper", batchable=True)
    model = handler.load_model()
    got = handler.run_inference(["héllo", "", "wörld"], model)
    assert [(r.example, r.inference) for r in got] == \
        [("héllo", "HÉLLO"), ("", ""), ("wörld", "WÖRLD")]
    assert handler.get_num_bytes(["héllo", "ab"]) == len("héllo".encode()) + 2
    with pytest.raises(ValueError, match="all str or all bytes"):
        handler.run_inference(["a", b"b"], model)
    assert model_status("upper")["rows"] >= 3
    model.release()


def test_beam_batching_arguments_are_honoured():
    kw = dict(min_batch_size=3, max_batch_size=17, max_batch_duration_secs=5)
    ours = SharedTensorHandler(make_heads, tag="kw", **kw)
    beams = PytorchModelHandlerKeyedTensor(state_dict_path="x", model_class=Heads, **kw)
    assert ours.batch_elements_kwargs() == beams.batch_elements_kwargs()
    assert ours._spec["max_batch"] == 17
    copies = SharedTensorHandler(make_heads, tag="kw2", model_copies=3, large_model=True)
    assert copies._spec["instances"] == 3
    assert not copies.share_model_across_processes() and copies.model_copies() == 1
    with pytest.raises(ValueError, match="call="):
        SharedTensorHandler(make_heads, tag="kw3", call="args")
