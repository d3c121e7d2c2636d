"""pytest-benchmark suite: the training step and each kernel, fastbp against the NumPy reference.

The kernels come from the comparison table of ``tests/test_bounds.py`` (the one list of
kernels, callables, references and rounding bounds that the correctness tests use), each run
on the first layer of every named configuration.  By default (``--benchmark-disable`` in
pyproject.toml) every benchmark runs once as a smoke test that checks its result: the kernels,
fastbp's and the reference's, within their rounding bound; the training step against the
float64 reference.  To measure:

    python -m pytest bench --benchmark-enable --runslow --benchmark-columns=median,iqr,rounds

Groups are named ``kernel|config``; compile time is excluded by a warm-up call before timing.
For contender-per-process numbers and ratios use ``python bench/run.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastbp
from fastbp import reference as R
from tests.test_bounds import COMPARISONS, _inputs, assert_within

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
@pytest.mark.parametrize("impl", ["fastbp", "numpy"])
@pytest.mark.parametrize("comp", COMPARISONS, ids=lambda c: c.name)
def test_kernel(benchmark, comp, impl, config):
    """Each kernel of the comparison table (tests/test_bounds.py) on the first layer of a named
    configuration, float32: fastbp's dispatcher, checked within its rounding bound, or the NumPy
    reference, checked against the same exact result."""
    sizes, batch, acts, _ = CONFIGS[config]
    inp = _inputs(np.random.default_rng(0), (batch, sizes[0], sizes[1]), np.float32)
    act = acts[0] if acts[0] in comp.acts else comp.acts[0]
    kernel = comp.callables("dispatch")
    run = (lambda: comp.run(kernel, inp, act)) if impl == "fastbp" else (lambda: comp.reference(inp, act))
    got = run()
    # the reference rounds too (BLAS, other orders): the same bound holds for it
    for k, (g, e, b) in enumerate(zip(got, comp.exact(inp, act), comp.bound(inp, act, np.float32), strict=True)):
        assert_within(f"{comp.name} ({impl}) {config} output {k}", np.asarray(g, np.float32), e, b, np.float32)
    benchmark.group = f"{comp.name}|{config}"
    benchmark(run)
