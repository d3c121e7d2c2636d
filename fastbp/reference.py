"""NumPy reference of every kernel: vectorised, BLAS-backed, written for clarity.

This is what the compiled kernels are tested against and what the benchmarks
compare them with.  It is also a usable (slower) backend: ``MLP(backend="numpy")``.

Functions take the same integer codes as the kernels (names are accepted
too) and return new arrays.  Everything stays in the dtype of the inputs and
is stable for any finite z (no overflow warnings, no NaN, no log(0)).
"""

from __future__ import annotations

import math

import numpy as np

from . import activations as _A
from . import losses as _L
from .layout import split_params

__all__ = [
    "activation",
    "activation_derivative",
    "backprop_delta",
    "bias_grad",
    "forward",
    "linear_forward",
    "count_correct",
    "loss",
    "loss_and_grad",
    "output_delta",
    "weight_grad",
]



def _erf(z):
    """scipy.special.erf, imported on first use: importing scipy.special is slow, and the
    reference needs it for gelu only, so ``import fastbp`` does not import it."""
    from scipy.special import erf

    return erf(z)

def _act_code(act) -> int:
    return _A.CODES[act] if isinstance(act, str) else int(act)


def _loss_code(loss) -> int:
    return _L.CODES[loss] if isinstance(loss, str) else int(loss)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def activation(act, z: np.ndarray) -> np.ndarray:
    """a = σ(z), elementwise (softmax: over each row of a 2-D z)."""
    code = _act_code(act)
    if code == _A.IDENTITY:
        return z.copy()
    if code == _A.SIGMOID:
        return _sigmoid(z)
    if code == _A.TANH:
        return np.tanh(z)
    if code == _A.RELU:
        return np.maximum(z, 0)
    if code == _A.LEAKY_RELU:
        return np.where(z > 0, z, _A.LEAKY_SLOPE * z)
    if code == _A.SOFTPLUS:
        return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))
    if code == _A.ELU:
        return np.where(z > 0, z, np.expm1(np.minimum(z, 0)))
    if code == _A.GELU:
        return 0.5 * z * (1 + _erf(z * (1 / math.sqrt(2))))
    if code == _A.SOFTMAX:
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise ValueError(f"unknown activation code {code}")


def activation_derivative(act, z: np.ndarray) -> np.ndarray:
    """σ'(z), elementwise (not defined for softmax)."""
    code = _act_code(act)
    if code == _A.IDENTITY:
        return np.ones_like(z)
    if code == _A.SIGMOID:
        s = _sigmoid(z)
        return s * (1 - s)
    if code == _A.TANH:
        return 1 - np.tanh(z) ** 2
    if code == _A.RELU:
        return (z > 0).astype(z.dtype)
    if code == _A.LEAKY_RELU:
        return np.where(z > 0, 1, _A.LEAKY_SLOPE).astype(z.dtype)
    if code == _A.SOFTPLUS:
        return _sigmoid(z)
    if code == _A.ELU:
        return np.where(z > 0, 1, np.exp(np.minimum(z, 0))).astype(z.dtype)
    if code == _A.GELU:
        phi = (1 / math.sqrt(2 * math.pi)) * np.exp(-0.5 * z * z)
        return 0.5 * (1 + _erf(z * (1 / math.sqrt(2)))) + z * phi
    raise ValueError(f"activation {_A.NAMES[code]} has no elementwise derivative")


def _targets(y: np.ndarray, n_out: int, dtype) -> np.ndarray:
    if y.ndim == 1:
        t = np.zeros((y.shape[0], n_out), dtype=dtype)
        t[np.arange(y.shape[0]), y] = 1
        return t
    return y


def linear_forward(W, b, a_prev, act):
    """z^l = a^{l-1} (W^l)^T + b^l and a^l = σ_l(z^l); returns (z, a)."""
    z = a_prev @ W.T + b
    return z, activation(act, z)


