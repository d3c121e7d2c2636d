"""Optimizers against NumPy re-implementations, fit, the compiled loop, L-BFGS, the example."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

import fastbp
from fastbp.cpu import optim as K
from fastbp.optim import SGD, Adam, AdamW, CosineLR, StepLR

# -- optimizer kernels vs NumPy, step for step ----------------------------------------------------


def _np_sgd(p, g, v, lr, mu, nesterov, wd):
    g = g + wd * p
    if mu == 0:
        return p - lr * g, v
    v = mu * v + g
    return p - lr * (g + mu * v if nesterov else v), v


def _np_adam(p, g, m, v, t, lr, b1, b2, eps, wd, decoupled):
    if decoupled:
        p = p * (1 - lr * wd)
    else:
        g = g + wd * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mhat = m / (1 - b1**t)
    vhat = v / (1 - b2**t)
    return p - lr * mhat / (np.sqrt(vhat) + eps), m, v


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mu,nesterov,wd", [(0.0, False, 0.0), (0.0, False, 0.1), (0.9, False, 0.0), (0.9, True, 1e-2)])
def test_sgd_matches_numpy(mu, nesterov, wd, dtype):
    rng = np.random.default_rng(0)
    p = rng.standard_normal(13).astype(dtype)
    v = np.zeros_like(p)
    pr, vr = p.astype(np.float64), np.zeros(13)
    for _ in range(5):
        g = rng.standard_normal(13).astype(dtype)
        K.sgd_step(p, g, v, 0.05, mu, nesterov, wd)
        pr, vr = _np_sgd(pr, g.astype(np.float64), vr, 0.05, mu, nesterov, wd)
        assert p.dtype == dtype
        f32 = dtype == np.float32
        np.testing.assert_allclose(p, pr, rtol=1e-5 if f32 else 1e-14, atol=1e-6 if f32 else 1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("wd,decoupled", [(0.0, False), (0.1, False), (0.1, True)])
def test_adam_matches_numpy(wd, decoupled, dtype):
    rng = np.random.default_rng(1)
    p = rng.standard_normal(7).astype(dtype)
    m, v = np.zeros_like(p), np.zeros_like(p)
    pr, mr, vr = p.astype(np.float64), np.zeros(7), np.zeros(7)
    for t in range(1, 8):
        g = rng.standard_normal(7).astype(dtype)
        K.adam_step(p, g, m, v, t, 1e-2, 0.9, 0.999, 1e-8, wd, decoupled)
        pr, mr, vr = _np_adam(pr, g.astype(np.float64), mr, vr, t, 1e-2, 0.9, 0.999, 1e-8, wd, decoupled)
        f32 = dtype == np.float32
        np.testing.assert_allclose(p, pr, rtol=1e-5 if f32 else 1e-13, atol=1e-6 if f32 else 1e-15)


def test_clip_grad_norm():
    g = np.array([3.0, 4.0])
    assert K.clip_grad_norm(g, 10.0) == 5.0
    np.testing.assert_array_equal(g, [3.0, 4.0])
    assert K.clip_grad_norm(g, 1.0) == 5.0
    np.testing.assert_allclose(g, [0.6, 0.8])
    assert K.clip_grad_norm(g, 0.0) == pytest.approx(1.0)  # 0 disables clipping


# -- fit -------------------------------------------------------------------------------------------


def _blobs(n=90, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 5)) * 0.5 + np.eye(3, 5)[y] * 2
    return x, y


def _clf(dtype=np.float32, seed=0):
    return fastbp.MLP([5, 13, 3], ["tanh", "softmax"], "cross_entropy", dtype=dtype, seed=seed)


def test_fit_learns_and_reports_history():
    x, y = _blobs()
    net = _clf()
    h = net.fit(x, y, epochs=15, batch_size=7, lr=0.05, validation_data=_blobs(30, seed=1), verbose=False)
    assert set(h) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "time"}
    assert all(len(v) == 15 for v in h.values())
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert h["val_accuracy"][-1] >= 0.9
    assert net.evaluate(*_blobs(30, seed=1))["accuracy"] == h["val_accuracy"][-1]


def test_fit_is_bitwise_reproducible_and_continues():
    x, y = _blobs()
    a, b = _clf(), _clf()
    a.fit(x, y, epochs=3, batch_size=8, seed=4, verbose=False)
    b.fit(x, y, epochs=3, batch_size=8, seed=4, verbose=False)
    np.testing.assert_array_equal(a.params, b.params)
    before = a.params.copy()
    a.fit(x, y, epochs=1, batch_size=8, seed=5, verbose=False)
    assert not np.array_equal(a.params, before)


@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", SGD(momentum=0.5), "adam", AdamW(weight_decay=0.1)])
def test_compiled_loop_matches_a_python_loop(optimizer):
    """fit's compiled epochs equal a Python loop over the public kernels (partial last batch included)."""
    x, y = _blobs(23)
    net, ref = _clf(np.float64), _clf(np.float64)
    net.fit(x, y, epochs=3, batch_size=5, optimizer=optimizer, lr=0.05, seed=9, verbose=False)
    opt = fastbp.optim.get_optimizer(optimizer)
    rng = np.random.default_rng(9)
    state1, state2 = np.zeros(ref.n_params), np.zeros(ref.n_params)
    t = 0
    for _ in range(3):
        perm = rng.permutation(23)
        for s in range(0, 23, 5):
            idx = perm[s : s + 5]
            _, g = ref.loss_and_grad(x[idx], y[idx])
            t += 1
            if isinstance(opt, Adam):
                K.adam_step(ref.params, g, state1, state2, t, 0.05, opt.beta1, opt.beta2, opt.eps, opt.weight_decay,
                            opt.decoupled)
            else:
                K.sgd_step(ref.params, g, state1, 0.05, opt.momentum, opt.nesterov, opt.weight_decay)
    np.testing.assert_allclose(net.params, ref.params, rtol=1e-10, atol=1e-12)


