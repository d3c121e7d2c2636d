"""What ``tests/test_same_bits.py`` compares: run as ``python -m tests.bits_case OUT.npz
[--serial-only] [--fit-float32-only]`` in a subprocess with the ``NUMBA_*`` settings under test,
it writes the loss, the gradient (both twins of the training step, or the serial one only, and
``MLP.loss_and_grad``), ``predict`` and θ after ``fit`` (in both dtypes, or float32 only: the
compiled epoch loop runs the same step and update kernels in either), for odd sizes in both
dtypes."""

from __future__ import annotations

import sys

import numpy as np

import fastbp
from fastbp.cpu import network

#: (sizes, activations, loss, batch rows): odd widths that no tile divides, a single sample, a
#: wide hidden layer that takes the parallel twin's split into several tasks
CASES = (
    ([13, 65, 7], ["tanh", "softmax"], "cross_entropy", 67),
    ([7, 33, 3, 1], "sigmoid", "mse", 1),
    ([5, 130, 2], ["gelu", "sigmoid"], "binary_cross_entropy", 41),
)


def results(serial_only: bool = False, fit_float32_only: bool = False) -> dict[str, np.ndarray]:
    fastbp.config.PARALLEL_COMPILE_AFTER = 0.0  # the parallel twin where it pays, from the first call
    out = {}
    for dtype in (np.float32, np.float64):
        for i, (sizes, acts, loss, n) in enumerate(CASES):
            key = f"{np.dtype(dtype).name}-{i}"
            rng = np.random.default_rng(i)
            net = fastbp.MLP(sizes, acts, loss, dtype=dtype, seed=i)
            x = rng.standard_normal((n, sizes[0])).astype(dtype)
            if loss == "cross_entropy":
                y = rng.integers(0, sizes[-1], n)
            elif loss == "binary_cross_entropy":
                y = rng.integers(0, 2, (n, sizes[-1])).astype(dtype)
            else:
                y = rng.standard_normal((n, sizes[-1])).astype(dtype)
            c, g = net.loss_and_grad(x, y)
            out[key + "-loss"] = np.array([c])
            out[key + "-grad"] = g.copy()
            yk, lab, sw = net.backend_object.kernel_targets(y)
            work = np.empty(fastbp.workspace_size(sizes, n), dtype)
            for name, (_, twin) in network.VARIANTS.items():
                if serial_only and name != "serial":
                    continue
                gt = np.empty_like(net.params)
                ct = twin(net.params, net.spec.sizes, net.spec.activations, net.spec.loss, x, yk, lab, gt, work, sw)
                out[f"{key}-loss-{name}"] = np.array([ct])
                out[f"{key}-grad-{name}"] = gt
            out[key + "-predict"] = net.predict(x)
            if fit_float32_only and dtype != np.float32:
                continue
            net.fit(x, y, epochs=2, batch_size=16, optimizer="adam", lr=1e-2, seed=0, verbose=False)
            out[key + "-fit"] = net.params.copy()
    return out


if __name__ == "__main__":
    np.savez(sys.argv[1], **results(serial_only="--serial-only" in sys.argv[2:],
                                    fit_float32_only="--fit-float32-only" in sys.argv[2:]))
