"""Per-layer kernels against float64 on the same inputs, entry by entry, within a rounding bound.

The tolerance comes from the arithmetic, not from the batch size.  Each kernel runs on float32
(or float64) inputs; the exact result is the float64 (for float64 inputs: extended, see
``_exact``) evaluation of the same formula on the same inputs, and each entry must lie within

    |computed − exact| <= γ_K · Σ |terms|,    γ_K = K u / (1 − K u),

the worst case of a sum of K products in any order, with fused multiply-adds or without
(Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1), u = 2⁻²⁴ or 2⁻⁵³, computed
alongside the exact result.  An activation applied to a computed z adds its Lipschitz constant
times the bound of z, plus the ulps that ``tests/test_math.py`` measures for it.

One table, ``COMPARISONS``, lists each kernel, its callables (serial twin, parallel twin, public
dispatcher), how to run it, its exact result and its bound; the shapes reach every blocking
tail (4- and 8-row blocks, 4- and 8-column blocks, remainders of 1 to 7) and the parallel
cut-over.  Inputs span four orders of magnitude per column, so small entries are checked as
strictly as large ones.  ``tests/mutants.py`` shows that small injected errors fail here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from fastbp import activations as A
from fastbp import cpu
from fastbp import reference as R
from fastbp.cpu import kernels as K

from .conftest import DTYPES
from .rounding import ACT_ULPS, LIPSCHITZ, UNIT, assert_network_within, assert_within, exact, gamma

# (N, n_in, n_out): every row-block tail (N mod 4 and mod 8 from 0 to 7), column tails, batch 1,
# and one shape above the parallel cut-over (65·65·65 multiply-adds >= 2^18).
SHAPES = [(1, 1, 1), (4, 8, 4), (5, 9, 7), (8, 3, 13), (9, 65, 1), (13, 8, 9), (15, 17, 11), (65, 65, 65)]
VARIANTS = ["serial", "parallel", "dispatch"]
ACTS = ["identity", "relu", "tanh", "sigmoid", "gelu"]
_exact = exact


def random_inputs(rng, shape, dtype):
    """W, b, a_prev, δ of a layer; each column scaled by 10^U(-2, 2)."""
    N, n_in, n_out = shape

    def m(rows, cols):
        return (rng.standard_normal((rows, cols)) * 10.0 ** rng.uniform(-2, 2, cols)).astype(dtype)

    return m(n_out, n_in), m(1, n_out)[0], m(N, n_in), m(N, n_out)


@dataclass
class Comparison:
    """One kernel: its callables, how to run one, its exact result and its entry-wise bound."""

    name: str
    callables: Callable[[str], Callable]
    run: Callable  # (kernel, inputs, act) -> tuple of outputs
    exact: Callable  # (inputs, act) -> tuple of exact outputs
    bound: Callable  # (inputs, act, dtype) -> tuple of entry-wise bounds
    acts: tuple = ("identity",)
    reference: Callable | None = None  # (inputs, act) -> outputs: the NumPy reference, in the inputs' dtype


def _variant(name):
    return lambda variant: getattr(cpu, name) if variant == "dispatch" else getattr(K, f"{name}_{variant}")


def _run_forward(k, inp, act):
    W, b, a_prev, _ = inp
    z = np.empty((a_prev.shape[0], W.shape[0]), W.dtype)
    a = np.empty_like(z)
    k(W, b, a_prev, A.CODES[act], z, a)
    return z, a


def _forward_exact(inp, act):
    W, b, a_prev, _ = (_exact(v) for v in inp)
    z = a_prev @ W.T + b
    return z, R.activation(act, z.astype(np.float64))


def _forward_bound(inp, act, dtype):
    W, b, a_prev, _ = (np.abs(_exact(v)) for v in inp)
    bz = gamma(W.shape[1] + 1, dtype) * (a_prev @ W.T + b)
    a = np.abs(_forward_exact(inp, act)[1])
    if act == "softmax":
        # |Δa_j| <= a_j (|Δz_j| + Σ_i a_i |Δz_i|) <= 2 a_j max_i |Δz_i|, then the exps, the row
        # sum of n terms and the division: (n + 4) u a_j, doubled for slack
        n = a.shape[1]
        return bz, 2 * a * bz.max(axis=1, keepdims=True) + 2 * (n + 4) * UNIT[dtype] * a
    ba = LIPSCHITZ[act] * bz + (ACT_ULPS[act] + 1) * UNIT[dtype] * 2 * a
    return bz, ba


def _run_bp2(k, inp, act):
    W, _, z, dn = inp  # z: the (N, n_in) weighted input of the layer below
    delta = np.empty_like(z)
    k(W, dn, z, A.CODES[act], delta)
    return (delta,)


def _bp2_exact(inp, act):
    W, _, z, dn = (_exact(v) for v in inp)
    return ((dn @ W) * R.activation_derivative(act, z.astype(np.float64)),)


#: Absolute error of the computed σ'(z) in units of u (σ' <= 1): tanh' = 1 − t² and
#: sigmoid' = s (1 − s) from a t or s a few ulps off; identity and leaky_relu's σ' are exact.
DERIV_ABS_ULPS = {"identity": 0, "leaky_relu": 0, "tanh": 8, "sigmoid": 8}


def _bp2_bound(inp, act, dtype):
    W, _, z, dn = (np.abs(_exact(v)) for v in inp)
    u = UNIT[dtype]
    d = np.abs(R.activation_derivative(act, inp[2].astype(np.float64)))
    prod = np.abs(_exact(inp[3]) @ _exact(inp[0]))
    exact = np.abs(_bp2_exact(inp, act)[0])
    # the product's rounding times |σ'|, σ'(z)'s own absolute error times the product, the multiply
    return (gamma(W.shape[0], dtype) * (dn @ W) * d + DERIV_ABS_ULPS[act] * u * prod + 2 * u * exact,)


def _run_wgrad(k, inp, act):
    _, _, a_prev, delta = inp
    gW = np.full((delta.shape[1], a_prev.shape[1]), np.nan, a_prev.dtype)
    k(delta, a_prev, gW)
    return (gW,)


def _run_bgrad(k, inp, act):
    delta = inp[3]
    gb = np.full(delta.shape[1], np.nan, delta.dtype)
    k(delta, gb)
    return (gb,)


def _run_wbgrad(k, inp, act):
    _, _, a_prev, delta = inp
    gW = np.full((delta.shape[1], a_prev.shape[1]), np.nan, a_prev.dtype)
    gb = np.full(delta.shape[1], np.nan, delta.dtype)
    k(delta, a_prev, gW, gb)
    return gW, gb


def _grad_exact(inp, act):
    _, _, a_prev, delta = (_exact(v) for v in inp)
    return delta.T @ a_prev, delta.sum(axis=0)


def _grad_bound(inp, act, dtype):
    _, _, a_prev, delta = (np.abs(_exact(v)) for v in inp)
    g = gamma(delta.shape[0], dtype)
    return g * (delta.T @ a_prev), g * delta.sum(axis=0)


COMPARISONS = [
    Comparison("linear_forward", _variant("linear_forward"), _run_forward, _forward_exact, _forward_bound,
               (*ACTS, "softmax"), lambda i, act: R.linear_forward(i[0], i[1], i[2], act)),
    Comparison("backprop_delta", _variant("backprop_delta"), _run_bp2, _bp2_exact, _bp2_bound,
               ("identity", "sigmoid", "tanh", "leaky_relu"),
               lambda i, act: (R.backprop_delta(i[0], i[3], i[2], act),)),
    Comparison("weight_grad", _variant("weight_grad"), _run_wgrad, lambda i, a: _grad_exact(i, a)[:1],
               lambda i, a, d: _grad_bound(i, a, d)[:1], reference=lambda i, act: (R.weight_grad(i[3], i[2]),)),
    Comparison("bias_grad", _variant("bias_grad"), _run_bgrad, lambda i, a: _grad_exact(i, a)[1:],
               lambda i, a, d: _grad_bound(i, a, d)[1:], reference=lambda i, act: (R.bias_grad(i[3]),)),
    Comparison("weight_bias_grad", _variant("weight_bias_grad"), _run_wbgrad, _grad_exact, _grad_bound,
               reference=lambda i, act: (R.weight_grad(i[3], i[2]), R.bias_grad(i[3]))),
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("comp", COMPARISONS, ids=lambda c: c.name)
def test_kernel_within_rounding_bound(comp, dtype, variant):
    rng = np.random.default_rng(2024)
    kernel = comp.callables(variant)
    for shape in SHAPES:
        inp = random_inputs(rng, shape, dtype)
        for act in comp.acts:
            got = comp.run(kernel, inp, act)
            exact = comp.exact(inp, act)
            bound = comp.bound(inp, act, dtype)
            for k, (g, e, b) in enumerate(zip(got, exact, bound, strict=True)):
                assert_within(f"{comp.name}[{variant}] {shape} {act} output {k}", g, e, b, dtype)


def test_the_bound_is_tight_enough_to_see_a_one_term_error():
    """The bound is not vacuous: scaling one of K = 65 products by 1 + 5e-4 (the error issue #17
    found unnoticed) in a float32 weight gradient exceeds it in many entries."""
    rng = np.random.default_rng(1)
    inp = random_inputs(rng, (65, 9, 7), np.float32)
    _, _, a_prev, delta = inp
    gW = _run_wgrad(K.weight_grad_serial, inp, "identity")[0]
    exact, bound = _grad_exact(inp, "identity")[0], _grad_bound(inp, "identity", np.float32)[0]
    assert np.all(np.abs(gW - exact) <= bound)
    wrong = gW + np.float32(5e-4) * (delta[3][:, None] * a_prev[3][None, :])
    assert np.mean(np.abs(wrong - exact) > bound) > 0.25


# ---- the whole network: a first-order error bound propagated layer by layer ----------------------

NETWORKS = [
    # (sizes, hidden activation, loss, output activation, labels): narrow and wide layers (BP3's
    # vectors along n_l or along n_{l-1}); mse with an elementwise output takes BP1 from the stored σ'.
    ([3, 13, 5, 1], "tanh", "mse", "identity", False),
    ([5, 9, 4], "sigmoid", "mse", "tanh", False),
    ([17, 11, 7, 3], "tanh", "cross_entropy", "softmax", True),
    ([8, 65, 4], "identity", "cross_entropy", "softmax", False),
    ([9, 7, 3], "relu", "binary_cross_entropy", "sigmoid", False),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 5, 13])
@pytest.mark.parametrize("case", NETWORKS, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_network_gradient_within_propagated_bound(case, n, dtype):
    """The whole-network loss and gradient (``MLP.loss_and_grad``, the fused training step)
    against wider arithmetic on the same values, entry by entry, within the first-order bound of
    ``tests/rounding.network_bound`` times its documented slack."""
    import fastbp

    sizes, hidden, loss, out_act, labels = case
    acts = [hidden] * (len(sizes) - 2) + [out_act]
    net = fastbp.MLP(sizes, acts, loss, dtype=dtype, seed=3)
    rng = np.random.default_rng(n)
    for b in net.biases:
        b[...] = rng.standard_normal(b.shape) * 0.5
    x = (rng.standard_normal((n, sizes[0])) * 10.0 ** rng.uniform(-1, 1, sizes[0])).astype(dtype)
    if labels:
        y = rng.integers(0, sizes[-1], n)
    elif loss == "mse":
        y = rng.standard_normal((n, sizes[-1])).astype(dtype)
    else:
        y = rng.random((n, sizes[-1])).astype(dtype)
        if loss == "cross_entropy":
            y /= y.sum(axis=1, keepdims=True)
    C, g = net.loss_and_grad(x, y)
    assert_network_within(f"{sizes} {hidden}/{out_act} {loss}, N={n}", net.params, sizes, acts, loss, x, y, C, g)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_network_bound_sees_a_small_error(dtype):
    """The propagated bound is not vacuous: a gradient with one layer's weight gradient off by
    10⁵ u relative (6e-3 in float32, 1e-11 in float64) fails it."""
    import fastbp

    sizes, acts = [17, 11, 7, 3], ["tanh", "tanh", "softmax"]
    net = fastbp.MLP(sizes, acts, "cross_entropy", dtype=dtype, seed=3)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((13, 17)).astype(dtype)
    y = rng.integers(0, 3, 13)
    C, g = net.loss_and_grad(x, y)
    assert_network_within("unchanged", net.params, sizes, acts, "cross_entropy", x, y, C, g)
    wrong = g.copy()
    wrong[net.spec.weight_offsets[1]:net.spec.bias_offsets[1]] *= dtype(1 + 1e5 * UNIT[dtype])
    with pytest.raises(pytest.fail.Exception, match="outside the rounding bound"):
        assert_network_within("scaled", net.params, sizes, acts, "cross_entropy", x, y, C, wrong)