def test_sample_weight_equals_repeating_samples():
    x, y = _blobs(10)
    w = np.array([2, 1, 1, 3, 1, 1, 1, 1, 1, 1], float)
    rep = np.repeat(np.arange(10), w.astype(int))
    net = _clf(np.float64)
    l1, g1 = net.loss_and_grad(x, y, sample_weight=w)
    l2, g2 = net.loss_and_grad(x[rep], y[rep])
    assert l1 == pytest.approx(l2, rel=1e-12)
    np.testing.assert_allclose(g1, g2, rtol=1e-10, atol=1e-14)
    ref = _clf(np.float64)
    ref.backend = "numpy"
    l3, g3 = ref.loss_and_grad(x, y, sample_weight=w)
    np.testing.assert_allclose(g3, g1, rtol=1e-10, atol=1e-14)
    a, b = _clf(np.float64), _clf(np.float64)
    a.fit(x, y, epochs=2, batch_size=10, sample_weight=w, shuffle=False, verbose=False)
    b.fit(x[rep], y[rep], epochs=2, batch_size=len(rep), shuffle=False, verbose=False)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-9, atol=1e-12)


def test_schedules():
    x, y = _blobs(20)
    h = _clf().fit(x, y, epochs=6, lr=0.1, schedule=StepLR(step_size=2, gamma=0.5), verbose=False)
    np.testing.assert_allclose(h["lr"], [0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    h = _clf().fit(x, y, epochs=4, lr=0.1, schedule="cosine", verbose=False)
    np.testing.assert_allclose(h["lr"], [0.1 * 0.5 * (1 + np.cos(np.pi * e / 4)) for e in range(4)])
    assert CosineLR(min_lr=0.01)(0.1, 4, 4) == pytest.approx(0.01)
    h = _clf().fit(x, y, epochs=3, lr=0.1, schedule=lambda lr, e, n: lr / (e + 1), verbose=False)
    np.testing.assert_allclose(h["lr"], [0.1, 0.05, 0.1 / 3])


def test_early_stopping_restores_best_and_callback_stops():
    x, y = _blobs(40)
    xv, _ = _blobs(20, 1)
    yv = np.random.default_rng(2).integers(0, 3, 20)  # labels unrelated to xv: val_loss soon rises
    seen = []
    net = _clf()
    h = net.fit(x, y, epochs=50, lr=0.5, optimizer="sgd", patience=2, validation_data=(xv, yv), verbose=False,
                callback=lambda e, logs, n: seen.append(logs["val_loss"]))
    best = int(np.argmin(h["val_loss"]))
    assert len(h["loss"]) < 50
    assert len(h["loss"]) == best + 3  # stopped two epochs after the best one
    assert net.evaluate(xv, yv)["loss"] == pytest.approx(h["val_loss"][best], rel=1e-5)
    assert seen == h["val_loss"]
    h = _clf().fit(x, y, epochs=10, verbose=False, callback=lambda e, logs, n: e == 2)
    assert len(h["loss"]) == 3


def test_verbose_prints_progress(capsys):
    x, y = _blobs(20)
    _clf().fit(x, y, epochs=2, validation_data=(x, y))
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[1].startswith("epoch 2/2") and "val_accuracy" in out[1] and " ms" in out[1]


BAD_FIT = [
    (dict(epochs=0), ValueError, "epochs"),
    (dict(epochs=1.5), TypeError, "epochs"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(lr=-1.0), ValueError, "lr"),
    (dict(lr=float("nan")), ValueError, "lr"),
    (dict(lr=float("inf")), ValueError, "lr"),
    (dict(optimizer="rmsprop"), ValueError, "optimizer"),
    (dict(optimizer=3), TypeError, "optimizer"),
    (dict(schedule="linear"), ValueError, "schedule"),
    (dict(schedule=lambda lr, e, n: float("nan")), ValueError, "schedule"),
    (dict(x=np.full((20, 5), np.nan)), ValueError, "x: contains NaN"),
    (dict(y=np.full(20, 3)), ValueError, "y: class labels"),
    (dict(validation_data=(np.zeros((4, 2)), np.zeros(4, int))), ValueError, r"validation_data\[0\]"),
    (dict(validation_data=(np.zeros((4, 5)), np.zeros(3, int))), ValueError, r"validation_data\[1\]"),
    (dict(validation_data=np.zeros(3)), TypeError, "validation_data"),
    (dict(sample_weight=-np.ones(20)), ValueError, "sample_weight"),
    (dict(sample_weight=np.ones(3)), ValueError, "sample_weight"),
    (dict(patience=0), ValueError, "patience"),
    (dict(clip_norm=0.0), ValueError, "clip_norm"),
    (dict(callback=5), TypeError, "callback"),
]


@pytest.mark.parametrize("kw,exc,match", BAD_FIT)
def test_fit_rejects_bad_arguments_before_changing_params(kw, exc, match):
    x, y = _blobs(20)
    args = dict(x=x, y=y, verbose=False)
    args.update(kw)
    net = _clf()
    before = net.params.copy()
    with pytest.raises(exc, match=match):
        net.fit(**args)
    np.testing.assert_array_equal(net.params, before)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: SGD(momentum=1.5), "momentum"),
        (lambda: SGD(nesterov=True), "nesterov"),
        (lambda: Adam(beta1=1.0), "beta1"),
        (lambda: Adam(eps=0.0), "eps"),
        (lambda: AdamW(weight_decay=-1.0), "weight_decay"),
        (lambda: StepLR(step_size=0), "step_size"),
    ],
)
def test_optimizer_objects_check_hyper_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_divergence_stops_with_finite_params():
    x, y = _blobs(20)
    net = fastbp.MLP([5, 13, 3], ["relu", "softmax"], "cross_entropy", dtype=np.float32, seed=0)
    with pytest.raises(FloatingPointError, match="non-finite"):
        net.fit(x * 1e30, y, epochs=5, lr=1e30, optimizer="sgd", verbose=False)
    assert np.all(np.isfinite(net.params))


