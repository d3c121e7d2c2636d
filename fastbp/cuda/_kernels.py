"""The ``@cuda.jit`` kernels, built once per dtype (and tile shape) on first use.

One shared-memory tiled product serves all three products of backpropagation,
each with its neighbours fused into the epilogue or the tile loader:

- mode FORWARD:  z = a^{l-1} · (W^l)^T + b^l, then σ (and, in training, σ' in place of z)
- mode BP2:      δ^l = (δ^{l+1} · W^{l+1}) ⊙ σ'(z^l), σ' read from (and δ written to) the z^l slot
- mode BP3:      [∂C/∂W^l | ∂C/∂b^l] = (δ^l)^T · [a^{l-1} | 1]: BP4's column sums are the
  product with a column of ones appended to a^{l-1} by the tile loader.

Operands are flat arrays with an offset and two strides each, so the host
driver passes three arrays (θ, the workspace and x or the gradient) and never
builds views.  Every thread reaches every ``syncthreads``: out-of-range rows
and columns load zeros and skip the store; nothing returns early.
"""

from __future__ import annotations

import math
import os
from functools import cache
from types import SimpleNamespace

import numba
from numba import cuda  # module-level: the simulator swaps module globals

from .. import config as _config
from .. import losses as _L
from ._device import GELU, SOFTMAX, build, device_function

FORWARD, BP2, BP3 = 0, 1, 2

#: Slots of the float64 counter array ``scratch`` that the loss kernels add to: the batch loss
#: (the sum of the batch means of the launches since it was zeroed), correct and counted
#: predictions (classifiers), the loss times the batch rows (an epoch's loss sum), and the
#: weights' L2 penalty times the batch rows (an epoch's penalty sum).
SCRATCH_LOSS, SCRATCH_CORRECT, SCRATCH_COUNTED, SCRATCH_LOSS_ROWS, SCRATCH_PENALTY_ROWS = range(5)
SCRATCH_SIZE = 5
MSE, CROSS_ENTROPY, BINARY_CROSS_ENTROPY = _L.MSE, _L.CROSS_ENTROPY, _L.BINARY_CROSS_ENTROPY

#: Whether the kernels run on Numba's CUDA simulator (``config.CUDA_SIMULATOR``).
SIMULATOR = _config.CUDA_SIMULATOR

# Small launches are intended here (a batch of 32 is one block): Numba's low-occupancy
# warning would fire on every small network.  A user's NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS wins.
if "NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS" not in os.environ:
    numba.config.CUDA_LOW_OCCUPANCY_WARNINGS = 0
    try:  # newer numba-cuda keeps its own copy of the setting
        from numba.cuda.core import config as _cuda_config

        _cuda_config.CUDA_LOW_OCCUPANCY_WARNINGS = 0
    except ImportError:  # pragma: no cover - older numba-cuda, or the simulator
        pass
#: Threads per block of the per-sample (BP1) kernel and of elementwise kernels (``config``).
ROW_THREADS = _config.CUDA_ROW_THREADS
ELEMENT_THREADS = _config.CUDA_ELEMENT_THREADS


