"""Activation functions: integer codes, σ and σ' as compiled scalar functions.

Each activation has an integer code, so kernels select it with a branch that
sits outside their innermost loop instead of receiving a function object
(passing functions costs dispatch time and defeats caching, numba #2952).

Every function here is stable for any finite input: no overflow, no NaN and
no ``log(0)`` for |z| up to 1e4 and beyond.  Constants take the dtype of the
argument (``type(z)(...)``), so float32 stays float32 (numba #888, #7290).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .config import FASTMATH

__all__ = [
    "CODES",
    "ELU",
    "GELU",
    "IDENTITY",
    "LEAKY_RELU",
    "LEAKY_SLOPE",
    "NAMES",
    "RELU",
    "SIGMOID",
    "SOFTMAX",
    "SOFTPLUS",
    "TANH",
    "activate_and_derive_row",
    "activate_row",
    "derivative",
    "scale_by_derivative_row",
    "value",
]

IDENTITY = 0
SIGMOID = 1
TANH = 2
RELU = 3
LEAKY_RELU = 4
SOFTPLUS = 5
ELU = 6
GELU = 7
SOFTMAX = 8

#: Names in code order: ``NAMES[code]``.
NAMES = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus", "elu", "gelu", "softmax")
#: Name -> code.
CODES = {name: code for code, name in enumerate(NAMES)}

#: Slope of ``leaky_relu`` for negative inputs.
LEAKY_SLOPE = 0.01

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

_jit = njit(cache=True, fastmath=FASTMATH)


@_jit
def _sigmoid(z):
    one = type(z)(1.0)
    if z >= 0:
        return one / (one + np.exp(-z))
    e = np.exp(z)
    return e / (one + e)


@_jit
def value(code, z):
    """σ(z) for an elementwise activation ``code`` (not softmax).

    Parameters
    ----------
    code : int
        Activation code (``fastbp.activations.CODES[name]``).
    z : float32 or float64
        Weighted input.

    Returns
    -------
    same type as ``z``
    """
    T = type(z)
    if code == SIGMOID:
        return _sigmoid(z)
    if code == TANH:
        return np.tanh(z)
    if code == RELU:
        return z if z > 0 else T(0.0)
    if code == LEAKY_RELU:
        return z if z > 0 else T(LEAKY_SLOPE) * z
    if code == SOFTPLUS:
        # log(1 + e^z) = max(z, 0) + log1p(e^-|z|)
        return max(z, T(0.0)) + np.log1p(np.exp(-abs(z)))
    if code == ELU:
        return z if z > 0 else np.expm1(z)
    if code == GELU:
        return T(0.5) * z * (T(1.0) + math.erf(z * T(_INV_SQRT2)))
    return z


@_jit
def derivative(code, z):
    """σ'(z) for an elementwise activation ``code`` (not softmax).

    Parameters
    ----------
    code : int
        Activation code.
    z : float32 or float64
        Weighted input.

    Returns
    -------
    same type as ``z``
    """
    T = type(z)
    if code == SIGMOID:
        s = _sigmoid(z)
        return s * (T(1.0) - s)
    if code == TANH:
        t = np.tanh(z)
        return T(1.0) - t * t
    if code == RELU:
        return T(1.0) if z > 0 else T(0.0)
    if code == LEAKY_RELU:
        return T(1.0) if z > 0 else T(LEAKY_SLOPE)
    if code == SOFTPLUS:
        return _sigmoid(z)
    if code == ELU:
        return T(1.0) if z > 0 else np.exp(z)
    if code == GELU:
        # d/dz z Φ(z) = Φ(z) + z φ(z); z*z cannot overflow for |z| < 1.8e19 in float32
        # and exp(-z²/2) underflows cleanly to 0 long before that.
        phi = T(_INV_SQRT_2PI) * np.exp(T(-0.5) * z * z)
        return T(0.5) * (T(1.0) + math.erf(z * T(_INV_SQRT2))) + z * phi
    return T(1.0)


@_jit
def activate_row(code, z, a):
    """a = σ(z) over one row (one sample); ``a`` may be ``z``.

    Softmax is taken over the whole row: a_j = exp(z_j - max z) / Σ_i exp(z_i - max z).

    Parameters
    ----------
    code : int
        Activation code.
    z, a : 1-D float arrays of the same length and dtype.
    """
    n = z.shape[0]
    zero = z.dtype.type(0.0)
    if code == IDENTITY:
        for i in range(n):
            a[i] = z[i]
    elif code == RELU:
        for i in range(n):
            zi = z[i]
            a[i] = zi if zi > 0 else zero
    elif code == SOFTMAX:
        m = z[0]
        for i in range(1, n):
            if z[i] > m:
                m = z[i]
        s = zero
        for i in range(n):
            e = np.exp(z[i] - m)
            a[i] = e
            s += e
        inv = z.dtype.type(1.0) / s
        for i in range(n):
            a[i] *= inv
    else:
        for i in range(n):
            a[i] = value(code, z[i])


@_jit
def activate_and_derive_row(code, z, a):
    """a = σ(z) and, in place of z, s = σ'(z), over one row (elementwise activations only).

    The training forward pass keeps s instead of z for hidden layers, so that BP2 needs no
    transcendental function: σ' comes from a where it can (sigmoid a(1−a), tanh 1−a²), and
    sigmoid and tanh cost one exponential per element instead of two.
    """
    n = z.shape[0]
    T = z.dtype.type
    zero = T(0.0)
    one = T(1.0)
    if code == IDENTITY:
        for i in range(n):
            a[i] = z[i]
            z[i] = one
    elif code == RELU:
        for i in range(n):
            zi = z[i]
            pos = zi > 0
            a[i] = zi if pos else zero
            z[i] = one if pos else zero
    elif code == SIGMOID:
        for i in range(n):
            ai = _sigmoid(z[i])
            a[i] = ai
            z[i] = ai * (one - ai)
    elif code == TANH:
        for i in range(n):
            ai = np.tanh(z[i])
            a[i] = ai
            z[i] = one - ai * ai
    else:
        for i in range(n):
            zi = z[i]
            a[i] = value(code, zi)
            z[i] = derivative(code, zi)


@_jit
def scale_by_derivative_row(code, z, g, out):
    """out = g ⊙ σ'(z) over one row; ``out`` may be ``g`` or ``z``.

    The Hadamard factor of BP1 and BP2 for an elementwise activation.

    Parameters
    ----------
    code : int
        Activation code (not softmax: its Jacobian is not diagonal).
    z, g, out : 1-D float arrays of the same length and dtype.
    """
    n = z.shape[0]
    zero = z.dtype.type(0.0)
    if code == IDENTITY:
        for i in range(n):
            out[i] = g[i]
    elif code == RELU:
        for i in range(n):
            out[i] = g[i] if z[i] > 0 else zero
    else:
        for i in range(n):
            out[i] = g[i] * derivative(code, z[i])
