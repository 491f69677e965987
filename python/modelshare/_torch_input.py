"""A torch tensor as a client's input: a numpy array the data plane sends.

A CPU tensor is read in place (numpy over the same memory; one that requires grad is detached
first: the model's answer carries no graph back anyway), then copied once into shared memory like
any array. A tensor on another device (cuda:N) is copied once, device to host, straight into the
model's shared memory (an array from model.empty()), so nothing else copies it: those bytes count
in model.copied_bytes. bfloat16 travels as bfloat16 when ml_dtypes is there (numpy has no
bfloat16 of its own). Torch is never imported here: a caller that passes a torch tensor has.
"""
import sys

import numpy as np


def tensor(x):
    """torch, when x is a torch tensor; else None."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(x, torch.Tensor) else None


def _bfloat16():
    ml_dtypes = sys.modules.get("ml_dtypes")
    if ml_dtypes is None:
        try:
            import ml_dtypes
        except ImportError:
            return None
    return np.dtype(ml_dtypes.bfloat16)


def host(model, torch, x):
    """(array, device bytes copied): x as a host numpy array, in model's shared memory when it
    had to be copied from a device. None when numpy cannot hold its dtype (complex, bfloat16
    without ml_dtypes): the caller sends it as it is (a pickled call)."""
    x = x.detach()
    bf16 = None
    if x.dtype == torch.bfloat16:
        bf16 = _bfloat16()
        if bf16 is None:
            return None
        x = x.view(torch.int16)
    try:
        dtype = torch.empty((), dtype=x.dtype).numpy().dtype
    except TypeError:
        return None
    if x.device.type == "cpu":
        a = x.resolve_conj().resolve_neg().numpy()
        return (a.view(bf16) if bf16 is not None else a), 0
    out = model.empty(tuple(x.shape), bf16 if bf16 is not None else dtype)
    torch.from_numpy(out.view(dtype)).copy_(x)
    return out, out.nbytes
