"""Per-layer kernels: the forward product and the four backpropagation equations.

Each public kernel takes only arrays and integers, so it can be called from
Python or from a user's own ``@njit`` function.  It runs its serial twin for
small problems and its ``parallel=True`` twin where
:func:`fastbp.cpu.network.parallel_pays`, the rule of the whole-network kernels,
says it pays; both twins are also exported (``*_serial``, ``*_parallel``) for
callers that want to choose.

Arrays are 2-D with one sample per row, in any memory layout: an operand that is not
C-contiguous is copied, and an output written back (C-contiguous ones cost nothing).
Shapes must agree (they are not checked here: these are the trusting inner layer of the
library).
"""

from __future__ import annotations

import numpy as np

from .._cache import cached_njit
from ..config import FASTMATH
from . import _layers
from ._layers import contiguous, write_back
from .network import parallel_pays_jit

__all__ = [
    "backprop_delta",
    "bias_grad",
    "linear_forward",
    "output_delta",
    "weight_bias_grad",
    "weight_grad",
]

_dispatch = cached_njit(nogil=True, fastmath=FASTMATH)

# The twins of each kernel, with its public signature, for callers that choose one: each calls
# the twin of its body in fastbp.cpu._layers (every flag explicit) on C-contiguous operands
# (copies of any that are not, written back after), and the dispatchers below call them.


@_dispatch
def linear_forward_serial(W, b, a_prev, act, z, a):
    """Serial twin of :func:`linear_forward`."""
    zc, ac = contiguous(z), contiguous(a)
    _layers.linear_forward_serial(contiguous(W), contiguous(b), contiguous(a_prev), act, zc, ac, False, _pack(W))
    write_back(z, zc)
    write_back(a, ac)


@_dispatch
def linear_forward_parallel(W, b, a_prev, act, z, a):
    """``parallel=True`` twin of :func:`linear_forward`."""
    zc, ac = contiguous(z), contiguous(a)
    _layers.linear_forward_parallel(contiguous(W), contiguous(b), contiguous(a_prev), act, zc, ac, False, _pack(W))
    write_back(z, zc)
    write_back(a, ac)


@_dispatch
def backprop_delta_serial(W_next, delta_next, z, act, delta):
    """Serial twin of :func:`backprop_delta`."""
    dc = contiguous(delta)
    _layers.backprop_delta_serial(contiguous(W_next), contiguous(delta_next), contiguous(z), act, dc, False,
                                    _pack(W_next))
    write_back(delta, dc)


@_dispatch
def backprop_delta_parallel(W_next, delta_next, z, act, delta):
    """``parallel=True`` twin of :func:`backprop_delta`."""
    dc = contiguous(delta)
    _layers.backprop_delta_parallel(contiguous(W_next), contiguous(delta_next), contiguous(z), act, dc, False,
                                    _pack(W_next))
    write_back(delta, dc)


@_dispatch
def weight_grad_serial(delta, a_prev, grad_W):
    """Serial twin of :func:`weight_grad` (BP3 of :func:`weight_bias_grad`, no bias written)."""
    gc = contiguous(grad_W)
    _layers.weight_bias_grad_serial(contiguous(delta), contiguous(a_prev), gc, gc[0], False)
    write_back(grad_W, gc)


@_dispatch
def weight_grad_parallel(delta, a_prev, grad_W):
    """``parallel=True`` twin of :func:`weight_grad`."""
    gc = contiguous(grad_W)
    _layers.weight_bias_grad_parallel(contiguous(delta), contiguous(a_prev), gc, gc[0], False)
    write_back(grad_W, gc)


@_dispatch
def weight_bias_grad_serial(delta, a_prev, grad_W, grad_b):
    """Serial twin of :func:`weight_bias_grad`."""
    gc, bc = contiguous(grad_W), contiguous(grad_b)
    _layers.weight_bias_grad_serial(contiguous(delta), contiguous(a_prev), gc, bc, True)
    write_back(grad_W, gc)
    write_back(grad_b, bc)


@_dispatch
def weight_bias_grad_parallel(delta, a_prev, grad_W, grad_b):
    """``parallel=True`` twin of :func:`weight_bias_grad`."""
    gc, bc = contiguous(grad_W), contiguous(grad_b)
    _layers.weight_bias_grad_parallel(contiguous(delta), contiguous(a_prev), gc, bc, True)
    write_back(grad_W, gc)
    write_back(grad_b, bc)


@cached_njit(nogil=True)
def _pack(W):
    # the buffer in which a product packs W (the whole-network kernels use their workspace's)
    return np.empty(W.size, W.dtype)


bias_grad_serial = _layers.bias_grad_serial
bias_grad_parallel = _layers.bias_grad_parallel


