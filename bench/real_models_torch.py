"""The PyTorch models of bench/real_models.py (imported only where a model runs: a client holding
its own copy, Beam's server, a Ray replica, a modelshare worker, the bench's reference).

Encoder: a transformer encoder (token and position embeddings, 4 layers of d_model 256 with 4
heads, mean-pooled over the tokens the attention mask keeps), called as
model(input_ids=ids, attention_mask=mask) with int64 (rows, length) tensors; returns a float32
(rows, 256) tensor. Padding is masked out of the attention and of the pooling, so a row's answer
does not depend on how far its batch was padded.

Embedder: a hashing tokenizer (CRC-32 of each lower-cased word into the vocabulary) and the same
encoder, called as embedder(["a sentence", ...]); returns a float32 (sentences, 256) numpy array
(as sentence-transformers' encode() does), so that its callers need no torch.
"""
import zlib

import torch
from torch import nn

VOCAB = 30000
D_MODEL = 256
HEADS = 4
LAYERS = 4
FEED_FORWARD = 1024
MAX_LEN = 512
PAD, CLS = 0, 1


class Encoder(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)  # the weights: the same in every process
        self.tokens = nn.Embedding(VOCAB, D_MODEL, padding_idx=PAD)
        self.positions = nn.Embedding(MAX_LEN, D_MODEL)
        layer = nn.TransformerEncoderLayer(D_MODEL, HEADS, FEED_FORWARD, dropout=0.0,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.eval()

    def forward(self, input_ids, attention_mask):
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        h = self.tokens(input_ids) + self.positions(pos)
        h = self.encoder(h, src_key_padding_mask=attention_mask == 0)
        keep = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * keep).sum(1) / keep.sum(1).clamp(min=1)


class HashTokenizer:
    """Words to ids by CRC-32 (the same in every process, unlike hash()); a leading CLS; padded
    to the longest text of the call."""

    def __init__(self, vocab=VOCAB, max_len=MAX_LEN):
        self.vocab, self.max_len = vocab, max_len

    def __call__(self, texts):
        rows = [[CLS] + [2 + zlib.crc32(w.encode()) % (self.vocab - 2)
                         for w in t.lower().split()][:self.max_len - 1] for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.int64)
        mask = torch.zeros((len(rows), width), dtype=torch.int64)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask}


class Embedder:
    """Sentences in, one embedding each out: the tokenizer, then the encoder (on device: the
    tokens go there, the embeddings come back to the host)."""

    def __init__(self, seed=0, device="cpu"):
        self.tokenizer = HashTokenizer()
        self.encoder = Encoder(seed).to(device)
        self.device = torch.device(device)

    def __call__(self, texts):
        with torch.inference_mode():
            return self.encoder(**tensors(self.tokenizer(texts), self.device)).cpu().numpy()


def tensors(arrays, device=None):
    """{name: numpy array or tensor} as {name: tensor} (numpy: over the same memory), moved to
    device when one is given and they are elsewhere."""
    out = {k: torch.from_numpy(v) if not isinstance(v, torch.Tensor) else v
           for k, v in arrays.items()}
    if device is not None:
        out = {k: v.to(device) for k, v in out.items()}
    return out


def device_of(module):
    """The device of the module's first parameter."""
    return next(module.parameters()).device


class InferenceMode:
    """The module called with tensors (numpy arrays made tensors in place) under
    torch.inference_mode(), its answer a numpy array: what a server that gets pickled arrays and
    pickles its answer back to clients without torch (Beam's) needs; a tensor that requires grad
    cannot even be pickled. A module on a GPU gets its inputs moved there and its answer back."""

    def __init__(self, module):
        self.module = module
        self.device = device_of(module)

    def __call__(self, **arrays):
        with torch.inference_mode():
            return self.module(**tensors(arrays, self.device)).cpu().numpy()


def pad_stack(requests):
    """Requests of {"input_ids", "attention_mask"} (rows, length_i; numpy arrays or tensors) as
    one batch padded to the longest length: (input_ids, attention_mask, rows of each request)."""
    requests = [tensors(r) for r in requests]
    width = max(r["input_ids"].shape[1] for r in requests)
    ids, masks = [], []
    for r in requests:
        extra = width - r["input_ids"].shape[1]
        ids.append(nn.functional.pad(r["input_ids"], (0, extra), value=PAD))
        masks.append(nn.functional.pad(r["attention_mask"], (0, extra), value=0))
    return torch.cat(ids), torch.cat(masks), [len(r["input_ids"]) for r in requests]