@cache
def gemm_kernel(dtype_name: str, BM: int, BN: int, BK: int, TM: int, TN: int):
    """The tiled product kernel for one dtype and tile shape (BM x BN outputs per block,
    TM x TN per thread, BK-deep shared-memory tiles).

    Returns a namespace: ``kernel`` (launch it with ``threads`` threads per block on a grid
    of ceil(NN / tile[1]) x ceil(M / tile[0]) x splits blocks, ``kc`` = the k-range of one
    split, a multiple of BK), ``threads``, ``tile``, ``BK``.
    """
    d = build(dtype_name)
    T = d.T
    ZERO, ONE = d.ZERO, d.ONE
    value, derivative, dfv = d.value, d.derivative, d.derivative_from_value
    SY = BM // TM  # threads along rows
    SX = BN // TN  # threads along columns
    NT = SX * SY
    A_LOADS = (BM * BK + NT - 1) // NT
    B_LOADS = (BN * BK + NT - 1) // NT
    PAD = 1
    AW = BM + PAD  # shared-array shapes must be compile-time constants
    BW = BN + PAD

    @device_function
    def a_index(e, sak):
        """(kk, mm) of the e-th A-tile element a thread loads: along the contiguous index."""
        if sak == 1:
            return e % BK, e // BK
        return e // BM, e % BM

    @device_function
    def b_index(e, sbk):
        if sbk == 1:
            return e % BK, e // BK
        return e // BN, e % BN

    @device_function
    def fetch(A, a_off, sam, sak, B, b_off, sbk, sbn, M, NN, K, m0, n0, k0, t, ones_col, pa, pb):
        """Global loads of one pair of tiles into registers (zeros outside the matrices)."""
        for r in range(A_LOADS):
            e = t + r * NT
            v = ZERO
            if e < BM * BK:
                kk, mm = a_index(e, sak)
                m = m0 + mm
                k = k0 + kk
                if m < M and k < K:
                    v = A[a_off + m * sam + k * sak]
            pa[r] = v
        for r in range(B_LOADS):
            e = t + r * NT
            v = ZERO
            if e < BN * BK:
                kk, nn = b_index(e, sbk)
                n = n0 + nn
                k = k0 + kk
                if k < K:
                    if n == ones_col:
                        v = ONE
                    elif n < NN:
                        v = B[b_off + k * sbk + n * sbn]
            pb[r] = v

    @cuda.jit(fastmath=False)
    def gemm(mode, A, a_off, sam, sak, B, b_off, sbk, sbn, M, NN, K, out, o_off, aux_off, act, flag, kc):
        As = cuda.shared.array((BK, AW), T)
        Bs = cuda.shared.array((BK, BW), T)
        acc = cuda.local.array((TM, TN), T)
        ra = cuda.local.array(TM, T)
        rb = cuda.local.array(TN, T)
        pa = cuda.local.array(A_LOADS, T)
        pb = cuda.local.array(B_LOADS, T)
        t = cuda.threadIdx.x
        tx = t % SX
        ty = t // SX
        m0 = cuda.blockIdx.y * BM
        n0 = cuda.blockIdx.x * BN
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = ZERO
        ones_col = NN - 1 if (mode == BP3 and flag == 1) else -1
        n_w = NN - 1 if ones_col >= 0 else NN
        # Software pipeline: the next pair of tiles is fetched into registers while the
        # current one, in shared memory, is multiplied.
        # Split-K (BP3 only): block z sums k in [kb, ke) and adds its partial product atomically.
        kb = cuda.blockIdx.z * kc
        ke = min(K, kb + kc)
        split = cuda.gridDim.z > 1
        fetch(A, a_off, sam, sak, B, b_off, sbk, sbn, M, NN, ke, m0, n0, kb, t, ones_col, pa, pb)
        for k0 in range(kb, ke, BK):
            for r in range(A_LOADS):
                e = t + r * NT
                if e < BM * BK:
                    kk, mm = a_index(e, sak)
                    As[kk, mm] = pa[r]
            for r in range(B_LOADS):
                e = t + r * NT
                if e < BN * BK:
                    kk, nn = b_index(e, sbk)
                    Bs[kk, nn] = pb[r]
            cuda.syncthreads()
            if k0 + BK < ke:
                fetch(A, a_off, sam, sak, B, b_off, sbk, sbn, M, NN, ke, m0, n0, k0 + BK, t, ones_col, pa, pb)
            for kk in range(BK):
                for i in range(TM):
                    ra[i] = As[kk, ty + i * SY]
                for j in range(TN):
                    rb[j] = Bs[kk, tx + j * SX]
                for i in range(TM):
                    for j in range(TN):
                        acc[i, j] += ra[i] * rb[j]
            cuda.syncthreads()
        # Epilogue.
        for i in range(TM):
            m = m0 + ty + i * SY
            if m < M:
                for j in range(TN):
                    n = n0 + tx + j * SX
                    if n < NN:
                        v = acc[i, j]
                        if mode == FORWARD:
                            v += B[aux_off + n]
                            p = o_off + m * NN + n
                            if act == SOFTMAX:
                                out[p] = v
                            elif flag == 1:
                                # σ' from a = σ(z) where it can be (one exp for sigmoid and tanh)
                                av = value(act, v)
                                out[p] = derivative(act, v) if act == GELU else dfv(act, av)
                                out[p + M * NN] = av
                            else:
                                out[p] = v
                                out[p + M * NN] = value(act, v)
                        elif mode == BP2:
                            p = o_off + m * NN + n
                            out[p] = v * out[p]
                        else:
                            q = aux_off + m if n == ones_col else o_off + m * n_w + n
                            if split:
                                cuda.atomic.add(out, q, v)
                            else:
                                out[q] = v

    return SimpleNamespace(kernel=gemm, threads=NT, tile=(BM, BN), BK=BK)


