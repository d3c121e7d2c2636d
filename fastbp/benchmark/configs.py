"""The benchmark configurations and their data.

``CONFIGS`` are the named configurations (tiny, small, medium, large); ``SWEEP`` are networks
near them at the widths and batches users pick.  Any other network is spelled
``widths:batch:activations:loss``, such as ``64-100-10:32:relu,softmax:cross_entropy``.
"""

from __future__ import annotations

import numpy as np

#: The named configurations: (sizes, batch, activations, loss) by name.
CONFIGS = {
    "tiny": ([4, 32, 32, 1], 32, ["sigmoid"] * 3, "mse"),
    "small": ([64, 128, 128, 10], 64, ["relu", "relu", "softmax"], "cross_entropy"),
    "medium": ([784, 256, 128, 10], 128, ["relu", "relu", "softmax"], "cross_entropy"),
    "large": ([1024, 1024, 1024, 1024], 512, ["tanh"] * 3, "mse"),
}


#: Networks near the named ones at the widths and batches users pick (odd widths, widths that
#: are not multiples of 16, batches from 1 to 1024).
SWEEP = {
    "w10-50-3 b16": ([10, 50, 3], 16, ["relu", "softmax"], "cross_entropy"),
    "w5-7-1 b1": ([5, 7, 1], 1, ["tanh", "identity"], "mse"),
    "w30-100-100-2 b64": ([30, 100, 100, 2], 64, ["tanh", "tanh", "softmax"], "cross_entropy"),
    "w13-37-37-1 b1024": ([13, 37, 37, 1], 1024, ["sigmoid"] * 3, "mse"),
    "w784-300-100-10 b100": ([784, 300, 100, 10], 100, ["relu", "relu", "softmax"], "cross_entropy"),
    "w100-700-10 b400": ([100, 700, 10], 400, ["relu", "softmax"], "cross_entropy"),
    "w900-900-900 b256": ([900, 900, 900], 256, ["tanh", "tanh"], "mse"),
}


def spec_of(name):
    """(sizes, batch, activations, loss) of a named or sweep configuration, or of a spelled-out
    one: ``"64-100-10:32:relu,softmax:cross_entropy"`` (widths:batch:activations:loss; one
    activation name stands for every layer)."""
    if name in CONFIGS:
        return CONFIGS[name]
    if name in SWEEP:
        return SWEEP[name]
    try:
        widths, batch, acts, loss = name.split(":")
        sizes = [int(w) for w in widths.split("-")]
        acts = acts.split(",")
        return sizes, int(batch), acts * (len(sizes) - 1) if len(acts) == 1 else acts, loss
    except ValueError:
        raise ValueError(f"configuration {name!r}: expected a name of {sorted(CONFIGS) + sorted(SWEEP)} "
                         "or widths:batch:activations:loss, such as 64-100-10:32:relu,softmax:cross_entropy") from None


def problem(name: str, dtype, seed: int = 0):
    """(net kwargs, x, y) for a configuration (any name :func:`spec_of` takes)."""
    sizes, batch, acts, loss = spec_of(name)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    if loss == "cross_entropy":
        y = rng.integers(0, sizes[-1], batch)
    elif loss == "binary_cross_entropy":  # targets in {0, 1}: what the loss takes
        y = rng.integers(0, 2, (batch, sizes[-1])).astype(dtype)
    else:
        y = rng.standard_normal((batch, sizes[-1])).astype(dtype)
    return dict(sizes=sizes, activations=acts, loss=loss, dtype=dtype, seed=seed), x, y


def step_flops(name: str) -> float:
    """Floating-point operations of the products of one training step, 2·N·n_l·n_{l-1} each: the
    forward product and BP3 of every layer, BP2 of every layer but the first (no δ^0)."""
    sizes, batch, _, _ = spec_of(name)
    macs = [sizes[i] * sizes[i + 1] for i in range(len(sizes) - 1)]
    return 2.0 * batch * (2 * sum(macs) + sum(macs[1:]))
