"""Loss functions: integer codes, C and δ^L = ∂C/∂z^L for one sample.

C is the mean over the minibatch of N samples:

- ``mse``:                  C = 1/(2N) Σ_n Σ_j (a^L_nj − y_nj)²
- ``cross_entropy``:        C = −1/N Σ_n Σ_j y_nj log a^L_nj   (softmax output)
- ``binary_cross_entropy``: C = −1/N Σ_n Σ_j [y log a + (1−y) log(1−a)]   (sigmoid output)

Both cross-entropies are evaluated from z^L (log-sum-exp and
``max(z,0) − z y + log1p(e^−|z|)``), never as ``log`` of a rounded
probability, so they are finite for any finite z.
"""

from __future__ import annotations

import numpy as np

from ._cache import cached_njit
from .activations import SIGMOID, SOFTMAX, derivative
from .config import FASTMATH

__all__ = [
    "BINARY_CROSS_ENTROPY",
    "CODES",
    "CROSS_ENTROPY",
    "MSE",
    "NAMES",
    "REQUIRED_OUTPUT",
    "output_delta_at",
]

MSE = 0
CROSS_ENTROPY = 1
BINARY_CROSS_ENTROPY = 2

#: Names in code order.
NAMES = ("mse", "cross_entropy", "binary_cross_entropy")
#: Name -> code.
CODES = {name: code for code, name in enumerate(NAMES)}
#: The output activation a loss requires (None: any).
REQUIRED_OUTPUT = {MSE: None, CROSS_ENTROPY: SOFTMAX, BINARY_CROSS_ENTROPY: SIGMOID}


# The log-sum-exp's sum of exponentials runs in four partial sums added in a fixed order: one chain
# of dependent additions is slow for wide outputs, and LLVM may not reorder it (config.FASTMATH).
@cached_njit(fastmath=FASTMATH)
def output_delta_at(loss, act, z, a, y, label, scale, delta, r):
    """BP1 for sample ``r``: δ^L = ∇_a C ⊙ σ'(z^L) in row r; returns the sample's loss term.

    With ``label >= 0`` the target is the one-hot vector of ``label`` and ``y``
    is not read; otherwise the target is row r of ``y``.  ``scale`` is the
    sample's weight in C (1/N for the plain mean).  ``delta`` may be ``z``.

    - mse: δ_j = s (a_j − y_j) σ'(z_j); for a softmax output the
      Jacobian-vector product δ_j = a_j (g_j − Σ_i g_i a_i), g = s (a − y).
    - cross_entropy (softmax): δ_j = s (a_j Σ_i y_i − y_j), which is
      s (a_j − y_j) for one-hot or probability targets.
    - binary_cross_entropy (sigmoid): δ_j = s (a_j − y_j).

    Parameters
    ----------
    loss, act : int
        Loss and output-activation codes.
    z, a : 2-D float arrays
        z^L and a^L, one sample per row.
    y : 2-D float array
        Targets, one per row (ignored when ``label >= 0``).
    label : int
        Class label, or -1 to use ``y``.
    scale : float
        Weight of the sample in the mean (the same dtype as ``z``).
    delta : 2-D float array
        Output: δ^L, row r written.
    r : int
        The sample (row).

    Returns
    -------
    float
        The sample's unscaled loss term (Σ_j of the summand of C).
    """
    n = z.shape[1]
    T = z.dtype.type
    zero = T(0.0)
    one = T(1.0)
    total = 0.0
    if loss == CROSS_ENTROPY:
        m = z[r, 0]
        for i in range(1, n):
            if z[r, i] > m:
                m = z[r, i]
        # Σ_i e^(z_i − m) in four interleaved sums, added in a fixed order (compiled in order, see
        # above: four chains of additions instead of one, so the order costs no latency)
        s0 = s1 = s2 = s3 = zero
        i = 0
        while i + 4 <= n:
            s0 += np.exp(z[r, i] - m)
            s1 += np.exp(z[r, i + 1] - m)
            s2 += np.exp(z[r, i + 2] - m)
            s3 += np.exp(z[r, i + 3] - m)
            i += 4
        s = (s0 + s1) + (s2 + s3)
        while i < n:
            s += np.exp(z[r, i] - m)
            i += 1
        lse = m + np.log(s)
        if label >= 0:  # one-hot: Σ_i y_i (lse − z_i) is the label's term alone, and Σ_i y_i = 1
            # (a label past the last class, which only an unchecked call can pass, reads nothing:
            # an all-zero target, as the sum over the classes gave)
            sy = one if label < n else zero
            total = float(lse - z[r, label]) if label < n else 0.0
        else:
            sy = zero
            for i in range(n):
                sy += y[r, i]
                total += y[r, i] * (lse - z[r, i])
        for i in range(n):
            yi = (one if i == label else zero) if label >= 0 else y[r, i]
            delta[r, i] = scale * (a[r, i] * sy - yi)
    elif loss == BINARY_CROSS_ENTROPY:
        for i in range(n):
            yi = (one if i == label else zero) if label >= 0 else y[r, i]
            zi = z[r, i]
            total += max(zi, zero) - zi * yi + np.log1p(np.exp(-abs(zi)))
            delta[r, i] = scale * (a[r, i] - yi)
    else:  # MSE
        if act == SOFTMAX:
            ga = zero
            for i in range(n):
                yi = (one if i == label else zero) if label >= 0 else y[r, i]
                d = a[r, i] - yi
                total += 0.5 * d * d
                ga += d * a[r, i]
            for i in range(n):
                yi = (one if i == label else zero) if label >= 0 else y[r, i]
                delta[r, i] = scale * a[r, i] * ((a[r, i] - yi) - ga)
        else:
            for i in range(n):
                yi = (one if i == label else zero) if label >= 0 else y[r, i]
                d = a[r, i] - yi
                total += 0.5 * d * d
                delta[r, i] = scale * d * derivative(act, z[r, i])  # reads z[r, i] before delta may overwrite it
    return total