def test_lbfgs_minimises_full_batch_loss():
    from scipy.optimize import minimize

    x, y = _blobs(40)
    net = _clf(np.float64)
    p0 = net.params.copy()
    h = net.fit(x, y, epochs=30, optimizer="lbfgs", verbose=False)
    assert h["loss"][-1] < 0.1 * h["loss"][0] and len(h["loss"]) <= 30
    # The same minimisation driven directly through SciPy with the reference gradient.
    ref = _clf(np.float64)
    res = minimize(lambda th: fastbp.reference.loss_and_grad(th, ref.sizes, ref.spec.activations, "cross_entropy",
                                                             x, y),
                   p0, jac=True, method="L-BFGS-B", options={"maxiter": 30})
    np.testing.assert_allclose(net.params, res.x, rtol=1e-5, atol=1e-6)


def test_example_program_runs_and_learns():
    path = pathlib.Path(__file__).parents[1] / "examples" / "online_regression.py"
    spec = importlib.util.spec_from_file_location("online_regression", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    losses = mod.main(steps=2000, verbose=False)
    assert losses[-200:].mean() < 0.25 * losses[:200].mean()


def test_optimizer_kernels_callable_from_njit():
    """clip_grad_norm, sgd_step and adam_step inside a user's @njit loop give bitwise what the same
    calls from Python give.  (cpu.loss_and_grad from a user's loop: tests/test_model.py and
    tests/test_cache.py; compiling the whole network into one more loop here cost 38 s of CI.)"""
    from numba import njit

    @njit
    def loop(params, grads, vel, m, v):
        for t in range(1, grads.shape[0] + 1):
            g = grads[t - 1].copy()
            K.clip_grad_norm(g, 1.0)
            K.sgd_step(params, g, vel, 1e-2, 0.9, True, 1e-3)
            K.adam_step(params, g, m, v, t, 1e-2, 0.9, 0.999, 1e-8, 0.01, True)

    rng = np.random.default_rng(0)
    grads = rng.standard_normal((3, 17)) * 2
    p0 = rng.standard_normal(17)
    states = [p0.copy(), np.zeros(17), np.zeros(17), np.zeros(17)]
    loop(states[0], grads, *states[1:])
    p, vel, m, v = p0.copy(), np.zeros(17), np.zeros(17), np.zeros(17)
    for t in range(1, 4):
        g = grads[t - 1].copy()
        K.clip_grad_norm(g, 1.0)
        K.sgd_step(p, g, vel, 1e-2, 0.9, True, 1e-3)
        K.adam_step(p, g, m, v, t, 1e-2, 0.9, 0.999, 1e-8, 0.01, True)
    assert not np.array_equal(p, p0)
    for got, want in zip(states, (p, vel, m, v), strict=True):
        np.testing.assert_array_equal(got, want)
