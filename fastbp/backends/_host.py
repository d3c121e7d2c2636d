"""What the host backends (numpy, cpu) share: the boundary checks and the trainer's bookkeeping."""

from __future__ import annotations

from functools import partial

import numpy as np

from .. import _validation as V
from .. import optim as _optim
from . import EpochStats

NO_LABELS = np.empty(0, dtype=np.int64)  # writeable: a read-only array is another Numba type


class HostBackend:
    """Checks of host data, shared by the backends whose arrays are NumPy arrays: the functions
    of :mod:`fastbp._validation` bound to the spec (``check_x(x, name="x")``,
    ``check_y(y, n, name="y")``, ``check_sample_weight(sample_weight, n)``,
    ``check_out(out, params)``; bound once: the model calls them on every call)."""

    name = ""

    def __init__(self, spec):
        self.spec = spec
        self.check_x = partial(V.check_x, spec)
        self.check_y = partial(V.check_y, spec)
        self.check_sample_weight = partial(V.check_sample_weight, spec)
        self.check_out = partial(V.check_out, spec)


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

    def scale_velocity(self, factor):
        self.state.first[...] *= self.state.buffer.dtype.type(factor)

    def snapshot(self):
        return self.params.copy()

    def restore(self, snapshot):
        self.params[...] = snapshot


def stats(loss_sum=0.0, n_seen=0, n_correct=0, n_counted=0, steps=0, diverged=False, penalty_sum=0.0) -> EpochStats:
    return EpochStats(float(loss_sum), int(n_seen), int(n_correct), int(n_counted), int(steps), bool(diverged),
                      float(penalty_sum))


def host_step(spec, params, grad, c, wsum, opt, state, lr, clip, alpha) -> float:
    """NumPy twin of :func:`fastbp.cpu.train.apply_step`: the weights' penalty for a batch of
    weight total ``wsum``, clipping to norm ``clip`` (0: none), then the optimizer step; returns
    the penalty, or NaN with nothing changed if the loss, gradient or penalty is not finite."""
    pen = 0.0
    if alpha > 0 and wsum > 0:
        pen = weight_penalty(spec, params, grad, alpha / wsum)
    norm = float(np.sqrt(np.sum(grad.astype(np.float64) ** 2)))
    if not (np.isfinite(c) and np.isfinite(norm) and np.isfinite(pen)):
        return float("nan")
    if clip > 0 and norm > clip:
        grad *= grad.dtype.type(clip / (norm + 1e-12))
    _optim.reference_step(opt, params, grad, state, lr)
    return pen


def weight_penalty(spec, params: np.ndarray, grad: np.ndarray, scale: float) -> float:
    """NumPy twin of :func:`fastbp.cpu.train.add_weight_penalty`: ``grad[W] += s W``; (s/2) Σ‖W‖²."""
    total = 0.0
    for w, g in zip(spec.split(params)[0], spec.split(grad)[0], strict=True):
        total += float(np.sum(w.astype(np.float64) ** 2))
        g += w.dtype.type(scale) * w
    return 0.5 * scale * total
