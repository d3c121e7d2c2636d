"""
Online learning inside a compiled simulation step
=================================================

A point moves on a noisy orbit; at every simulation step a small network learns, online
(batch of one), to predict the point's next position from its current one.  The whole loop —
physics, forward pass, backpropagation and the Adam update — is one ``@njit`` function that
calls fastbp's kernels directly: there is no Python per step, and PyTorch could not be called
here at all.

    python examples/online_regression.py
"""

from __future__ import annotations

import os

import numpy as np
from numba import njit

import fastbp
from fastbp import cpu
from fastbp.cpu.optim import adam_step


@njit
def simulate_and_learn(params, sizes, acts, loss, steps, lr, seed):
    np.random.seed(seed)  # noqa: NPY002 - Numba's compiled generator: the legacy API in @njit code
    P = params.shape[0]
    grad = np.zeros(P)
    m = np.zeros(P)
    v = np.zeros(P)
    x = np.zeros((1, 2))
    y = np.zeros((1, 2))
    width = 0
    for i in range(1, sizes.shape[0]):
        width += sizes[i]
    work = np.zeros(2 * width)  # fastbp.workspace_size(sizes, 1)
    losses = np.zeros(steps)
    angle = 0.0
    pos = np.array([1.0, 0.0])
    for t in range(steps):
        # physics: rotate by 0.1 rad, plus noise
        angle += 0.1
        new = np.array([np.cos(angle), np.sin(angle)]) + 0.01 * np.random.standard_normal(2)  # noqa: NPY002
        x[0, 0], x[0, 1] = pos[0], pos[1]
        y[0, 0], y[0, 1] = new[0], new[1]
        # learning: one backpropagation step and one Adam update on this sample
        losses[t] = cpu.loss_and_grad(params, sizes, acts, loss, x, y, grad, work)
        adam_step(params, grad, m, v, t + 1, lr, 0.9, 0.999, 1e-8, 0.0, False)
        pos = new
    return losses


def main(steps: int = 3000, verbose: bool = True) -> np.ndarray:
    net = fastbp.MLP([2, 16, 2], ["tanh", "identity"], "mse", dtype=np.float64, seed=0)
    losses = simulate_and_learn(net.params, net.spec.sizes, net.spec.activations, fastbp.losses.MSE, steps, 1e-3, 0)
    if verbose:
        k = steps // 10
        print(f"mean loss, first {k} steps: {losses[:k].mean():.5f}; last {k} steps: {losses[-k:].mean():.5f}")
    return losses


if __name__ == "__main__":
    main(steps=600 if os.environ.get("FASTBP_DOCS_BUILD") else 3000)
