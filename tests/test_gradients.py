"""Whole-network loss and gradient: compiled kernel vs the NumPy reference and vs central differences."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.differentiate import jacobian

import fastbp
from fastbp import activations as A
from fastbp.cpu import network as NET

from .conftest import DTYPES, random_problem
from .rounding import assert_network_within

HIDDEN = [n for n in A.NAMES if n != "softmax"]
# (loss, output activation, integer labels?)
HEADS = [
    ("mse", "identity", False),
    ("mse", "sigmoid", False),
    ("mse", "tanh", False),
    ("mse", "softmax", False),
    ("cross_entropy", "softmax", False),
    ("cross_entropy", "softmax", True),
    ("binary_cross_entropy", "sigmoid", False),
]


def _net(sizes, acts, loss, dtype, seed=0):
    net = fastbp.MLP(sizes, acts, loss, dtype=dtype, seed=seed)
    # Non-zero biases, so that their gradient is exercised away from the symmetric start.
    rng = np.random.default_rng(seed + 1)
    for b in net.biases:
        b[...] = rng.standard_normal(b.shape) * 0.5
    return net


def _within(net, x, y, C, g, sample_weight=None):
    """C and g against the NumPy reference in wider arithmetic, within the rounding bound
    propagated through the network (tests/rounding.py)."""
    spec = net.spec
    assert_network_within(f"{list(net.sizes)} {spec.activation_names} {spec.loss_name}, N={x.shape[0]}",
                          net.params, net.sizes, spec.activation_names, spec.loss_name, x, y, C, g, sample_weight)


def _run(twin, net, x, y):
    spec = net.spec
    yk, lab, sw = net._backend.kernel_targets(y)
    work = np.empty(fastbp.workspace_size(net.sizes, x.shape[0]), net.dtype)
    g = np.empty_like(net.params)
    return twin(net.params, spec.sizes, spec.activations, spec.loss, x, yk, lab, g, work, sw), g


def _within_and_twins_agree(net, x, y):
    """``MLP.loss_and_grad`` within the rounding bound, and every variant of the training step
    (``fastbp.cpu.network.VARIANTS``) bitwise equal to it."""
    C, g = net.loss_and_grad(x, y)
    _within(net, x, y, C, g)
    for _, twin in NET.VARIANTS.values():
        C2, g2 = _run(twin, net, x, y)
        assert C2 == C
        np.testing.assert_array_equal(g2, g)


def _fd_grad(net, x, y):
    """Central differences of the float64 loss, through SciPy's adaptive jacobian."""
    sizes, acts, loss = net.spec.sizes, net.spec.activations, net.spec.loss
    x = x.astype(np.float64)
    y = y.astype(np.float64) if y.dtype.kind == "f" else y
    work = np.empty(fastbp.workspace_size(net.sizes, x.shape[0]))
    g = np.empty(net.n_params)

    def f(theta):
        flat = theta.reshape(theta.shape[0], -1)
        out = np.empty(flat.shape[1])
        for i in range(flat.shape[1]):
            out[i] = NET.loss_and_grad(np.ascontiguousarray(flat[:, i]), sizes, acts, loss, x, y, g, work)
        return out.reshape(theta.shape[1:])

    res = jacobian(f, net.params.astype(np.float64), initial_step=1e-3, order=4, maxiter=4)
    return res.df


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss,out_act,labels", HEADS)
def test_loss_and_grad_matches_reference(loss, out_act, labels, dtype, rng):
    sizes = [7, 13, 3, 5]
    net = _net(sizes, ["tanh", "relu", out_act], loss, dtype)
    for n in (1, 13):
        x, y = random_problem(rng, sizes, n, dtype, labels=labels, loss=loss)
        C, g = net.loss_and_grad(x, y)
        assert g.dtype == dtype
        _within(net, x, y, C, g)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out_act", ["sigmoid", "tanh", "identity"])
def test_mse_with_labels_and_sample_weights_matches_reference(out_act, dtype, rng):
    # mse with an elementwise output takes BP1 from the σ' the forward pass kept: check it
    # with one-hot labels and with sample weights (zero weights included), at batch 1 and 13.
    sizes = [7, 13, 3]
    net = _net(sizes, ["tanh", out_act], "mse", dtype)
    for n in (1, 13):
        x, y = random_problem(rng, sizes, n, dtype, loss="mse")
        labels = rng.integers(0, 3, size=n)
        sw = rng.random(n).astype(dtype)
        sw[::3] = 0 if n > 1 else sw[::3]
        for yy, w in ((labels, None), (y, sw), (labels, sw)):
            C, g = net.loss_and_grad(x, yy, sample_weight=w)
            _within(net, x, yy, C, g, w)


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("loss,out_act,labels", HEADS)
def test_gradient_matches_central_differences_float64(hidden, loss, out_act, labels):
    rng = np.random.default_rng(7)
    sizes = [3, 7, 1 if out_act != "softmax" else 4]
    if hidden in ("relu", "leaky_relu", "elu") and out_act == "identity":
        sizes = [3, 7, 3, 1]  # a deeper net exercises BP2 twice
    net = _net(sizes, [hidden] * (len(sizes) - 2) + [out_act], loss, np.float64)
    x, y = random_problem(rng, sizes, 5, np.float64, labels=labels, loss=loss)
    _, g = net.loss_and_grad(x, y)
    fd = _fd_grad(net, x, y)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8 * max(1.0, np.abs(fd).max()))


