"""Elementary functions that vectorise: exp of a non-positive argument, sigmoid and tanh.

Numba calls libm for ``np.exp`` and ``np.tanh``, one element at a time, and this
machine's LLVM has no vector math library (SVML) to replace the calls.  In the
sigmoid and tanh layers of a network that scalar call would be a large part of the
time of the whole training step.
The functions here are written with arithmetic, comparisons and one integer
bit-cast only, so a loop over them compiles to AVX-512 code.

They follow Cephes (S. L. Moshier): exp by Cody–Waite reduction
x = n ln 2 + f and a degree-6 polynomial (float32) or a Padé form (float64)
for e^f; tanh by an odd polynomial (float32) or rational function (float64)
below |x| = 0.625 and (1 − e^{−2|x|}) / (1 + e^{−2|x|}) above.  Their errors
against NumPy over a dense grid are bounded in ``tests/test_math.py`` (a few units
in the last place).

Compiled without fast-math -- explicitly, ``fastmath=False``: a function that leaves the
option unset inherits its first caller's flags, and the kernels' fast-math callers made
float32 exp 4 ulp off -- and with ``error_model="numpy"`` (a division raises
nothing, which is what lets the loops vectorise): the same input gives the same
bits in the vector body of a loop and in its scalar remainder, so a sample's
result does not depend on where it sits in the batch.
"""

from __future__ import annotations

import math

from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from ._cache import cached_njit

__all__ = ["exp_nonpos", "sigmoid", "tanh"]

_ew = cached_njit(error_model="numpy", fastmath=False)  # explicit: a callee inherits unset flags

_LOG2E = 1.4426950408889634


@intrinsic
def _pow2(typingctx, like, n):
    """2.0**n in the float type of ``like``, by building its bits; n must be a normal exponent."""
    if not isinstance(like, types.Float) or not isinstance(n, types.Integer):
        return None
    bits, bias, shift = (32, 127, 23) if like.bitwidth == 32 else (64, 1023, 52)
    ity = ir.IntType(bits)

    def codegen(context, builder, signature, args):
        nv = args[1]
        width = nv.type.width
        if width > bits:
            nv = builder.trunc(nv, ity)
        elif width < bits:
            nv = builder.sext(nv, ity)
        word = builder.shl(builder.add(nv, ir.Constant(ity, bias)), ir.Constant(ity, shift))
        return builder.bitcast(word, context.get_value_type(like))

    return like(like, n), codegen


@_ew
def _single(t):
    """True when ``t`` is a float32 (a branch LLVM folds: the test is on constants)."""
    T = type(t)
    return T(1.0) + T(1e-10) == T(1.0)


@_ew
def exp_nonpos(t):
    """e^t for t <= 0 (and NaN for NaN), accurate to a few ulp, vectorisable.

    Parameters
    ----------
    t : float32 or float64
        Non-positive argument; results below the smallest subnormal round to 0.

    Returns
    -------
    same type as ``t``
    """
    T = type(t)
    if _single(t):
        lo = T(-104.0)  # e^-104 < half the smallest float32 subnormal
    else:
        lo = T(-746.0)
    t = lo if t < lo else t  # keeps NaN
    n = math.floor(t * T(_LOG2E) + T(0.5))
    nf = T(n)
    if _single(t):
        f = (t - nf * T(0.693359375)) - nf * T(-2.12194440e-4)
        p = T(1.9875691500e-4)
        p = p * f + T(1.3981999507e-3)
        p = p * f + T(8.3334519073e-3)
        p = p * f + T(4.1665795894e-2)
        p = p * f + T(1.6666665459e-1)
        p = p * f + T(5.0000001201e-1)
        e = p * (f * f) + f + T(1.0)
    else:
        f = (t - nf * T(6.93145751953125e-1)) - nf * T(1.42860682030941723212e-6)
        ff = f * f
        px = T(1.26177193074810590878e-4)
        px = px * ff + T(3.02994407707441961300e-2)
        px = px * ff + T(9.99999999999999999910e-1)
        px = px * f
        q = T(3.00198505138664455042e-6)
        q = q * ff + T(2.52448340349684104192e-3)
        q = q * ff + T(2.27265548208155028766e-1)
        q = q * ff + T(2.00000000000000000009e0)
        e = T(1.0) + T(2.0) * (px / (q - px))
    # 2^n in two factors so that n down to twice the smallest normal exponent is exact.
    h = n >> 1
    return e * _pow2(t, h) * _pow2(t, n - h)


@_ew
def sigmoid(z):
    """σ(z) = 1 / (1 + e^{−z}), from e^{−|z|} so that nothing overflows; vectorisable."""
    T = type(z)
    e = exp_nonpos(-abs(z))
    inv = T(1.0) / (T(1.0) + e)
    return inv if z >= 0 else e * inv


@_ew
def tanh(z):
    """tanh(z): an odd polynomial (float32) or rational function (float64) for |z| < 0.625,
    (1 − e^{−2|z|}) / (1 + e^{−2|z|}) above; vectorisable."""
    T = type(z)
    x = abs(z)
    x2 = x * x
    if _single(z):
        p = T(-5.70498872745e-3)
        p = p * x2 + T(2.06390887954e-2)
        p = p * x2 + T(-5.37397155531e-2)
        p = p * x2 + T(1.33314422036e-1)
        p = p * x2 + T(-3.33332819422e-1)
        small = x + x * x2 * p
    else:
        p = T(-9.64399179425052238628e-1)
        p = p * x2 + T(-9.92877231001918586564e1)
        p = p * x2 + T(-1.61468768441708447952e3)
        q = x2 + T(1.12811678491632931402e2)
        q = q * x2 + T(2.23548839060100448583e3)
        q = q * x2 + T(4.84406305325125486048e3)
        small = x + x * x2 * (p / q)
    e = exp_nonpos(T(-2.0) * x)
    large = (T(1.0) - e) / (T(1.0) + e)
    r = small if x < T(0.625) else large
    return math.copysign(r, z)
