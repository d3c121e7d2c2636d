"""Device functions shared by the CUDA kernels: σ, σ' and their stable forms.

Built once per float type by :func:`build`, so that every constant has the
kernel's dtype: a float64 literal in float32 device code would turn the
arithmetic around it into float64, which runs at a fraction of the float32
rate on most GPUs.  The formulas are those of :mod:`fastbp.activations`.
"""

from __future__ import annotations

import math
from functools import cache
from types import SimpleNamespace

import numpy as np
from numba import cuda  # module-level: the simulator swaps module globals

from .. import activations as _A
from . import _compat  # noqa: F401  (before the first compilation)

IDENTITY, SIGMOID, TANH, RELU, LEAKY_RELU = _A.IDENTITY, _A.SIGMOID, _A.TANH, _A.RELU, _A.LEAKY_RELU
SOFTPLUS, ELU, GELU, SOFTMAX = _A.SOFTPLUS, _A.ELU, _A.GELU, _A.SOFTMAX


def device_function(fn):
    """``cuda.jit(device=True)``, inlined at the NVVM level where this numba-cuda can
    (``forceinline``), so that the local arrays a caller passes stay in registers."""
    try:
        return cuda.jit(device=True, forceinline=True)(fn)
    except TypeError:  # older numba-cuda, or the simulator
        return cuda.jit(device=True)(fn)


@cache
def build(dtype_name: str) -> SimpleNamespace:
    """Device functions for ``dtype_name`` ("float32" or "float64")."""
    import numba

    T = numba.float32 if dtype_name == "float32" else numba.float64
    ZERO = np.dtype(dtype_name).type(0.0)
    ONE = np.dtype(dtype_name).type(1.0)
    HALF = np.dtype(dtype_name).type(0.5)
    SLOPE = np.dtype(dtype_name).type(_A.LEAKY_SLOPE)
    INV_SQRT2 = np.dtype(dtype_name).type(1.0 / math.sqrt(2.0))
    INV_SQRT_2PI = np.dtype(dtype_name).type(1.0 / math.sqrt(2.0 * math.pi))

    dev = device_function

    @dev
    def sigmoid(z):
        # Branch-free and stable: e = exp(-|z|) never overflows.
        e = math.exp(-abs(z))
        r = ONE / (ONE + e)
        return r if z >= ZERO else e * r

    @dev
    def value(code, z):
        if code == SIGMOID:
            return sigmoid(z)
        if code == TANH:
            return math.tanh(z)
        if code == RELU:
            return z if z > ZERO else ZERO
        if code == LEAKY_RELU:
            return z if z > ZERO else SLOPE * z
        if code == SOFTPLUS:
            return max(z, ZERO) + math.log1p(math.exp(-abs(z)))
        if code == ELU:
            return z if z > ZERO else math.expm1(z)
        if code == GELU:
            return HALF * z * (ONE + math.erf(z * INV_SQRT2))
        return z

    @dev
    def derivative(code, z):
        if code == SIGMOID:
            s = sigmoid(z)
            return s * (ONE - s)
        if code == TANH:
            t = math.tanh(z)
            return ONE - t * t
        if code == RELU:
            return ONE if z > ZERO else ZERO
        if code == LEAKY_RELU:
            return ONE if z > ZERO else SLOPE
        if code == SOFTPLUS:
            return sigmoid(z)
        if code == ELU:
            return ONE if z > ZERO else math.exp(z)
        if code == GELU:
            phi = INV_SQRT_2PI * math.exp(-HALF * z * z)
            return HALF * (ONE + math.erf(z * INV_SQRT2)) + z * phi
        return ONE

    @dev
    def derivative_from_value(code, a):
        """σ'(z) from a = σ(z), for every activation but gelu (not invertible)."""
        if code == SIGMOID:
            return a * (ONE - a)
        if code == TANH:
            return ONE - a * a
        if code == RELU:
            return ONE if a > ZERO else ZERO
        if code == LEAKY_RELU:
            return ONE if a > ZERO else SLOPE
        if code == SOFTPLUS:
            # σ' = sigmoid(z) = 1 - exp(-softplus(z))
            return -math.expm1(-a)
        if code == ELU:
            return ONE if a > ZERO else a + ONE
        return ONE

    return SimpleNamespace(
        T=T,
        ZERO=ZERO,
        ONE=ONE,
        HALF=HALF,
        sigmoid=sigmoid,
        value=value,
        derivative=derivative,
        derivative_from_value=derivative_from_value,
    )
