"""The fully fused loss-and-gradient kernel for narrow networks (one launch per step).

In the spirit of tiny-cuda-nn's fully fused MLP: each block carries a tile of S
samples through every layer forward and back with the activations in shared
memory, and never writes an activation to global memory.  It is compiled for
one network (widths, activations and loss are compile-time constants, so the
loops over them have fixed trip counts and the register tiles stay in
registers).

Per tile:

- forward, layer by layer: a^l = σ(a^{l-1} (W^l)^T + b^l), W^l staged (transposed)
  in shared memory, a 2-D register tile per thread (RS samples x RJ neurons);
- BP1 for each sample of the tile: δ^L = ∇_a C ⊙ σ'(z^L) (one thread per sample);
- backward, layer by layer: BP3 + BP4 accumulate (δ^l)^T [a^{l-1} | 1] into per-thread
  accumulators that live across all the tiles of the block, then BP2
  δ^{l-1} = (δ^l W^l) ⊙ σ'(z^{l-1}) overwrites a^{l-1} in place; σ' is recomputed from
  a = σ(z), which every supported activation allows (not gelu);

and at the end each block adds its accumulated gradient to the output with one
atomic add per parameter, so a launch of B blocks makes B·P atomic adds however
large the batch.  The summation order therefore depends on the schedule: the
result agrees with the other kernels to rounding, not bitwise.
"""

from __future__ import annotations

import math
from functools import lru_cache

from numba import cuda  # module-level: the simulator swaps module globals

from .. import activations as _A
from .. import config as _config
from .. import losses as _L
from ._device import SOFTMAX, build, device_function
from ._kernels import SCRATCH_CORRECT, SCRATCH_COUNTED, SCRATCH_LOSS, SCRATCH_LOSS_ROWS

#: Widest layer the fused kernel accepts.
MAX_WIDTH = _config.CUDA_FUSED_MAX_WIDTH
#: Threads per block: 4 warps, each lane 8 samples x 4 neurons.
THREADS = _config.CUDA_FUSED_THREADS
_LS = 8  # lanes along samples
_LJ = 4  # lanes along neurons
_NW = THREADS // 32
_SHARED_BUDGET = _config.CUDA_FUSED_SHARED_BYTES


