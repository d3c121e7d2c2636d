"""Rounding-error bounds shared by the tests: per operation, and propagated through a network.

Every bound is the standard worst case of the arithmetic, not a tolerance tuned to pass: a sum
of K products, in any order, with fused multiply-adds or without, is off by at most

    γ_K · Σ |terms|,    γ_K = K u / (1 − K u)

(Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1), u = 2⁻²⁴ (float32) or 2⁻⁵³
(float64).  An activation applied to a computed z adds its Lipschitz constant times the bound of
z, plus the ulps ``tests/test_math.py`` measures for it.  The "exact" value is the same formula
evaluated in wider arithmetic on the same inputs (``exact``): float64 for float32 inputs,
extended precision (``np.longdouble``, 64-bit significand on x86-64) for float64 inputs.

``network_bound`` carries these per-operation bounds through a whole forward and backward pass,
to first order; ``assert_network_within`` checks a computed loss and gradient against it with the
documented slack ``NETWORK_SLACK`` for the second-order terms the propagation drops.  No bound
grows with the batch size except through γ_N of the gradient sums.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastbp import activations as A
from fastbp import reference as R
from fastbp.layout import split_params

UNIT = {np.float32: 2.0**-24, np.float64: 2.0**-53}

#: Largest |σ'| (the Lipschitz constant) of each elementwise activation.
LIPSCHITZ = {"identity": 1.0, "sigmoid": 0.25, "tanh": 1.0, "relu": 1.0, "leaky_relu": 1.0,
             "softplus": 1.0, "elu": 1.0, "gelu": 1.13}
#: Ulps of σ itself, relative to |σ(z)| (tests/test_math.py measures sigmoid <= 4, tanh <= 2;
#: softplus, elu and gelu are libm calls combined with one or two roundings).
ACT_ULPS = {"identity": 0, "sigmoid": 4, "tanh": 2, "relu": 0, "leaky_relu": 1, "softplus": 4,
            "elu": 2, "gelu": 8}
#: Absolute error of σ in units of u·|z|: gelu = ½ z (1 + erf(z/√2)) loses the relative accuracy
#: of 1 + erf where erf is near −1, leaving erf's absolute error (an ulp of 1) times ½|z|.
ACT_ABS_Z = {"gelu": 2.0}
#: Largest |σ''| (how fast σ' moves with z): a z off by e moves σ'(z) by at most SECOND·e.
SECOND = {"identity": 0.0, "sigmoid": 0.1, "tanh": 0.77, "relu": 0.0, "leaky_relu": 0.0,
          "softplus": 0.25, "elu": 1.0, "gelu": 0.8}
#: Jump of σ' at z = 0: a z within its error bound of 0 may take either side's σ'.
KINK = {"relu": 1.0, "leaky_relu": 1.0 - A.LEAKY_SLOPE}
#: Absolute error of the computed σ' in units of u (|σ'| <= 1.13): 1 − t², s (1 − s), Φ + z φ,
#: from values a few ulps off.
DERIV_ABS = 16.0

#: Slack on the propagated network bound, for the second-order terms it drops (products of two
#: first-order errors, each far below 1e-2 relative in float32) and the float64 rounding of the
#: bound's own arithmetic: a documented constant, not a fit.
NETWORK_SLACK = 1.25


def gamma(k: int, dtype) -> float:
    """γ_k = k u / (1 − k u)."""
    ku = k * UNIT[dtype]
    return ku / (1.0 - ku)


def exact(x: np.ndarray) -> np.ndarray:
    """The inputs as the "exact" arithmetic sees them: float64 for float32 inputs, longdouble
    for float64 inputs (where it is wider; else float64, and the float64 bounds keep 2x slack)."""
    return x.astype(np.float64 if x.dtype == np.float32 else np.longdouble)


def assert_within(name: str, got: np.ndarray, exact_: np.ndarray, bound: np.ndarray, dtype) -> None:
    """|got − exact| <= bound entry by entry (plus the dtype's smallest normal, for underflow)."""
    got = np.asarray(got)
    assert got.dtype == dtype, f"{name}: dtype {got.dtype}"
    err = np.abs(got.astype(exact_.dtype) - exact_)
    limit = bound + np.finfo(dtype).tiny
    bad = ~(err <= limit)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err / limit, 0)), err.shape)
        pytest.fail(f"{name}: {int(bad.sum())} of {err.size} entries outside the rounding bound; worst at {i}: "
                    f"got {got[i]!r}, exact {float(exact_[i])!r}, error {float(err[i]):.3g} > bound "
                    f"{float(limit[i]):.3g}")