@cache
def row_kernels(dtype_name: str):
    """BP1 (and the softmax of the output layer): one block of ROW_THREADS per sample."""
    d = build(dtype_name)
    T = d.T
    ZERO, ONE, HALF = d.ZERO, d.ONE, d.HALF
    derivative = d.derivative
    RT = ROW_THREADS

    @cuda.jit(device=True)
    def block_sum(red, v):
        t = cuda.threadIdx.x
        red[t] = v
        cuda.syncthreads()
        s = RT // 2
        while s > 0:
            if t < s:
                red[t] += red[t + s]
            cuda.syncthreads()
            s //= 2
        r = red[0]
        cuda.syncthreads()
        return r

    @cuda.jit(device=True)
    def block_max(red, v):
        t = cuda.threadIdx.x
        red[t] = v
        cuda.syncthreads()
        s = RT // 2
        while s > 0:
            if t < s:
                if red[t + s] > red[t]:
                    red[t] = red[t + s]
            cuda.syncthreads()
            s //= 2
        r = red[0]
        cuda.syncthreads()
        return r

    @cuda.jit(fastmath=False)
    def output_delta(work, z_off, N, nL, act, loss, y, labels, sw, sw_scale, scratch, train):
        """BP1: δ^L = ∇_a C ⊙ σ'(z^L), written over z^L; the loss sum goes to scratch[SCRATCH_LOSS].

        For a softmax output a^L is formed here (from z^L) first.  ``labels`` = 1: y is
        an (N, 1) integer array of class labels; ``sw_scale`` > 0: sample n weighs
        sw[n] * sw_scale instead of 1/N.
        """
        red = cuda.shared.array(RT, T)
        n = cuda.blockIdx.x
        t = cuda.threadIdx.x
        zb = z_off + n * nL
        ab = zb + N * nL
        mx = ZERO
        lse = ZERO
        if act == SOFTMAX or (train == 1 and loss == CROSS_ENTROPY):
            mx = work[zb]
            for j in range(t, nL, RT):
                if work[zb + j] > mx:
                    mx = work[zb + j]
            mx = block_max(red, mx)
            s = ZERO
            for j in range(t, nL, RT):
                s += math.exp(work[zb + j] - mx)
            s = block_sum(red, s)
            lse = mx + math.log(s)
            if act == SOFTMAX:
                inv = ONE / s
                for j in range(t, nL, RT):
                    work[ab + j] = math.exp(work[zb + j] - mx) * inv
        if train == 1:
            scale = ONE / T(N)
            if sw_scale > 0:
                scale = sw[n] * T(sw_scale)
            lab = -1
            if labels == 1:
                lab = int(y[n, 0])
            total = ZERO
            if loss == CROSS_ENTROPY:
                sy = ZERO
                for j in range(t, nL, RT):
                    yj = (ONE if j == lab else ZERO) if labels == 1 else T(y[n, j])
                    sy += yj
                    total += yj * (lse - work[zb + j])
                sy = block_sum(red, sy)
                for j in range(t, nL, RT):
                    yj = (ONE if j == lab else ZERO) if labels == 1 else T(y[n, j])
                    work[zb + j] = scale * (work[ab + j] * sy - yj)
            elif loss == BINARY_CROSS_ENTROPY:
                for j in range(t, nL, RT):
                    yj = (ONE if j == lab else ZERO) if labels == 1 else T(y[n, j])
                    zj = work[zb + j]
                    total += max(zj, ZERO) - zj * yj + math.log1p(math.exp(-abs(zj)))
                    work[zb + j] = scale * (work[ab + j] - yj)
            elif act == SOFTMAX:
                ga = ZERO
                for j in range(t, nL, RT):
                    yj = (ONE if j == lab else ZERO) if labels == 1 else T(y[n, j])
                    dj = work[ab + j] - yj
                    total += HALF * dj * dj
                    ga += dj * work[ab + j]
                ga = block_sum(red, ga)
                for j in range(t, nL, RT):
                    yj = (ONE if j == lab else ZERO) if labels == 1 else T(y[n, j])
                    aj = work[ab + j]
                    work[zb + j] = scale * aj * ((aj - yj) - ga)
            else:
                for j in range(t, nL, RT):
                    yj = (ONE if j == lab else ZERO) if labels == 1 else T(y[n, j])
                    dj = work[ab + j] - yj
                    total += HALF * dj * dj
                    work[zb + j] = scale * dj * derivative(act, work[zb + j])
            total = block_sum(red, total)
            if t == 0:
                c = float(total) * float(scale)
                cuda.atomic.add(scratch, SCRATCH_LOSS, c)
                cuda.atomic.add(scratch, SCRATCH_LOSS_ROWS, c * N)
                if loss == CROSS_ENTROPY:
                    # accuracy: argmax of a^L against the label (or the argmax of y)
                    best = 0
                    for j in range(1, nL):
                        if work[ab + j] > work[ab + best]:
                            best = j
                    target = lab
                    if labels == 0:
                        target = 0
                        for j in range(1, nL):
                            if y[n, j] > y[n, target]:
                                target = j
                    cuda.atomic.add(scratch, SCRATCH_CORRECT, 1.0 if best == target else 0.0)
                    cuda.atomic.add(scratch, SCRATCH_COUNTED, 1.0)
                elif loss == BINARY_CROSS_ENTROPY:
                    right = 0.0
                    for j in range(nL):
                        yj = (ONE if j == lab else ZERO) if labels == 1 else T(y[n, j])
                        right += 1.0 if (work[ab + j] > HALF) == (yj > HALF) else 0.0
                    cuda.atomic.add(scratch, SCRATCH_CORRECT, right)
                    cuda.atomic.add(scratch, SCRATCH_COUNTED, float(nL))

    return SimpleNamespace(output_delta=output_delta)


