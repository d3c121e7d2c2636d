"""Per-layer CUDA kernels with the names and roles of :mod:`fastbp.cpu`'s.

Host functions that take device arrays (Numba device arrays, or anything with
``__cuda_array_interface__`` after ``numba.cuda.as_cuda_array``) and launch the
``@cuda.jit`` kernels of :mod:`fastbp.cuda._kernels`.  They are the building
blocks; the whole-network drivers in :mod:`fastbp.cuda.network` call the same
kernels on one flat workspace instead.
"""

from __future__ import annotations

import numpy as np

from .. import activations as _A
from ._kernels import (
    BP2,
    BP3,
    ELEMENT_THREADS,
    FORWARD,
    ROW_THREADS,
    elementwise_kernels,
    grid_1d,
    row_kernels,
)
from .network import dtype_name, dummy, flat, gemm, k_splits, launch_gemm

__all__ = [
    "adam_step",
    "backprop_delta",
    "bias_grad",
    "linear_forward",
    "output_delta",
    "sgd_step",
    "weight_bias_grad",
    "weight_grad",
]


def linear_forward(W, b, a_prev, act, z, a):
    """z = a_prev · W^T + b and a = σ(z), one layer (softmax: a is formed row by row).

    Parameters
    ----------
    W : device array (n_out, n_in)
    b : device array (n_out,)
    a_prev : device array (N, n_in)
    act : int
        Activation code.
    z, a : device arrays (N, n_out)
        Outputs.
    """
    from numba import cuda

    dt = dtype_name(W)
    N, n_in = a_prev.shape
    n_out = W.shape[0]
    # The product writes [z, a] into one buffer, then the halves are copied out.
    buf = cuda.device_array(2 * N * n_out + n_out * n_in + n_out, dtype=dt)
    pw = buf[2 * N * n_out :]
    pw[: n_out * n_in].copy_to_device(flat(W))
    pw[n_out * n_in :].copy_to_device(b)
    launch_gemm(
        gemm(dt), FORWARD, flat(a_prev), 0, n_in, 1, pw, 0, 1, n_in, N, n_out, n_in, buf, 0, n_out * n_in, int(act), 0
    )
    if int(act) == _A.SOFTMAX:
        row_kernels(dt).output_delta[N, ROW_THREADS](
            buf, 0, N, n_out, int(act), 0, dummy(dt, 2), 0, dummy(dt, 1), 0.0, dummy("float64", 1), 0
        )
    flat(z).copy_to_device(buf[: N * n_out])
    flat(a).copy_to_device(buf[N * n_out : 2 * N * n_out])


def output_delta(loss, act, z, a, y, delta, sample_weight=None):
    """BP1: δ^L = ∇_a C ⊙ σ'(z^L) (softmax + cross-entropy: (a − y)/N); returns C.

    Parameters
    ----------
    loss, act : int
        Loss and output-activation codes.
    z, a : device arrays (N, nL)
    y : device array (N, nL) targets, or (N,) int64 class labels
    delta : device array (N, nL)
        Output.
    sample_weight : device array (N,), optional

    Returns
    -------
    float
    """
    from numba import cuda

    dt = dtype_name(z)
    N, nL = z.shape
    buf = cuda.device_array(2 * N * nL, dtype=dt)
    buf[: N * nL].copy_to_device(flat(z))
    buf[N * nL :].copy_to_device(flat(a))
    labels = 1 if y.ndim == 1 else 0
    y2 = y.reshape(N, 1) if y.ndim == 1 else y
    scratch = cuda.to_device(np.zeros(4))
    sw, scale = dummy(dt, 1), 0.0
    if sample_weight is not None:
        sw = sample_weight
        scale = 1.0 / float(np.sum(sample_weight.copy_to_host(), dtype=np.float64))
    row_kernels(dt).output_delta[N, ROW_THREADS](buf, 0, N, nL, int(act), int(loss), y2, labels, sw, scale, scratch, 1)
    flat(delta).copy_to_device(buf[: N * nL])
    return float(scratch.copy_to_host()[0])


