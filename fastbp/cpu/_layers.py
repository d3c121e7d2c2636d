"""Bodies of the per-layer kernels, one per equation, written once, and their twins.

The three products -- the forward product, BP2 and BP3 -- run the register-tile micro-kernel of
:mod:`fastbp.cpu._tile`: every element of a product is one chain of fused multiply-adds along
its sum, in the order of that sum, so the result does not depend on the tile, the vector width,
the instruction set, the thread count or which twin ran.

- forward: z = a^{l-1} (W^l)^T + b, rows of a^{l-1} times panels of W^l transposed;
- BP2: δ^{l-1} = (δ^l W^l) ⊙ σ'(z^{l-1}), rows of δ^l times panels of W^l;
- BP3: ∂C/∂W^l = (δ^l)^T a^{l-1}, summed over the batch in the order of its rows, with the
  vectors along n_{l-1} or, where that takes half the vector operations, along n_l (then stored
  transposed).

The forward product and BP2 first pack W^l (or its transpose) into panels of NR columns, each a
contiguous (K, NR) block and the last one as wide as the columns left: a row of a panel is whole
vector loads, and a panel lies in consecutive cache lines, whatever the layer's widths (rows of
whole 4 KiB pages would otherwise fall on the same cache sets).  The panels take exactly the
n_{l-1} n_l elements of W^l: the training step packs into the gradient's slot of W^l, which BP3
overwrites afterwards, so the whole-network kernels need no other buffer.

Each body loops with ``prange`` over tasks that own whole blocks of the output (panels of
columns times chunks of rows), so there are no races, and is compiled twice, as a serial
function and as a ``parallel=True`` one (``*_serial``, ``*_parallel`` at the end of this
module).  They trust their input: shapes agree, arrays do not alias except where the docstring
allows it.  Validation happens once, at the public boundary.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .._cache import cached_njit
from ..activations import activate_and_derive_rows, activate_rows, scale_by_derivative_rows
from ..config import FASTMATH, PARALLEL_TASKS
from ..losses import BINARY_CROSS_ENTROPY, CROSS_ENTROPY, output_delta_at
from ._tile import tile_dims, tile_fma
from ._twins import twins


@njit(inline="always")
def _split(n_rows, n_panels, MR):
    # (row chunks, rows per chunk): the panels times row chunks make about PARALLEL_TASKS tasks
    # (the split changes which thread computes an element, never how)
    tiles = (n_rows + MR - 1) // MR
    chunks = min(tiles, max(1, (PARALLEL_TASKS + n_panels - 1) // n_panels))
    per = (tiles + chunks - 1) // chunks * MR
    return (n_rows + per - 1) // per, per


# Panels: B (K, n) packed into panels of NR columns, panel p at P[p K NR] with B[k, p NR + c] at
# P[p K NR + k w + c], w = min(NR, n - p NR); the panels take K n elements of P.


@njit(inline="always")
def _pack_transposed_panel(M, P, p):
    # panel p of B = M^T (M is (n, K)), read along M's rows
    MR, NR = tile_dims(P)
    n, K = M.shape
    j0 = p * NR
    w = min(NR, n - j0)
    base = p * K * NR
    for c in range(w):
        for k in range(K):
            P[base + k * w + c] = M[j0 + c, k]


@njit(inline="always")
def _pack_rows(M, P, kb):
    # rows 64 kb .. 64 kb + 63 of B = M (K, n), each read once and cut into its panels
    MR, NR = tile_dims(P)
    K, n = M.shape
    for k in range(kb * 64, min(K, kb * 64 + 64)):
        for p in range((n + NR - 1) // NR):
            j0 = p * NR
            w = min(NR, n - j0)
            o = p * K * NR + k * w
            for c in range(w):
                P[o + c] = M[k, j0 + c]


@njit(inline="always")
def _panel_task(A, P, C, K, t, chunks, per, scale):
    """Task t of C (N, n) = A (N, K) B (⊙ C with ``scale``), B packed in P: the tiles of one chunk
    of rows of one panel (see _split)."""
    MR, NR = tile_dims(P)
    N, n = C.shape
    p = t // chunks
    w = min(NR, n - p * NR)
    r1 = min(N, (t % chunks + 1) * per)
    for i0 in range((t % chunks) * per, r1, MR):
        tile_fma(A, i0 * K, K, 1, P, p * K * NR, w, K, C, i0 * n + p * NR, n, 1, min(MR, r1 - i0), w, scale)


@njit(inline="always")
def _panel_tasks(C, P):
    # (tasks, chunks, rows per chunk) of a product into C from panels packed in P
    MR, NR = tile_dims(P)
    n_panels = (C.shape[1] + NR - 1) // NR
    chunks, per = _split(C.shape[0], n_panels, MR)
    return n_panels * chunks, chunks, per


def linear_forward_body(W, b, a_prev, act, z, a, derive, pack):
    """z = a_prev W^T + b and a = σ(z) (with ``derive``, z is then replaced by σ'(z)).

    z_rj = Σ_k a_prev,rk W_jk + b_j: the sum in the order of k, then b_j.  ``pack`` (at least
    W.size elements) receives W^T's panels.
    """
    N = a_prev.shape[0]
    K = W.shape[1]
    tasks, chunks, per = _panel_tasks(z, pack)
    for p in prange(tasks // chunks):
        _pack_transposed_panel(W, pack, p)
    for t in prange(tasks):
        _panel_task(a_prev, pack, z, K, t, chunks, per, False)
    n = z.shape[1]
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


def backprop_delta_body(W, delta_next, z, act, delta, in_place, pack):
    """δ = (δ_next W) ⊙ σ'(z): δ_rk = (Σ_j δ_next,rj W_jk) σ'(z_rk), the sum in the order of j.

    With ``in_place``, ``z`` holds σ'(z) and ``delta`` is ``z``: each element is scaled as its
    tile is stored.  Otherwise ``delta`` must not alias ``z`` or ``delta_next``, and σ'(z) is
    computed from z.  ``pack`` (at least W.size elements) receives W's panels.
    """
    N = z.shape[0]
    K = W.shape[0]
    tasks, chunks, per = _panel_tasks(delta, pack)
    for kb in prange((K + 63) // 64):
        _pack_rows(W, pack, kb)
    for t in prange(tasks):
        _panel_task(delta_next, pack, delta, K, t, chunks, per, in_place)
    if not in_place:
        for rb in prange((N + 3) // 4):
            r0 = rb * 4
            scale_by_derivative_rows(act, z, delta, delta, r0, min(r0 + 4, N))


def weight_bias_grad_body(delta, a_prev, gW, gb, with_bias):
    """∂C/∂W_jk = Σ_r δ_rj a_prev,rk and (``with_bias``) ∂C/∂b_j = Σ_r δ_rj, in the order of r.

    The vectors run along k (tiles of output neurons j times panels of inputs k), or, where
    that takes fewer than half as many vector operations, along j (tiles of k times panels of j,
    stored transposed, element by element).
    """
    N, n_out = delta.shape
    n_in = a_prev.shape[1]
    MR, NR = tile_dims(gW)
    along_out = 2 * ((n_out + NR - 1) // NR) * n_in <= ((n_in + NR - 1) // NR) * n_out
    if along_out:  # C (n_in, n_out) = a_prev^T delta, stored into gW transposed
        rows, cols, A, B, ars, aks, cis, cjs = n_in, n_out, a_prev, delta, 1, n_in, 1, n_in
    else:  # C (n_out, n_in) = delta^T a_prev
        rows, cols, A, B, ars, aks, cis, cjs = n_out, n_in, delta, a_prev, 1, n_out, n_in, 1
    n_panels = (cols + NR - 1) // NR
    chunks, per = _split(rows, n_panels, MR)
    for t in prange(n_panels * chunks + 1):
        if t == n_panels * chunks:  # BP4, one more task
            if with_bias:
                _bias_sums(delta, gb, 0, n_out)
            continue
        p = t // chunks
        r1 = min(rows, (t % chunks + 1) * per)
        for i0 in range((t % chunks) * per, r1, MR):
            tile_fma(A, i0 * ars, ars, aks, B, p * NR, cols, N, gW, i0 * cis + p * NR * cjs, cis, cjs,
                     min(MR, r1 - i0), min(NR, cols - p * NR), False)


@njit(inline="always")
def _bias_sums(delta, gb, j0, j1):
    # gb_j = Σ_r δ_rj for j0 <= j < j1, in the order of r (vectorised along j)
    zero = delta.dtype.type(0.0)
    for j in range(j0, j1):
        gb[j] = zero
    for r in range(delta.shape[0]):
        for j in range(j0, j1):
            gb[j] += delta[r, j]


def bias_grad_body(delta, gb):
    """BP4: gb_j = Σ_r δ_rj, the sum in the order of r; blocks of 64 columns by task."""
    n = delta.shape[1]
    for jb in prange((n + 63) // 64):
        _bias_sums(delta, gb, jb * 64, min(jb * 64 + 64, n))


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


def contiguous(a):
    """``a`` itself where it is typed C-contiguous, else a C-contiguous copy (compiled code only):
    the products address their operands as flat row-major arrays."""
    raise NotImplementedError("contiguous is for compiled code")


@overload(contiguous, inline="always")
def _contiguous(a):
    if a.layout == "C":
        return lambda a: a
    return lambda a: np.ascontiguousarray(a)


def write_back(dst, src):
    """Copy ``src`` (what :func:`contiguous` gave for ``dst``) into ``dst`` unless it is ``dst``."""
    raise NotImplementedError("write_back is for compiled code")


@overload(write_back, inline="always")
def _write_back(dst, src):
    if dst.layout == "C":
        return lambda dst, src: None

    def impl(dst, src):
        dst[...] = src

    return impl


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




# The twins; every flag is a required argument (an omitted default would be another Numba type,
# so another compiled specialisation of the whole product): linear_forward(W, b, a_prev, act, z, a,
# derive, pack), backprop_delta(W, delta_next, z, act, delta, in_place, pack),
# weight_bias_grad(delta, a_prev, gW, gb, with_bias) (BP3 alone passes with_bias=False and any row
# of gW as gb), bias_grad(delta, gb).
linear_forward_serial, linear_forward_parallel = twins(linear_forward_body)
backprop_delta_serial, backprop_delta_parallel = twins(backprop_delta_body)
weight_bias_grad_serial, weight_bias_grad_parallel = twins(weight_bias_grad_body)
bias_grad_serial, bias_grad_parallel = twins(bias_grad_body)
