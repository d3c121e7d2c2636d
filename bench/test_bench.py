"""pytest-benchmark suite: the training step of each contender, and each kernel, on the
configurations of the benchmark suite (:mod:`fastbp.benchmark`).

The training steps are the suite's own (:func:`fastbp.benchmark.make_step`): the lean NumPy
step, fastbp through ``MLP``, fastbp from a user's ``@njit`` loop, the NumPy reference, and
PyTorch and JAX where installed.  The kernels come from the comparison table of
``tests/test_bounds.py`` (the one list of kernels, callables, references and rounding bounds
that the correctness tests use), each run on the first layer of every named configuration.

By default (``--benchmark-disable`` in pyproject.toml) every benchmark runs once as a smoke
test: fastbp's step is checked against the float64 reference, the kernels within their rounding
bound.  To measure:

    python -m pytest bench --benchmark-enable --runslow --benchmark-columns=median,iqr,rounds

Groups are named ``step|config`` and ``kernel|config``; compile time is excluded by a warm-up
call before timing.  Every contender here shares one process, so their thread pools can slow
each other down: for the figures in ``bench/RESULTS.md`` run ``python -m fastbp bench``.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastbp
from fastbp import reference as R
from fastbp.benchmark import CONFIGS, make_step, problem
from fastbp.benchmark.contenders import LR, NotInstalled
from tests.test_bounds import COMPARISONS, assert_within, random_inputs

SLOW = {"large"}
PARAMS = [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CONFIGS]
# The kernels' smoke runs repeat tests/test_bounds.py's checks: one configuration unless --runslow.
KERNEL_PARAMS = [pytest.param(c, marks=pytest.mark.slow) if c != "small" else c for c in CONFIGS]


@pytest.fixture
def steady_state(monkeypatch):
    """Parallel code where it pays from the first call, as the suite times it."""
    monkeypatch.setattr(fastbp.config, "PARALLEL_COMPILE_AFTER", 0.0)


def test_fastbp_step_is_one_sgd_step(steady_state):
    """The suite's fastbp step: one gradient of the reference (to float32 rounding) times lr."""
    kw, x, y = problem("small", np.float32)
    net = fastbp.MLP(**kw)  # the step's network: the same seed and sizes
    p0 = net.params.copy()
    _, g64 = R.loss_and_grad(p0.astype(np.float64), net.sizes, net.spec.activations, net.spec.loss,
                             x.astype(np.float64), y)
    step, _ = make_step("fastbp", "small", np.float32)
    step()
    moved = (p0.astype(np.float64) - step.params) / LR
    assert np.linalg.norm(moved - g64) <= 1e-2 * np.linalg.norm(g64)


@pytest.mark.parametrize("config", PARAMS)
@pytest.mark.parametrize("impl", ["lean", "fastbp", pytest.param("njit", marks=pytest.mark.slow), "reference",
                                  "torch", "jax"])  # a user's njit loop: tests/test_model.py
def test_training_step(benchmark, steady_state, config, impl):
    try:
        step, _ = make_step(impl, config, np.float32)
    except NotInstalled as e:
        pytest.skip(f"{e} is not installed")
    benchmark.group = f"step|{config}"
    benchmark(step)


@pytest.mark.parametrize("config", KERNEL_PARAMS)
@pytest.mark.parametrize("impl", ["fastbp", "numpy"])
@pytest.mark.parametrize("comp", COMPARISONS, ids=lambda c: c.name)
def test_kernel(benchmark, comp, impl, config):
    """Each kernel of the comparison table (tests/test_bounds.py) on the first layer of a named
    configuration, float32: fastbp's dispatcher, checked within its rounding bound, or the NumPy
    reference, checked against the same exact result."""
    sizes, batch, acts, _ = CONFIGS[config]
    inp = random_inputs(np.random.default_rng(0), (batch, sizes[0], sizes[1]), np.float32)
    act = acts[0] if acts[0] in comp.acts else comp.acts[0]
    kernel = comp.callables("dispatch")
    run = (lambda: comp.run(kernel, inp, act)) if impl == "fastbp" else (lambda: comp.reference(inp, act))
    got = run()
    # the reference rounds too (BLAS, other orders): the same bound holds for it
    for k, (g, e, b) in enumerate(zip(got, comp.exact(inp, act), comp.bound(inp, act, np.float32), strict=True)):
        assert_within(f"{comp.name} ({impl}) {config} output {k}", np.asarray(g, np.float32), e, b, np.float32)
    benchmark.group = f"{comp.name}|{config}"
    benchmark(run)