@cache
def elementwise_kernels(dtype_name: str):
    """Optimizer updates and input checks: one thread per element, grid-stride loops."""
    d = build(dtype_name)
    T = d.T
    ONE = d.ONE

    @cuda.jit(fastmath=False)
    def sgd_step(params, grad, velocity, lr, momentum, nesterov, weight_decay, zero_grad):
        """θ ← θ − η (g + μ v'), v' = μ v + g + λθ (PyTorch's SGD; see fastbp.cpu.optim).

        ``zero_grad`` = 1 sets grad to 0 after reading it, ready for the next accumulation."""
        eta = T(lr)
        mu = T(momentum)
        lam = T(weight_decay)
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        for i in range(start, params.shape[0], stride):
            g = grad[i] + lam * params[i]
            if zero_grad == 1:
                grad[i] = T(0.0)
            if momentum == 0:
                params[i] -= eta * g
            else:
                v = mu * velocity[i] + g
                velocity[i] = v
                if nesterov:
                    params[i] -= eta * (g + mu * v)
                else:
                    params[i] -= eta * v

    @cuda.jit(fastmath=False)
    def adam_step(params, grad, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled, zero_grad):
        """Adam / AdamW step in place (see fastbp.cpu.optim); ``zero_grad`` as for sgd_step."""
        P = params.shape[0]
        b1 = T(beta1)
        b2 = T(beta2)
        c1 = T(1.0 - beta1**t)
        c2 = T(1.0 - beta2**t)
        step = T(lr) / c1
        inv_sqrt_c2 = T(1.0 / math.sqrt(float(c2)))
        e = T(eps)
        lam = T(0.0) if decoupled else T(weight_decay)
        shrink = T(1.0 - lr * weight_decay) if decoupled else ONE
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        for i in range(start, P, stride):
            p = params[i] * shrink
            g = grad[i] + lam * p
            if zero_grad == 1:
                grad[i] = T(0.0)
            mi = b1 * m[i] + (ONE - b1) * g
            vi = b2 * v[i] + (ONE - b2) * g * g
            m[i] = mi
            v[i] = vi
            params[i] = p - step * mi / (math.sqrt(vi) * inv_sqrt_c2 + e)

    @cuda.jit(fastmath=False)
    def sum_squares(grad, scratch, slot):
        """scratch[slot] += Σ grad² (float64), for the gradient norm."""
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        s = 0.0
        for i in range(start, grad.shape[0], stride):
            g = float(grad[i])
            s += g * g
        cuda.atomic.add(scratch, slot, s)

    @cuda.jit(fastmath=False)
    def weight_penalty(params, grad, is_weight, scale, rows, scratch, slot):
        """The weights' L2 penalty (s/2) Σ_l ‖W^l‖²: grad[i] += s θ_i where is_weight[i], and
        scratch[slot] += rows · (s/2) Σ W² (float64); as fastbp.cpu.train.add_weight_penalty."""
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        f = T(scale)
        s = 0.0
        for i in range(start, params.shape[0], stride):
            if is_weight[i]:
                w = params[i]
                s += float(w) * float(w)
                grad[i] += f * w
        cuda.atomic.add(scratch, slot, 0.5 * scale * rows * s)

    @cuda.jit(fastmath=False)
    def scale_if_above(grad, scratch, slot, max_norm):
        """Clip: grad *= max_norm / ‖grad‖ when ‖grad‖ > max_norm (norm² in scratch[slot])."""
        norm = math.sqrt(scratch[slot])
        if norm > max_norm:
            f = T(max_norm / norm)
            start = cuda.grid(1)
            stride = cuda.gridsize(1)
            for i in range(start, grad.shape[0], stride):
                grad[i] *= f

    @cuda.jit(fastmath=False)
    def check_values(arr, lo, hi, flags):
        """flags[0] = 1 if an element of the 1-D ``arr`` is non-finite; flags[1] = 1 if one lies
        outside [lo, hi]."""
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        for i in range(start, arr.shape[0], stride):
            fv = float(arr[i])
            if not math.isfinite(fv):
                flags[0] = 1
            elif fv < lo or fv > hi:
                flags[1] = 1

    @cuda.jit(fastmath=False)
    def fill(arr, val):
        """arr[:] = val for a 1-D array."""
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        v = T(val)
        for i in range(start, arr.shape[0], stride):
            arr[i] = v

    @cuda.jit(fastmath=False)
    def derive(z, act, out):
        """out = σ'(z) for 1-D arrays (elementwise activations)."""
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        for i in range(start, z.shape[0], stride):
            out[i] = d.derivative(act, z[i])

    @cuda.jit(fastmath=False)
    def gather_rows(src, perm, dst):
        """dst[r, :] = src[perm[r], :] (2-D arrays)."""
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        cols = src.shape[1]
        for e in range(start, dst.shape[0] * cols, stride):
            r = e // cols
            c = e % cols
            dst[r, c] = src[perm[r], c]

    return SimpleNamespace(
        sgd_step=sgd_step,
        adam_step=adam_step,
        sum_squares=sum_squares,
        weight_penalty=weight_penalty,
        scale_if_above=scale_if_above,
        check_values=check_values,
        fill=fill,
        derive=derive,
        gather_rows=gather_rows,
    )


def grid_1d(n: int, threads: int = ELEMENT_THREADS, max_blocks: int = 4 if SIMULATOR else 1024) -> int:
    return max(1, min(max_blocks, (n + threads - 1) // threads))


def ceil_div(a: int, b: int) -> int:
    return (a + b - 1) // b


__all__ = [
    "BP2",
    "BP3",
    "ELEMENT_THREADS",
    "FORWARD",
    "ROW_THREADS",
    "SIMULATOR",
    "ceil_div",
    "elementwise_kernels",
    "gemm_kernel",
    "grid_1d",
    "row_kernels",
]
