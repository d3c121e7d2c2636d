"""Host drivers of the CUDA kernels: whole-network forward, loss-and-gradient, optimizer steps.

Everything stays on the device: θ, the gradient, the workspace (the layout of
:mod:`fastbp.layout`, [z^1, a^1, z^2, a^2, ...]) and a small float64
``scratch`` array of counters (slot 0: the loss of the last call; 1 and 2:
correct and counted predictions; 3: Σ loss·N over calls, for epoch means).

A step needs few launches with few array arguments (a Numba launch costs several
microseconds, and more for each array argument): networks of widths up to
:data:`fastbp.cuda._fused.MAX_WIDTH` take one launch of the fully fused kernel;
wider ones take one tiled-product launch per product and layer plus one BP1
launch, each with three arrays (θ, the workspace, x or the gradient).
"""

from __future__ import annotations

import math

import numpy as np

from .. import activations as _A
from .. import config as _config
from ..optim import HP_EPS_HAT, HP_FLAG, HP_H1, HP_H2, HP_H3, HP_LR, HP_WEIGHT_DECAY
from . import _fused
from ._kernels import (  # noqa: F401 - the SCRATCH_* slots are re-exported
    BP2,
    BP3,
    ELEMENT_THREADS,
    FORWARD,
    ROW_THREADS,
    SCRATCH_CORRECT,
    SCRATCH_COUNTED,
    SCRATCH_LOSS,
    SCRATCH_LOSS_ROWS,
    SCRATCH_PENALTY_ROWS,
    SCRATCH_SIZE,
    SIMULATOR,
    ceil_div,
    elementwise_kernels,
    gemm_kernel,
    grid_1d,
    row_kernels,
)

__all__ = [
    "SCRATCH_SIZE",
    "forward",
    "loss_and_grad",
    "step_loss_and_grad",
]



def dtype_name(arr) -> str:
    return np.dtype(arr.dtype).name


def _offsets(sizes):
    L = len(sizes) - 1
    wo, off = [], 0
    for i in range(L):
        wo.append(off)
        off += sizes[i] * sizes[i + 1] + sizes[i + 1]
    return wo


def layer_offset(sizes, layer: int, n: int) -> int:
    return 2 * n * sum(sizes[1 : layer + 1])


def gemm(dt: str):
    return gemm_kernel(dt, *_config.CUDA_GEMM_TILE)


def _sm_count() -> int:
    from numba import cuda

    return int(getattr(cuda.get_current_device(), "MULTIPROCESSOR_COUNT", 1))


