"""Bodies of the per-layer kernels, one per equation, written once, and their twins.

Each body loops with ``prange`` over an index its thread owns (blocks of samples for the
forward pass and BP2, blocks of output neurons for BP3/BP4), so there are no races and no
atomic updates, and the result does not depend on the thread count.  Each body is compiled
twice, as a serial function and as a ``parallel=True`` one (``*_serial``, ``*_parallel`` at the
end of this module): the ``prange`` loops are plain loops in the first and run in parallel in
the second.  The public per-layer kernels and both twins of each whole-network kernel *call*
these twins (they do not inline them), so each product is compiled once per signature and
cached, whichever caller needs it first.

The three products are register-blocked 4 x 4 (a fixed block, written out in the loops): the
forward product as 16 dot products over the contiguous k index, BP2 and BP3
as 4 output rows updated from 4 input rows per pass over k (8 in float32), so each loaded
value feeds 4 fused multiply-adds.  Sizes that 4 does not divide run the
same arithmetic one row at a time for the remainder.

They trust their input: shapes agree, arrays do not alias except where the
docstring allows it.  Validation happens once, at the public boundary.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .._cache import cached_njit
from .._math import _single
from ..activations import activate_and_derive_rows, activate_rows, scale_by_derivative_rows
from ..config import FASTMATH
from ..losses import BINARY_CROSS_ENTROPY, CROSS_ENTROPY, output_delta_at
from ._twins import twins


@njit(inline="always")
def _rows_times_transpose(A, B, b, s, out, r0, scaled):
    """Rows r0 .. r0+3 (fewer at the end) of out = A B^T + b, or of out = (A B^T) ⊙ s.

    A is (N, m), B is (n, m): both are read along their contiguous m index, 4 rows of each at a
    time (16 dot products), and every element of ``out`` is stored once, from registers.  The
    epilogue (+ b_j in the forward product, ⊙ s_rj in BP2, where ``s`` may be ``out`` itself) is
    written out in each block rather than called: each call of an inlined helper costs Numba's
    front end a pass of its own, and the 21 stores through one took some 0.5 s of the forward
    product's compilation.
    """
    N = A.shape[0]
    n, m = B.shape
    zero = out.dtype.type(0.0)
    if r0 + 4 <= N:
        j = 0
        while j + 4 <= n:
            s00 = s01 = s02 = s03 = zero
            s10 = s11 = s12 = s13 = zero
            s20 = s21 = s22 = s23 = zero
            s30 = s31 = s32 = s33 = zero
            for k in range(m):
                x0 = A[r0, k]
                x1 = A[r0 + 1, k]
                x2 = A[r0 + 2, k]
                x3 = A[r0 + 3, k]
                w0 = B[j, k]
                w1 = B[j + 1, k]
                w2 = B[j + 2, k]
                w3 = B[j + 3, k]
                s00 += x0 * w0
                s01 += x0 * w1
                s02 += x0 * w2
                s03 += x0 * w3
                s10 += x1 * w0
                s11 += x1 * w1
                s12 += x1 * w2
                s13 += x1 * w3
                s20 += x2 * w0
                s21 += x2 * w1
                s22 += x2 * w2
                s23 += x2 * w3
                s30 += x3 * w0
                s31 += x3 * w1
                s32 += x3 * w2
                s33 += x3 * w3
            if scaled:
                out[r0, j] = s00 * s[r0, j]
                out[r0, j + 1] = s01 * s[r0, j + 1]
                out[r0, j + 2] = s02 * s[r0, j + 2]
                out[r0, j + 3] = s03 * s[r0, j + 3]
                out[r0 + 1, j] = s10 * s[r0 + 1, j]
                out[r0 + 1, j + 1] = s11 * s[r0 + 1, j + 1]
                out[r0 + 1, j + 2] = s12 * s[r0 + 1, j + 2]
                out[r0 + 1, j + 3] = s13 * s[r0 + 1, j + 3]
                out[r0 + 2, j] = s20 * s[r0 + 2, j]
                out[r0 + 2, j + 1] = s21 * s[r0 + 2, j + 1]
                out[r0 + 2, j + 2] = s22 * s[r0 + 2, j + 2]
                out[r0 + 2, j + 3] = s23 * s[r0 + 2, j + 3]
                out[r0 + 3, j] = s30 * s[r0 + 3, j]
                out[r0 + 3, j + 1] = s31 * s[r0 + 3, j + 1]
                out[r0 + 3, j + 2] = s32 * s[r0 + 3, j + 2]
                out[r0 + 3, j + 3] = s33 * s[r0 + 3, j + 3]
            else:
                out[r0, j] = s00 + b[j]
                out[r0, j + 1] = s01 + b[j + 1]
                out[r0, j + 2] = s02 + b[j + 2]
                out[r0, j + 3] = s03 + b[j + 3]
                out[r0 + 1, j] = s10 + b[j]
                out[r0 + 1, j + 1] = s11 + b[j + 1]
                out[r0 + 1, j + 2] = s12 + b[j + 2]
                out[r0 + 1, j + 3] = s13 + b[j + 3]
                out[r0 + 2, j] = s20 + b[j]
                out[r0 + 2, j + 1] = s21 + b[j + 1]
                out[r0 + 2, j + 2] = s22 + b[j + 2]
                out[r0 + 2, j + 3] = s23 + b[j + 3]
                out[r0 + 3, j] = s30 + b[j]
                out[r0 + 3, j + 1] = s31 + b[j + 1]
                out[r0 + 3, j + 2] = s32 + b[j + 2]
                out[r0 + 3, j + 3] = s33 + b[j + 3]
            j += 4
        for jj in range(j, n):
            s0 = s1 = s2 = s3 = zero
            for k in range(m):
                w = B[jj, k]
                s0 += A[r0, k] * w
                s1 += A[r0 + 1, k] * w
                s2 += A[r0 + 2, k] * w
                s3 += A[r0 + 3, k] * w
            if scaled:
                out[r0, jj] = s0 * s[r0, jj]
                out[r0 + 1, jj] = s1 * s[r0 + 1, jj]
                out[r0 + 2, jj] = s2 * s[r0 + 2, jj]
                out[r0 + 3, jj] = s3 * s[r0 + 3, jj]
            else:
                out[r0, jj] = s0 + b[jj]
                out[r0 + 1, jj] = s1 + b[jj]
                out[r0 + 2, jj] = s2 + b[jj]
                out[r0 + 3, jj] = s3 + b[jj]
    else:
        for r in range(r0, N):
            for jj in range(n):
                acc = zero
                for k in range(m):
                    acc += A[r, k] * B[jj, k]
                if scaled:
                    out[r, jj] = acc * s[r, jj]
                else:
                    out[r, jj] = acc + b[jj]


def linear_forward_body(W, b, a_prev, act, z, a, derive):
    N = a_prev.shape[0]
    for rb in prange((N + 3) // 4):
        r0 = rb * 4
        _rows_times_transpose(a_prev, W, b, z, z, r0, False)
        if derive:
            activate_and_derive_rows(act, z, a, r0, min(r0 + 4, N))
        else:
            activate_rows(act, z, a, r0, min(r0 + 4, N))


def backprop_delta_transposed_body(WT, delta_next, s, delta):
    """BP2 from W^T: δ_rk = (Σ_j δ_next,rj (W^T)_kj) s_rk, with s = σ'(z) (``s`` may be ``delta``).

    The forward product's loop (both operands read along j, each δ stored once from registers),
    for layers wide enough that the blocked BP2 below, which adds into rows of δ pass after pass,
    slows down when those rows and the rows of W fall on the same cache sets.
    """
    N = delta_next.shape[0]
    for rb in prange((N + 3) // 4):
        _rows_times_transpose(delta_next, WT, s[0], s, delta, rb * 4, True)


def transpose_body(W, WT):
    """WT = W^T, in 16 x 16 tiles (each tile's rows read and written in cache lines)."""
    n, m = W.shape
    for jb in prange((n + 15) // 16):
        j0 = jb * 16
        j1 = min(j0 + 16, n)
        for k0 in range(0, m, 16):
            k1 = min(k0 + 16, m)
            for k in range(k0, k1):
                for j in range(j0, j1):
                    WT[k, j] = W[j, k]


# The two narrow-input kernels are serial functions of their own (compiled once per signature
# and cached), not inlined bodies: the network kernels use them only below the parallel
# threshold, and inlining them into both twins cost 5 s of compile time per model.


@cached_njit(fastmath=FASTMATH)
def linear_forward_small_in(WT, b, a_prev, act, z, a, derive):
    """Forward product for a narrow input: z_r = b + Σ_k a_rk (W^T)_k, vectorised along the
    n_l outputs; ``WT`` is W^l transposed, (n_{l-1}, n_l)."""
    N = a_prev.shape[0]
    n_in, n_out = WT.shape
    for rb in range((N + 3) // 4):
        r0 = rb * 4
        r1 = min(r0 + 4, N)
        for r in range(r0, r1):
            for j in range(n_out):
                z[r, j] = b[j]
            for k in range(n_in):
                c = a_prev[r, k]
                for j in range(n_out):
                    z[r, j] += c * WT[k, j]
        if derive:
            activate_and_derive_rows(act, z, a, r0, r1)
        else:
            activate_rows(act, z, a, r0, r1)


@cached_njit(fastmath=FASTMATH)
def weight_bias_grad_small_in(delta, a_prev, gW, gb, gT):
    """BP3 and BP4 for a narrow input: (∂C/∂W)^T_k = Σ_n a_nk δ_n accumulated in ``gT``
    ((n_{l-1}, n_l) scratch), vectorised along the n_l outputs, then transposed into gW."""
    N, n_out = delta.shape
    n_in = a_prev.shape[1]
    zero = delta.dtype.type(0.0)
    for k in range(n_in):
        for j in range(n_out):
            gT[k, j] = zero
    for j in range(n_out):
        gb[j] = zero
    for r in range(N):
        for j in range(n_out):
            gb[j] += delta[r, j]
        for k in range(n_in):
            c = a_prev[r, k]
            for j in range(n_out):
                gT[k, j] += c * delta[r, j]
    for j in range(n_out):
        for k in range(n_in):
            gW[j, k] = gT[k, j]


def bias_activate_body(b, act, z, a, derive):
    """z_r += b for every row, then a = σ(z) (with ``derive`` z is replaced by σ'(z)), in blocks of
    4 rows: the end of the forward product a^l = σ(W^l a^{l-1} + b^l) where the product itself
    ran as :func:`backprop_delta_body` on W^T, which leaves z = a^{l-1} (W^l)^T."""
    N, n = z.shape
    for rb in prange((N + 3) // 4):
        r0 = rb * 4
        r1 = min(r0 + 4, N)
        for r in range(r0, r1):
            for j in range(n):
                z[r, j] += b[j]
        if derive:
            activate_and_derive_rows(act, z, a, r0, r1)
        else:
            activate_rows(act, z, a, r0, r1)


# BP1 is O(N n_L) and serial: an ordinary function, compiled once per dtype.
@cached_njit(fastmath=FASTMATH)
def output_delta_body(loss, act, z, a, y, labels, delta, sample_weight, z_is_derivative=False):
    """BP1 over the batch; returns C.

    One signature per dtype: targets ``y`` (N, n_L) float with ``labels`` empty, or class
    ``labels`` (N,) int64 with ``y`` of no rows; ``sample_weight`` (N,) float, or empty for
    none.  With ``z_is_derivative`` (mse and an elementwise output only) ``z`` holds σ'(z^L),
    as the training forward pass leaves it: then δ_nj = w_n (a_nj − y_nj) s_nj in one sweep,
    with no σ' to recompute.
    """
    N, n = a.shape
    T = z.dtype.type
    one = T(1.0)
    zero = T(0.0)
    has_labels = labels.shape[0] > 0
    weighted = sample_weight.shape[0] > 0
    # C = inv · Σ_n w_n ℓ_n: inv = 1/N, or 1/Σ_n w_n (0 when every weight is zero).
    inv = 1.0 / N
    if weighted:
        w_total = 0.0
        for r in range(N):
            w_total += sample_weight[r]
        inv = 1.0 / w_total if w_total > 0 else 0.0
    scale = T(1.0) / T(N)
    total = 0.0
    for r in range(N):
        wr = sample_weight[r] * inv if weighted else 1.0
        w = T(wr) if weighted else scale
        label = labels[r] if has_labels else -1
        if z_is_derivative:
            term = 0.0
            for i in range(n):
                yi = (one if i == label else zero) if has_labels else y[r, i]
                d = a[r, i] - yi
                term += 0.5 * d * d
                delta[r, i] = w * d * z[r, i]
        else:
            term = output_delta_at(loss, act, z, a, y, label, w, delta, r)
        total += wr * term
    return total if weighted else total / N


@cached_njit(fastmath=FASTMATH)
def loss_body(loss, z, a, y, labels, sample_weight):
    """C alone, without δ^L: what ``evaluate`` needs after the forward pass (O(N n_L), no σ').

    Arguments as for :func:`output_delta_body`; the loss terms are those of
    :func:`fastbp.losses.output_delta_at` (cross-entropies from z, stable for any finite z).
    """
    N, n = a.shape
    T = z.dtype.type
    one = T(1.0)
    zero = T(0.0)
    has_labels = labels.shape[0] > 0
    weighted = sample_weight.shape[0] > 0
    w_total = 0.0
    total = 0.0
    for r in range(N):
        label = labels[r] if has_labels else -1
        term = 0.0
        if loss == CROSS_ENTROPY:
            m = z[r, 0]
            for i in range(1, n):
                if z[r, i] > m:
                    m = z[r, i]
            s = zero
            for i in range(n):
                s += np.exp(z[r, i] - m)
            lse = m + np.log(s)
            for i in range(n):
                yi = (one if i == label else zero) if has_labels else y[r, i]
                term += yi * (lse - z[r, i])
        elif loss == BINARY_CROSS_ENTROPY:
            for i in range(n):
                yi = (one if i == label else zero) if has_labels else y[r, i]
                zi = z[r, i]
                term += max(zi, zero) - zi * yi + np.log1p(np.exp(-abs(zi)))
        else:
            for i in range(n):
                yi = (one if i == label else zero) if has_labels else y[r, i]
                d = a[r, i] - yi
                term += 0.5 * d * d
        if weighted:
            w_total += sample_weight[r]
            total += sample_weight[r] * term
        else:
            total += term
    if weighted:
        return total / w_total if w_total > 0 else 0.0
    return total / N


def normalised_targets(y, sample_weight, n_out, like):
    """(y, labels, sample_weight) in the one form the kernels are compiled for, per dtype.

    ``y`` (N, n_L) float targets give (y, empty labels); (N,) integer labels give (targets of no
    rows, labels); ``None`` weights give an empty weight vector (dtype of the array ``like``).  So
    a process compiles each training kernel once per dtype, whichever kinds of target and weight
    its calls pass.  Compiled code only (the choice is made from the argument types).
    """
    raise NotImplementedError("normalised_targets is for compiled code")


@overload(normalised_targets)
def _normalised_targets(y, sample_weight, n_out, like):
    labels = y.ndim == 1
    unweighted = sample_weight is None or isinstance(sample_weight, (types.NoneType, types.Omitted))

    def impl(y, sample_weight, n_out, like):
        if labels:
            Y = np.empty((0, n_out), like.dtype)
            lab = y
        else:
            Y = y
            lab = np.empty(0, np.int64)
        if unweighted:
            sw = np.empty(0, like.dtype)
        else:
            sw = sample_weight
        return Y, lab, sw

    return impl


#: The fast-math flags without the two that let LLVM choose the order of a sum (reassociation)
#: and where to fuse a multiply with an add (contraction): an instruction without them computes
#: the same bits wherever LLVM puts it.
_IN_ORDER = FASTMATH - {"reassoc", "contract"}


@cached_njit(fastmath=_IN_ORDER)
def _backprop_rows_in_order(W, delta_next, delta, r0, r1):
    """δ_r += Σ_j δ_next,rj W_j for the rows r0 <= r < r1 of a block of fewer than 4 (zeroed
    before), each product rounded and added in the order of j.  Compiled with the kernel's flags
    inside each twin, these sums came out differently in the serial and the parallel twin (183 of
    500 random BP2 calls with a partial block differed in float32), so the twins' results
    depended on which one ran."""
    n_next, n = W.shape
    for r in range(r0, r1):
        for jj in range(n_next):
            c = delta_next[r, jj]
            for k in range(n):
                delta[r, k] += c * W[jj, k]


@njit(inline="always")
def _scale_rows(act, z, delta, r0, r1, z_is_derivative):
    # δ ⊙= σ'(z) for the rows r0 <= r < r1; with ``z_is_derivative`` z already holds σ'(z)
    if z_is_derivative:
        for r in range(r0, r1):
            for k in range(delta.shape[1]):
                delta[r, k] *= z[r, k]
    else:
        scale_by_derivative_rows(act, z, delta, delta, r0, r1)


def backprop_delta_body(W, delta_next, z, act, delta, z_is_derivative):
    """δ = (δ_next W) ⊙ σ'(z); with ``z_is_derivative`` z already holds σ'(z)."""
    N = z.shape[0]
    n_next, n = W.shape
    zero = z.dtype.type(0.0)
    # Whole blocks of 4 rows in the loop; the rest (fewer than 4) after it, in order (see
    # _backprop_rows_in_order), so that no call sits in the parallel loop's body.
    for rb in prange(N // 4):
        r0 = rb * 4
        r1 = r0 + 4
        for r in range(r0, r1):
            for k in range(n):
                delta[r, k] = zero
        j = 0
        if _single(zero):  # float64 runs faster with the 4-row loop alone
            # 4 rows of δ from 8 rows of W per pass over k: 32 multiply-adds per 4 stores.
            while j + 8 <= n_next:
                c00, c01 = delta_next[r0, j], delta_next[r0, j + 1]
                c02, c03 = delta_next[r0, j + 2], delta_next[r0, j + 3]
                c04, c05 = delta_next[r0, j + 4], delta_next[r0, j + 5]
                c06, c07 = delta_next[r0, j + 6], delta_next[r0, j + 7]
                c10, c11 = delta_next[r0 + 1, j], delta_next[r0 + 1, j + 1]
                c12, c13 = delta_next[r0 + 1, j + 2], delta_next[r0 + 1, j + 3]
                c14, c15 = delta_next[r0 + 1, j + 4], delta_next[r0 + 1, j + 5]
                c16, c17 = delta_next[r0 + 1, j + 6], delta_next[r0 + 1, j + 7]
                c20, c21 = delta_next[r0 + 2, j], delta_next[r0 + 2, j + 1]
                c22, c23 = delta_next[r0 + 2, j + 2], delta_next[r0 + 2, j + 3]
                c24, c25 = delta_next[r0 + 2, j + 4], delta_next[r0 + 2, j + 5]
                c26, c27 = delta_next[r0 + 2, j + 6], delta_next[r0 + 2, j + 7]
                c30, c31 = delta_next[r0 + 3, j], delta_next[r0 + 3, j + 1]
                c32, c33 = delta_next[r0 + 3, j + 2], delta_next[r0 + 3, j + 3]
                c34, c35 = delta_next[r0 + 3, j + 4], delta_next[r0 + 3, j + 5]
                c36, c37 = delta_next[r0 + 3, j + 6], delta_next[r0 + 3, j + 7]
                for k in range(n):
                    w0 = W[j, k]
                    w1 = W[j + 1, k]
                    w2 = W[j + 2, k]
                    w3 = W[j + 3, k]
                    w4 = W[j + 4, k]
                    w5 = W[j + 5, k]
                    w6 = W[j + 6, k]
                    w7 = W[j + 7, k]
                    delta[r0, k] += ((c00 * w0 + c01 * w1) + (c02 * w2 + c03 * w3)) + (
                        (c04 * w4 + c05 * w5) + (c06 * w6 + c07 * w7))
                    delta[r0 + 1, k] += ((c10 * w0 + c11 * w1) + (c12 * w2 + c13 * w3)) + (
                        (c14 * w4 + c15 * w5) + (c16 * w6 + c17 * w7))
                    delta[r0 + 2, k] += ((c20 * w0 + c21 * w1) + (c22 * w2 + c23 * w3)) + (
                        (c24 * w4 + c25 * w5) + (c26 * w6 + c27 * w7))
                    delta[r0 + 3, k] += ((c30 * w0 + c31 * w1) + (c32 * w2 + c33 * w3)) + (
                        (c34 * w4 + c35 * w5) + (c36 * w6 + c37 * w7))
                j += 8
        while j + 4 <= n_next:
            c00, c01 = delta_next[r0, j], delta_next[r0, j + 1]
            c02, c03 = delta_next[r0, j + 2], delta_next[r0, j + 3]
            c10, c11 = delta_next[r0 + 1, j], delta_next[r0 + 1, j + 1]
            c12, c13 = delta_next[r0 + 1, j + 2], delta_next[r0 + 1, j + 3]
            c20, c21 = delta_next[r0 + 2, j], delta_next[r0 + 2, j + 1]
            c22, c23 = delta_next[r0 + 2, j + 2], delta_next[r0 + 2, j + 3]
            c30, c31 = delta_next[r0 + 3, j], delta_next[r0 + 3, j + 1]
            c32, c33 = delta_next[r0 + 3, j + 2], delta_next[r0 + 3, j + 3]
            for k in range(n):
                w0 = W[j, k]
                w1 = W[j + 1, k]
                w2 = W[j + 2, k]
                w3 = W[j + 3, k]
                delta[r0, k] += c00 * w0 + c01 * w1 + c02 * w2 + c03 * w3
                delta[r0 + 1, k] += c10 * w0 + c11 * w1 + c12 * w2 + c13 * w3
                delta[r0 + 2, k] += c20 * w0 + c21 * w1 + c22 * w2 + c23 * w3
                delta[r0 + 3, k] += c30 * w0 + c31 * w1 + c32 * w2 + c33 * w3
            j += 4
        for jj in range(j, n_next):
            c0, c1 = delta_next[r0, jj], delta_next[r0 + 1, jj]
            c2, c3 = delta_next[r0 + 2, jj], delta_next[r0 + 3, jj]
            for k in range(n):
                w = W[jj, k]
                delta[r0, k] += c0 * w
                delta[r0 + 1, k] += c1 * w
                delta[r0 + 2, k] += c2 * w
                delta[r0 + 3, k] += c3 * w
        _scale_rows(act, z, delta, r0, r1, z_is_derivative)
    r0 = N // 4 * 4
    if r0 < N:
        for r in range(r0, N):
            for k in range(n):
                delta[r, k] = zero
        _backprop_rows_in_order(W, delta_next, delta, r0, N)
        _scale_rows(act, z, delta, r0, N, z_is_derivative)


@njit(inline="always")
def _tile(a_prev):
    """A private 4-row tile for BP3 whose rows start half a page (2 KiB) from a^{l-1}'s first row
    modulo 4 KiB and lie whole pages apart (``config.BP3_TILE_MIN_ROWS`` says when and why)."""
    n_in = a_prev.shape[1]
    size = a_prev.itemsize
    page = 4096 // size
    stride = (n_in + page - 1) // page * page
    buf = np.empty(4 * stride + 2 * page, a_prev.dtype)
    gap = (a_prev.ctypes.data + 2048 - buf.ctypes.data) % 4096 // size
    return buf[gap : gap + 4 * stride].reshape((4, stride))


@njit(inline="always")
def _bp3_four_rows(delta, a_prev, G, g0, j0):
    """BP3 and BP4 for the 4 output neurons j0 .. j0+3: their rows of ∂C/∂W^l summed over the batch
    into the rows g0 .. g0+3 of ``G`` (∂C/∂W^l itself, or a private tile); returns the 4 sums of δ."""
    N = delta.shape[0]
    n_in = a_prev.shape[1]
    zero = delta.dtype.type(0.0)
    for j in range(4):
        for k in range(n_in):
            G[g0 + j, k] = zero
    b0 = b1 = b2 = b3 = zero
    r = 0
    if _single(zero):  # float64 runs faster with the 4-sample loop alone
        # 4 rows of gW from 8 samples per pass over k: 32 multiply-adds per 4 stores.
        while r + 8 <= N:
            c00, c01, c02, c03 = delta[r, j0], delta[r + 1, j0], delta[r + 2, j0], delta[r + 3, j0]
            c04, c05, c06, c07 = delta[r + 4, j0], delta[r + 5, j0], delta[r + 6, j0], delta[r + 7, j0]
            c10, c11 = delta[r, j0 + 1], delta[r + 1, j0 + 1]
            c12, c13 = delta[r + 2, j0 + 1], delta[r + 3, j0 + 1]
            c14, c15 = delta[r + 4, j0 + 1], delta[r + 5, j0 + 1]
            c16, c17 = delta[r + 6, j0 + 1], delta[r + 7, j0 + 1]
            c20, c21 = delta[r, j0 + 2], delta[r + 1, j0 + 2]
            c22, c23 = delta[r + 2, j0 + 2], delta[r + 3, j0 + 2]
            c24, c25 = delta[r + 4, j0 + 2], delta[r + 5, j0 + 2]
            c26, c27 = delta[r + 6, j0 + 2], delta[r + 7, j0 + 2]
            c30, c31 = delta[r, j0 + 3], delta[r + 1, j0 + 3]
            c32, c33 = delta[r + 2, j0 + 3], delta[r + 3, j0 + 3]
            c34, c35 = delta[r + 4, j0 + 3], delta[r + 5, j0 + 3]
            c36, c37 = delta[r + 6, j0 + 3], delta[r + 7, j0 + 3]
            b0 += ((c00 + c01) + (c02 + c03)) + ((c04 + c05) + (c06 + c07))
            b1 += ((c10 + c11) + (c12 + c13)) + ((c14 + c15) + (c16 + c17))
            b2 += ((c20 + c21) + (c22 + c23)) + ((c24 + c25) + (c26 + c27))
            b3 += ((c30 + c31) + (c32 + c33)) + ((c34 + c35) + (c36 + c37))
            for k in range(n_in):
                x0 = a_prev[r, k]
                x1 = a_prev[r + 1, k]
                x2 = a_prev[r + 2, k]
                x3 = a_prev[r + 3, k]
                x4 = a_prev[r + 4, k]
                x5 = a_prev[r + 5, k]
                x6 = a_prev[r + 6, k]
                x7 = a_prev[r + 7, k]
                G[g0, k] += ((c00 * x0 + c01 * x1) + (c02 * x2 + c03 * x3)) + (
                    (c04 * x4 + c05 * x5) + (c06 * x6 + c07 * x7))
                G[g0 + 1, k] += ((c10 * x0 + c11 * x1) + (c12 * x2 + c13 * x3)) + (
                    (c14 * x4 + c15 * x5) + (c16 * x6 + c17 * x7))
                G[g0 + 2, k] += ((c20 * x0 + c21 * x1) + (c22 * x2 + c23 * x3)) + (
                    (c24 * x4 + c25 * x5) + (c26 * x6 + c27 * x7))
                G[g0 + 3, k] += ((c30 * x0 + c31 * x1) + (c32 * x2 + c33 * x3)) + (
                    (c34 * x4 + c35 * x5) + (c36 * x6 + c37 * x7))
            r += 8
    while r + 4 <= N:
        c00, c01, c02, c03 = delta[r, j0], delta[r + 1, j0], delta[r + 2, j0], delta[r + 3, j0]
        c10, c11, c12, c13 = delta[r, j0 + 1], delta[r + 1, j0 + 1], delta[r + 2, j0 + 1], delta[r + 3, j0 + 1]
        c20, c21, c22, c23 = delta[r, j0 + 2], delta[r + 1, j0 + 2], delta[r + 2, j0 + 2], delta[r + 3, j0 + 2]
        c30, c31, c32, c33 = delta[r, j0 + 3], delta[r + 1, j0 + 3], delta[r + 2, j0 + 3], delta[r + 3, j0 + 3]
        b0 += c00 + c01 + c02 + c03
        b1 += c10 + c11 + c12 + c13
        b2 += c20 + c21 + c22 + c23
        b3 += c30 + c31 + c32 + c33
        for k in range(n_in):
            x0 = a_prev[r, k]
            x1 = a_prev[r + 1, k]
            x2 = a_prev[r + 2, k]
            x3 = a_prev[r + 3, k]
            G[g0, k] += c00 * x0 + c01 * x1 + c02 * x2 + c03 * x3
            G[g0 + 1, k] += c10 * x0 + c11 * x1 + c12 * x2 + c13 * x3
            G[g0 + 2, k] += c20 * x0 + c21 * x1 + c22 * x2 + c23 * x3
            G[g0 + 3, k] += c30 * x0 + c31 * x1 + c32 * x2 + c33 * x3
        r += 4
    for rr in range(r, N):
        c0, c1, c2, c3 = delta[rr, j0], delta[rr, j0 + 1], delta[rr, j0 + 2], delta[rr, j0 + 3]
        b0 += c0
        b1 += c1
        b2 += c2
        b3 += c3
        for k in range(n_in):
            x = a_prev[rr, k]
            G[g0, k] += c0 * x
            G[g0 + 1, k] += c1 * x
            G[g0 + 2, k] += c2 * x
            G[g0 + 3, k] += c3 * x
    return b0, b1, b2, b3


@njit(inline="always")
def _bp3_last_rows(delta, a_prev, gW, gb, j0, j1, with_bias):
    # BP3 and BP4 for the output neurons j0 <= j < j1 of a block of fewer than 4
    N = delta.shape[0]
    n_in = a_prev.shape[1]
    zero = delta.dtype.type(0.0)
    for j in range(j0, j1):
        for k in range(n_in):
            gW[j, k] = zero
    for j in range(j0, j1):
        sb = zero
        for r in range(N):
            c = delta[r, j]
            sb += c
            for k in range(n_in):
                gW[j, k] += c * a_prev[r, k]
        if with_bias:
            gb[j] = sb


@njit(inline="always")
def _store_bias(gb, j0, b0, b1, b2, b3, with_bias):
    if with_bias:
        gb[j0] = b0
        gb[j0 + 1] = b1
        gb[j0 + 2] = b2
        gb[j0 + 3] = b3


def weight_bias_grad_body(delta, a_prev, gW, gb, with_bias):
    n_out = delta.shape[1]
    for jb in prange((n_out + 3) // 4):
        j0 = jb * 4
        j1 = min(j0 + 4, n_out)
        if j1 - j0 == 4:
            b0, b1, b2, b3 = _bp3_four_rows(delta, a_prev, gW, j0, j0)
            _store_bias(gb, j0, b0, b1, b2, b3, with_bias)
        else:
            _bp3_last_rows(delta, a_prev, gW, gb, j0, j1, with_bias)


def weight_bias_grad_tiled_body(delta, a_prev, gW, gb, with_bias):
    """BP3 and BP4 as :func:`weight_bias_grad_body`, each 4-row block summed in a private tile
    (:func:`_tile`) and copied out: what the network kernels run in float32 where a row of a^{l-1}
    is a whole number of pages (``config.BP3_TILE_MIN_ROWS``).  The same sums in the same order."""
    n_out = delta.shape[1]
    n_in = a_prev.shape[1]
    for jb in prange((n_out + 3) // 4):
        j0 = jb * 4
        j1 = min(j0 + 4, n_out)
        if j1 - j0 == 4:
            T = _tile(a_prev)
            b0, b1, b2, b3 = _bp3_four_rows(delta, a_prev, T, 0, j0)
            for j in range(4):
                for k in range(n_in):
                    gW[j0 + j, k] = T[j, k]
            _store_bias(gb, j0, b0, b1, b2, b3, with_bias)
        else:
            _bp3_last_rows(delta, a_prev, gW, gb, j0, j1, with_bias)


def bias_grad_body(delta, gb):
    N, n_out = delta.shape
    zero = delta.dtype.type(0.0)
    for j in prange(n_out):
        s = zero
        for r in range(N):
            s += delta[r, j]
        gb[j] = s


# The twins; every flag is a required argument (an omitted default would be another Numba type,
# so another compiled specialisation of the whole product): linear_forward(W, b, a_prev, act, z, a, derive),
# backprop_delta(W, delta_next, z, act, delta, z_is_derivative), weight_bias_grad(delta, a_prev,
# gW, gb, with_bias) (BP3 alone passes with_bias=False and any row of gW as gb), bias_grad(delta, gb).
linear_forward_serial, linear_forward_parallel = twins(linear_forward_body)
backprop_delta_serial, backprop_delta_parallel = twins(backprop_delta_body)
weight_bias_grad_serial, weight_bias_grad_parallel = twins(weight_bias_grad_body)
weight_bias_grad_tiled_serial, weight_bias_grad_tiled_parallel = twins(weight_bias_grad_tiled_body)
bias_grad_serial, bias_grad_parallel = twins(bias_grad_body)
backprop_delta_transposed_serial, backprop_delta_transposed_parallel = twins(backprop_delta_transposed_body)
transpose_serial, transpose_parallel = twins(transpose_body)
bias_activate_serial, bias_activate_parallel = twins(bias_activate_body)