def backprop_delta(W_next, delta_next, z, act, delta):
    """BP2: δ^l = ((W^{l+1})^T δ^{l+1}) ⊙ σ'(z^l), row by row: δ = (δ_next · W_next) ⊙ σ'(z).

    Parameters
    ----------
    W_next : device array (n_next, n)
    delta_next : device array (N, n_next)
    z : device array (N, n)
    act : int
    delta : device array (N, n)
        Output.
    """
    dt = dtype_name(W_next)
    N, n = z.shape
    n_next = W_next.shape[0]
    d = flat(delta)
    ek = elementwise_kernels(dt)
    ek.derive[grid_1d(N * n), ELEMENT_THREADS](flat(z), int(act), d)
    launch_gemm(gemm(dt), BP2, flat(delta_next), 0, n_next, 1, flat(W_next), 0, n, 1, N, n, n_next, d, 0, 0, 0, 0)


def weight_grad(delta, a_prev, grad_W):
    """BP3: ∂C/∂w^l_jk = Σ_n a^{l-1}_nk δ^l_nj.

    Parameters
    ----------
    delta : device array (N, n_out)
    a_prev : device array (N, n_in)
    grad_W : device array (n_out, n_in)
        Output.
    """
    dt = dtype_name(delta)
    N, n_out = delta.shape
    n_in = a_prev.shape[1]
    g = gemm(dt)
    splits = k_splits(g, n_out, n_in, N)
    if splits > 1:
        elementwise_kernels(dt).fill[grid_1d(n_out * n_in), ELEMENT_THREADS](flat(grad_W), 0.0)
    launch_gemm(
        g, BP3, flat(delta), 0, 1, n_out, flat(a_prev), 0, n_in, 1, n_out, n_in, N, flat(grad_W), 0, 0, 0, 0, splits
    )


def bias_grad(delta, grad_b):
    """BP4: ∂C/∂b^l_j = Σ_n δ^l_nj.

    Parameters
    ----------
    delta : device array (N, n_out)
    grad_b : device array (n_out,)
        Output.
    """
    dt = dtype_name(delta)
    N, n_out = delta.shape
    d = flat(delta)
    launch_gemm(gemm(dt), BP3, d, 0, 1, n_out, d, 0, 0, 0, n_out, 1, N, grad_b, 0, 0, 0, 1)


def weight_bias_grad(delta, a_prev, grad_W, grad_b):
    """BP3 and BP4 in one product: [∂C/∂W | ∂C/∂b] = δ^T [a_prev | 1].

    Parameters
    ----------
    delta : device array (N, n_out)
    a_prev : device array (N, n_in)
    grad_W : device array (n_out, n_in)
    grad_b : device array (n_out,)
        Outputs.
    """
    from numba import cuda

    dt = dtype_name(delta)
    N, n_out = delta.shape
    n_in = a_prev.shape[1]
    buf = cuda.device_array(n_out * n_in + n_out, dtype=dt)
    launch_gemm(
        gemm(dt),
        BP3,
        flat(delta),
        0,
        1,
        n_out,
        flat(a_prev),
        0,
        n_in,
        1,
        n_out,
        n_in + 1,
        N,
        buf,
        0,
        n_out * n_in,
        0,
        1,
    )
    flat(grad_W).copy_to_device(buf[: n_out * n_in])
    grad_b.copy_to_device(buf[n_out * n_in :])


def sgd_step(params, grad, velocity, lr, momentum, nesterov, weight_decay):
    """One SGD step on the device, in place (the formulation of :func:`fastbp.cpu.optim.sgd_step`)."""
    ek = elementwise_kernels(dtype_name(params))
    ek.sgd_step[grid_1d(params.shape[0]), ELEMENT_THREADS](
        params, grad, velocity, float(lr), float(momentum), bool(nesterov), float(weight_decay), 0
    )


def adam_step(params, grad, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled):
    """One Adam/AdamW step on the device, in place (as :func:`fastbp.cpu.optim.adam_step`)."""
    ek = elementwise_kernels(dtype_name(params))
    ek.adam_step[grid_1d(params.shape[0]), ELEMENT_THREADS](
        params,
        grad,
        m,
        v,
        int(t),
        float(lr),
        float(beta1),
        float(beta2),
        float(eps),
        float(weight_decay),
        bool(decoupled),
        0,
    )
