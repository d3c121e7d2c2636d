"""Bodies of the per-layer kernels, one per equation, written once.

Each body is ``@njit(inline="always")`` and loops with ``prange`` over an
index its thread owns (samples for the forward pass and BP2, output neurons
for BP3/BP4), so there are no races and no atomic updates, and the result does
not depend on the thread count.  Inlined into a ``parallel=True`` function
the ``prange`` loops run in parallel; inlined into a serial function they are
plain loops.  Both the public per-layer kernels and the whole-network kernels
are compiled from these bodies.

They trust their input: shapes agree, arrays do not alias except where the
docstring allows it.  Validation happens once, at the public boundary.
"""

from __future__ import annotations

from numba import njit, prange

from ..activations import activate_row, scale_by_derivative_row
from ..config import FASTMATH
from ..losses import output_delta_row

_inline = njit(inline="always")


@_inline
def linear_forward_body(W, b, a_prev, act, z, a):
    N = a_prev.shape[0]
    n_out, n_in = W.shape
    for r in prange(N):
        for j in range(n_out):
            s = b[j]
            for k in range(n_in):
                s += W[j, k] * a_prev[r, k]
            z[r, j] = s
        activate_row(act, z[r], a[r])


@njit(cache=True, fastmath=FASTMATH)
def output_delta_body(loss, act, z, a, y, delta, sample_weight=None):
    N = z.shape[0]
    T = z.dtype.type
    if sample_weight is None:
        scale = T(1.0) / T(N)
        total = 0.0
        for r in range(N):
            if y.ndim == 1:
                total += output_delta_row(loss, act, z[r], a[r], a[r], y[r], scale, delta[r])
            else:
                total += output_delta_row(loss, act, z[r], a[r], y[r], -1, scale, delta[r])
        return total / N
    # Weighted mean: C = Σ_n w_n ℓ_n / Σ_n w_n (zero when every weight is zero).
    w_total = 0.0
    for r in range(N):
        w_total += sample_weight[r]
    inv = 1.0 / w_total if w_total > 0 else 0.0
    total = 0.0
    for r in range(N):
        w = sample_weight[r] * inv
        if y.ndim == 1:
            term = output_delta_row(loss, act, z[r], a[r], a[r], y[r], T(w), delta[r])
        else:
            term = output_delta_row(loss, act, z[r], a[r], y[r], -1, T(w), delta[r])
        total += w * term
    return total


# BP1 is O(N n_L) and serial; it is an ordinary function rather than an inlined
# body because Numba prunes the ``y.ndim`` branch only in a function of its own.


@_inline
def backprop_delta_body(W, delta_next, z, act, delta):
    N = z.shape[0]
    n_next, n = W.shape
    zero = z.dtype.type(0.0)
    for r in prange(N):
        d = delta[r]
        for k in range(n):
            d[k] = zero
        for j in range(n_next):
            c = delta_next[r, j]
            for k in range(n):
                d[k] += c * W[j, k]
        scale_by_derivative_row(act, z[r], d, d)


@_inline
def weight_bias_grad_body(delta, a_prev, gW, gb):
    N, n_out = delta.shape
    n_in = a_prev.shape[1]
    zero = delta.dtype.type(0.0)
    for j in prange(n_out):
        for k in range(n_in):
            gW[j, k] = zero
        sb = zero
        for r in range(N):
            c = delta[r, j]
            sb += c
            for k in range(n_in):
                gW[j, k] += c * a_prev[r, k]
        gb[j] = sb


@_inline
def weight_grad_body(delta, a_prev, gW):
    N, n_out = delta.shape
    n_in = a_prev.shape[1]
    zero = delta.dtype.type(0.0)
    for j in prange(n_out):
        for k in range(n_in):
            gW[j, k] = zero
        for r in range(N):
            c = delta[r, j]
            for k in range(n_in):
                gW[j, k] += c * a_prev[r, k]


@_inline
def bias_grad_body(delta, gb):
    N, n_out = delta.shape
    zero = delta.dtype.type(0.0)
    for j in prange(n_out):
        s = zero
        for r in range(N):
            s += delta[r, j]
        gb[j] = s
