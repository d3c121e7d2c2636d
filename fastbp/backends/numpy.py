"""``MLP(backend="numpy")``: the NumPy reference as an engine (slow, clear, the oracle)."""

from __future__ import annotations

import numpy as np

from .. import reference as _ref
from ._host import HostBackend, HostTrainer, host_step, stats


class NumpyBackend(HostBackend):
    """Every computation by :mod:`fastbp.reference`; training steps in a Python loop."""

    name = "numpy"

    def forward(self, params, x):
        return _ref.forward(params, self.spec.sizes, self.spec.activations, x)

    def evaluate(self, params, x, y):
        s = self.spec
        c, out = _ref.loss(params, s.sizes, s.activations, s.loss, x, y)
        if not s.is_classifier:
            return float(c), None
        correct, counted = _ref.count_correct(s.activations[-1], out, y)
        return float(c), correct / counted

    def loss_and_grad(self, params, x, y, sample_weight, grad):
        s = self.spec
        c, g = _ref.loss_and_grad(params, s.sizes, s.activations, s.loss, x, y, sample_weight=sample_weight)
        grad[...] = g
        return float(c)

    def trainer(self, params, x, y, sample_weight, opt, state, batch_size, clip, alpha=0.0):
        return NumpyTrainer(self, params, x, y, sample_weight, opt, state, batch_size, clip, alpha)


class NumpyTrainer(HostTrainer):
    """Minibatch steps in Python: gather, reference loss and gradient, clip, optimizer step."""

    def __init__(self, backend, params, x, y, sample_weight, opt, state, batch_size, clip, alpha=0.0):
        super().__init__(backend, params, opt, state)
        self.x, self.y, self.sw, self.B, self.clip, self.alpha = x, y, sample_weight, batch_size, clip, alpha
        self.grad = np.empty_like(params)

    def run_epoch(self, perm, lr, check_interrupt):
        s = self.backend.spec
        loss_sum, seen, correct, counted, steps, penalty_sum = 0.0, 0, 0, 0, 0, 0.0
        for start in range(0, perm.shape[0], self.B):
            rows = perm[start : start + self.B]
            xb, yb = self.x[rows], self.y[rows]
            sw = None if self.sw is None else self.sw[rows]
            c = self.backend.loss_and_grad(self.params, xb, yb, sw, self.grad)
            wsum = rows.shape[0] if sw is None else float(np.sum(sw, dtype=np.float64))
            if s.is_classifier:  # θ before the step
                out = _ref.forward(self.params, s.sizes, s.activations, xb)
                k, n = _ref.count_correct(s.activations[-1], out, yb)
            pen = host_step(s, self.params, self.grad, c, wsum, self.opt, self.state, lr, self.clip, self.alpha)
            if not np.isfinite(pen):
                return stats(loss_sum, seen, correct, counted, steps, True, penalty_sum)
            if s.is_classifier:
                correct, counted = correct + k, counted + n
            loss_sum += c * rows.shape[0]
            penalty_sum += pen * rows.shape[0]
            seen += rows.shape[0]
            steps += 1
            check_interrupt()
        return stats(loss_sum, seen, correct, counted, steps, False, penalty_sum)
