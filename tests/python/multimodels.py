"""Models of several named tensors and of text for tests/python/test_multi_tensors.py, written as
users write them: a constructor returns the module or the callable as it is. Importable by the
workers (they get the test process's sys.path); imports torch, so only tests that importorskip
torch import it."""
import zlib

import numpy as np
import torch
from torch import nn

VOCAB, D_MODEL, LENGTH = 1000, 32, 16


class MaskedEncoder(nn.Module):
    """A transformer encoder of input_ids and attention_mask (1: a token, 0: padding), returning
    each row's mean over its tokens: (rows, D_MODEL). Seeded: the same weights in every
    process."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.embed = nn.Embedding(VOCAB, D_MODEL)
        layer = nn.TransformerEncoderLayer(D_MODEL, nhead=4, dim_feedforward=64, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.eval()

    def forward(self, input_ids, attention_mask):
        h = self.encoder(self.embed(input_ids), src_key_padding_mask=attention_mask == 0)
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)


class Detector(nn.Module):
    """A detector's shape of answer: a dict of boxes, scores and labels, one of each per image."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.head = nn.Linear(3 * 8 * 8, 6)

    def forward(self, images):
        z = self.head(images.flatten(1))
        return {"boxes": z[:, :4], "scores": z[:, 4].sigmoid(), "labels": (z[:, 5] > 0).long()}


def tokens(texts, length=None):
    """A hashing tokenizer: words to ids (crc32 mod VOCAB), padded to the longest text (or
    length) with a mask."""
    ids = [[1 + zlib.crc32(w.encode()) % (VOCAB - 1) for w in t.split()] or [1] for t in texts]
    n = length or max(len(i) for i in ids)
    input_ids = np.zeros((len(texts), n), np.int64)
    mask = np.zeros((len(texts), n), np.int64)
    for r, i in enumerate(ids):
        input_ids[r, :len(i)] = i[:n]
        mask[r, :len(i)] = 1
    return input_ids, mask


class TextEmbedder:
    """A list of sentences in, one embedding per sentence out: the tokenizer inside, then the
    encoder."""

    def __init__(self):
        self.encoder = MaskedEncoder()

    def __call__(self, sentences):
        ids, mask = tokens(sentences)
        with torch.inference_mode():
            return self.encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()


def encode_in_process(ids, mask):
    with torch.inference_mode():
        return MaskedEncoder()(torch.as_tensor(ids), torch.as_tensor(mask)).numpy()


def sentences(i, n=4):
    words = ["the", "cat", "sat", "on", "a", "mat", "while", "dogs", "bark", "loudly", "at",
             "night"]
    rng = np.random.default_rng(i)
    return [" ".join(rng.choice(words, int(rng.integers(2, 9)))) for _ in range(n)]


def encoder_calls(shared, i, calls, go, results):
    """Run in a spawn child: model(input_ids=..., attention_mask=...) with torch tensors of
    LENGTH tokens and random masks, each answer checked against the module run here."""
    from testlib import assert_close_across_batches
    try:
        gen = torch.Generator().manual_seed(i)
        with shared.acquire() as model:
            go.wait(120)
            for c in range(calls):
                rows = 1 + (i + c) % 3
                ids = torch.randint(1, VOCAB, (rows, LENGTH), generator=gen)
                lens = torch.randint(1, LENGTH + 1, (rows,), generator=gen)
                mask = (torch.arange(LENGTH)[None, :] < lens[:, None]).long()
                y = model(input_ids=ids, attention_mask=mask)
                assert isinstance(y, np.ndarray) and y.shape == (rows, D_MODEL), y
                assert_close_across_batches(y, encode_in_process(ids, mask),
                                            reduction=D_MODEL * LENGTH)
        results.put((i, None))
    except Exception as e:  # reported to the parent
        results.put((i, repr(e)))


def embed_calls(shared, i, ready, results):
    """Run in a spawn child: embeds 4 sentences once every child is ready (the barrier), checked
    against the embedder run here."""
    from testlib import assert_close_across_batches
    try:
        texts = sentences(i)
        want = TextEmbedder()(texts)
        with shared.acquire() as model:
            ready.wait(120)
            y = model(texts)
            assert y.shape == (4, D_MODEL), y.shape
            assert_close_across_batches(y, want, reduction=D_MODEL * 16)
        results.put((i, None))
    except Exception as e:  # reported to the parent
        results.put((i, repr(e)))


class MaskedEncoderStates(MaskedEncoder):
    """MaskedEncoder answering a dict: the pooled rows and every token's state, (rows, tokens,
    D_MODEL), whose tokens dimension a padded batch cuts back."""

    def forward(self, input_ids, attention_mask):
        h = self.encoder(self.embed(input_ids), src_key_padding_mask=attention_mask == 0)
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return {"pooled": (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1), "states": h}


def states_in_process(ids, mask):
    with torch.inference_mode():
        y = MaskedEncoderStates()(torch.as_tensor(ids), torch.as_tensor(mask))
    return {k: v.numpy() for k, v in y.items()}


def padded_calls(shared, i, calls, ready, results):
    """Run in a spawn child: input_ids and attention_mask of random lengths (4 to 20 tokens, some
    rows shorter than that), each answer checked against the module run here on the same,
    unpadded input."""
    from testlib import assert_close_across_batches
    try:
        gen = torch.Generator().manual_seed(100 + i)
        with shared.acquire() as model:
            ready.wait(120)
            for c in range(calls):
                rows = 1 + (i + c) % 3
                n = int(torch.randint(4, 21, (1,), generator=gen))
                ids = torch.randint(1, VOCAB, (rows, n), generator=gen)
                lens = torch.randint(1, n + 1, (rows,), generator=gen)
                mask = (torch.arange(n)[None, :] < lens[:, None]).long()
                y = model(input_ids=ids, attention_mask=mask)
                want = states_in_process(ids, mask)
                assert y["states"].shape == (rows, n, D_MODEL), y["states"].shape
                for k in want:
                    assert_close_across_batches(y[k], want[k], reduction=D_MODEL * 24)
        results.put((i, None))
    except Exception as e:  # reported to the parent
        results.put((i, repr(e)))
