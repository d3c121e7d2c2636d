"""Compiled scalar σ, σ' and row functions against the NumPy reference and finite differences."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from numba import njit
from scipy.differentiate import derivative as scipy_derivative

from fastbp import activations as A
from fastbp import reference as R

from .conftest import DTYPES

ELEMENTWISE = [n for n in A.NAMES if n != "softmax"]
EXTREMES = [-1e4, -700.0, -100.0, -30.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 30.0, 100.0, 700.0, 1e4]


@njit
def _apply(code, z, out_v, out_d):
    for i in range(z.shape[0]):
        out_v[i] = A.value(code, z[i])
        out_d[i] = A.derivative(code, z[i])


def _compiled(name, z):
    v = np.empty_like(z)
    d = np.empty_like(z)
    _apply(A.CODES[name], z, v, d)
    return v, d


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_value_and_derivative_match_reference(name, dtype, rng):
    z = np.concatenate([rng.standard_normal(61) * 4, np.array(EXTREMES)]).astype(dtype)
    v, d = _compiled(name, z)
    assert v.dtype == dtype and d.dtype == dtype
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(v, R.activation(name, z), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(d, R.activation_derivative(name, z), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_derivative_matches_central_differences(name, rng):
    # Away from the kinks of relu/leaky_relu/elu at 0.
    z = rng.uniform(-6, 6, 40)
    z = z[np.abs(z) > 1e-2]
    fd = scipy_derivative(lambda t: R.activation(name, t), z, initial_step=1e-3).df
    _, d = _compiled(name, z)
    np.testing.assert_allclose(d, fd, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", A.NAMES)
def test_stable_at_extreme_inputs(name, dtype):
    z = np.array([EXTREMES], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ref = R.activation(name, z)
        if name != "softmax":
            R.activation_derivative(name, z)
    a = np.empty_like(z)
    A.activate_row(A.CODES[name], z[0], a[0])
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(ref))
    np.testing.assert_allclose(a, ref, rtol=1e-6)
    if name != "softmax":
        v, d = _compiled(name, z[0])
        assert np.all(np.isfinite(v)) and np.all(np.isfinite(d))


def test_known_values():
    # Values worked out by hand, independent of the code under test.
    z = np.array([-2.0, 0.0, 3.0])
    v, d = _compiled("sigmoid", z)
    np.testing.assert_allclose(v, [1 / (1 + np.e**2), 0.5, 1 / (1 + np.e**-3)], rtol=1e-15)
    np.testing.assert_allclose(d[1], 0.25)
    v, d = _compiled("leaky_relu", z)
    np.testing.assert_allclose(v, [-0.02, 0.0, 3.0])
    np.testing.assert_allclose(d, [0.01, 0.01, 1.0])
    v, _ = _compiled("gelu", np.array([1.0]))
    np.testing.assert_allclose(v, [0.8413447460685429], rtol=1e-14)  # Φ(1)
    v, _ = _compiled("softplus", np.array([0.0]))
    np.testing.assert_allclose(v, [np.log(2.0)], rtol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 3, 13])
def test_softmax_row(n, dtype, rng):
    z = (rng.standard_normal((1, n)) * 5).astype(dtype)
    a = np.empty_like(z)
    A.activate_row(A.SOFTMAX, z[0], a[0])
    np.testing.assert_allclose(a, R.activation("softmax", z), rtol=2e-6 if dtype == np.float32 else 1e-14)
    assert abs(a.sum() - 1) < (1e-6 if dtype == np.float32 else 1e-14)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_scale_by_derivative_row_in_place(name, rng):
    z = rng.standard_normal(7)
    g = rng.standard_normal(7)
    expected = g * R.activation_derivative(name, z)
    A.scale_by_derivative_row(A.CODES[name], z, g, g)
    np.testing.assert_allclose(g, expected, rtol=1e-14, atol=1e-15)
