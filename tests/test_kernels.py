"""Per-layer kernels: BP1 against the NumPy reference, in-place use, twins bitwise equal.

The forward product, BP2, BP3 and BP4 of every variant (serial twin, parallel twin,
dispatcher) are checked entry by entry within their rounding bound by ``tests/test_bounds.py``,
which replaced the batch-scaled tolerances that were here.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastbp import activations as A
from fastbp import cpu
from fastbp import losses as L
from fastbp import reference as R
from fastbp.cpu import kernels as K

from .conftest import DTYPES, assert_close


def _layer(rng, shape, dtype):
    N, n_in, n_out = shape
    W = rng.standard_normal((n_out, n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    a_prev = rng.standard_normal((N, n_in)).astype(dtype)
    return W, b, a_prev


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


@pytest.mark.parametrize("dtype,layout", [
    (np.float32, "strided"),
    pytest.param(np.float64, "fortran", marks=pytest.mark.slow),  # the same copy path, another dtype
])
def test_strided_and_fortran_arrays_give_the_contiguous_answer(dtype, layout, rng):
    # The products address their operands as flat row-major arrays: the public kernels take any
    # layout, in and out, and give bitwise what they give on C-contiguous copies (one layout per
    # dtype: each compiles every kernel again).
    N, n_in, n_out = 7, 13, 5
    W, b, a_prev = _layer(rng, (N, n_in, n_out), dtype)
    delta = rng.standard_normal((N, n_out)).astype(dtype)
    wide = rng.standard_normal((N, 2 * n_in)).astype(dtype)
    for x in (wide[:, ::2] if layout == "strided" else np.asfortranarray(a_prev),):
        assert not x.flags.c_contiguous
        z, a = np.empty((N, 2 * n_out), dtype)[:, ::2], np.empty((N, n_out), dtype, order="F")
        cpu.linear_forward(W, b, x, A.TANH, z, a)
        zc, ac = np.empty((N, n_out), dtype), np.empty((N, n_out), dtype)
        cpu.linear_forward(W, b, np.ascontiguousarray(x), A.TANH, zc, ac)
        np.testing.assert_array_equal(z, zc)
        np.testing.assert_array_equal(a, ac)
        gW, gb = np.empty((n_out, 2 * n_in), dtype)[:, ::2], np.empty(2 * n_out, dtype)[::2]
        cpu.weight_bias_grad(delta[:, ::-1], x, gW, gb)
        gWc, gbc = np.empty((n_out, n_in), dtype), np.empty(n_out, dtype)
        cpu.weight_bias_grad(np.ascontiguousarray(delta[:, ::-1]), np.ascontiguousarray(x), gWc, gbc)
        np.testing.assert_array_equal(gW, gWc)
        np.testing.assert_array_equal(gb, gbc)
        d = np.empty((N, n_in), dtype, order="F")
        cpu.backprop_delta(np.asfortranarray(W), delta, x, A.TANH, d)
        dc = np.empty((N, n_in), dtype)
        cpu.backprop_delta(W, delta, np.ascontiguousarray(x), A.TANH, dc)
        np.testing.assert_array_equal(d, dc)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_tile_element_is_one_fma_chain_in_the_order_of_k(dtype, rng):
    # The micro-kernel's contract, bitwise: C[i, j] = fma(A[i, K-1], B[K-1, j], ... fma(A[i, 0],
    # B[0, j], 0)), with ``scale`` times C's old value, for tiles cut anywhere, stored either way.
    from numba import njit

    from fastbp.cpu._tile import fma, tile_dims, tile_fma

    @njit
    def tiles(A, B, C, M, N, K, transposed, scale):
        MR, NR = tile_dims(A)
        cis, cjs = (1, M) if transposed else (N, 1)
        for i0 in range(0, M, MR):
            for j0 in range(0, N, NR):
                tile_fma(A, i0 * K, K, 1, B, j0, N, K, C, i0 * cis + j0 * cjs, cis, cjs, min(MR, M - i0),
                         min(NR, N - j0), scale)

    @njit
    def chains(A, B, M, N, K):
        C = np.empty((M, N), A.dtype)
        for i in range(M):
            for j in range(N):
                c = A.dtype.type(0.0)
                for k in range(K):
                    c = fma(A[i, k], B[k, j], c)
                C[i, j] = c
        return C

    for M, N, depth in [(1, 1, 1), (3, 7, 13), (13, 65, 7), (65, 33, 17), (9, 40, 1)]:
        A = rng.standard_normal((M, depth)).astype(dtype)
        B = rng.standard_normal((depth, N)).astype(dtype)
        want = chains(A, B, M, N, depth)
        C = np.full((M, N), np.nan, dtype)
        tiles(A, B, C, M, N, depth, False, False)
        np.testing.assert_array_equal(C, want)
        CT = np.full((N, M), np.nan, dtype)
        tiles(A, B, CT, M, N, depth, True, False)
        np.testing.assert_array_equal(CT.T, want)
        S = rng.random((M, N)).astype(dtype)
        C = S.copy()
        tiles(A, B, C, M, N, depth, False, True)
        np.testing.assert_array_equal(C, want * S)
