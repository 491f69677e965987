"""A python model that holds a given amount of memory of its own (tests/python/test_budget_hold.py):
its worker's measured memory is the interpreter's plus this."""
import numpy as np


class Ballast:
    def __init__(self, mib):
        self.block = np.ones(mib << 18, dtype=np.float32)  # mib MiB, every page touched

    def __call__(self, x):
        return x