def output_delta(loss, act, z, a, y, sample_weight=None):
    """BP1: δ^L = ∇_a C ⊙ σ'(z^L); returns (C, δ^L).  ``y`` may be integer labels.

    With ``sample_weight`` w, C = Σ_n w_n ℓ_n / Σ_n w_n instead of the plain mean.
    """
    loss, act = _loss_code(loss), _act_code(act)
    t = _targets(y, z.shape[1], z.dtype)
    if sample_weight is not None:
        w = np.asarray(sample_weight, dtype=np.promote_types(z.dtype, np.float64))  # float64 or wider
        total = w.sum()
        if total <= 0:
            return 0.0, np.zeros_like(z)
        C = 0.0
        delta = np.empty_like(z)
        for r in range(z.shape[0]):  # each sample as a batch of one, weighted
            c, d = output_delta(loss, act, z[r : r + 1], a[r : r + 1], t[r : r + 1])
            C += w[r] / total * c
            delta[r] = d[0] * z.dtype.type(w[r] / total)
        return float(C), delta
    N = z.shape[0]
    if loss == _L.CROSS_ENTROPY:
        m = z.max(axis=1, keepdims=True)
        lse = m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))
        C = np.sum(t * (lse - z), dtype=np.float64) / N
        delta = (a * t.sum(axis=1, keepdims=True) - t) / N
    elif loss == _L.BINARY_CROSS_ENTROPY:
        C = np.sum(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z))), dtype=np.float64) / N
        delta = (a - t) / N
    else:
        g = (a - t) / N
        C = 0.5 * np.sum((a - t) ** 2, dtype=np.float64) / N
        if act == _A.SOFTMAX:
            delta = a * (g - np.sum(g * a, axis=1, keepdims=True))
        else:
            delta = g * activation_derivative(act, z)
    return float(C), delta.astype(z.dtype, copy=False)


def backprop_delta(W_next, delta_next, z, act):
    """BP2: δ^l = ((W^{l+1})^T δ^{l+1}) ⊙ σ'(z^l)."""
    return (delta_next @ W_next) * activation_derivative(act, z)


def weight_grad(delta, a_prev):
    """BP3: ∂C/∂w^l_jk = Σ_n a^{l-1}_nk δ^l_nj."""
    return delta.T @ a_prev


def bias_grad(delta):
    """BP4: ∂C/∂b^l_j = Σ_n δ^l_nj."""
    return delta.sum(axis=0)


def forward(params, sizes, acts, x):
    """a^L for inputs x (N, n0)."""
    Ws, bs = split_params(params, sizes)
    a = x
    for W, b, act in zip(Ws, bs, acts, strict=True):
        _, a = linear_forward(W, b, a, act)
    return a


def loss(params, sizes, acts, loss, x, y, sample_weight=None):
    """(C, a^L) for one minibatch: the forward pass and the loss, no backward pass."""
    Ws, bs = split_params(params, sizes)
    a, z = x, None
    for W, b, act in zip(Ws, bs, acts, strict=True):
        z, a = linear_forward(W, b, a, act)
    C, _ = output_delta(loss, acts[-1], z, a, y, sample_weight)
    return C, a


def count_correct(act, out, y):
    """(correct, counted): argmax against the target's argmax (or label) for a softmax output,
    each output thresholded at 0.5 against its target (or the label's one-hot row) for sigmoid."""
    act = _act_code(act)
    t = _targets(y, out.shape[1], out.dtype)
    if act == _A.SOFTMAX:
        target = y if y.ndim == 1 else t.argmax(axis=1)
        return int(np.sum(out.argmax(axis=1) == target)), out.shape[0]
    if act == _A.SIGMOID:
        return int(np.sum((out > 0.5) == (t > 0.5))), out.size
    return 0, 0


def loss_and_grad(params, sizes, acts, loss, x, y, sample_weight=None):
    """(C, ∂C/∂θ) for one minibatch, ∂C/∂θ laid out like ``params``."""
    Ws, bs = split_params(params, sizes)
    acts = [_act_code(a) for a in acts]
    zs, as_ = [], [x]
    for W, b, act in zip(Ws, bs, acts, strict=True):
        z, a = linear_forward(W, b, as_[-1], act)
        zs.append(z)
        as_.append(a)
    C, delta = output_delta(loss, acts[-1], zs[-1], as_[-1], y, sample_weight)
    grad = np.empty_like(params)
    gWs, gbs = split_params(grad, sizes)
    for l in range(len(Ws) - 1, -1, -1):
        gWs[l][...] = weight_grad(delta, as_[l])
        gbs[l][...] = bias_grad(delta)
        if l > 0:
            delta = backprop_delta(Ws[l], delta, zs[l - 1], acts[l - 1])
    return C, grad
