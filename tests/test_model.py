"""fastbp.MLP: the public contract, validation at the boundary, persistence, embedding in @njit."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

import fastbp
from fastbp import cpu

from .conftest import DTYPES, assert_close


def _net(**kw):
    args = dict(sizes=[4, 7, 3], activations=["tanh", "softmax"], loss="cross_entropy", seed=0)
    args.update(kw)
    return fastbp.MLP(**args)


def _data(n=5, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)).astype(dtype), rng.integers(0, 3, n)


# -- construction -------------------------------------------------------------------------------


def test_layout_views_share_params():
    net = _net()
    assert net.params.shape == (4 * 7 + 7 + 7 * 3 + 3,)
    assert [w.shape for w in net.weights] == [(7, 4), (3, 7)]
    assert [b.shape for b in net.biases] == [(7,), (3,)]
    net.weights[1][2, 5] = 42.0
    assert net.params[4 * 7 + 7 + 2 * 7 + 5] == 42.0
    net.params[-1] = -3.0
    assert net.biases[1][-1] == -3.0
    assert np.all(net.biases[0] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_init_schemes_and_seed(dtype):
    a = fastbp.MLP([50, 40, 30], "relu", dtype=dtype, init="he", seed=1)
    b = fastbp.MLP([50, 40, 30], "relu", dtype=dtype, init="he", seed=1)
    c = fastbp.MLP([50, 40, 30], "relu", dtype=dtype, init="xavier", seed=1)
    assert a.params.dtype == dtype
    np.testing.assert_array_equal(a.params, b.params)
    assert np.std(a.weights[0]) == pytest.approx(np.sqrt(2 / 50), rel=0.1)
    lim = np.sqrt(6 / 90)
    assert np.abs(c.weights[0]).max() <= lim
    assert np.std(c.weights[0]) == pytest.approx(lim / np.sqrt(3), rel=0.1)


@pytest.mark.parametrize(
    "kw,exc,match",
    [
        (dict(sizes=[]), ValueError, "sizes"),
        (dict(sizes=[4]), ValueError, "sizes"),
        (dict(sizes=[4, 0, 3]), ValueError, r"sizes\[1\]"),
        (dict(sizes=[4, -2, 3]), ValueError, r"sizes\[1\]"),
        (dict(sizes=[4, 2.5, 3]), TypeError, r"sizes\[1\]"),
        (dict(sizes=[4, True, 3]), TypeError, r"sizes\[1\]"),
        (dict(sizes="43"), TypeError, "sizes"),
        (dict(sizes=5), TypeError, "sizes"),
        (dict(activations="swish"), ValueError, "activations"),
        (dict(activations=["tanh"]), ValueError, "activations"),
        (dict(activations=["tanh", "tanh", "softmax"]), ValueError, "activations"),
        (dict(activations=["softmax", "softmax"]), ValueError, r"activations\[0\].*output layer"),
        (dict(activations=5), TypeError, "activations"),
        (dict(loss="hinge"), ValueError, "loss"),
        (dict(activations="sigmoid", loss="cross_entropy"), ValueError, "loss.*softmax"),
        (dict(loss="binary_cross_entropy"), ValueError, "loss.*sigmoid"),
        (dict(dtype=np.float16), TypeError, "dtype"),
        (dict(dtype=np.int32), TypeError, "dtype"),
        (dict(dtype="banana"), TypeError, "dtype"),
        (dict(init="zeros"), ValueError, "init"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(seed=1.5), TypeError, "seed"),
        (dict(backend="tpu"), ValueError, "backend"),
    ],
)
def test_constructor_rejects_bad_arguments(kw, exc, match):
    with pytest.raises(exc, match=match):
        _net(**kw)


def test_cuda_backend_without_gpu_or_simulator_is_a_clear_error(monkeypatch):
    import fastbp.cuda

    monkeypatch.setattr(fastbp.cuda, "unavailable_reason", lambda: "no CUDA GPU was found (test)")
    with pytest.raises(RuntimeError, match="backend: 'cuda' cannot run here: no CUDA GPU was found"):
        _net(backend="cuda")


def test_cuda_unavailable_reason_names_what_is_missing(monkeypatch):
    import numba.cuda

    import fastbp.cuda

    monkeypatch.setattr(numba.cuda, "is_available", lambda: False)
    assert "NUMBA_ENABLE_CUDASIM" in fastbp.cuda.unavailable_reason()
    assert not fastbp.cuda.available()


# -- computation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_backends_agree(dtype):
    x, y = _data(9, dtype)
    a = _net(dtype=dtype)
    b = _net(dtype=dtype, backend="numpy")
    np.testing.assert_array_equal(a.params, b.params)
    la, ga = a.loss_and_grad(x, y)
    lb, gb = b.loss_and_grad(x, y)
    assert ga.dtype == gb.dtype == dtype
    assert_close(la, lb, dtype, factor=5)
    assert_close(ga, gb, dtype, factor=5)
    pa, pb = a.predict(x), b.predict(x)
    assert pa.dtype == pb.dtype == dtype
    assert_close(pa, pb, dtype, factor=5)


def test_predict_shapes():
    net = _net()
    x, _ = _data(5)
    p = net.predict(x)
    assert p.shape == (5, 3) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)
    one = net.predict(x[2])
    assert one.shape == (3,)
    np.testing.assert_array_equal(one, p[2])


def test_equivalent_input_layouts_give_the_same_answer():
    net = _net()
    x, y = _data(6)
    base_loss, base_grad = net.loss_and_grad(x, y)
    big = np.zeros((12, 8), np.float32)
    big[::2, ::2] = x  # non-contiguous view
    variants = [
        (x.tolist(), y.tolist()),
        (np.asfortranarray(x), y),
        (big[::2, ::2], y),
        (x.astype(np.float64), y.astype(np.int32)),
        (x, np.eye(3, dtype=np.float32)[y]),  # one-hot instead of labels
    ]
    for xv, yv in variants:
        loss, grad = net.loss_and_grad(xv, yv)
        assert grad.dtype == np.float32
        np.testing.assert_allclose(loss, base_loss, rtol=1e-6)
        np.testing.assert_allclose(grad, base_grad, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(net.predict(xv), net.predict(x), rtol=1e-6)


def test_out_is_written_in_place_and_reused():
    net = _net()
    x, y = _data()
    g = np.full(net.n_params, np.nan, np.float32)
    loss, g2 = net.loss_and_grad(x, y, out=g)
    assert g2 is g
    np.testing.assert_array_equal(g, net.loss_and_grad(x, y)[1])
    assert loss == net.loss_and_grad(x, y, out=g)[0]


def test_single_output_accepts_1d_targets():
    net = fastbp.MLP([3, 5, 1], "sigmoid", "binary_cross_entropy", seed=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3))
    y = rng.integers(0, 2, 6)
    l1, g1 = net.loss_and_grad(x, y)
    l2, g2 = net.loss_and_grad(x, y.reshape(6, 1).astype(float))
    assert l1 == l2
    np.testing.assert_array_equal(g1, g2)


def test_params_setter_copies_into_the_same_buffer():
    net = _net()
    buf = net.params
    w0 = net.weights[0]
    new = np.arange(net.n_params, dtype=np.float64)
    net.params = new
    assert net.params is buf
    assert net.weights[0] is w0 and w0[0, 1] == 1.0
    with pytest.raises(ValueError, match="params"):
        net.params = np.zeros(3)
    with pytest.raises(ValueError, match="params"):
        net.params = np.full(net.n_params, np.nan)
    np.testing.assert_array_equal(net.params, new.astype(np.float32))


def test_in_place_update_of_params_keeps_the_buffer_and_the_views():
    net = _net()
    buf = net.params
    w0 = net.weights[0]
    before = buf.copy()
    g = np.linspace(-1, 1, net.n_params).astype(np.float32)
    net.params -= np.float32(0.5) * g  # the setter receives θ itself
    assert net.params is buf and net.weights[0] is w0
    np.testing.assert_array_equal(net.params, before - np.float32(0.5) * g)
    net.params = net.params  # assigning θ to itself changes nothing
    np.testing.assert_array_equal(net.params, before - np.float32(0.5) * g)
    net.params = net.params[::-1].copy()  # a copy is a new value: still copied in
    np.testing.assert_array_equal(net.params, (before - np.float32(0.5) * g)[::-1])


# -- validation of calls: a clear error and params untouched --------------------------------------

X_OK = np.zeros((5, 4), np.float32)
Y_OK = np.zeros(5, np.int64)
BAD_CALLS = [
    (dict(x=np.zeros((5, 3))), ValueError, r"x: expected shape \(N, 4\)"),
    (dict(x=np.zeros((5, 4, 1))), ValueError, "x: expected shape"),
    (dict(x=np.zeros(())), ValueError, "x: expected shape"),
    (dict(x=np.zeros((0, 4)), y=np.zeros(0, int)), ValueError, "x: the batch is empty"),
    (dict(x=np.full((5, 4), np.nan)), ValueError, "x: contains NaN"),
    (dict(x=np.full((5, 4), np.inf)), ValueError, "x: contains NaN or inf"),
    (dict(x=np.full((5, 4), "a")), TypeError, "x: expected a numeric"),
    (dict(x=np.zeros((5, 4), complex)), TypeError, "x: expected a numeric"),
    (dict(x=[[1, 2], [3]]), TypeError, "x"),
    (dict(y=np.zeros(4, np.int64)), ValueError, "y: has 4 samples but x has 5"),
    (dict(y=np.zeros((5, 2))), ValueError, r"y: expected shape \(5, 3\)"),
    (dict(y=np.zeros((5, 3, 1))), ValueError, "y: expected shape"),
    (dict(y=np.array([0, 1, 2, 3, 0])), ValueError, r"y: class labels must lie in \[0, 3\)"),
    (dict(y=np.array([0, 1, -1, 2, 0])), ValueError, r"y: class labels must lie in \[0, 3\)"),
    (dict(y=np.array([0.0, 1.0, 2.0, 1.0, 0.0])), TypeError, "y: float labels"),
    (dict(y=np.full((5, 3), np.nan)), ValueError, "y: contains NaN"),
    (dict(y=np.full((5, 3), 2.0)), ValueError, r"y: cross_entropy targets must be probabilities"),
    (dict(out=np.zeros(3, np.float32)), ValueError, "out: expected shape"),
    (dict(out="net"), TypeError, "out: expected a numpy.ndarray"),
    (dict(out=np.zeros(59, np.float64)), TypeError, "out: expected dtype float32"),
    (dict(out=np.zeros(118, np.float32)[::2]), ValueError, "out: expected a writeable C-contiguous"),
]


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
@pytest.mark.parametrize("kw,exc,match", BAD_CALLS)
def test_loss_and_grad_rejects_bad_input_and_keeps_params(kw, exc, match, backend):
    net = _net(backend=backend)
    before = net.params.copy()
    args = dict(x=X_OK, y=Y_OK, out=None)
    args.update(kw)
    with pytest.raises(exc, match=match):
        net.loss_and_grad(args["x"], args["y"], out=args["out"])
    np.testing.assert_array_equal(net.params, before)


def test_out_aliasing_params_is_refused():
    net = _net()
    before = net.params.copy()
    with pytest.raises(ValueError, match="out: must not share memory with params"):
        net.loss_and_grad(X_OK, Y_OK, out=net.params)
    np.testing.assert_array_equal(net.params, before)


def test_binary_cross_entropy_targets_must_be_probabilities():
    net = fastbp.MLP([2, 2], "sigmoid", "binary_cross_entropy")
    with pytest.raises(ValueError, match=r"y: binary_cross_entropy targets must be probabilities in \[0, 1\]"):
        net.loss_and_grad(np.zeros((2, 2)), np.array([[0.0, 1.5], [0.0, 1.0]]))


@pytest.mark.parametrize("x", [np.zeros((5, 3)), np.full((2, 4), np.nan), np.zeros((0, 4))])
def test_predict_rejects_bad_input(x):
    with pytest.raises(ValueError, match="x:"):
        _net().predict(x)


# -- persistence -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_save_load_round_trip(tmp_path, dtype):
    net = fastbp.MLP([3, 5, 4, 2], ["gelu", "elu", "sigmoid"], "binary_cross_entropy", dtype=dtype, seed=3)
    path = tmp_path / "model.npz"
    net.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temporary left behind
    back = fastbp.MLP.load(path)
    assert back.sizes == net.sizes and back.activations == net.activations and back.loss == net.loss
    assert back.dtype == dtype
    np.testing.assert_array_equal(back.params, net.params)
    x = np.random.default_rng(0).standard_normal((4, 3))
    np.testing.assert_array_equal(back.predict(x), net.predict(x))
    ref = fastbp.MLP.load(str(path), backend="numpy")
    assert ref.backend == "numpy"


def test_save_replaces_atomically(tmp_path):
    path = tmp_path / "m.npz"
    _net(seed=1).save(path)
    _net(seed=2).save(path)
    np.testing.assert_array_equal(fastbp.MLP.load(path).params, _net(seed=2).params)


def test_load_rejects_foreign_and_damaged_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        fastbp.MLP.load(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a model")
    with pytest.raises(ValueError, match="not a readable fastbp model"):
        fastbp.MLP.load(junk)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.zeros(3))
    with pytest.raises(ValueError, match="not a fastbp model"):
        fastbp.MLP.load(foreign)
    good = tmp_path / "good.npz"
    _net().save(good)
    data = dict(np.load(good))
    for key, value, match in [
        ("params", np.zeros(5, np.float32), "params of dtype"),
        ("params", np.full(59, np.nan, np.float32), "non-finite"),
        ("activations", np.array(["tanh", "nope"]), "invalid model description"),
        ("version", np.array(99), "version"),
    ]:
        bad = dict(data)
        bad[key] = value
        path = tmp_path / f"bad_{key}.npz"
        np.savez(path, **bad)
        with pytest.raises(ValueError, match=match):
            fastbp.MLP.load(path)
    bad = dict(data)
    del bad["sizes"]
    np.savez(tmp_path / "nosizes.npz", **bad)
    with pytest.raises(ValueError, match="damaged"):
        fastbp.MLP.load(tmp_path / "nosizes.npz")


# -- embedding in a user's @njit code --------------------------------------------------------------


@njit
def _user_training_loop(params, sizes, acts, loss, x, y, grad, work, lr, steps, losses):
    for s in range(steps):
        losses[s] = cpu.loss_and_grad(params, sizes, acts, loss, x, y, grad, work)
        for i in range(params.shape[0]):
            params[i] -= lr * grad[i]


def test_user_njit_loop_calls_the_kernels():
    # float32, with a strided x: the whole-network kernels take any layout of x
    net = _net(dtype=np.float32)
    x, y = _data(16, np.float32, seed=2)
    strided = np.repeat(x, 2, axis=1)[:, ::2]  # x's values, every other column of a wider array
    assert not strided.flags.c_contiguous
    p0 = net.params.copy()
    steps = 25
    losses = np.empty(steps)
    grad = np.empty(net.n_params, np.float32)
    work = np.empty(fastbp.workspace_size(net.sizes, 16), np.float32)
    spec = net.spec
    _user_training_loop(net.params, spec.sizes, spec.activations, spec.loss, strided, y, grad, work, 0.5, steps,
                        losses)
    assert losses[-1] < 0.8 * losses[0]
    # The same loop in Python through the public API, on a contiguous x, gives the same parameters.
    ref = _net(dtype=np.float32)
    np.testing.assert_array_equal(ref.params, p0)
    for s in range(steps):
        loss, g = ref.loss_and_grad(x, y)
        assert loss == losses[s]  # the same kernel on the same θ
        ref.params -= 0.5 * g  # exact scaling, one rounding: as the loop's update
    np.testing.assert_array_equal(ref.params, net.params)


def test_info_reports_the_cuda_backend(capsys, monkeypatch):
    import fastbp.cuda
    from fastbp.__main__ import main

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"fastbp {fastbp.__version__}" in out
    assert ("cuda backend: available" in out) == fastbp.cuda.available()
    monkeypatch.setattr(fastbp.cuda, "unavailable_reason", lambda: "no CUDA GPU was found (test)")
    assert main(["info"]) == 0
    assert "cuda backend: unavailable: no CUDA GPU was found (test)" in capsys.readouterr().out