def k_splits(k, M: int, NN: int, K: int) -> int:
    """How many k-ranges a BP3 product is split into: enough blocks to fill the GPU
    (``config.CUDA_SPLIT_K_TARGET_BLOCKS``, default two per multiprocessor), each range at least 8 tiles deep."""
    BM, BN = k.tile
    blocks = ceil_div(NN, BN) * ceil_div(M, BM)
    target = _config.CUDA_SPLIT_K_TARGET_BLOCKS
    if target is None:
        target = 2 * _sm_count()
    if blocks >= target:
        return 1
    return max(1, min(ceil_div(target, blocks), K // (8 * k.BK)))


def launch_gemm(k, mode, A, a_off, sam, sak, B, b_off, sbk, sbn, M, NN, K, out, o_off, aux_off, act, flag, splits=1):
    BM, BN = k.tile
    kc = ceil_div(ceil_div(K, splits), k.BK) * k.BK
    splits = ceil_div(K, kc) if K > 0 else 1
    grid = (ceil_div(NN, BN), ceil_div(M, BM), splits)
    k.kernel[grid, k.threads](
        mode, A, a_off, sam, sak, B, b_off, sbk, sbn, M, NN, K, out, o_off, aux_off, act, flag, kc
    )


def _forward_layers(params, sizes, acts, x, work, n, train):
    """Forward pass through every layer into the workspace (softmax left to the BP1 kernel)."""
    k = gemm(dtype_name(params))
    wo = _offsets(sizes)
    L = len(sizes) - 1
    x = flat(x)
    for l in range(L):
        n_in, n_out = sizes[l], sizes[l + 1]
        zo = layer_offset(sizes, l, n)
        src, s_off = (x, 0) if l == 0 else (work, zo - n * n_in)
        derive = 1 if (train and l < L - 1) else 0
        # z = a^{l-1} W^T + b: A(m, k) = a[m, k], B(k, n) = W[n, k]
        launch_gemm(
            k,
            FORWARD,
            src,
            s_off,
            n_in,
            1,
            params,
            wo[l],
            1,
            n_in,
            n,
            n_out,
            n_in,
            work,
            zo,
            wo[l] + n_out * n_in,
            int(acts[l]),
            derive,
        )


def flat(arr):
    return arr.reshape(arr.size) if arr.ndim != 1 else arr


def forward(params, sizes, acts, x, out, work):
    """Network output a^L of a batch on the device (inference: no σ' kept).

    Parameters
    ----------
    params : 1-D device array
        θ.
    sizes, acts : sequences of int
        Layer widths [n0, ..., nL] and activation codes (one per layer).
    x : device array (N, n0)
        C-contiguous inputs.
    out : device array (N, nL)
        Receives a^L.
    work : 1-D device array of ``fastbp.workspace_size(sizes, N)``
    """
    dt = dtype_name(params)
    sizes = tuple(int(v) for v in sizes)
    acts = tuple(int(v) for v in acts)
    n = x.shape[0]
    _forward_layers(params, sizes, acts, x, work, n, False)
    L = len(sizes) - 1
    nL = sizes[L]
    zo = layer_offset(sizes, L - 1, n)
    if acts[-1] == _A.SOFTMAX:
        rk = row_kernels(dt)
        dummy_y = dummy(dt, 2)
        rk.output_delta[n, ROW_THREADS](
            work, zo, n, nL, acts[-1], 0, dummy_y, 0, dummy(dt, 1), 0.0, dummy("float64", 1), 0
        )
    out.reshape(n * nL).copy_to_device(work[zo + n * nL : zo + 2 * n * nL])


_DUMMIES: dict = {}


def dummy(dt: str, ndim: int):
    """A tiny device array standing in for an absent optional argument."""
    from numba import cuda

    key = (dt, ndim)
    arr = _DUMMIES.get(key)
    if arr is None:
        arr = cuda.to_device(np.zeros((1,) * ndim, dtype=dt))
        _DUMMIES[key] = arr
    return arr


def step_loss_and_grad(params, sizes, acts, loss, x, y, grad, work, scratch, labels, sw=None, sw_scale=0.0, fused=None):
    """Launch one loss-and-gradient computation; nothing is read back.

    The loss (the weighted mean over the batch) is *added* to ``scratch[0]``;
    ``grad`` is written (layered path) or accumulated into (fused path, which
    needs ``grad`` zeroed first).  Returns True if the fused kernel ran.

    Parameters
    ----------
    labels : int
        1 if y is an (N, 1) int64 array of class labels, 0 if it is (N, nL) targets.
    sw, sw_scale
        Per-sample weights and 1 / Σ sw (sw_scale = 0: the plain mean).
    fused : bool or None
        Force (True) or forbid (False) the fused kernel; None picks it when eligible.
    """
    from numba import cuda

    dt = dtype_name(params)
    sizes = tuple(int(v) for v in sizes)
    acts = tuple(int(v) for v in acts)
    n = x.shape[0]
    sw_arr = sw if sw is not None else dummy(dt, 1)
    use_fused = _fused.eligible(sizes, acts, dt) if fused is None else fused
    if use_fused:
        k, S = _fused.fused_kernel(dt, sizes, acts, int(loss))
        sm = getattr(cuda.get_current_device(), "MULTIPROCESSOR_COUNT", 1)  # the simulator has none
        blocks = max(1, min(ceil_div(n, S), _config.CUDA_FUSED_BLOCKS_PER_SM * sm))
        k[blocks, _fused.THREADS](params, x, y, labels, sw_arr, sw_scale, grad, scratch, n)
        return True

    L = len(sizes) - 1
    wo = _offsets(sizes)
    g = gemm(dt)
    ek = elementwise_kernels(dt)
    _forward_layers(params, sizes, acts, x, work, n, True)
    x = flat(x)
    nL = sizes[L]
    zL = layer_offset(sizes, L - 1, n)
    rk = row_kernels(dt)
    rk.output_delta[n, ROW_THREADS](work, zL, n, nL, acts[-1], int(loss), y, labels, sw_arr, sw_scale, scratch, 1)
    for l in range(L - 1, -1, -1):
        n_in, n_out = sizes[l], sizes[l + 1]
        zo = layer_offset(sizes, l, n)  # δ^l sits in the z^l slot
        src, s_off = (x, 0) if l == 0 else (work, zo - n * n_in)
        # BP3 + BP4: [gW | gb](j, k) = Σ_n δ[n, j] [a | 1][n, k]
        splits = k_splits(g, n_out, n_in + 1, n)
        if splits > 1:  # the k-ranges add into the gradient: start it at zero
            gl = grad[wo[l] : wo[l] + n_out * (n_in + 1)]
            ek.fill[grid_1d(gl.shape[0]), ELEMENT_THREADS](gl, 0.0)
        launch_gemm(
            g,
            BP3,
            work,
            zo,
            1,
            n_out,
            src,
            s_off,
            n_in,
            1,
            n_out,
            n_in + 1,
            n,
            grad,
            wo[l],
            wo[l] + n_out * n_in,
            0,
            1,
            splits,
        )
        if l > 0:
            # BP2: δ^{l-1}(m, k) = Σ_j δ^l[m, j] W[j, k] ⊙ σ'(z^{l-1}) (σ' in the z^{l-1} slot)
            zp = layer_offset(sizes, l - 1, n)
            launch_gemm(g, BP2, work, zo, n_out, 1, params, wo[l], n_in, 1, n, n_in, n_out, work, zp, 0, 0, 0)
    return False


def loss_and_grad(params, sizes, acts, loss, x, y, grad, work, sample_weight=None, scratch=None, fused=None):
    """Mean loss C and its gradient ∂C/∂θ, computed on the device (the four equations BP1-BP4).

    Parameters
    ----------
    params : 1-D device array
        θ.
    sizes, acts : sequences of int
        Layer widths and activation codes.
    loss : int
        Loss code.
    x : device array (N, n0)
    y : device array, (N, nL) targets or (N,) / (N, 1) int64 class labels
    grad : 1-D device array like params
        Receives ∂C/∂θ.
    work : 1-D device array of ``fastbp.workspace_size(sizes, N)``
    sample_weight : 1-D device array (N,), optional
    scratch : float64 device array of SCRATCH_SIZE, optional
    fused : bool or None
        As for ``step_loss_and_grad``.

    Returns
    -------
    float
        C (this call synchronises to read it).
    """
    from numba import cuda

    dt = dtype_name(params)
    ek = elementwise_kernels(dt)
    if scratch is None:
        scratch = cuda.device_array(SCRATCH_SIZE, dtype=np.float64)
    ek.fill[grid_1d(SCRATCH_SIZE), ELEMENT_THREADS](scratch, 0.0)
    labels = 0
    if y.ndim == 1 or (y.dtype.kind in "iu"):
        labels = 1
        if y.ndim == 1:
            y = y.reshape(y.shape[0], 1)
    sw_scale = 0.0
    if sample_weight is not None:
        total = float(np.sum(sample_weight.copy_to_host(), dtype=np.float64))
        sw_scale = 1.0 / total
    sizes_t = tuple(int(v) for v in sizes)
    acts_t = tuple(int(v) for v in acts)
    use_fused = _fused.eligible(sizes_t, acts_t, dt) if fused is None else fused
    if use_fused:
        ek.fill[grid_1d(grad.shape[0]), ELEMENT_THREADS](grad, 0.0)
    step_loss_and_grad(
        params, sizes_t, acts_t, loss, x, y, grad, work, scratch, labels, sample_weight, sw_scale, use_fused
    )
    return float(scratch.copy_to_host()[0])


def optimizer_step(opt_code, params, grad, state_a, state_b, t, hp, zero_grad):
    """One SGD (opt_code 0) or Adam (1) step on the device; ``hp`` as in fastbp.cpu.train."""
    ek = elementwise_kernels(dtype_name(params))
    blocks = grid_1d(params.shape[0])
    if opt_code == 0:
        ek.sgd_step[blocks, ELEMENT_THREADS](params, grad, state_a, hp[HP_LR], hp[HP_H1], bool(hp[HP_FLAG]),
                                             hp[HP_WEIGHT_DECAY], zero_grad)
    else:
        eps_hat = len(hp) > HP_EPS_HAT and hp[HP_EPS_HAT]  # ε̂: see fastbp.optim.Adam
        eps = hp[HP_H3] / math.sqrt(1.0 - hp[HP_H2] ** t) if eps_hat else hp[HP_H3]
        ek.adam_step[blocks, ELEMENT_THREADS](
            params, grad, state_a, state_b, t, hp[HP_LR], hp[HP_H1], hp[HP_H2], eps, hp[HP_WEIGHT_DECAY],
            bool(hp[HP_FLAG]), zero_grad
        )


def clip_grad_norm(grad, max_norm, scratch, slot=0):
    """Scale ``grad`` to norm ``max_norm`` if it is longer; uses ``scratch[slot]`` (zeroed here)."""
    ek = elementwise_kernels(dtype_name(grad))
    ek.fill[1, ELEMENT_THREADS](scratch[slot : slot + 1], 0.0)
    blocks = grid_1d(grad.shape[0])
    ek.sum_squares[blocks, ELEMENT_THREADS](grad, scratch, slot)
    ek.scale_if_above[blocks, ELEMENT_THREADS](grad, scratch, slot, float(max_norm))