def _act_name(a) -> str:
    return a if isinstance(a, str) else A.NAMES[int(a)]


def _activation(act: str, z: np.ndarray) -> np.ndarray:
    # gelu's erf is SciPy's, in float64 only: an ulp of float64, inside the float64 bound's slack
    if act == "gelu" and z.dtype == np.longdouble:
        return R.activation(act, z.astype(np.float64)).astype(z.dtype)
    return R.activation(act, z)


def _derivative(act: str, z: np.ndarray) -> np.ndarray:
    if act == "gelu" and z.dtype == np.longdouble:
        return R.activation_derivative(act, z.astype(np.float64)).astype(z.dtype)
    return R.activation_derivative(act, z)


def _activation_bound(act: str, z, e_z, a, u):
    """Bound on the error of the computed σ(z) (z itself off by up to e_z): first order in e_z
    with the local slope, the second-order remainder ½ max|σ''| e_z², and σ's own rounding."""
    if act == "softmax":
        # Δa_j = a_j (Δz_j − Σ_i a_i Δz_i), then the exps, the row sum of n terms and the
        # division: (n + 4) u a_j, doubled
        moved = a * (e_z + (a * e_z).sum(axis=1, keepdims=True))
        return moved + 2 * (a.shape[1] + 4) * u * a
    slope = np.abs(_derivative(act, z))
    if act in KINK:  # either side's slope
        slope = np.where(np.abs(z) <= e_z, LIPSCHITZ[act], slope)
    return (slope * e_z + 0.5 * SECOND[act] * e_z * e_z + (ACT_ULPS[act] + 1) * 2 * u * np.abs(a)
            + ACT_ABS_Z.get(act, 0.0) * u * np.abs(z))


def _derivative_bound(act: str, z, e_z, u):
    """Bound on the error of the computed σ'(z) (z itself off by up to e_z)."""
    e = SECOND[act] * e_z + (DERIV_ABS * u if act not in ("identity", "relu", "leaky_relu") else 0.0)
    if act in KINK:
        e = e + KINK[act] * (np.abs(z) <= e_z)
    return e


