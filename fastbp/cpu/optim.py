"""Optimizer update kernels on the flat parameter vector.

Parameters, gradient and state vectors share the flat layout of θ, so one
loop serves every layer.  All kernels update in place, allocate nothing, take
only arrays and scalars, and can be called from a user's ``@njit`` loop.
Hyper-parameters are cast to the dtype of ``params`` so float32 stays float32.

SGD follows PyTorch's formulation (``torch.optim.SGD`` with dampening 0)::

    g ← ∇ + λ θ                     (L2 weight decay, λ = weight_decay)
    v ← μ v + g
    θ ← θ − η (g + μ v)   (Nesterov)   or   θ ← θ − η v   (classical)

scikit-learn's ``MLPClassifier`` keeps v' = μ v' − η g instead; the two give the
same iterates while η is constant and differ when η changes (PyTorch's
velocity does not carry the old learning rate).

Adam (Kingma & Ba), with t the 1-based step count::

    m ← β1 m + (1 − β1) g,   v ← β2 v + (1 − β2) g²
    θ ← θ − η m̂ / (√v̂ + ε),  m̂ = m / (1 − β1^t),  v̂ = v / (1 − β2^t)

with ``decoupled=False`` the weight decay is L2 (added to g, as
``torch.optim.Adam``); with ``decoupled=True`` it is AdamW's
θ ← θ − η λ θ before the Adam step (``torch.optim.AdamW``).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._cache import cached_njit
from ..config import FASTMATH, PARALLEL_MIN_PARAMS
from ._twins import twins

__all__ = ["adam_step", "clip_grad_norm", "grad_norm", "sgd_step"]

_jit = cached_njit(nogil=True, fastmath=FASTMATH)


@_jit
def grad_norm(grad):
    """Euclidean norm ‖g‖₂ of the flat gradient, accumulated in float64."""
    s = 0.0
    for i in range(grad.shape[0]):
        s += float(grad[i]) * float(grad[i])
    return np.sqrt(s)


@_jit
def clip_grad_norm(grad, max_norm):
    """Scale ``grad`` in place so that ‖g‖₂ <= max_norm; returns the norm before clipping.

    A non-positive ``max_norm`` disables clipping.
    """
    norm = grad_norm(grad)
    if max_norm > 0 and norm > max_norm:
        f = grad.dtype.type(max_norm / (norm + 1e-12))
        for i in range(grad.shape[0]):
            grad[i] *= f
    return norm


@_jit
def sgd_step(params, grad, velocity, lr, momentum, nesterov, weight_decay):
    """One SGD step (PyTorch's formulation, see the module docstring), in place.

    Parameters
    ----------
    params, grad, velocity : 1-D float arrays of one length and dtype
        θ, ∇C and the momentum buffer v (start at zero; unused when momentum is 0).
    lr, momentum, weight_decay : float
        η, μ and the L2 coefficient λ.
    nesterov : bool
    """
    T = params.dtype.type
    eta = T(lr)
    mu = T(momentum)
    lam = T(weight_decay)
    if momentum == 0:
        for i in range(params.shape[0]):
            params[i] -= eta * (grad[i] + lam * params[i])
    elif nesterov:
        for i in range(params.shape[0]):
            g = grad[i] + lam * params[i]
            v = mu * velocity[i] + g
            velocity[i] = v
            params[i] -= eta * (g + mu * v)
    else:
        for i in range(params.shape[0]):
            g = grad[i] + lam * params[i]
            v = mu * velocity[i] + g
            velocity[i] = v
            params[i] -= eta * v


def _adam_body(params, grad, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled):
    T = params.dtype.type
    b1 = T(beta1)
    b2 = T(beta2)
    c1 = T(1.0 - beta1**t)
    c2 = T(1.0 - beta2**t)
    step = T(lr) / c1
    inv_sqrt_c2 = T(1.0 / np.sqrt(float(c2)))
    e = T(eps)
    lam = T(0.0) if decoupled else T(weight_decay)
    shrink = T(1.0 - lr * weight_decay) if decoupled else T(1.0)
    one = T(1.0)
    # Elementwise: prange blocks of the flat vector are owned by one thread each.
    for i in prange(params.shape[0]):
        p = params[i] * shrink
        g = grad[i] + lam * p
        mi = b1 * m[i] + (one - b1) * g
        vi = b2 * v[i] + (one - b2) * g * g
        m[i] = mi
        v[i] = vi
        params[i] = p - step * mi / (np.sqrt(vi) * inv_sqrt_c2 + e)


# error_model="numpy": Python's model checks each division for a zero divisor, a branch per
# element that keeps the serial loop scalar (vsqrtss/vdivss instead of their vector forms).  The
# divisor √v̂ + ε is positive for ε > 0, which fastbp.optim.Adam requires.
adam_step_serial, adam_step_parallel = twins(_adam_body, error_model="numpy")


@cached_njit(nogil=True, fastmath=FASTMATH)
def adam_step(params, grad, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled):
    """One Adam (or AdamW, ``decoupled=True``) step, in place; see the module docstring.

    Parameters
    ----------
    params, grad, m, v : 1-D float arrays of one length and dtype
        θ, ∇C and the first and second moment estimates (start at zero).
    t : int
        The 1-based number of this step (bias correction).
    lr, beta1, beta2, eps, weight_decay : float
    decoupled : bool
        AdamW's decoupled weight decay instead of L2.

    ``eps`` must be positive (in the dtype of ``params``): with ε = 0 an entry whose m and v are
    both zero becomes NaN (0/0), where Python's error model would have raised.
    """
    if params.shape[0] >= PARALLEL_MIN_PARAMS:
        adam_step_parallel(params, grad, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled)
    else:
        adam_step_serial(params, grad, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled)
