"""What the host backends (numpy, cpu) share: the boundary checks and the trainer's bookkeeping."""

from __future__ import annotations

import numpy as np

from .. import _validation as V
from . import EpochStats

_NO_LABELS = np.empty(0, dtype=np.int64)  # writeable: a read-only array is another Numba type


class HostBackend:
    """Checks of host data, shared by the backends whose arrays are NumPy arrays."""

    name = ""

    def __init__(self, spec):
        self.spec = spec

    def check_x(self, x, name="x"):
        return V.check_x(self.spec, x, name)

    def check_y(self, y, n, name="y"):
        return V.check_y(self.spec, y, n, name)

    def check_sample_weight(self, sample_weight, n):
        return V.check_sample_weight(self.spec, sample_weight, n)

    def check_out(self, out, params):
        return V.check_out(self.spec, out, params)


class HostTrainer:
    """A trainer whose θ and optimizer state are the model's own host arrays."""

    def __init__(self, backend, params, opt, state):
        self.backend, self.params, self.opt, self.state = backend, params, opt, state

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def evaluate(self, x, y):
        return self.backend.evaluate(self.params, x, y)

    def pull(self):
        return None

    def push(self):
        return None

    def snapshot(self):
        return self.params.copy()

    def restore(self, snapshot):
        self.params[...] = snapshot


def stats(loss_sum=0.0, n_seen=0, n_correct=0, n_counted=0, steps=0, diverged=False) -> EpochStats:
    return EpochStats(float(loss_sum), int(n_seen), int(n_correct), int(n_counted), int(steps), bool(diverged))
