"""pytest-benchmark suite: the training step and each kernel, fastbp against the NumPy reference.

By default (``--benchmark-disable`` in pyproject.toml) every benchmark runs once as a smoke
test; the fastbp ones also check their result against the reference.  To measure:

    python -m pytest bench --benchmark-enable --runslow --benchmark-columns=median,iqr,rounds

Groups are named ``kernel|config``; compile time is excluded by a warm-up call before timing.
For contender-per-process numbers and ratios use ``python bench/run.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastbp
from fastbp import cpu
from fastbp import reference as R

from .configs import CONFIGS, problem

fastbp.config.PARALLEL_COMPILE_AFTER = 0.0  # steady state: parallel twins where they pay, from the warm-up on

SLOW = {"large"}
PARAMS = [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CONFIGS]


def _setup(config, dtype):
    kw, x, y = problem(config, dtype)
    net = fastbp.MLP(**kw)
    return net, x, y


def _sgd_step_fastbp(net, x, y, g):
    net.loss_and_grad(x, y, out=g)
    net.params -= net.dtype.type(1e-3) * g


def _sgd_step_numpy(net, x, y):
    _, g = R.loss_and_grad(net.params, net.sizes, net.spec.activations, net.spec.loss, x, y)
    net.params -= net.dtype.type(1e-3) * g


@pytest.mark.parametrize("config", PARAMS)
@pytest.mark.parametrize("impl", ["fastbp", "numpy"])
def test_training_step(benchmark, config, impl):
    net, x, y = _setup(config, np.float32)
    benchmark.group = f"step|{config}"
    p0 = net.params.copy()
    if impl == "fastbp":
        g = np.empty_like(net.params)
        _sgd_step_fastbp(net, x, y, g)  # warm-up: compile
        net.params[...] = p0
        # the step's gradient against the reference in float64 on the same float32 inputs: the
        # norm-wise relative error of float32 rounding through a few layers is ~1e-6
        _, g64 = R.loss_and_grad(p0.astype(np.float64), net.sizes, net.spec.activations, net.spec.loss,
                                 x.astype(np.float64), y if y.dtype.kind == "i" else y.astype(np.float64))
        assert np.linalg.norm(g - g64) <= 1e-4 * np.linalg.norm(g64)
        benchmark(_sgd_step_fastbp, net, x, y, g)
    else:
        benchmark(_sgd_step_numpy, net, x, y)
    assert np.all(np.isfinite(net.params))


@pytest.mark.parametrize("config", PARAMS)
def test_kernels(benchmark, config):
    """The forward layer product of the widest layer, fastbp vs reference (checked equal)."""
    net, x, y = _setup(config, np.float32)
    W, b = net.weights[0], net.biases[0]
    z = np.empty((x.shape[0], W.shape[0]), np.float32)
    a = np.empty_like(z)
    act = net.spec.activations[0]
    cpu.linear_forward(W, b, x, act, z, a)
    np.testing.assert_allclose(a, R.linear_forward(W, b, x, act)[1], rtol=1e-4, atol=1e-4)
    benchmark.group = f"linear_forward|{config}"
    benchmark(cpu.linear_forward, W, b, x, act, z, a)
