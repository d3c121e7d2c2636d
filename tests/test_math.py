"""fastbp._math: the vectorisable exp, sigmoid and tanh against NumPy, in units in the last place."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from scipy.special import expit

from fastbp import _math as M
from fastbp import activations as A

from .conftest import DTYPES

FUNCS = {"exp_nonpos": M.exp_nonpos, "sigmoid": M.sigmoid, "tanh": M.tanh}


@njit(error_model="numpy")
def _loop(which, x, out):
    # One loop per function: the loops vectorise, as they do inside the kernels.
    if which == 0:
        for i in range(x.shape[0]):
            out[i] = M.exp_nonpos(x[i])
    elif which == 1:
        for i in range(x.shape[0]):
            out[i] = M.sigmoid(x[i])
    else:
        for i in range(x.shape[0]):
            out[i] = M.tanh(x[i])


def _apply(name, x):
    out = np.empty_like(x)
    _loop(list(FUNCS).index(name), x, out)
    return out


def _exact(name, x):
    # Rounded from float64 (float32 input) or computed by NumPy/SciPy (float64 input).
    x64 = x.astype(np.float64)
    ref = {"exp_nonpos": np.exp, "sigmoid": expit, "tanh": np.tanh}[name](x64)
    return ref.astype(x.dtype)


def _ulps(got, ref):
    dt = got.dtype
    unit = np.maximum(np.spacing(np.abs(ref)), np.finfo(dt).smallest_subnormal).astype(np.float64)
    return np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64)) / unit)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, lo, hi, ulps", [
    ("exp_nonpos", -110.0, 0.0, 2), ("exp_nonpos", -750.0, -600.0, 2),
    ("sigmoid", -40.0, 40.0, 4), ("tanh", -20.0, 20.0, 2), ("tanh", -0.7, 0.7, 2),
])
def test_within_a_few_ulp_of_numpy(name, lo, hi, ulps, dtype):
    if dtype == np.float32 and lo < -200:
        pytest.skip("below float32's range")
    x = np.linspace(lo, hi, 200_003).astype(dtype)
    got = _apply(name, x)
    assert got.dtype == dtype
    assert _ulps(got, _exact(name, x)) <= ulps


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values(dtype):
    x = np.array([0.0, -0.0, 1e-30, -1e-30, 5e-4, -1e4, 1e4, np.inf, -np.inf, np.nan], dtype)
    with np.errstate(all="ignore"):
        for name in FUNCS:
            xs = -np.abs(x) if name == "exp_nonpos" else x
            got = _apply(name, xs)
            ref = _exact(name, xs)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(xs))
            fin = ~np.isnan(xs)
            np.testing.assert_allclose(got[fin], ref[fin], rtol=4 * np.finfo(dtype).eps, atol=0)
    t = _apply("tanh", np.array([-0.0, -1e-30], dtype))
    assert np.signbit(t).all()  # odd: the sign of zero and of tiny inputs is kept
    e = _apply("exp_nonpos", np.array([-1e4, -800.0], dtype))
    np.testing.assert_array_equal(e, 0.0)  # underflows to zero, not to garbage


@pytest.mark.parametrize("dtype", DTYPES)
def test_same_bits_in_vector_body_and_scalar_remainder(dtype, rng):
    # Element i of a long vectorised loop against the same element computed alone:
    # a sample's activation must not depend on where it sits in the batch.
    x = (rng.standard_normal(37) * 6).astype(dtype)
    for name in FUNCS:
        xs = -np.abs(x) if name == "exp_nonpos" else x
        whole = _apply(name, xs)
        alone = np.array([_apply(name, xs[i : i + 1])[0] for i in range(len(xs))], dtype)
        np.testing.assert_array_equal(whole, alone)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["identity", "sigmoid", "tanh", "relu", "gelu", "softmax"])
def test_row_range_functions_touch_only_their_rows(name, dtype, rng):
    code = A.CODES[name]
    z = (rng.standard_normal((7, 13)) * 3).astype(dtype)
    a = np.full_like(z, -7.0)
    A.activate_rows(code, z, a, 2, 5)
    np.testing.assert_array_equal(a[:2], -7.0)
    np.testing.assert_array_equal(a[5:], -7.0)
    for r in range(2, 5):
        row = np.empty(13, dtype)
        A.activate_row(code, z[r], row)
        if name == "softmax":  # a libm exp and a sequential sum: equal to an ulp
            np.testing.assert_allclose(a[r], row, rtol=2 * np.finfo(dtype).eps, atol=0)
        else:
            np.testing.assert_array_equal(a[r], row)
    if name == "softmax":
        return
    zz = z.copy()
    aa = np.full_like(z, -7.0)
    A.activate_and_derive_rows(code, zz, aa, 2, 5)
    np.testing.assert_array_equal(aa[2:5], a[2:5])
    np.testing.assert_array_equal(zz[:2], z[:2])
    np.testing.assert_array_equal(zz[5:], z[5:])
    d = np.empty_like(z[0])
    for r in range(2, 5):
        for i in range(13):
            d[i] = A.derivative(code, z[r, i])
        np.testing.assert_allclose(zz[r], d, rtol=8 * np.finfo(dtype).eps, atol=8 * np.finfo(dtype).eps)
