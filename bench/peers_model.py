"""The models of bench/vs_peers.py, importable by every system's server processes (a Beam server,
a Ray Serve replica, a modelshare python worker) and by the clients that load their own copy."""
import numpy as np

# name: (layer widths, seed); "cheap" has no weights (x + 0: a new array, input-sized).
MODELS = {"small": ((256, 256, 256), 1), "big": ((4096, 4096, 4096), 2), "cheap": ((), 0)}
# The multi-model case: four small MLPs of their own weights.
MODELS.update({f"m{i}": ((256, 256, 256), 10 + i) for i in range(4)})


class MLP:
    """float32 multilayer perceptron, ReLU between layers; with no layers, returns x + 0."""

    def __init__(self, widths, seed):
        rng = np.random.default_rng(seed)
        self.layers = []
        for a, b in zip(widths, widths[1:]):
            w = ((rng.random((a, b), dtype=np.float32) - 0.5) / np.sqrt(a)).astype(np.float32)
            self.layers.append((w, np.zeros(b, np.float32) + 0.01))

    def __call__(self, x):
        if not self.layers:
            return x + np.float32(0)
        for i, (w, b) in enumerate(self.layers):
            x = x @ w + b
            if i + 1 < len(self.layers):
                np.maximum(x, 0, out=x)
        return x


def make(name):
    widths, seed = MODELS[name]
    return MLP(widths, seed)


def input_for(name, batch, width=None):
    widths, _ = MODELS[name]
    w = width or widths[0]
    return np.random.default_rng(7).standard_normal((batch, w)).astype(np.float32)
