"""The constructors and requests of bench/real_models.py, importable by every contender's processes
without torch: torch is imported by a constructor (where the model runs), so that a client that
only sends text to a shared embedder never loads it.

Requests are made from (client, index) seeds, so the bench's reference can make any of them again.
"""
import functools

import numpy as np

ROWS = 4  # rows (encoder) or sentences (embedder) per call
MIN_LEN, MAX_LEN = 16, 128  # tokens per request (encoder), words per sentence (embedder)
MAX_BATCH_ROWS = 32  # a shared model's batch: 8 clients' calls at most
PAD = {"dim": 1, "value": {"input_ids": 0, "attention_mask": 0}, "multiple": 8, "keep": ["0"]}


def _torch(threads, device):
    import torch
    torch.set_num_threads(threads)
    if device != "cpu":
        # float32 matmuls as float32, not TF32 (the default since torch 1.12, said here so
        # that every process that runs the model agrees with the bench's reference).
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    import real_models_torch
    return real_models_torch


def make_encoder(threads, device="cpu"):
    """The encoder module as a constructor returns it (eval mode, weights seeded), moved to
    device ("cpu" or "cuda:N")."""
    return _torch(threads, device).Encoder().to(device)


def make_encoder_inference(threads, device="cpu"):
    """The encoder wrapped to run under torch.inference_mode() (its answers can be pickled),
    its inputs moved to device and its answers back to the host."""
    m = _torch(threads, device)
    return m.InferenceMode(m.Encoder().to(device))


def make_embedder(threads, device="cpu"):
    """The text embedder: hashing tokenizer, then the encoder on device."""
    return _torch(threads, device).Embedder(device=device)


def encoder_request(client, index):
    """input_ids and attention_mask, int64 (ROWS, length) numpy arrays: the request is as long as
    its longest row (length uniform in MIN_LEN..MAX_LEN), the other rows shorter and padded, as
    a tokenizer pads a call's texts."""
    rng = np.random.default_rng((1, client, index))
    width = int(rng.integers(MIN_LEN, MAX_LEN + 1))
    lengths = rng.integers(MIN_LEN, width + 1, ROWS)
    lengths[rng.integers(ROWS)] = width
    ids = np.zeros((ROWS, width), np.int64)
    mask = np.zeros((ROWS, width), np.int64)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(2, 30000, n)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask}


@functools.lru_cache(maxsize=1)
def _words():
    rng = np.random.default_rng(3)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return ["".join(rng.choice(letters, int(rng.integers(2, 10)))) for _ in range(5000)]


def sentences(client, index):
    """ROWS sentences of MIN_LEN..MAX_LEN words from a fixed list of 5000."""
    rng = np.random.default_rng((2, client, index))
    words = _words()
    return [" ".join(words[k] for k in rng.integers(0, len(words), int(n)))
            for n in rng.integers(MIN_LEN, MAX_LEN + 1, ROWS)]
