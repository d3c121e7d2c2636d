"""Each per-layer kernel (serial twin, parallel twin, dispatcher) against the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from fastbp import activations as A
from fastbp import cpu
from fastbp import losses as L
from fastbp import reference as R
from fastbp.cpu import kernels as K

from .conftest import DTYPES, assert_close

# (N, n_in, n_out): odd sizes that divide no tile, and a batch of one.
SHAPES = [(1, 1, 1), (1, 7, 3), (3, 13, 7), (13, 3, 65), (65, 65, 13), (7, 1, 13)]
VARIANTS = ["serial", "parallel", "dispatch"]


def _kernel(name, variant):
    return getattr(cpu, name) if variant == "dispatch" else getattr(K, f"{name}_{variant}")


def _layer(rng, shape, dtype):
    N, n_in, n_out = shape
    W = rng.standard_normal((n_out, n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    a_prev = rng.standard_normal((N, n_in)).astype(dtype)
    return W, b, a_prev


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_linear_forward(shape, dtype, variant, rng):
    W, b, a_prev = _layer(rng, shape, dtype)
    for act in ("tanh", "relu", "softmax", "gelu"):
        z = np.empty((shape[0], shape[2]), dtype)
        a = np.empty_like(z)
        _kernel("linear_forward", variant)(W, b, a_prev, A.CODES[act], z, a)
        zr, ar = R.linear_forward(W, b, a_prev, act)
        assert z.dtype == dtype and a.dtype == dtype
        assert_close(z, zr, dtype, factor=shape[1])
        assert_close(a, ar, dtype, factor=shape[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_forward_in_place(dtype, rng):
    W, b, a_prev = _layer(rng, (5, 7, 3), dtype)
    z = np.empty((5, 3), dtype)
    cpu.linear_forward(W, b, a_prev, A.SIGMOID, z, z)
    assert_close(z, R.linear_forward(W, b, a_prev, "sigmoid")[1], dtype, factor=7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,n", [(1, 1), (1, 4), (7, 3), (13, 65)])
@pytest.mark.parametrize(
    "loss,act,labels",
    [
        ("mse", "sigmoid", False),
        ("mse", "identity", False),
        ("mse", "softmax", False),
        ("mse", "tanh", True),
        ("cross_entropy", "softmax", False),
        ("cross_entropy", "softmax", True),
        ("binary_cross_entropy", "sigmoid", False),
    ],
)
def test_output_delta(loss, act, labels, N, n, dtype, rng):
    z = (rng.standard_normal((N, n)) * 3).astype(dtype)
    a = R.activation(act, z).astype(dtype)
    y = rng.integers(0, n, N) if labels else rng.random((N, n)).astype(dtype)
    delta = np.empty_like(z)
    C = cpu.output_delta(L.CODES[loss], A.CODES[act], z, a, y, delta)
    Cr, dr = R.output_delta(loss, act, z, a, y)
    assert delta.dtype == dtype
    assert_close(C, Cr, dtype, factor=n)
    assert_close(delta, dr, dtype, factor=n)
    # In place over z, as the whole-network kernel uses it.
    zc = z.copy()
    C2 = cpu.output_delta(L.CODES[loss], A.CODES[act], zc, a, y, zc)
    assert C2 == C
    np.testing.assert_array_equal(zc, delta)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_backprop_delta(shape, dtype, variant, rng):
    N, n, n_next = shape
    W = rng.standard_normal((n_next, n)).astype(dtype)
    dn = rng.standard_normal((N, n_next)).astype(dtype)
    z = rng.standard_normal((N, n)).astype(dtype)
    for act in ("sigmoid", "leaky_relu", "identity"):
        delta = np.empty_like(z)
        _kernel("backprop_delta", variant)(W, dn, z, A.CODES[act], delta)
        assert_close(delta, R.backprop_delta(W, dn, z, act), dtype, factor=n_next)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_weight_and_bias_grad(shape, dtype, variant, rng):
    N, n_in, n_out = shape
    delta = rng.standard_normal((N, n_out)).astype(dtype)
    a_prev = rng.standard_normal((N, n_in)).astype(dtype)
    gW = np.full((n_out, n_in), np.nan, dtype)  # the kernels overwrite, never accumulate into garbage
    gb = np.full(n_out, np.nan, dtype)
    _kernel("weight_grad", variant)(delta, a_prev, gW)
    _kernel("bias_grad", variant)(delta, gb)
    assert_close(gW, R.weight_grad(delta, a_prev), dtype, factor=N)
    assert_close(gb, R.bias_grad(delta), dtype, factor=N)
    gW2 = np.full_like(gW, np.nan)
    gb2 = np.full_like(gb, np.nan)
    _kernel("weight_bias_grad", variant)(delta, a_prev, gW2, gb2)
    np.testing.assert_array_equal(gW2, gW)
    assert_close(gb2, gb, dtype, factor=N)


@pytest.mark.parametrize("dtype", DTYPES)
def test_parallel_twin_is_bitwise_the_serial_one(dtype, rng):
    # Each thread owns whole output rows, so the thread count cannot change a result.
    delta = rng.standard_normal((129, 33)).astype(dtype)
    a_prev = rng.standard_normal((129, 65)).astype(dtype)
    g1 = np.empty((33, 65), dtype)
    g2 = np.empty_like(g1)
    K.weight_grad_serial(delta, a_prev, g1)
    K.weight_grad_parallel(delta, a_prev, g2)
    np.testing.assert_array_equal(g1, g2)