def network_bound(params, sizes, acts, loss, x, y, sample_weight=None):
    """The exact loss and gradient of a network and entry-wise bounds on their computed values.

    Parameters
    ----------
    params, x : ndarray
        The network's parameters and inputs, float32 or float64 (both the same dtype).
    sizes, acts, loss
        As ``fastbp.reference.loss_and_grad`` takes them (names or codes).
    y : ndarray
        Targets (the params' dtype) or integer labels.
    sample_weight : ndarray, optional

    Returns
    -------
    (C, grad, bound_C, bound_grad)
        C and grad evaluated in the wider arithmetic of ``exact`` (grad by the NumPy reference),
        and first-order bounds on |computed − exact| for a kernel that rounds each operation in
        the params' dtype.
    """
    dtype = params.dtype.type
    u = UNIT[dtype]
    acts = [_act_name(a) for a in acts]
    loss = loss if isinstance(loss, str) else ("mse", "cross_entropy", "binary_cross_entropy")[int(loss)]
    P, xe = exact(params), exact(x)
    labels = y.ndim == 1
    ye = y if labels else exact(y)
    N = x.shape[0]
    if sample_weight is None:
        s = np.full((N, 1), 1.0 / N, P.dtype)
        e_s = 2 * u * s  # 1/N rounded
        we = None
    else:
        we = exact(np.asarray(sample_weight, dtype))
        s = (we / we.sum())[:, None]
        e_s = gamma(N + 2, dtype) * s  # Σ w in any order, then the division
    Ws, bs = split_params(P, sizes)
    L = len(Ws)
    a, ea, zs, ez = [xe], [np.zeros_like(xe)], [], []
    for l in range(L):
        W, b = Ws[l], bs[l]
        z = a[-1] @ W.T + b
        e = gamma(W.shape[1] + 1, dtype) * (np.abs(a[-1]) @ np.abs(W).T + np.abs(b)) + ea[-1] @ np.abs(W).T
        act = _activation(acts[l], z)
        zs.append(z)
        ez.append(e)
        ea.append(_activation_bound(acts[l], z, e, act, u))
        a.append(act)
    z, e_z, aL, e_a = zs[-1], ez[-1], a[-1], ea[-1]
    t = np.eye(sizes[-1], dtype=P.dtype)[y] if labels else ye
    out = acts[-1]
    # BP1: δ^L = ∂C/∂z^L, each row scaled by s_n = w_n / Σw (or 1/N), and the loss terms ℓ_n
    if loss == "cross_entropy":
        m = z.max(axis=1, keepdims=True)
        lse = m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))
        ell = (t * (lse - z)).sum(axis=1, keepdims=True)
        mag = (np.abs(t) * (np.abs(lse) + np.abs(z) + np.abs(m) + 4)).sum(axis=1, keepdims=True)
        ts = t.sum(axis=1, keepdims=True)
        g = aL * ts - t
        e_g = e_a * np.abs(ts) + (sizes[-1] + 2) * u * (np.abs(aL * ts) + np.abs(t))
        dz = g
    elif loss == "binary_cross_entropy":
        ell = (np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))).sum(axis=1, keepdims=True)
        mag = (2 * np.abs(z) + np.abs(z * t) + 1).sum(axis=1, keepdims=True)
        dz = aL - t
        e_g = e_a + 2 * u * np.abs(dz)
    else:  # mse
        r = aL - t
        ell = 0.5 * (r * r).sum(axis=1, keepdims=True)
        mag = ell
        e_r = e_a + u * np.abs(r)
        if out == "softmax":  # δ = a ⊙ (r − Σ_k a_k r_k)
            q = (aL * r).sum(axis=1, keepdims=True)
            e_q = ((e_a * np.abs(r) + np.abs(aL) * e_r).sum(axis=1, keepdims=True)
                   + gamma(sizes[-1] + 1, dtype) * np.abs(aL * r).sum(axis=1, keepdims=True))
            dz = aL * (r - q)
            e_g = e_a * np.abs(r - q) + np.abs(aL) * (e_r + e_q) + 2 * u * np.abs(dz)
        else:
            d = _derivative(out, z)
            dz = r * d
            e_g = e_r * np.abs(d) + np.abs(r) * _derivative_bound(out, z, e_z, u) + u * np.abs(dz)
    delta = s * dz
    e_delta = s * e_g + e_s * np.abs(dz) + u * np.abs(delta)
    C = float((s * ell).sum())
    # the loss: its first-order change with z^L, plus the rounding of its own terms and sums
    bound_C = float((np.abs(delta) * e_z).sum()
                    + gamma(N * sizes[-1] + 16, dtype) * (s * mag).sum() + (e_s * np.abs(ell)).sum())
    # BP2-BP4 backwards, carrying δ's bound
    bound = np.empty(params.shape, P.dtype)
    gWs, gbs = split_params(bound, sizes)
    for l in range(L - 1, -1, -1):
        A_, eA = np.abs(a[l]), ea[l]
        gWs[l][...] = gamma(N, dtype) * (np.abs(delta).T @ A_) + e_delta.T @ A_ + np.abs(delta).T @ eA
        gbs[l][...] = gamma(N, dtype) * np.abs(delta).sum(axis=0) + e_delta.sum(axis=0)
        if l > 0:
            W = Ws[l]
            d = _derivative(acts[l - 1], zs[l - 1])
            prod = delta @ W
            e_prod = gamma(W.shape[0], dtype) * (np.abs(delta) @ np.abs(W)) + e_delta @ np.abs(W)
            new = prod * d
            e_delta = (e_prod * np.abs(d) + np.abs(prod) * _derivative_bound(acts[l - 1], zs[l - 1], ez[l - 1], u)
                       + u * np.abs(new))
            delta = new
    _, grad = R.loss_and_grad(P, sizes, acts, loss, xe, ye, we)
    return C, grad, bound_C, bound


def assert_network_within(name, params, sizes, acts, loss, x, y, C, g, sample_weight=None):
    """A computed loss C and gradient g within ``NETWORK_SLACK`` times ``network_bound``."""
    Ce, ge, bC, bg = network_bound(params, sizes, acts, loss, x, y, sample_weight)
    assert_within(f"gradient of {name}", g, ge, NETWORK_SLACK * bg, params.dtype.type)
    assert abs(float(C) - Ce) <= NETWORK_SLACK * bC + np.finfo(params.dtype).tiny, (
        f"loss of {name}: {C!r} against exact {Ce!r}, error {abs(float(C) - Ce):.3g} > bound {NETWORK_SLACK * bC:.3g}")