@_dispatch
def linear_forward(W, b, a_prev, act, z, a):
    """Forward product with the activation fused: z^l = a^{l-1} (W^l)^T + b^l, a^l = σ(z^l).

    Per sample n: z^l_nj = Σ_k w^l_jk a^{l-1}_nk + b^l_j and a^l_nj = σ_l(z^l_nj)
    (softmax over the row).

    Parameters
    ----------
    W : (n_l, n_{l-1}) float array
    b : (n_l,) float array
    a_prev : (N, n_{l-1}) float array
        a^{l-1}, the activations of the previous layer (x for l = 1).
    act : int
        Activation code of layer l.
    z, a : (N, n_l) float arrays
        Outputs; ``a`` may be ``z`` when z^l is not needed.
    """
    if parallel_pays_jit(a_prev.shape[0], W.size):
        linear_forward_parallel(W, b, a_prev, act, z, a)
    else:
        linear_forward_serial(W, b, a_prev, act, z, a)


@_dispatch
def output_delta(loss, act, z, a, y, delta, sample_weight=None):
    """BP1: δ^L = ∇_a C ⊙ σ'(z^L); returns the loss C.

    C is the mean over the N samples.  For a softmax output the product with
    σ' is the Jacobian-vector product; softmax + cross-entropy fuses to
    δ^L = (a^L − y)/N, and sigmoid + binary cross-entropy to δ^L = (a^L − y)/N.

    Parameters
    ----------
    loss, act : int
        Loss code and output-activation code.
    z, a : (N, n_L) float arrays
        z^L and a^L.
    y : (N, n_L) float array, or (N,) integer array of class labels
        Targets; labels stand for their one-hot rows.
    delta : (N, n_L) float array
        Output δ^L; may be ``z``.
    sample_weight : (N,) float array, optional
        Non-negative weights w_n; C becomes Σ_n w_n ℓ_n / Σ_n w_n.

    Returns
    -------
    float
        C.
    """
    Y, lab, sw = _layers.normalised_targets(y, sample_weight, z.shape[1], z)
    return _layers.output_delta_body(loss, act, z, a, Y, lab, delta, sw)


@_dispatch
def backprop_delta(W_next, delta_next, z, act, delta):
    """BP2: δ^l = ((W^{l+1})^T δ^{l+1}) ⊙ σ'(z^l).

    Per sample n: δ^l_nk = (Σ_j δ^{l+1}_nj w^{l+1}_jk) σ_l'(z^l_nk).

    Parameters
    ----------
    W_next : (n_{l+1}, n_l) float array
        W^{l+1}.
    delta_next : (N, n_{l+1}) float array
        δ^{l+1}.
    z : (N, n_l) float array
        z^l.
    act : int
        Activation code of layer l (elementwise, not softmax).
    delta : (N, n_l) float array
        Output δ^l; must not alias ``z`` or ``delta_next``.
    """
    if parallel_pays_jit(z.shape[0], W_next.size):
        backprop_delta_parallel(W_next, delta_next, z, act, delta)
    else:
        backprop_delta_serial(W_next, delta_next, z, act, delta)


@_dispatch
def weight_grad(delta, a_prev, grad_W):
    """BP3: ∂C/∂w^l_jk = Σ_n a^{l-1}_nk δ^l_nj, accumulated over the minibatch.

    Parameters
    ----------
    delta : (N, n_l) float array
        δ^l.
    a_prev : (N, n_{l-1}) float array
        a^{l-1}.
    grad_W : (n_l, n_{l-1}) float array
        Output, overwritten.
    """
    if parallel_pays_jit(delta.shape[0], grad_W.size):
        weight_grad_parallel(delta, a_prev, grad_W)
    else:
        weight_grad_serial(delta, a_prev, grad_W)


@_dispatch
def bias_grad(delta, grad_b):
    """BP4: ∂C/∂b^l_j = Σ_n δ^l_nj.

    Parameters
    ----------
    delta : (N, n_l) float array
        δ^l.
    grad_b : (n_l,) float array
        Output, overwritten.
    """
    if parallel_pays_jit(delta.shape[0], delta.shape[1] * 64):  # a column sum does 1/64 of a product's work
        bias_grad_parallel(delta, grad_b)
    else:
        bias_grad_serial(delta, grad_b)


@_dispatch
def weight_bias_grad(delta, a_prev, grad_W, grad_b):
    """BP3 and BP4 in one sweep over δ^l.

    ∂C/∂w^l_jk = Σ_n a^{l-1}_nk δ^l_nj and ∂C/∂b^l_j = Σ_n δ^l_nj.

    Parameters
    ----------
    delta : (N, n_l) float array
    a_prev : (N, n_{l-1}) float array
    grad_W : (n_l, n_{l-1}) float array
        Output, overwritten.
    grad_b : (n_l,) float array
        Output, overwritten.
    """
    if parallel_pays_jit(delta.shape[0], grad_W.size):
        weight_bias_grad_parallel(delta, a_prev, grad_W, grad_b)
    else:
        weight_bias_grad_serial(delta, a_prev, grad_W, grad_b)
