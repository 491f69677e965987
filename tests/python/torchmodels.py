"""PyTorch models for tests/python/test_torch.py, written as users write them: constructors that
return a module as it is. Importable by the workers (they get the test process's sys.path); it
imports torch, so only test_torch.py imports it, after pytest.importorskip("torch")."""
import threading
import time

import torch
from torch import nn

D_IN, D_OUT = 16, 4
D_MODEL = 32


def make_sequential():
    """A small MLP, seeded: the same weights in every process. Its parameters require grad, and
    nothing here says torch.inference_mode(): called in process with a tensor, its answer
    requires grad."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D_IN, 32), nn.ReLU(), nn.Linear(32, D_OUT)).eval()


def make_encoder():
    """A small transformer encoder (batch_first, seeded, eval mode)."""
    torch.manual_seed(1)
    layer = nn.TransformerEncoderLayer(d_model=D_MODEL, nhead=4, dim_feedforward=64,
                                       batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=2).eval()


def make_scripted():
    """make_sequential() as a torch.jit.ScriptModule."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # jit.script is deprecated in torch 2.10+
        return torch.jit.script(make_sequential())


def make_exported():
    """make_sequential() as a torch.export.ExportedProgram, for any number of rows."""
    return torch.export.export(make_sequential(), (torch.zeros(2, D_IN),),
                               dynamic_shapes=({0: torch.export.Dim("rows")},))


def make_cuda():
    """make_sequential() on cuda:0: inputs reach it there, one copy each."""
    return make_sequential().to("cuda:0")


def make_bfloat16():
    return make_sequential().to(torch.bfloat16)


class Two(nn.Module):
    """Two outputs: the MLP's rows and their sums (a tuple, as detectors return)."""

    def __init__(self):
        super().__init__()
        self.net = make_sequential()

    def forward(self, x):
        y = self.net(x)
        return y, y.sum(dim=1)


class WritesItsInput(nn.Module):
    """An in-place ReLU first: it writes into its input."""

    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(x) * 2


class SeesTypes(nn.Module):
    """y = x + 1; types() tells what its forward saw: the input's type, device and dtype, whether
    grad mode was on, and whether the input's memory was the numpy view the worker made."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append((type(x).__name__, str(x.device), str(x.dtype),
                          torch.is_grad_enabled(), torch.is_inference_mode_enabled()))
        return x + 1

    def types(self):
        return self.seen


class CountsForward(nn.Module):
    """The MLP, counting how many of its forward calls run at once (peak()). Each call sleeps
    (time.sleep lets go of the GIL, as torch's kernels do); with company=True the first call waits
    (up to 10 s) for a second one to come in, so that a worker that may run two at once does."""

    def __init__(self, sleep=0.005, company=False):
        super().__init__()
        self.net = make_sequential()
        self.sleep, self.company = sleep, company
        self.lock = threading.Condition()
        self.now = self.most = self.calls = 0

    def forward(self, x):
        with self.lock:
            self.now += 1
            self.calls += 1
            self.most = max(self.most, self.now)
            self.lock.notify_all()
            if self.company and self.calls == 1:
                self.lock.wait_for(lambda: self.now > 1, timeout=10)
        try:
            time.sleep(self.sleep)
            return self.net(x)
        finally:
            with self.lock:
                self.now -= 1

    def peak(self):
        """(most forward calls at once, calls)"""
        with self.lock:
            return self.most, self.calls


def make_counts(sleep=0.005, company=False):
    return CountsForward(sleep, company)


def reference(x):
    """make_sequential() run in this process, as a numpy array."""
    with torch.no_grad():
        return make_sequential()(torch.as_tensor(x)).numpy()


def batched_calls(shared, i, calls, go, results):
    """Run in a spawn child: acquires, waits for go, then sends `calls` torch tensors of 1 to 3
    rows, checking each answer against the module run here; puts (i, error or None)."""
    from testlib import assert_close_across_batches
    try:
        gen = torch.Generator().manual_seed(i)
        with shared.acquire() as model:
            model(torch.zeros(1, D_IN))
            go.wait(120)
            for c in range(calls):
                x = torch.randn(1 + (i + c) % 3, D_IN, generator=gen)
                # Merged with the other children's rows: other kernels, the last bits may differ.
                assert_close_across_batches(model(x), reference(x), reduction=D_IN + 32)
        results.put((i, None))
    except Exception as e:  # reported to the parent
        results.put((i, repr(e)))


class ForgetsInferenceMode:
    """A wrapper as users write it: the module called on torch.as_tensor(x), with no inference
    mode, so its answer is a tensor that requires grad."""

    def __init__(self):
        self.net = make_sequential()

    def __call__(self, x):
        return self.net(torch.as_tensor(x))
