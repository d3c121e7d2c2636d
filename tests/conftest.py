"""Shared helpers: tolerances per dtype, random networks, finite differences."""

from __future__ import annotations

import numpy as np
import pytest

import fastbp

# Relative tolerances of a compiled kernel against the NumPy reference: both round
# differently (summation order, FMA), never by more than a few ulps per term.
RTOL = {np.float32: 2e-5, np.float64: 1e-12}
ATOL = {np.float32: 2e-6, np.float64: 1e-13}

DTYPES = [np.float32, np.float64]


def assert_close(actual, expected, dtype, scale=None, factor=1.0):
    """|actual - expected| <= atol*scale + rtol*|expected|, scaled by ``factor``."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    s = np.max(np.abs(expected)) if scale is None else scale
    s = max(float(s), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype] * factor, atol=ATOL[dtype] * factor * s)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def random_problem(rng, sizes, n, dtype, labels=False, loss="mse"):
    x = rng.standard_normal((n, sizes[0])).astype(dtype)
    if labels:
        y = rng.integers(0, sizes[-1], size=n)
    elif loss == "mse":
        y = rng.standard_normal((n, sizes[-1])).astype(dtype)
    else:
        y = rng.random((n, sizes[-1])).astype(dtype)
        if loss == "cross_entropy":
            y /= y.sum(axis=1, keepdims=True)
    return x, y


# The suite checks both twins of every whole-network kernel through the model: compile a parallel
# twin at the first call where it pays, as a warm cache would give it (tiered compilation, which
# runs the serial twin first in a cold process, is tested by tests/test_tiers.py).
fastbp.config.PARALLEL_COMPILE_AFTER = 0.0
