"""Property tests of the public entry points (hypothesis): the reference answer, or a clear error.

Random networks (widths 1-7, every activation, the three losses), dtypes, label kinds, batch
sizes from 1, C-ordered, Fortran-ordered and strided inputs, NaN/inf at random places, labels out
of range, ``out`` arrays of random size, dtype and layout, into ``predict``, ``loss_and_grad``,
``evaluate``, ``fit`` and ``save``/``load`` on every backend that runs here.  Each call either
returns what the NumPy reference gives for the cleaned inputs, or raises ``ValueError`` /
``TypeError``, and then the parameters are exactly as they were.

The activations are runtime codes, so the examples reuse a handful of compiled
specialisations (dtype x label kind) and the whole file runs in well under a minute once the
kernels are compiled.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastbp
from fastbp import reference as ref
from fastbp.cuda import unavailable_reason

from .conftest import assert_close

HIDDEN = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus", "elu", "gelu"]
DTYPES = [np.float32, np.float64]
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def networks(draw, max_layers=3, max_width=7):
    n_layers = draw(st.integers(1, max_layers))
    sizes = [draw(st.integers(1, max_width)) for _ in range(n_layers + 1)]
    kind = draw(st.sampled_from(["mse", "cross_entropy", "binary_cross_entropy"]))
    acts = [draw(st.sampled_from(HIDDEN)) for _ in range(n_layers - 1)]
    if kind == "cross_entropy":
        acts.append("softmax")
    elif kind == "binary_cross_entropy":
        acts.append("sigmoid")
    else:
        acts.append(draw(st.sampled_from(HIDDEN)))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**16))
    return dict(sizes=sizes, activations=acts, loss=kind, dtype=dtype, seed=seed)


def _layout(data, a: np.ndarray) -> np.ndarray:
    """The same values as ``a`` in C order, Fortran order, or a strided view."""
    how = data.draw(st.sampled_from(["C", "F", "strided", "list"]))
    if how == "F":
        return np.asfortranarray(a)
    if how == "strided":
        big = np.zeros((a.shape[0] * 2,) + a.shape[1:], dtype=a.dtype)
        big[::2] = a
        return big[::2]
    if how == "list":
        return a.tolist()
    return a


@st.composite
def problems(draw, spec):
    """(x, y, what is wrong or None) for a network spec, with inputs given in random layouts."""
    data = draw(st.data())
    sizes, dtype = spec["sizes"], spec["dtype"]
    n = draw(st.integers(1, 9))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((n, sizes[0])).astype(draw(st.sampled_from([dtype, np.float64, np.int64])))
    n_out = sizes[-1]
    labels = spec["loss"] == "cross_entropy" or (n_out > 1 and draw(st.booleans()))
    if labels:
        y = rng.integers(0, n_out, n)
    elif spec["loss"] == "mse":
        y = rng.standard_normal((n, n_out)).astype(dtype)
    else:
        y = rng.random((n, n_out)).astype(dtype)
        if spec["loss"] == "cross_entropy":
            y /= y.sum(axis=1, keepdims=True)
    wrong = None
    fault = draw(st.sampled_from(["none"] * 4 + ["x_nan", "x_inf", "y_nan", "label_range", "x_width"]))
    if fault in ("x_nan", "x_inf"):
        x = x.astype(np.float64)
        x[draw(st.integers(0, n - 1)), draw(st.integers(0, sizes[0] - 1))] = np.nan if fault == "x_nan" else -np.inf
        wrong = "x"
    elif fault == "y_nan" and not labels:
        y = y.copy()
        y[draw(st.integers(0, n - 1)), draw(st.integers(0, n_out - 1))] = np.nan
        wrong = "y"
    elif fault == "label_range" and labels:
        y = y.copy()
        y[draw(st.integers(0, n - 1))] = draw(st.sampled_from([-1, n_out, n_out + 5]))
        wrong = "y"
    elif fault == "x_width":
        x = np.zeros((n, sizes[0] + 1))
        wrong = "x"
    return _layout(data, x), _layout(data, y) if not labels else y, wrong


def _clean(net, x, y):
    xa = np.ascontiguousarray(np.asarray(x), dtype=net.dtype)
    ya = np.asarray(y)
    if ya.dtype.kind in "iu":
        ya = ya.astype(np.int64)
    else:
        ya = np.ascontiguousarray(ya, dtype=net.dtype)
    return xa, ya


def _check_raises_and_intact(net, fn, wrong):
    before = net.params.copy()
    with pytest.raises((ValueError, TypeError), match=rf"^{wrong}"):
        fn()
    np.testing.assert_array_equal(net.params, before)


def _reference(net, xa, ya):
    acts = np.array([fastbp.activations.CODES[a] for a in net.activations])
    out = ref.forward(net.params, net.sizes, acts, xa)
    loss, grad = ref.loss_and_grad(net.params, net.sizes, acts, fastbp.losses.CODES[net.loss], xa, ya)
    return out, loss, grad


def _entry_points(net, spec, x, y, wrong, data):
    xa, ya = _clean(net, x, y) if wrong is None else (None, None)
    if wrong is not None:
        _check_raises_and_intact(net, lambda: net.predict(x) if wrong == "x" else net.loss_and_grad(x, y), wrong)
        _check_raises_and_intact(net, lambda: net.loss_and_grad(x, y), wrong)
        _check_raises_and_intact(net, lambda: net.evaluate(x, y), wrong)
        if net.backend != "numpy":
            _check_raises_and_intact(net, lambda: net.fit(x, y, epochs=1, batch_size=3, verbose=False), wrong)
        return
    out, loss, grad = _reference(net, xa, ya)
    dt = net.dtype.type
    p = net.predict(x)
    assert p.dtype == net.dtype and p.shape == out.shape
    assert_close(p, out, dt, factor=10)
    kind = data.draw(st.sampled_from(["none", "good", "bad_dtype", "bad_size", "bad_layout", "list"]))
    if kind == "none":
        c, g = net.loss_and_grad(x, y)
    elif kind == "good":
        g0 = np.full(net.n_params, np.nan, dtype=net.dtype)
        c, g = net.loss_and_grad(x, y, out=g0)
        assert g is g0
    else:
        bad = {
            "bad_dtype": np.empty(net.n_params, dtype=np.float32 if net.dtype == np.float64 else np.float64),
            "bad_size": np.empty(net.n_params + 1, dtype=net.dtype),
            "bad_layout": np.empty(2 * net.n_params, dtype=net.dtype)[::2],
            "list": [0.0] * net.n_params,
        }[kind]
        _check_raises_and_intact(net, lambda: net.loss_and_grad(x, y, out=bad), "out")
        c, g = net.loss_and_grad(x, y)
    assert g.dtype == net.dtype
    tol = (1e-4 if dt is np.float32 else 1e-10) * max(1.0, abs(loss))
    assert abs(c - loss) <= tol
    assert_close(g, grad, dt, factor=50)
    e = net.evaluate(x, y)
    assert abs(e["loss"] - loss) <= tol


@settings(max_examples=40, **SETTINGS)
@given(data=st.data(), spec=networks(), backend=st.sampled_from(["cpu", "numpy"]))
def test_entry_points_give_the_reference_or_a_clear_error(data, spec, backend):
    net = fastbp.MLP(backend=backend, **spec)
    x, y, wrong = data.draw(problems(spec))
    _entry_points(net, spec, x, y, wrong, data)


@settings(max_examples=25, **SETTINGS)
@given(data=st.data(), spec=networks())
def test_fit_is_layout_invariant_or_raises_with_params_intact(data, spec):
    x, y, wrong = data.draw(problems(spec))
    net = fastbp.MLP(**spec)
    kw = dict(epochs=2, batch_size=data.draw(st.integers(1, 5)), verbose=False, lr=0.01, seed=1)
    if wrong is not None:
        _check_raises_and_intact(net, lambda: net.fit(x, y, **kw), wrong)
        return
    xa, ya = _clean(net, x, y)
    twin = fastbp.MLP(**spec)
    h = net.fit(x, y, **kw)
    h2 = twin.fit(xa, ya, **kw)
    np.testing.assert_array_equal(net.params, twin.params)
    assert h["loss"] == h2["loss"] and all(np.isfinite(h["loss"]))


@settings(max_examples=20, **SETTINGS)
@given(spec=networks(max_layers=4))
def test_save_load_round_trip(tmp_path_factory, spec):
    net = fastbp.MLP(**spec)
    path = tmp_path_factory.mktemp("m") / "m.npz"
    net.save(path)
    back = fastbp.MLP.load(path)
    assert (back.sizes, back.activations, back.loss, back.dtype) == (net.sizes, net.activations, net.loss, net.dtype)
    np.testing.assert_array_equal(back.params, net.params)
    assert back.params.dtype == net.params.dtype


@settings(max_examples=25, **SETTINGS)
@given(spec=networks(), value=st.sampled_from([np.nan, np.inf, -np.inf]), shape_off=st.integers(-1, 1))
def test_params_assignment_is_checked(spec, value, shape_off):
    net = fastbp.MLP(**spec)
    before = net.params.copy()
    new = np.zeros(net.n_params + shape_off)
    if shape_off == 0:
        new[len(new) // 2] = value
    with pytest.raises(ValueError, match="^params"):
        net.params = new
    np.testing.assert_array_equal(net.params, before)


@pytest.mark.skipif(unavailable_reason() is not None, reason="cuda backend unavailable (no GPU, no simulator)")
@settings(max_examples=6, **SETTINGS)
@given(data=st.data(), spec=networks(max_layers=2, max_width=4))
def test_cuda_entry_points_give_the_reference_or_a_clear_error(data, spec):
    net = fastbp.MLP(backend="cuda", **spec)
    x, y, wrong = data.draw(problems(spec))
    _entry_points(net, spec, x, y, wrong, data)
