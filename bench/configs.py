"""The named benchmark configurations of DESIGN.md §5 and their data."""

from __future__ import annotations

import numpy as np

CONFIGS = {
    "tiny": ([4, 32, 32, 1], 32, ["sigmoid"] * 3, "mse"),
    "small": ([64, 128, 128, 10], 64, ["relu", "relu", "softmax"], "cross_entropy"),
    "medium": ([784, 256, 128, 10], 128, ["relu", "relu", "softmax"], "cross_entropy"),
    "large": ([1024, 1024, 1024, 1024], 512, ["tanh"] * 3, "mse"),
}


def problem(name: str, dtype, seed: int = 0):
    """(net kwargs, x, y) for a configuration."""
    sizes, batch, acts, loss = CONFIGS[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], batch) if loss == "cross_entropy" else rng.standard_normal(
        (batch, sizes[-1])).astype(dtype)
    return dict(sizes=sizes, activations=acts, loss=loss, dtype=dtype, seed=seed), x, y


def step_flops(name: str) -> float:
    """Floating-point operations of one training step: 3 products of 2·N·Σ n_l n_{l-1} flops."""
    sizes, batch, _, _ = CONFIGS[name]
    return 3 * 2.0 * batch * sum(sizes[i] * sizes[i + 1] for i in range(len(sizes) - 1))
