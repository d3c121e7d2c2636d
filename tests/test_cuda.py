"""CUDA kernels and backend="cuda", on Numba's CUDA simulator (or a GPU with NUMBA_ENABLE_CUDASIM=0).

Every kernel against the NumPy reference, the whole gradient against the cpu
backend and against an independent automatic-differentiation library
(autograd), sizes that are not multiples of the tiles (3·tile+1), batch size 1,
float32 and float64.  The simulator runs every GPU thread as a Python thread:
sizes are kept tiny.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastbp
from fastbp import activations as A
from fastbp import reference as ref

from .conftest import DTYPES, assert_close, random_problem

pytest.importorskip("numba.cuda")

from numba import cuda  # noqa: E402

import fastbp.cuda as fc  # noqa: E402
from fastbp.cuda import _fused, _kernels  # noqa: E402
from fastbp.cuda import network as cn  # noqa: E402

if fc.unavailable_reason() is not None:  # pragma: no cover
    pytest.skip(fc.unavailable_reason(), allow_module_level=True)

# Tolerances: the GPU sums in another order than NumPy's BLAS (and the fused kernel with atomics).
FACTOR = 50

# Tile height of the tiled product in use, and sizes that do not divide it.
TILE = fastbp.config.CUDA_GEMM_TILE[0]
ODD = 3 * TILE + 1


def _d(a):
    return cuda.to_device(np.ascontiguousarray(a))


def _h(d):
    return d.copy_to_host()


# ---- per-layer kernels -------------------------------------------------------------------------


# Every activation in float32; in float64 the two whose code differs most by dtype (the
# simulator runs each GPU thread in Python: each case costs seconds).
@pytest.mark.parametrize("act,dtype", [(a, np.float32) for a in ("identity", "sigmoid", "tanh", "relu", "gelu",
                                                                  "softmax")] + [("tanh", np.float64),
                                                                                 ("softmax", np.float64)])
def test_linear_forward(act, dtype, rng):
    N, n_in, n_out = ODD, 7, TILE + 3
    W = rng.standard_normal((n_out, n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    x = rng.standard_normal((N, n_in)).astype(dtype)
    z, a = cuda.device_array((N, n_out), dtype), cuda.device_array((N, n_out), dtype)
    fc.linear_forward(_d(W), _d(b), _d(x), A.CODES[act], z, a)
    zr, ar = ref.linear_forward(W, b, x, act)
    assert _h(z).dtype == dtype
    assert_close(_h(z), zr, dtype, factor=FACTOR)
    assert_close(_h(a), ar, dtype, factor=FACTOR)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "loss,act,labels",
    [
        ("mse", "tanh", False),
        ("mse", "softmax", False),
        ("cross_entropy", "softmax", True),
        ("cross_entropy", "softmax", False),
        ("binary_cross_entropy", "sigmoid", False),
    ],
)
def test_output_delta(loss, act, labels, dtype, rng):
    N, nL = 5, 3
    z = rng.standard_normal((N, nL)).astype(dtype) * 3
    a = ref.activation(act, z)
    _, y = random_problem(rng, [1, nL], N, dtype, labels=labels, loss=loss)
    delta = cuda.device_array((N, nL), dtype)
    C = fc.output_delta(fastbp.losses.CODES[loss], A.CODES[act], _d(z), _d(a), _d(y), delta)
    Cr, dr = ref.output_delta(loss, act, z, a, y)
    assert_close(_h(delta), dr, dtype, factor=FACTOR)
    assert_close(C, Cr, dtype, factor=FACTOR)


@pytest.mark.parametrize("dtype", DTYPES)
def test_backprop_delta(dtype, rng):
    N, n, n_next = ODD, TILE + 1, 5
    W = rng.standard_normal((n_next, n)).astype(dtype)
    dn = rng.standard_normal((N, n_next)).astype(dtype)
    z = rng.standard_normal((N, n)).astype(dtype)
    out = cuda.device_array((N, n), dtype)
    fc.backprop_delta(_d(W), _d(dn), _d(z), A.TANH, out)
    assert_close(_h(out), ref.backprop_delta(W, dn, z, "tanh"), dtype, factor=FACTOR)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N", [1, ODD])
def test_weight_and_bias_grad(N, dtype, rng):
    n_in, n_out = TILE + 2, 7
    d = rng.standard_normal((N, n_out)).astype(dtype)
    a = rng.standard_normal((N, n_in)).astype(dtype)
    gW, gb = cuda.device_array((n_out, n_in), dtype), cuda.device_array(n_out, dtype)
    fc.weight_grad(_d(d), _d(a), gW)
    fc.bias_grad(_d(d), gb)
    assert_close(_h(gW), ref.weight_grad(d, a), dtype, factor=FACTOR)
    assert_close(_h(gb), ref.bias_grad(d), dtype, factor=FACTOR)
    gW2, gb2 = cuda.device_array((n_out, n_in), dtype), cuda.device_array(n_out, dtype)
    fc.weight_bias_grad(_d(d), _d(a), gW2, gb2)
    assert_close(_h(gW2), ref.weight_grad(d, a), dtype, factor=FACTOR)
    assert_close(_h(gb2), ref.bias_grad(d), dtype, factor=FACTOR)


# ---- whole network -----------------------------------------------------------------------------

NETS = [
    ([3, 7, 5, 2], ["tanh", "relu", "identity"], "mse", False),
    ([5, 13, 4], ["sigmoid", "softmax"], "cross_entropy", True),
    ([4, 6, 3], ["elu", "sigmoid"], "binary_cross_entropy", False),
    ([3, 9, 1], ["softplus", "identity"], "mse", False),
    ([2, 5, 3], ["leaky_relu", "softmax"], "mse", False),
    ([3, 33, 6], ["relu", "softmax"], "cross_entropy", True),  # a wide output layer in the fused kernel
]


def _problem(sizes, acts, loss, labels, dtype, n, rng):
    net = fastbp.MLP(sizes, acts, loss, dtype=dtype, seed=2)
    for b in net.biases:
        b[...] = rng.standard_normal(b.shape) * 0.5
    x, y = random_problem(rng, sizes, n, dtype, labels=labels, loss=loss)
    return net, x, y


# Every network in float32; in float64 the first (mse), the second (labels) and the last (a wide
# output layer in the fused kernel).
@pytest.mark.parametrize("sizes,acts,loss,labels,dtype", [(*net, np.float32) for net in NETS]
                         + [(*NETS[i], np.float64) for i in (0, 1, len(NETS) - 1)])
@pytest.mark.parametrize("path", ["layered", "fused"])
def test_loss_and_grad_kernel_matches_reference(path, sizes, acts, loss, labels, dtype, rng):
    net, x, y = _problem(sizes, acts, loss, labels, dtype, 11, rng)
    assert _fused.eligible(tuple(sizes), tuple(net.spec.activations), np.dtype(dtype).name)
    for n in (1, 11):
        g = cuda.device_array(net.n_params, dtype)
        w = cuda.device_array(fastbp.workspace_size(sizes, n), dtype)
        yd = _d(y[:n].astype(np.int64) if labels else y[:n])
        C = cn.loss_and_grad(
            _d(net.params), sizes, net.spec.activations, net.spec.loss, _d(x[:n]), yd, g, w, fused=(path == "fused")
        )
        Cr, gr = ref.loss_and_grad(net.params, sizes, net.spec.activations, loss, x[:n], y[:n])
        assert _h(g).dtype == dtype
        assert_close(C, Cr, dtype, factor=FACTOR)
        assert_close(_h(g), gr, dtype, factor=FACTOR)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_kernel_tiles_and_sample_weights(dtype, rng):
    """Several tiles per block (grid-stride loop), a partial last tile, and sample weights."""
    sizes = [3, 11, 2]
    net, x, y = _problem(sizes, ["tanh", "identity"], "mse", False, dtype, 70, rng)
    sw = rng.random(70).astype(dtype)
    for path in (True, False):
        g = cuda.device_array(net.n_params, dtype)
        w = cuda.device_array(fastbp.workspace_size(sizes, 70), dtype)
        C = cn.loss_and_grad(
            _d(net.params), sizes, net.spec.activations, net.spec.loss, _d(x), _d(y), g, w, sample_weight=_d(sw),
            fused=path,
        )
        Cr, gr = ref.loss_and_grad(net.params, sizes, net.spec.activations, "mse", x, y, sample_weight=sw)
        assert_close(C, Cr, dtype, factor=FACTOR)
        assert_close(_h(g), gr, dtype, factor=FACTOR)


@pytest.mark.slow  # the GPU's tile shapes, slow on the simulator: run on a GPU with --runslow
def test_production_tile_shapes(rng, monkeypatch):
    """The tile and block shapes a GPU uses, at sizes that do not divide them (slow on the simulator)."""
    monkeypatch.setattr(fastbp.config, "CUDA_GEMM_TILE", (64, 64, 16, 4, 4))
    dtype = np.float32
    sizes = [3, 65, 2]
    net, x, y = _problem(sizes, ["tanh", "identity"], "mse", False, dtype, 3, rng)
    g = cuda.device_array(net.n_params, dtype)
    w = cuda.device_array(fastbp.workspace_size(sizes, 3), dtype)
    C = cn.loss_and_grad(_d(net.params), sizes, net.spec.activations, net.spec.loss, _d(x), _d(y), g, w, fused=False)
    Cr, gr = ref.loss_and_grad(net.params, sizes, net.spec.activations, "mse", x, y)
    assert_close(C, Cr, dtype, factor=FACTOR)
    assert_close(_h(g), gr, dtype, factor=FACTOR)


@pytest.mark.slow  # the GPU's split-k thresholds, slow on the simulator: run on a GPU with --runslow
def test_split_k_weight_gradient(rng, monkeypatch):
    """BP3 split along the batch (partial products added atomically), as for a long batch on a
    large GPU: forced here by asking for more blocks than the product has."""
    monkeypatch.setattr(fastbp.config, "CUDA_SPLIT_K_TARGET_BLOCKS", 64)
    dtype = np.float32
    N = 8 * cn.gemm(np.dtype(dtype).name).BK * 3 + 5
    sizes = [3, 5, 2]
    net, x, y = _problem(sizes, ["tanh", "identity"], "mse", False, dtype, N, rng)
    assert cn.k_splits(cn.gemm(np.dtype(dtype).name), 5, 4, N) == 3
    g = cuda.to_device(np.full(net.n_params, np.nan, dtype))  # every entry must be written
    w = cuda.device_array(fastbp.workspace_size(sizes, N), dtype)
    C = cn.loss_and_grad(_d(net.params), sizes, net.spec.activations, net.spec.loss, _d(x), _d(y), g, w, fused=False)
    Cr, gr = ref.loss_and_grad(net.params, sizes, net.spec.activations, "mse", x, y)
    assert_close(C, Cr, dtype, factor=FACTOR)
    assert_close(_h(g), gr, dtype, factor=FACTOR)
    dtype = np.float64
    d = rng.standard_normal((N, 5)).astype(dtype)
    a = rng.standard_normal((N, 3)).astype(dtype)
    gW = cuda.to_device(np.full((5, 3), np.nan, dtype))
    fc.weight_grad(_d(d), _d(a), gW)
    assert_close(_h(gW), ref.weight_grad(d, a), dtype, factor=FACTOR)


def test_fused_eligibility():
    assert _fused.eligible((64, 64, 64, 64, 1), (1, 1, 1, 0), "float32")
    assert not _fused.eligible((65, 8, 1), (1, 0), "float32")  # too wide
    assert not _fused.eligible((4, 8, 1), (A.GELU, 0), "float32")  # σ' not recoverable from gelu's a
    assert _fused.eligible((4, 8, 1), (A.TANH, A.GELU), "float32")  # gelu output: σ' from z


# ---- optimizers --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_optimizer_steps_match_cpu(dtype, rng):
    from fastbp.cpu import optim as co

    P = 2 * _kernels.ELEMENT_THREADS + 3
    p0 = rng.standard_normal(P).astype(dtype)
    g = rng.standard_normal(P).astype(dtype)
    for mom, nest in ((0.0, False), (0.9, False), (0.9, True)):
        p, v = p0.copy(), np.full(P, 0.1, dtype)
        dp, dv = _d(p), _d(v)
        co.sgd_step(p, g, v, 0.1, mom, nest, 0.01)
        fc.sgd_step(dp, _d(g), dv, 0.1, mom, nest, 0.01)
        assert_close(_h(dp), p, dtype, factor=FACTOR)
        assert_close(_h(dv), v, dtype, factor=FACTOR)
    for decoupled in (False, True):
        p, m, v = p0.copy(), np.full(P, 0.1, dtype), np.full(P, 0.2, dtype)
        dp, dm, dv = _d(p), _d(m), _d(v)
        co.adam_step(p, g, m, v, 3, 1e-2, 0.9, 0.999, 1e-8, 0.01, decoupled)
        fc.adam_step(dp, _d(g), dm, dv, 3, 1e-2, 0.9, 0.999, 1e-8, 0.01, decoupled)
        assert_close(_h(dp), p, dtype, factor=FACTOR)
        assert_close(_h(dm), m, dtype, factor=FACTOR)
        assert_close(_h(dv), v, dtype, factor=FACTOR)


# ---- the MLP contract --------------------------------------------------------------------------


_WIDE = ([3, 70, 2], ["gelu", "identity"], "mse", False)  # the layered path (float64: the fit test below)


@pytest.mark.parametrize(
    "sizes,acts,loss,labels,dtype",
    [(*net, dt) for net in (NETS[0], NETS[1]) for dt in DTYPES] + [(*_WIDE, np.float32)],
)
def test_mlp_cuda_matches_cpu(sizes, acts, loss, labels, dtype, rng):
    cpu = fastbp.MLP(sizes, acts, loss, dtype=dtype, seed=4)
    gpu = fastbp.MLP(sizes, acts, loss, dtype=dtype, seed=4, backend="cuda")
    np.testing.assert_array_equal(cpu.params, gpu.params)
    x, y = random_problem(rng, sizes, 9, dtype, labels=labels, loss=loss)
    C, g = gpu.loss_and_grad(x, y)
    Cc, gc = cpu.loss_and_grad(x, y)
    assert isinstance(g, np.ndarray) and g.dtype == dtype
    assert_close(C, Cc, dtype, factor=FACTOR)
    assert_close(g, gc, dtype, factor=FACTOR)
    p = gpu.predict(x)
    assert p.dtype == dtype and p.shape == (9, sizes[-1])
    assert_close(p, cpu.predict(x), dtype, factor=FACTOR)
    assert_close(gpu.predict(x[0]), cpu.predict(x[0]), dtype, factor=FACTOR)
    ev, evc = gpu.evaluate(x, y), cpu.evaluate(x, y)
    assert ev.keys() == evc.keys()
    for k in ev:
        assert_close(ev[k], evc[k], dtype, factor=FACTOR)
    # out= fills the given array; params written in place are seen by the next call.
    out = np.empty_like(gpu.params)
    _, g2 = gpu.loss_and_grad(x, y, out=out)
    assert g2 is out
    gpu.params[...] *= 0.5
    cpu.params[...] *= 0.5
    assert_close(gpu.loss_and_grad(x, y)[1], cpu.loss_and_grad(x, y)[1], dtype, factor=FACTOR)


def test_mlp_cuda_accepts_device_arrays_without_copy(rng):
    dtype = np.float32
    sizes = [5, 13, 4]
    gpu = fastbp.MLP(sizes, ["sigmoid", "softmax"], "cross_entropy", dtype=dtype, seed=1, backend="cuda")
    x, y = random_problem(rng, sizes, 7, dtype, labels=True)
    C, g = gpu.loss_and_grad(x, y)
    xd, yd = _d(x), _d(y.astype(np.int64))
    out = cuda.device_array(gpu.n_params, dtype)
    C2, g2 = gpu.loss_and_grad(xd, yd, out=out)
    assert g2 is out
    assert_close(C2, C, dtype)
    assert_close(_h(g2), g, dtype)
    pd = gpu.predict(xd)
    assert not isinstance(pd, np.ndarray)
    assert_close(_h(pd), gpu.predict(x), dtype)


# SGD and Adam against the NumPy reference on cuda: tests/test_backends.py (the simulator is slow)
@pytest.mark.parametrize("optimizer", [pytest.param("nesterov", marks=pytest.mark.slow), "adamw"])
def test_mlp_cuda_fit_matches_cpu(optimizer, rng):
    dtype = np.float64
    sizes = [3, 6, 3]
    x, y = random_problem(rng, sizes, 10, dtype, labels=True)
    kw = dict(
        epochs=2, batch_size=4, optimizer=optimizer, lr=0.05, seed=3, verbose=False, validation_data=(x[:4], y[:4])
    )
    cpu = fastbp.MLP(sizes, ["tanh", "softmax"], "cross_entropy", dtype=dtype, seed=5)
    gpu = fastbp.MLP(sizes, ["tanh", "softmax"], "cross_entropy", dtype=dtype, seed=5, backend="cuda")
    hc, hg = cpu.fit(x, y, **kw), gpu.fit(x, y, **kw)
    assert_close(gpu.params, cpu.params, dtype, factor=FACTOR)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert_close(np.array(hg[key]), np.array(hc[key]), dtype, factor=FACTOR)
    # The optimizer state carries over to the next fit, as on the cpu.
    cpu.fit(x, y, **kw)
    gpu.fit(x, y, **kw)
    assert_close(gpu.params, cpu.params, dtype, factor=FACTOR)


def test_mlp_cuda_fit_wide_layered_path_with_clipping_and_weights(rng):
    dtype = np.float64
    sizes = [3, 70, 1]
    x, y = random_problem(rng, sizes, 9, dtype)
    sw = rng.random(9)
    kw = dict(epochs=1, batch_size=4, optimizer="sgd", lr=0.1, seed=0, verbose=False, clip_norm=0.5, sample_weight=sw)
    cpu = fastbp.MLP(sizes, "tanh", dtype=dtype, seed=5)
    gpu = fastbp.MLP(sizes, "tanh", dtype=dtype, seed=5, backend="cuda")
    hc, hg = cpu.fit(x, y, **kw), gpu.fit(x, y, **kw)
    assert_close(gpu.params, cpu.params, dtype, factor=FACTOR)
    assert_close(np.array(hg["loss"]), np.array(hc["loss"]), dtype, factor=FACTOR)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the simulator computes in NumPy scalars
def test_mlp_cuda_fit_divergence_restores_params(rng):
    x, y = random_problem(rng, [2, 4, 1], 8, np.float32)
    gpu = fastbp.MLP([2, 4, 1], ["relu", "identity"], seed=0, backend="cuda")
    y = y * 1e30
    before = gpu.params.copy()
    # One contract on every backend: the non-finite step is not applied (here the first one).
    with pytest.raises(FloatingPointError, match="params hold the last finite step"):
        gpu.fit(x, y, epochs=1, batch_size=2, optimizer="sgd", lr=1e10, verbose=False)
    np.testing.assert_array_equal(gpu.params, before)


def test_mlp_cuda_bad_input_is_a_clear_error_and_changes_nothing(rng):
    dtype = np.float32
    gpu = fastbp.MLP([3, 5, 2], ["tanh", "softmax"], "cross_entropy", dtype=dtype, seed=0, backend="cuda")
    before = gpu.params.copy()
    x, y = random_problem(rng, [3, 5, 2], 4, dtype, labels=True)
    cases = [
        (ValueError, "x: expected shape", dict(x=x[:, :2])),
        (ValueError, "x: contains NaN", dict(x=_d(np.full_like(x, np.nan)))),
        (TypeError, "x: expected a device array of dtype", dict(x=_d(x.astype(np.float64)))),
        (ValueError, "y: class labels must lie in", dict(y=_d(np.array([0, 1, 2, 0])))),
        (ValueError, "y: class labels must lie in", dict(y=np.array([0, 1, 5, 0]))),
        (ValueError, "y: expected integer class labels of shape", dict(y=_d(np.array([0, 1])))),
        (ValueError, "out: expected a device array", dict(out=cuda.device_array(3, dtype))),
    ]
    for exc, msg, kw in cases:
        args = dict(x=x, y=y)
        args.update(kw)
        with pytest.raises(exc, match=msg):
            gpu.loss_and_grad(args["x"], args["y"], out=args.get("out"))
        if "out" not in kw:
            with pytest.raises(exc, match=msg):
                gpu.fit(args["x"], args["y"], epochs=1, verbose=False)
        np.testing.assert_array_equal(gpu.params, before)


def test_save_load_cuda(tmp_path, rng):
    gpu = fastbp.MLP([3, 5, 2], "tanh", seed=0, backend="cuda")
    gpu.save(tmp_path / "m.npz")
    back = fastbp.MLP.load(tmp_path / "m.npz", backend="cuda")
    x = rng.standard_normal((3, 3)).astype(np.float32)
    np.testing.assert_array_equal(back.predict(x), gpu.predict(x))


# ---- an independent automatic-differentiation library -----------------------------------------


def _autograd_loss(theta, sizes, acts, loss, x, y):
    import autograd.numpy as anp
    from autograd.scipy.special import erf, logsumexp

    def act(name, z):
        if name == "sigmoid":
            return 0.5 * (anp.tanh(0.5 * z) + 1.0)
        if name == "tanh":
            return anp.tanh(z)
        if name == "relu":
            return anp.maximum(z, 0.0)
        if name == "leaky_relu":
            return anp.where(z > 0, z, 0.01 * z)
        if name == "softplus":
            return anp.logaddexp(0.0, z)
        if name == "elu":
            return anp.where(z > 0, z, anp.exp(anp.minimum(z, 0.0)) - 1.0)
        if name == "gelu":
            return 0.5 * z * (1.0 + erf(z / np.sqrt(2.0)))
        if name == "softmax":
            return anp.exp(z - logsumexp(z, axis=1, keepdims=True))
        return z

    a, off, z = x, 0, None
    for l in range(len(sizes) - 1):
        n_in, n_out = sizes[l], sizes[l + 1]
        W = anp.reshape(theta[off : off + n_out * n_in], (n_out, n_in))
        b = theta[off + n_out * n_in : off + n_out * n_in + n_out]
        off += n_out * n_in + n_out
        z = anp.dot(a, W.T) + b
        a = act(acts[l], z)
    N = x.shape[0]
    if loss == "mse":
        return 0.5 * anp.sum((a - y) ** 2) / N
    if loss == "cross_entropy":
        return -anp.sum(y * (z - logsumexp(z, axis=1, keepdims=True))) / N
    return anp.sum(anp.logaddexp(0.0, z) - z * y) / N


@pytest.mark.parametrize("seed", range(4))
def test_cuda_backend_agrees_with_autograd(seed):
    """Random small networks of odd sizes: the cuda backend's gradient against autograd's (float64)."""
    ag = pytest.importorskip("autograd")
    rng = np.random.default_rng(100 + seed)
    L = int(rng.integers(1, 4))
    sizes = [int(v) for v in rng.choice([1, 3, 5, 7, 13], size=L + 1)]
    hidden = list(rng.choice([n for n in A.NAMES if n != "softmax"], size=L - 1))
    loss = ["mse", "cross_entropy", "binary_cross_entropy"][seed % 3]
    if loss == "cross_entropy":
        sizes[-1] = max(sizes[-1], 2)
        out_act = "softmax"
    else:
        out_act = "sigmoid" if loss == "binary_cross_entropy" else str(rng.choice(["identity", "tanh"]))
    acts = [str(h) for h in hidden] + [out_act]
    n = int(rng.choice([1, 3, 7]))
    net = fastbp.MLP(sizes, acts, loss, dtype=np.float64, seed=seed, backend="cuda")
    net.params[...] += rng.standard_normal(net.n_params) * 0.1
    x, y = random_problem(rng, sizes, n, np.float64, loss=loss)
    C, g = net.loss_and_grad(x, y)
    f = lambda th: _autograd_loss(th, sizes, acts, loss, x, y)  # noqa: E731
    Cr = f(net.params.copy())
    gr = ag.grad(f)(net.params.copy())
    np.testing.assert_allclose(C, Cr, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g, gr, rtol=1e-8, atol=1e-10 * max(1.0, np.abs(gr).max()))