@pytest.mark.parametrize("loss,out_act,labels", HEADS)
def test_gradient_matches_central_differences_float32(loss, out_act, labels):
    rng = np.random.default_rng(3)
    sizes = [13, 7, 3]
    net = _net(sizes, ["gelu", out_act], loss, np.float32)
    x, y = random_problem(rng, sizes, 7, np.float32, labels=labels, loss=loss)
    _, g = net.loss_and_grad(x, y)
    fd = _fd_grad(net, x, y)  # of the same parameters, in float64
    scale = np.abs(fd).max()
    err = np.abs(g - fd)
    assert err.max() <= 1e-4 * scale, (err.max(), scale)
    assert err.mean() <= 1e-5 * scale, (err.mean(), scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", [[1, 1], [1, 3, 1], [65, 13, 7], [3, 65, 1, 3]])
def test_odd_sizes_and_batch_one(sizes, dtype, rng):
    net = _net(sizes, "sigmoid", "mse", dtype)
    for n in (1, 3, 65):
        x, y = random_problem(rng, sizes, n, dtype)
        C, g = net.loss_and_grad(x, y)
        _within(net, x, y, C, g)


# Widths whose rows are whole 4 KiB pages (1024 in float32, 512 in float64), where rows of W^l
# and of the activations fall on the same cache sets, beside narrow ones: batches that no row tile
# divides, on both sides of the tile heights (6 on AVX2, 14 on AVX-512).
@pytest.mark.parametrize("dtype", DTYPES)
def test_whole_page_widths(dtype, rng):
    page = 4096 // np.dtype(dtype).itemsize
    sizes = [3, page, 7, page, 2]
    acts = ["tanh", "relu", "elu", "identity"]
    net = _net(sizes, acts, "mse", dtype)
    for n in (11, 63, 64, 67):
        _within_and_twins_agree(net, *random_problem(rng, sizes, n, dtype))


# Narrow and wide layers side by side: BP3 runs its vectors along n_{l-1} or along n_l, whichever
# wastes fewer lanes, and panels end part-way at widths that no panel divides.  The first network
# is above the parallel threshold at these batches, the second below it, the third one softmax layer.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes,acts", [
    ([13, 65, 30, 100, 3], ["tanh", "relu", "sigmoid", "softmax"]),
    ([20, 13, 65, 7], ["elu", "tanh", "softmax"]),
    ([13, 65], ["softmax"]),
])
def test_narrow_and_wide_layers(sizes, acts, dtype, rng):
    net = _net(sizes, acts, "cross_entropy", dtype)
    for n in (1, 11, 63, 64, 67):
        _within_and_twins_agree(net, *random_problem(rng, sizes, n, dtype, labels=True, loss="cross_entropy"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss,out_act,labels", HEADS)
def test_stable_for_huge_weighted_inputs(loss, out_act, labels, dtype, rng):
    sizes = [2, 5, 3]
    for hidden in HIDDEN:
        net = fastbp.MLP(sizes, [hidden, out_act], loss, dtype=dtype, seed=0)
        net.params[...] = np.where(rng.random(net.n_params) < 0.5, -1, 1) * 1e3
        x = np.array([[10.0, -10.0], [-10.0, 10.0]], dtype=dtype)  # |z| up to ~1e4 and beyond
        _, y = random_problem(rng, sizes, 2, dtype, labels=labels, loss=loss)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            C, g = net.loss_and_grad(x, y)
            Cr, gr = fastbp.reference.loss_and_grad(net.params, net.sizes, net.spec.activations, loss, x, y)
        assert np.isfinite(C) and np.all(np.isfinite(g)), (hidden, C)
        assert np.isfinite(Cr) and np.all(np.isfinite(gr))


def test_hand_worked_2_2_1_network():
    """Sigmoid 2-2-1, MSE, worked by hand (the numbers of M. Mazur's step-by-step example)."""
    net = fastbp.MLP([2, 2, 1], "sigmoid", "mse", dtype=np.float64)
    W1, W2 = net.weights
    b1, b2 = net.biases
    W1[...] = [[0.15, 0.20], [0.25, 0.30]]
    b1[...] = 0.35
    W2[...] = [[0.40, 0.45]]
    b2[...] = 0.60
    x = np.array([[0.05, 0.10]])
    y = np.array([[0.01]])

    def sig(t):
        return 1 / (1 + np.exp(-t))

    h1 = sig(0.15 * 0.05 + 0.20 * 0.10 + 0.35)  # sigmoid(0.3775) = 0.593269992
    h2 = sig(0.25 * 0.05 + 0.30 * 0.10 + 0.35)  # sigmoid(0.3925) = 0.596884378
    o = sig(0.40 * h1 + 0.45 * h2 + 0.60)  # 0.75136507
    d_o = (o - 0.01) * o * (1 - o)  # BP1
    d_h1 = 0.40 * d_o * h1 * (1 - h1)  # BP2
    d_h2 = 0.45 * d_o * h2 * (1 - h2)
    expected = np.array(
        [d_h1 * 0.05, d_h1 * 0.10, d_h2 * 0.05, d_h2 * 0.10, d_h1, d_h2]  # BP3, BP4 of layer 1
        + [d_o * h1, d_o * h2, d_o]  # BP3, BP4 of layer 2
    )
    C, g = net.loss_and_grad(x, y)
    np.testing.assert_allclose(h1, 0.593269992, rtol=1e-9)
    np.testing.assert_allclose(C, 0.274811083, rtol=1e-8)  # E_o1 of the worked example
    np.testing.assert_allclose(g[6], 0.082167041, rtol=1e-8)  # ∂E/∂w5 of the worked example
    np.testing.assert_allclose(g, expected, rtol=1e-12)
    np.testing.assert_allclose(net.predict(x), [[o]], rtol=1e-14)