def _bsh_cols(mw: int) -> int:
    """Columns of the staged-weight tile: every column a thread's register tile touches, plus one."""
    return _LJ * _NW * ((mw + _LJ * _NW - 1) // (_LJ * _NW)) + 1


def _tile_samples(sizes, itemsize: int) -> int:
    """Samples per tile that fit the 48 KiB of static shared memory, or 0."""
    L = len(sizes) - 1
    mw = max(sizes)
    for S in (32, 16, 8):
        need = itemsize * ((L + 1) * S * (mw + 1) + mw * _bsh_cols(mw) + S * (sizes[-1] + 1))
        if need <= _SHARED_BUDGET:
            return S
    return 0


def eligible(sizes, acts, dtype_name: str) -> bool:
    """Whether the fused kernel serves this network: widths <= MAX_WIDTH, no gelu hidden
    layer, and a tile of at least 8 samples fits in shared memory."""
    if max(sizes) > MAX_WIDTH:
        return False
    if any(a == _A.GELU for a in acts[:-1]):
        return False
    itemsize = 4 if dtype_name == "float32" else 8
    return _tile_samples(sizes, itemsize) >= 8


@lru_cache(maxsize=32)
def fused_kernel(dtype_name: str, sizes: tuple, acts: tuple, loss: int):
    """Compile the fused kernel for one network.  Returns (kernel, samples per tile)."""
    d = build(dtype_name)
    T = d.T
    ZERO, ONE, HALF = d.ZERO, d.ONE, d.HALF
    value, derivative, dfv = d.value, d.derivative, d.derivative_from_value
    itemsize = 4 if dtype_name == "float32" else 8
    L = len(sizes) - 1
    S = _tile_samples(sizes, itemsize)
    MW = max(sizes)
    MWP = MW + 1
    L1 = L + 1  # shared-array shapes must be compile-time constants
    BC = _bsh_cols(MW)
    NL = sizes[-1]
    NL1 = NL + 1
    SIZES = tuple(int(v) for v in sizes)
    ACTS = tuple(int(v) for v in acts)
    OUT_ACT = ACTS[-1]
    woff, off = [], 0
    for i in range(L):
        woff.append(off)
        off += sizes[i] * sizes[i + 1] + sizes[i + 1]
    WOFF = tuple(woff)
    RS = S // _LS  # samples per thread in the products
    RJ = (MW + _LJ * _NW - 1) // (_LJ * _NW)  # output columns per thread
    # BP3 ownership: row j = warp + NW*rj, column k = lane + 32*rk; the bias sums separately.
    RJ3 = (MW + _NW - 1) // _NW
    RK3 = (MW + 31) // 32
    ACC = L * RJ3 * RK3
    LOSS = int(loss)
    CE, BCE = _L.CROSS_ENTROPY, _L.BINARY_CROSS_ENTROPY
    # A narrow output layer (a few neurons: regression heads) gets its own small code paths,
    # so that it does not cost as much as a full-width layer.
    NIN_L = SIZES[L - 1]
    SMALL_OUT = NL * S <= THREADS and NL <= 4
    NE_L = NL * (NIN_L + 1)  # last layer's [W | b] entries
    ACC_L = (NE_L + THREADS - 1) // THREADS

    @device_function
    def product(buf, src, Bsh, K, acc, sb, cb):
        """acc[i, r] = Σ_q buf[src, s_i, q] Bsh[q, c_r] for this thread's samples and columns."""
        for i in range(RS):
            for r in range(RJ):
                acc[i, r] = ZERO
        ra = cuda.local.array(RS, T)
        rb = cuda.local.array(RJ, T)
        for q in range(K):
            for i in range(RS):
                ra[i] = buf[src, sb + _LS * i, q]
            for r in range(RJ):
                rb[r] = Bsh[q, cb + _LJ * _NW * r]
            for i in range(RS):
                for r in range(RJ):
                    acc[i, r] += ra[i] * rb[r]

    @cuda.jit(fastmath=False)
    def fused(params, x, y, labels, sw, sw_scale, grad, scratch, N):
        buf = cuda.shared.array((L1, S, MWP), T)  # a^0 .. a^{L-1}, then z^L / δ^L
        Bsh = cuda.shared.array((MW, BC), T)  # W^l staged (transposed for the forward pass)
        aL = cuda.shared.array((S, NL1), T)  # a^L
        gacc = cuda.local.array(ACC, T)
        bacc = cuda.local.array(L1, T)
        gaccL = cuda.local.array(ACC_L, T)
        acc = cuda.local.array((RS, RJ), T)
        acc3 = cuda.local.array((RJ3, RK3), T)
        t = cuda.threadIdx.x
        lane = t % 32
        warp = t // 32
        sb = lane % _LS  # first sample of this thread in the products
        cb = lane // _LS + _LJ * warp  # first column
        for e in range(ACC):
            gacc[e] = ZERO
        for e in range(L1):
            bacc[e] = ZERO
        for e in range(ACC_L):
            gaccL[e] = ZERO
        # Columns of Bsh past a layer's width are read by the register tiles and their results
        # dropped: start them at zero so that they only ever hold finite (stale) weights.
        for r in range(warp, MW, _NW):
            for c in range(lane, BC, 32):
                Bsh[r, c] = ZERO
        loss_sum = 0.0
        correct = 0.0
        counted = 0.0
        ntiles = (N + S - 1) // S
        n0 = SIZES[0]
        for tile in range(cuda.blockIdx.x, ntiles, cuda.gridDim.x):
            base = tile * S
            cuda.syncthreads()  # the previous tile's backward pass is done with buf
            for s in range(warp, S, _NW):
                valid = base + s < N
                for k in range(lane, n0, 32):
                    buf[0, s, k] = x[base + s, k] if valid else ZERO
            # ---- forward ------------------------------------------------------------------
            for l in range(L):
                n_in = SIZES[l]
                n_out = SIZES[l + 1]
                wo = WOFF[l]
                bo = wo + n_in * n_out
                cuda.syncthreads()  # a^{l-1} complete; previous readers of Bsh done
                if SMALL_OUT and l == L - 1:
                    # z^L by direct dot products: one output per thread
                    if t < S * NL:
                        s = t // NL
                        j = t % NL
                        v = params[bo + j]
                        for k in range(NIN_L):
                            v += params[wo + j * NIN_L + k] * buf[l, s, k]
                        buf[L, s, j] = v
                else:
                    for j in range(warp, n_out, _NW):  # W^T into Bsh, coalesced along k
                        for k in range(lane, n_in, 32):
                            Bsh[k, j] = params[wo + j * n_in + k]
                    cuda.syncthreads()
                    product(buf, l, Bsh, n_in, acc, sb, cb)
                    act = ACTS[l]
                    for i in range(RS):
                        s = sb + _LS * i
                        for r in range(RJ):
                            j = cb + _LJ * _NW * r
                            if j < n_out:
                                v = acc[i, r] + params[bo + j]
                                if l == L - 1:
                                    buf[L, s, j] = v
                                else:
                                    buf[l + 1, s, j] = value(act, v)
            cuda.syncthreads()
            # ---- BP1: one thread per sample -----------------------------------------------
            if t < S:
                s = t
                n = base + s
                valid = n < N
                scale = ZERO
                if valid:
                    scale = ONE / T(N)
                    if sw_scale > 0:
                        scale = sw[n] * T(sw_scale)
                lab = -1
                if labels == 1 and valid:
                    lab = int(y[n, 0])
                mx = buf[L, s, 0]
                lse = ZERO
                if OUT_ACT == SOFTMAX or LOSS == CE:
                    for j in range(1, NL):
                        if buf[L, s, j] > mx:
                            mx = buf[L, s, j]
                    se = ZERO
                    for j in range(NL):
                        se += math.exp(buf[L, s, j] - mx)
                    lse = mx + math.log(se)
                for j in range(NL):
                    zj = buf[L, s, j]
                    if OUT_ACT == SOFTMAX:
                        aL[s, j] = math.exp(zj - lse)
                    else:
                        aL[s, j] = value(OUT_ACT, zj)
                total = ZERO
                sy = ZERO
                ga = ZERO
                for j in range(NL):
                    yj = ZERO
                    if valid:
                        yj = (ONE if j == lab else ZERO) if labels == 1 else T(y[n, j])
                    sy += yj
                    dj = aL[s, j] - yj
                    ga += dj * aL[s, j]
                    zj = buf[L, s, j]
                    if LOSS == CE:
                        total += yj * (lse - zj)
                    elif LOSS == BCE:
                        total += max(zj, ZERO) - zj * yj + math.log1p(math.exp(-abs(zj)))
                    else:
                        total += HALF * dj * dj
                for j in range(NL):
                    yj = ZERO
                    if valid:
                        yj = (ONE if j == lab else ZERO) if labels == 1 else T(y[n, j])
                    aj = aL[s, j]
                    if LOSS == CE:
                        dl = aj * sy - yj
                    elif LOSS == BCE:
                        dl = aj - yj
                    elif OUT_ACT == SOFTMAX:
                        dl = aj * ((aj - yj) - ga)
                    else:
                        dl = (aj - yj) * derivative(OUT_ACT, buf[L, s, j])
                    buf[L, s, j] = scale * dl
                if valid:
                    loss_sum += float(total) * float(scale)
                    if LOSS == CE:
                        best = 0
                        for j in range(1, NL):
                            if aL[s, j] > aL[s, best]:
                                best = j
                        target = lab
                        if labels == 0:
                            target = 0
                            for j in range(1, NL):
                                if y[n, j] > y[n, target]:
                                    target = j
                        correct += 1.0 if best == target else 0.0
                        counted += 1.0
                    elif LOSS == BCE:
                        for j in range(NL):
                            yj = (ONE if j == lab else ZERO) if labels == 1 else T(y[n, j])
                            correct += 1.0 if (aL[s, j] > HALF) == (yj > HALF) else 0.0
                        counted += NL
            # ---- backward -----------------------------------------------------------------
            for l in range(L - 1, -1, -1):
                n_in = SIZES[l]
                n_out = SIZES[l + 1]
                wo = WOFF[l]
                cuda.syncthreads()  # δ^{l+1} complete; Bsh free
                if SMALL_OUT and l == L - 1:
                    # BP3 + BP4 of the narrow output layer: entry e = (j, k) of [W | b]
                    for r in range(ACC_L):
                        e = t + r * THREADS
                        if e < NE_L:
                            j = e // (NIN_L + 1)
                            k = e % (NIN_L + 1)
                            v = ZERO
                            for s in range(S):
                                v += buf[L, s, j] * (buf[l, s, k] if k < NIN_L else ONE)
                            gaccL[r] += v
                else:
                    # BP3: acc3[rj, rk] += Σ_s δ[s, j] a[s, k]
                    g0 = l * RJ3 * RK3
                    for rj in range(RJ3):
                        for rk in range(RK3):
                            acc3[rj, rk] = ZERO
                    for s in range(S):
                        for rj in range(RJ3):
                            dj = buf[l + 1, s, warp + _NW * rj] if warp + _NW * rj < n_out else ZERO
                            for rk in range(RK3):
                                k = lane + 32 * rk
                                ak = buf[l, s, k] if k < n_in else ZERO
                                acc3[rj, rk] += dj * ak
                    for rj in range(RJ3):
                        for rk in range(RK3):
                            gacc[g0 + rj * RK3 + rk] += acc3[rj, rk]
                    # BP4: thread t sums neuron t's δ over the tile
                    if t < n_out:
                        v = ZERO
                        for s in range(S):
                            v += buf[l + 1, s, t]
                        bacc[l] += v
                if l > 0:
                    # BP2: δ^l = (δ^{l+1} W) ⊙ σ'(z^l), written over a^l in place.
                    for j in range(warp, n_out, _NW):
                        for k in range(lane, n_in, 32):
                            Bsh[j, k] = params[wo + j * n_in + k]
                    cuda.syncthreads()  # Bsh staged; BP3's reads of buf[l] are done
                    product(buf, l + 1, Bsh, n_out, acc, sb, cb)
                    act = ACTS[l - 1]
                    for i in range(RS):
                        s = sb + _LS * i
                        for r in range(RJ):
                            k = cb + _LJ * _NW * r
                            if k < n_in:
                                buf[l, s, k] = acc[i, r] * dfv(act, buf[l, s, k])
        # ---- one atomic add per parameter and block ------------------------------------------
        for l in range(L):
            n_in = SIZES[l]
            n_out = SIZES[l + 1]
            wo = WOFF[l]
            bo = wo + n_in * n_out
            if SMALL_OUT and l == L - 1:
                for r in range(ACC_L):
                    e = t + r * THREADS
                    if e < NE_L:
                        j = e // (NIN_L + 1)
                        k = e % (NIN_L + 1)
                        if k < NIN_L:
                            cuda.atomic.add(grad, wo + j * NIN_L + k, gaccL[r])
                        else:
                            cuda.atomic.add(grad, bo + j, gaccL[r])
            else:
                g0 = l * RJ3 * RK3
                for rj in range(RJ3):
                    j = warp + _NW * rj
                    if j < n_out:
                        for rk in range(RK3):
                            k = lane + 32 * rk
                            if k < n_in:
                                cuda.atomic.add(grad, wo + j * n_in + k, gacc[g0 + rj * RK3 + rk])
                if t < n_out:
                    cuda.atomic.add(grad, bo + t, bacc[l])
        if t < S:
            cuda.atomic.add(scratch, SCRATCH_LOSS, loss_sum)
            cuda.atomic.add(scratch, SCRATCH_LOSS_ROWS, loss_sum * N)
            if LOSS == CE or LOSS == BCE:
                cuda.atomic.add(scratch, SCRATCH_CORRECT, correct)
                cuda.atomic.add(scratch, SCRATCH_COUNTED, counted)

    return fused, S


__all__ = ["MAX_WIDTH", "THREADS", "eligible", "fused_kernel"]
