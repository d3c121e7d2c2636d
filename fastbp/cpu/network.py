"""Whole-network kernels: the forward pass and the fused loss-and-gradient step.

They take only arrays and integers (flat θ, layer widths, activation codes,
loss code, x, y, the gradient to write and a preallocated workspace), so a
user's own ``@njit`` training loop can call them.  ``loss_and_grad`` allocates nothing.

Layout: θ as in :mod:`fastbp.layout`; the workspace holds [z^1, a^1, z^2,
a^2, ...], each (N, n_l) row-major, ``fastbp.layout.workspace_size(sizes, N)``
elements in all.  In ``loss_and_grad`` the forward pass stores σ'(z^l) instead of z^l for
hidden layers; the backward pass keeps δ^l in the z^l buffer (BP2 scales each element of δ^{l-1}
by the σ'(z^{l-1}) it replaces), and the a^l are left as they are.  The products pack W^l into the
gradient's slot of W^l, which BP3 overwrites afterwards; ``forward`` allocates one buffer of the
largest W^l for that.

Every product sums each element in one fixed order (:mod:`fastbp.cpu._layers`), so the serial and
the parallel twins give the same bits, whatever the thread count.

Besides the public dispatchers, the module holds the twins they choose between,
``forward_serial``/``forward_parallel`` and ``loss_and_grad_serial``/``loss_and_grad_parallel``
(the rows of :data:`VARIANTS`), the rule that chooses (:func:`parallel_pays`, and
``parallel_pays_jit`` for compiled callers): internal names for the backends and the training
loop, not in ``__all__``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .._cache import cached_njit
from ..activations import SOFTMAX
from ..config import FASTMATH, PARALLEL_MIN_WORK
from ..layout import activation_offset, view2d, weight_offset
from ..losses import MSE
from . import _layers
from ._twins import calling_twins, inlined_copy

__all__ = ["forward", "loss_and_grad"]

# The per-layer products the serial twins call; the parallel twins call the parallel ones
# (rebound at the end of this module).  Called, not inlined: each is compiled once per signature.
_linear_forward = _layers.linear_forward_serial
_weight_bias_grad = _layers.weight_bias_grad_serial
_backprop_delta = _layers.backprop_delta_serial


@njit(inline="always")
def _forward_body(params, sizes, acts, x, work, train, derive_out, pack):
    # pack: the gradient (training: W^l's panels in its slot of W^l), or a buffer of the largest W^l
    L = sizes.shape[0] - 1
    N = x.shape[0]
    for l in range(L):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        wo = weight_offset(sizes, l)
        bo = wo + n_out * n_in
        W = view2d(params, wo, n_out, n_in)
        b = params[bo : bo + n_out]
        zo = activation_offset(sizes, l, N)
        Z = view2d(work, zo, N, n_out)
        A = view2d(work, zo + N * n_out, N, n_out)
        # Training keeps σ'(z) instead of z for hidden layers (BP2 needs nothing else), and
        # for the output layer when BP1 needs nothing else (mse, elementwise activation).  bool():
        # a plain bool in the forward-only twins too, where train and derive_out are the constant
        # False, so that they call the specialisation of the layer kernels that the training step
        # compiled.
        derive = bool(train) and (l < L - 1 or bool(derive_out))
        # a^{l-1}: x, or the previous layer's activations.
        P = x if l == 0 else view2d(work, zo - N * n_in, N, n_in)
        _linear_forward(W, b, P, acts[l], Z, A, derive, pack[wo if train else 0:])


def _forward_impl(params, sizes, acts, x, out, work):
    L = sizes.shape[0] - 1
    largest = 0
    for l in range(L):
        largest = max(largest, sizes[l] * sizes[l + 1])
    _forward_body(params, sizes, acts, x, work, False, False, np.empty(largest, params.dtype))
    N = x.shape[0]
    n_out = sizes[L]
    ao = activation_offset(sizes, L - 1, N) + N * n_out
    A = view2d(work, ao, N, n_out)
    for r in range(N):
        for j in range(n_out):
            out[r, j] = A[r, j]


def _loss_and_grad_impl(params, sizes, acts, loss, x, y, labels, grad, work, sample_weight):
    L = sizes.shape[0] - 1
    N = x.shape[0]
    derive_out = loss == MSE and acts[L - 1] != SOFTMAX
    _forward_body(params, sizes, acts, x, work, True, derive_out, grad)

    # BP1 into the z^L buffer.
    nL = sizes[L]
    zo = activation_offset(sizes, L - 1, N)
    ZL = view2d(work, zo, N, nL)
    AL = view2d(work, zo + N * nL, N, nL)
    total = _layers.output_delta_body(loss, acts[L - 1], ZL, AL, y, labels, ZL, sample_weight, derive_out)

    for l in range(L - 1, -1, -1):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        wo = weight_offset(sizes, l)
        bo = wo + n_out * n_in
        gW = view2d(grad, wo, n_out, n_in)
        gb = grad[bo : bo + n_out]
        zo = activation_offset(sizes, l, N)
        D = view2d(work, zo, N, n_out)  # δ^l, in the z^l buffer
        po = zo - N * n_in  # a^{l-1} (l > 0)
        P = x if l == 0 else view2d(work, po, N, n_in)
        if l > 0:
            # BP2: δ^{l-1} in place of σ'(z^{l-1}) in the z^{l-1} buffer, from W^l's panels in
            # the gradient's slot of W^l, which BP3 overwrites next
            W = view2d(params, wo, n_out, n_in)
            S = view2d(work, po - N * n_in, N, n_in)
            _backprop_delta(W, D, S, acts[l - 1], S, True, grad[wo:])
        # BP3 + BP4
        _weight_bias_grad(D, P, gW, gb, True)
    return total


_forward_body_parallel = inlined_copy(_forward_body, "_parallel", _linear_forward=_layers.linear_forward_parallel)
forward_serial, forward_parallel = calling_twins(_forward_impl, _forward_body=_forward_body_parallel)
loss_and_grad_serial, loss_and_grad_parallel = calling_twins(
    _loss_and_grad_impl, _forward_body=_forward_body_parallel,
    _weight_bias_grad=_layers.weight_bias_grad_parallel, _backprop_delta=_layers.backprop_delta_parallel)

#: The variants of the whole-network kernels, (forward, loss_and_grad) by name: :func:`variant`
#: picks one per call, and the tests run every one.  They give the same bits.
VARIANTS = {"serial": (forward_serial, loss_and_grad_serial),
            "parallel": (forward_parallel, loss_and_grad_parallel)}


def parallel_pays(n_samples, n_params, forward_only=False, min_work=PARALLEL_MIN_WORK):
    """Whether a call on ``n_samples`` rows should run its ``parallel=True`` twin: the one rule of
    every CPU kernel, whole-network and per-layer (``n_params``: the parameters the call
    multiplies by each row).

    It pays from ``min_work`` multiply-adds of forward work (N times the parameter count;
    ``config.PARALLEL_MIN_WORK`` from the main thread).  The products split their output into
    about ``config.PARALLEL_TASKS`` tasks, so a forward pass of a handful of rows does not pay.
    Compiled for the dispatchers, and called from Python by the model (:mod:`fastbp._threads`
    gives it ``min_work``, unreachable with one thread).  No thread count is read in compiled
    code: ``numba.get_num_threads`` goes through a ctypes pointer, which makes a function, and
    every function that calls it, uncachable; with one thread a parallel twin runs as a one-thread
    parallel region, and gives the same bits as any other thread count.
    """
    if forward_only and n_samples <= 4:
        return False
    return n_samples * n_params >= min_work


def variant(n_samples, n_params, forward_only=False, min_work=PARALLEL_MIN_WORK) -> str:
    """The row of :data:`VARIANTS` (and ``fastbp.cpu.train.EPOCH_VARIANTS``) that a call runs:
    ``"parallel"`` where :func:`parallel_pays`, else ``"serial"``."""
    return "parallel" if parallel_pays(n_samples, n_params, forward_only, min_work) else "serial"


parallel_pays_jit = cached_njit(nogil=True)(parallel_pays)


@cached_njit(nogil=True, fastmath=FASTMATH)
def forward(params, sizes, acts, x, out, work):
    """Forward pass of the whole network: a^l = σ_l(W^l a^{l-1} + b^l), l = 1..L; out = a^L.

    Parameters
    ----------
    params : 1-D float array
        θ in the layout of :mod:`fastbp.layout`.
    sizes : 1-D int64 array
        Layer widths [n0, ..., nL].
    acts : 1-D int64 array
        Activation code of each of the L layers.
    x : (N, n0) float array
        Inputs, one sample per row.
    out : (N, nL) float array
        Output a^L.
    work : 1-D float array
        Workspace of at least ``fastbp.layout.workspace_size(sizes, N)`` elements.
    """
    xc = _layers.contiguous(x)  # the products read x as a flat row-major array
    if parallel_pays_jit(x.shape[0], params.shape[0], True):
        forward_parallel(params, sizes, acts, xc, out, work)
    else:
        forward_serial(params, sizes, acts, xc, out, work)


@cached_njit(nogil=True, fastmath=FASTMATH)
def loss_and_grad(params, sizes, acts, loss, x, y, grad, work, sample_weight=None):
    """Loss C and its gradient ∂C/∂θ for one minibatch, by backpropagation.

    Runs the forward pass, then BP1 δ^L = ∇_a C ⊙ σ'(z^L), and for l = L..1
    BP3 ∂C/∂w^l_jk = Σ_n a^{l-1}_nk δ^l_nj with BP4 ∂C/∂b^l_j = Σ_n δ^l_nj in
    the same sweep, and BP2 δ^{l-1} = ((W^l)^T δ^l) ⊙ σ'(z^{l-1}).

    Parameters
    ----------
    params : 1-D float array
        θ.
    sizes : 1-D int64 array
        Layer widths [n0, ..., nL].
    acts : 1-D int64 array
        Activation code of each layer.
    loss : int
        Loss code (``fastbp.losses.CODES``).
    x : (N, n0) float array
    y : (N, nL) float array, or (N,) int array of class labels
    grad : 1-D float array
        Output ∂C/∂θ, laid out like ``params``; overwritten.
    work : 1-D float array
        Workspace of at least ``fastbp.layout.workspace_size(sizes, N)`` elements.
    sample_weight : (N,) float array, optional
        Non-negative weights w_n; C becomes Σ_n w_n ℓ_n / Σ_n w_n.

    Returns
    -------
    float
        C, the (weighted) mean loss over the minibatch.
    """
    Y, lab, sw = _layers.normalised_targets(y, sample_weight, sizes[sizes.shape[0] - 1], params)
    xc = _layers.contiguous(x)  # the products read x as a flat row-major array
    if parallel_pays_jit(x.shape[0], params.shape[0]):
        return loss_and_grad_parallel(params, sizes, acts, loss, xc, Y, lab, grad, work, sw)
    return loss_and_grad_serial(params, sizes, acts, loss, xc, Y, lab, grad, work, sw)
