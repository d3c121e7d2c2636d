"""Activation functions: integer codes, σ and σ' as compiled scalar functions.

Each activation has an integer code, so kernels select it with a branch that
sits outside their innermost loop instead of receiving a function object
(passing functions costs dispatch time and defeats caching, numba #2952).

Every function here is stable for any finite input: no overflow, no NaN and
no ``log(0)`` for ``|z|`` up to 1e4 and beyond.  Constants take the dtype of the
argument (``type(z)(...)``), so float32 stays float32 (numba #888, #7290).
"""

from __future__ import annotations

import math

import numpy as np

from . import _math
from ._cache import cached_njit
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
    "activate_and_derive_rows",
    "activate_row",
    "activate_rows",
    "derivative",
    "scale_by_derivative_row",
    "scale_by_derivative_rows",
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

_jit = cached_njit(fastmath=FASTMATH)


# Sigmoid and tanh come from fastbp._math: arithmetic only, so the row loops below vectorise.
_sigmoid = _math.sigmoid
_tanh = _math.tanh

#: Row loops: no fast-math (the vector body and the scalar remainder of a loop give the same
#: bits, so a sample's result does not depend on its place in the batch), and divisions that
#: raise nothing (``error_model="numpy"``), which is what lets the loops vectorise.
_rows = cached_njit(error_model="numpy", fastmath=False)


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
        return _tanh(z)
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
        t = _tanh(z)
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


@_rows
def activate_rows(code, z, a, r0, r1):
    """a = σ(z) for the rows r0 <= r < r1 of 2-D ``z`` and ``a`` (``a`` may be ``z``).

    Softmax is taken over each row: a_j = exp(z_j - max z) / Σ_i exp(z_i - max z).

    Parameters
    ----------
    code : int
        Activation code.
    z, a : 2-D float arrays of the same shape and dtype, one sample per row.
    r0, r1 : int
        The rows to compute.
    """
    n = z.shape[1]
    T = z.dtype.type
    zero = T(0.0)
    if code == IDENTITY:
        for r in range(r0, r1):
            for i in range(n):
                a[r, i] = z[r, i]
    elif code == RELU:
        for r in range(r0, r1):
            for i in range(n):
                zi = z[r, i]
                a[r, i] = zi if zi > 0 else zero
    elif code == SIGMOID:
        for r in range(r0, r1):
            for i in range(n):
                a[r, i] = _sigmoid(z[r, i])
    elif code == TANH:
        for r in range(r0, r1):
            for i in range(n):
                a[r, i] = _tanh(z[r, i])
    elif code == SOFTMAX:
        for r in range(r0, r1):
            m = z[r, 0]
            for i in range(1, n):
                if z[r, i] > m:
                    m = z[r, i]
            s = zero
            for i in range(n):
                e = np.exp(z[r, i] - m)
                a[r, i] = e
                s += e
            inv = T(1.0) / s
            for i in range(n):
                a[r, i] *= inv
    else:
        for r in range(r0, r1):
            for i in range(n):
                a[r, i] = value(code, z[r, i])


@_rows
def activate_row(code, z, a):
    """a = σ(z) over one row (one sample); ``a`` may be ``z``.

    Softmax is taken over the whole row: a_j = exp(z_j - max z) / Σ_i exp(z_i - max z).

    Parameters
    ----------
    code : int
        Activation code.
    z, a : 1-D float arrays of the same length and dtype.
    """
    activate_rows(code, z[None, :], a[None, :], 0, 1)


@_rows
def activate_and_derive_rows(code, z, a, r0, r1):
    """a = σ(z) and, in place of z, s = σ'(z), for the rows r0 <= r < r1 (elementwise activations).

    The training forward pass keeps s instead of z for hidden layers, so that BP2 needs no
    transcendental function: σ' comes from a where it can (sigmoid a(1−a), tanh 1−a²), and
    sigmoid and tanh cost one exponential per element instead of two.

    Parameters
    ----------
    code : int
        Activation code (not softmax).
    z, a : 2-D float arrays of the same shape and dtype; z is overwritten with σ'(z).
    r0, r1 : int
        The rows to compute.
    """
    n = z.shape[1]
    T = z.dtype.type
    zero = T(0.0)
    one = T(1.0)
    if code == IDENTITY:
        for r in range(r0, r1):
            for i in range(n):
                a[r, i] = z[r, i]
                z[r, i] = one
    elif code == RELU:
        for r in range(r0, r1):
            for i in range(n):
                zi = z[r, i]
                pos = zi > 0
                a[r, i] = zi if pos else zero
                z[r, i] = one if pos else zero
    elif code == SIGMOID:
        for r in range(r0, r1):
            for i in range(n):
                ai = _sigmoid(z[r, i])
                a[r, i] = ai
                z[r, i] = ai * (one - ai)
    elif code == TANH:
        for r in range(r0, r1):
            for i in range(n):
                ai = _tanh(z[r, i])
                a[r, i] = ai
                z[r, i] = one - ai * ai
    else:
        for r in range(r0, r1):
            for i in range(n):
                zi = z[r, i]
                a[r, i] = value(code, zi)
                z[r, i] = derivative(code, zi)


@_rows
def scale_by_derivative_rows(code, z, g, out, r0, r1):
    """out = g ⊙ σ'(z) for the rows r0 <= r < r1; ``out`` may be ``g`` or ``z``.

    The Hadamard factor of BP1 and BP2 for an elementwise activation.

    Parameters
    ----------
    code : int
        Activation code (not softmax: its Jacobian is not diagonal).
    z, g, out : 2-D float arrays of the same shape and dtype.
    r0, r1 : int
        The rows to compute.
    """
    n = z.shape[1]
    zero = z.dtype.type(0.0)
    if code == IDENTITY:
        for r in range(r0, r1):
            for i in range(n):
                out[r, i] = g[r, i]
    elif code == RELU:
        for r in range(r0, r1):
            for i in range(n):
                out[r, i] = g[r, i] if z[r, i] > 0 else zero
    else:
        for r in range(r0, r1):
            for i in range(n):
                out[r, i] = g[r, i] * derivative(code, z[r, i])


@_rows
def scale_by_derivative_row(code, z, g, out):
    """out = g ⊙ σ'(z) over one row; ``out`` may be ``g`` or ``z``.

    The Hadamard factor of BP1 and BP2 for an elementwise activation.

    Parameters
    ----------
    code : int
        Activation code (not softmax: its Jacobian is not diagonal).
    z, g, out : 1-D float arrays of the same length and dtype.
    """
    scale_by_derivative_rows(code, z[None, :], g[None, :], out[None, :], 0, 1)
