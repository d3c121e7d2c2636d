"""The backend contract: every backend computes the same function, fails the same way on the
same bad input, and trains under one ``fit`` contract (fastbp.backends, fastbp.training).

The numpy backend (the reference) is the oracle; cuda runs on Numba's simulator where no GPU
is present, with tiny sizes.  Also: the import graph of the package runs one way.
"""

from __future__ import annotations

import ast
import pathlib
import warnings

import numpy as np
import pytest

import fastbp
from fastbp.cuda import unavailable_reason
from fastbp.optim import Adam

from .conftest import assert_close, random_problem
from .rounding import assert_network_within

BACKENDS = ["numpy", "cpu"] + (["cuda"] if unavailable_reason() is None else [])
SIZES = [3, 5, 2]
ACTS = ["tanh", "softmax"]
FACTOR = {"numpy": 1.0, "cpu": 4.0, "cuda": 50.0}  # the GPU sums in other orders (atomics)


def _net(backend, dtype=np.float64, seed=0):
    return fastbp.MLP(SIZES, ACTS, "cross_entropy", dtype=dtype, seed=seed, backend=backend)


def _data(n=7, dtype=np.float64, seed=0):
    return random_problem(np.random.default_rng(seed), SIZES, n, dtype, labels=True, loss="cross_entropy")


# ---- the same function ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend,n", [(b, n) for b in BACKENDS for n in (1, 7) if b != "cuda" or n == 7])
def test_every_backend_computes_the_reference_function(backend, n):
    dtype = np.float64
    net, ref = _net(backend), _net("numpy")
    x, y = _data(n, dtype)
    sw = np.linspace(0.5, 2.0, n)
    f = FACTOR[backend]
    assert_close(net.predict(x), ref.predict(x), dtype, factor=f)
    assert_close(net.predict(x[0]), ref.predict(x[0]), dtype, factor=f)
    for kw in ({}, {"sample_weight": sw}):
        c, g = net.loss_and_grad(x, y, **kw)
        assert g.dtype == dtype
        # any summation order (the GPU's atomics included) lies within the rounding bound
        assert_network_within(f"{backend} {kw}", net.params, SIZES, ACTS, "cross_entropy", x, y, c, g,
                              kw.get("sample_weight"))
    e, er = net.evaluate(x, y), ref.evaluate(x, y)
    assert e.keys() == er.keys() == {"loss", "accuracy"}
    assert type(e["loss"]) is float and type(e["accuracy"]) is float
    assert_close(e["loss"], er["loss"], dtype, factor=f)
    assert e["accuracy"] == er["accuracy"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_stays_float32_on_every_backend(backend):
    net = _net(backend, np.float32)
    x, y = _data(4, np.float32)
    assert net.predict(x).dtype == np.float32
    assert net.loss_and_grad(x, y)[1].dtype == np.float32
    net.fit(x, y, epochs=1, batch_size=2, verbose=False)
    assert net.params.dtype == np.float32


# ---- the same error for the same bad input ----------------------------------------------------------


def _bad_inputs():
    """(label, method, arguments) of calls that must fail before anything changes."""
    x, y = _data(4)
    nan_x = x.copy()
    nan_x[1, 2] = np.nan
    probs = np.full((4, 2), 0.5)
    probs[0] = (-0.5, 1.5)
    shared = "params"  # resolved to the model's own params below
    cases = [
        ("x width", "loss_and_grad", dict(x=x[:, :2], y=y)),
        ("x 3-D", "loss_and_grad", dict(x=x[None], y=y)),
        ("x empty", "loss_and_grad", dict(x=x[:0], y=y[:0])),
        ("x NaN", "loss_and_grad", dict(x=nan_x, y=y)),
        ("x strings", "loss_and_grad", dict(x=np.array([["a", "b", "c"]] * 4), y=y)),
        ("y shape", "loss_and_grad", dict(x=x, y=np.zeros((4, 3)))),
        ("y rows", "loss_and_grad", dict(x=x, y=y[:3])),
        ("y label range", "loss_and_grad", dict(x=x, y=np.array([0, 1, 2, 0]))),
        ("y negative label", "loss_and_grad", dict(x=x, y=np.array([0, -1, 1, 0]))),
        ("y float labels", "loss_and_grad", dict(x=x, y=y.astype(float))),
        ("y probabilities", "loss_and_grad", dict(x=x, y=probs)),
        ("sample_weight shape", "loss_and_grad", dict(x=x, y=y, sample_weight=np.ones(3))),
        ("sample_weight negative", "loss_and_grad", dict(x=x, y=y, sample_weight=np.array([1, -1, 1, 1.0]))),
        ("sample_weight zero", "loss_and_grad", dict(x=x, y=y, sample_weight=np.zeros(4))),
        ("sample_weight NaN", "loss_and_grad", dict(x=x, y=y, sample_weight=np.array([1, np.nan, 1, 1]))),
        ("out dtype", "loss_and_grad", dict(x=x, y=y, out=np.empty(27, np.float32))),
        ("out shape", "loss_and_grad", dict(x=x, y=y, out=np.empty(26))),
        ("out strided", "loss_and_grad", dict(x=x, y=y, out=np.empty(54)[::2])),
        ("out list", "loss_and_grad", dict(x=x, y=y, out=[0.0] * 27)),
        ("out is params", "loss_and_grad", dict(x=x, y=y, out=shared)),
        ("predict width", "predict", dict(x=x[:, :1])),
        ("predict NaN", "predict", dict(x=nan_x)),
        ("evaluate labels", "evaluate", dict(x=x, y=np.array([0, 1, 9, 0]))),
        ("fit x", "fit", dict(x=nan_x, y=y)),
        ("fit y", "fit", dict(x=x, y=np.array([0, 1, 2, 0]))),
        ("fit epochs", "fit", dict(x=x, y=y, epochs=0)),
        ("fit batch_size", "fit", dict(x=x, y=y, batch_size=1.5)),
        ("fit optimizer", "fit", dict(x=x, y=y, optimizer="adagrad")),
        ("fit lr", "fit", dict(x=x, y=y, lr=-1.0)),
        ("fit shuffle", "fit", dict(x=x, y=y, shuffle="yes")),
        ("fit seed", "fit", dict(x=x, y=y, seed=-1)),
        ("fit patience", "fit", dict(x=x, y=y, patience=0)),
        ("fit clip_norm", "fit", dict(x=x, y=y, clip_norm=0.0)),
        ("fit alpha", "fit", dict(x=x, y=y, alpha=-1e-4)),
        ("fit callback", "fit", dict(x=x, y=y, callback=3)),
        ("fit schedule", "fit", dict(x=x, y=y, schedule="warm")),
        ("fit sample_weight", "fit", dict(x=x, y=y, sample_weight=-np.ones(4))),
        ("fit validation pair", "fit", dict(x=x, y=y, validation_data=(x,))),
        ("fit validation x", "fit", dict(x=x, y=y, validation_data=(x[:, :2], y))),
        ("fit validation y", "fit", dict(x=x, y=y, validation_data=(x, np.array([0, 5, 0, 0])))),
        ("fit lbfgs patience", "fit", dict(x=x, y=y, optimizer="lbfgs", patience=2)),
    ]
    return cases


def _failure(net, method, kwargs):
    kw = dict(kwargs)
    if isinstance(kw.get("out"), str):
        kw["out"] = net.params
    if method == "fit":
        kw.setdefault("verbose", False)
    try:
        getattr(net, method)(**kw)
    except (TypeError, ValueError) as e:
        return type(e), str(e)
    return None


def test_the_same_bad_input_gets_the_same_error_on_every_backend():
    nets = {b: _net(b) for b in BACKENDS}
    before = {b: n.params.copy() for b, n in nets.items()}
    for label, method, kwargs in _bad_inputs():
        got = {b: _failure(n, method, kwargs) for b, n in nets.items()}
        ref = got["numpy"]
        assert ref is not None, f"{label}: no error on the numpy backend"
        name = ref[1].split(":")[0]
        assert name.replace("[0]", "").replace("[1]", "") in (
            "x", "y", "out", "sample_weight", "epochs", "batch_size", "optimizer", "lr", "shuffle", "seed",
            "patience", "clip_norm", "alpha", "callback", "schedule", "validation_data"), f"{label}: {ref[1]}"
        for b in BACKENDS:
            assert got[b] == ref, f"{label}: {b} raised {got[b]}, numpy {ref}"
    for b, n in nets.items():
        np.testing.assert_array_equal(n.params, before[b])
        assert n._opt_state is None


# ---- one fit contract ------------------------------------------------------------------------------


_FIT_OPTIONS = {
    "momentum": dict(optimizer="momentum", lr=0.1, shuffle=False, alpha=0.05),
    "adam-clip-weights": dict(optimizer=Adam(lr=0.05, eps=1e-3, eps_hat=True), clip_norm=0.3, alpha=0.2,
                              sample_weight=np.linspace(0.2, 2.0, 11)),
    "adamw-cosine-fullbatch": dict(optimizer="adamw", lr=0.02, schedule="cosine", batch_size=11),
    # the first batch weighs nothing: no loss, no penalty, a zero gradient (and no division by 0)
    "zero-weight-batch": dict(optimizer="adam", lr=0.05, shuffle=False, alpha=0.1,
                              sample_weight=np.r_[np.zeros(4), np.linspace(0.5, 1.5, 7)]),
}
# the simulator is slow: on cuda the zero-weight batch (and, with --runslow, the case with the most options)
_FIT_CASES = [(b, k) for b in BACKENDS if b != "numpy" for k in _FIT_OPTIONS if b == "cpu" or k == "zero-weight-batch"]
_FIT_CASES += [pytest.param(b, "adam-clip-weights", marks=pytest.mark.slow) for b in BACKENDS if b == "cuda"]


@pytest.mark.parametrize("backend,case", _FIT_CASES)
def test_fit_matches_the_reference_training(backend, case):
    """The compiled (or device) epochs against the NumPy reference's Python loop: θ, the
    optimizer state, the step count and the whole history, over two calls of fit."""
    options = _FIT_OPTIONS[case]
    dtype = np.float64
    x, y = _data(11, dtype, seed=3)
    kw = dict(epochs=2, batch_size=4, seed=1, verbose=False, validation_data=(x[:5], y[:5]))
    kw.update(options)
    net, ref = _net(backend, seed=2), _net("numpy", seed=2)
    for _ in range(2):  # the second call continues from the state the first left
        h, hr = net.fit(x, y, **kw), ref.fit(x, y, **kw)
        assert h.keys() == hr.keys()
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
            assert_close(np.array(h[key]), np.array(hr[key]), dtype, factor=FACTOR[backend])
        assert_close(net.params, ref.params, dtype, factor=FACTOR[backend])
        assert_close(net._opt_state.buffer, ref._opt_state.buffer, dtype, factor=FACTOR[backend])
        assert net._opt_state.t == ref._opt_state.t


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_non_finite_step_is_not_applied_on_any_backend(backend):
    """Step 1 is finite, step 2 overflows: every backend stops with θ after step 1."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 2)).astype(np.float32)
    y = rng.standard_normal((8, 1)).astype(np.float32) * 1e3
    nets = [fastbp.MLP([2, 4, 1], ["relu", "identity"], seed=0, backend=b) for b in ("numpy", backend)]
    messages = []
    for net in nets:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the reference overflows on the way
            with pytest.raises(FloatingPointError) as err:
                net.fit(x, y, epochs=3, batch_size=2, optimizer="sgd", lr=1e12, shuffle=False, verbose=False)
        messages.append(str(err.value))
    ref, net = nets
    assert messages[0] == messages[1]
    assert "params hold the last finite step" in messages[0]
    assert net._opt_state.t == ref._opt_state.t == 1
    assert np.all(np.isfinite(net.params))
    np.testing.assert_allclose(net.params, ref.params, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_early_stopping_restores_the_best_epoch_and_callbacks_see_and_change_params(backend):
    dtype = np.float64
    x, y = _data(9, dtype, seed=5)
    seen = []

    def halve_at_epoch_1(epoch, logs, net):
        seen.append(net.params.copy())
        if epoch == 1:
            net.params[...] *= 0.5  # kept: training goes on from the halved θ

    kw = dict(epochs=4, batch_size=3, optimizer="sgd", lr=0.5, seed=0, verbose=False, patience=1,
              validation_data=(x[:4], y[:4]), callback=halve_at_epoch_1)
    net, ref = _net(backend), _net("numpy")
    hr = ref.fit(x, y, **kw)
    ref_seen = list(seen)
    seen.clear()
    h = net.fit(x, y, **kw)
    f = FACTOR[backend]
    assert len(h["loss"]) == len(hr["loss"])
    assert_close(np.array(h["val_loss"]), np.array(hr["val_loss"]), dtype, factor=f)
    for a, b in zip(seen, ref_seen, strict=True):
        assert_close(a, b, dtype, factor=f)
    assert_close(net.params, ref.params, dtype, factor=f)
    # θ of the best epoch, as it was before that epoch's callback
    best = int(np.argmin(hr["val_loss"]))
    assert_close(ref.params, ref_seen[best], dtype)


# ---- the import graph ------------------------------------------------------------------------------


def _imports(path: pathlib.Path, package_root: pathlib.Path) -> set[str]:
    """fastbp modules that ``path`` imports, at module level or in a function (not TYPE_CHECKING)."""
    rel = path.relative_to(package_root.parent).with_suffix("")
    parts = list(rel.parts)
    is_pkg = parts[-1] == "__init__"
    if is_pkg:
        parts = parts[:-1]
    here = parts if is_pkg else parts[:-1]
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            mod = base + (node.module.split(".") if node.module else [])
            if node.level == 0 and not (node.module or "").startswith("fastbp"):
                continue
            for alias in node.names:
                cand = mod + [alias.name]
                sub = package_root.parent.joinpath(*cand)
                out.add(".".join(cand) if (sub.with_suffix(".py").exists() or sub.is_dir()) else ".".join(mod))
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("fastbp"))
    name = ".".join(parts)
    return {m for m in out if m != name}


def test_the_import_graph_has_no_cycle():
    root = pathlib.Path(fastbp.__file__).parent
    graph = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        graph[".".join(parts)] = _imports(path, root)
    assert "fastbp.backends" in graph and "fastbp.model" in graph
    # Depth-first search for a back edge: a module that imports one that imports it back.
    state: dict[str, int] = {}

    def visit(mod, stack):
        state[mod] = 1
        for dep in sorted(graph.get(mod, ())):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, stack + [dep])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    # and the layers: no backend, kernel or math module imports the model or the driver; only the
    # front ends (the package, the estimators, the demo driver) sit above the model
    for mod, deps in graph.items():
        if mod not in ("fastbp", "fastbp.model", "fastbp.sklearn", "fastbp.__main__"):
            assert "fastbp.model" not in deps, mod
        if mod.startswith(("fastbp.backends", "fastbp.cpu", "fastbp.cuda")):
            assert "fastbp.training" not in deps, mod


def test_only_the_factory_maps_backend_names():
    root = pathlib.Path(fastbp.__file__).parent
    hits = [str(p.relative_to(root)) for p in root.rglob("*.py") if "backend ==" in p.read_text()]
    assert hits == ["backends/__init__.py"]


# ---- evaluate: the loss without the backward pass ----------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "loss,act,labels",
    [("mse", "tanh", False), ("mse", "softmax", False), ("cross_entropy", "softmax", True),
     ("cross_entropy", "softmax", False), ("binary_cross_entropy", "sigmoid", False)],
)
def test_loss_body_is_the_loss_of_bp1(loss, act, labels, dtype):
    """The loss that evaluate computes (no δ) against BP1's loss and the reference's, with and
    without weights, at large |z| too (stable cross-entropies)."""
    from fastbp import reference as ref
    from fastbp.cpu import _layers

    rng = np.random.default_rng(7)
    N, n = 7, 3
    z = (rng.standard_normal((N, n)) * 30).astype(dtype)
    a = ref.activation(act, z).astype(dtype)
    if labels:
        lab, y = rng.integers(0, n, N), np.empty((0, n), dtype)
        target = lab
    else:
        y = rng.random((N, n)).astype(dtype)
        if loss == "cross_entropy":
            y /= y.sum(axis=1, keepdims=True)
        lab, target = np.empty(0, np.int64), y
    code = fastbp.losses.CODES[loss]
    for sw in (np.empty(0, dtype), rng.random(N).astype(dtype)):
        c = _layers.loss_body(code, z, a, y, lab, sw)
        c_bp1 = _layers.output_delta_body(code, fastbp.activations.CODES[act], z.copy(), a, y, lab, np.empty_like(z),
                                          sw, False)
        c_ref, _ = ref.output_delta(loss, act, z, a, target, sw if sw.size else None)
        assert np.isfinite(c)
        np.testing.assert_allclose(c, c_bp1, rtol=1e-6 if dtype == np.float32 else 1e-13)
        np.testing.assert_allclose(c, c_ref, rtol=2e-5 if dtype == np.float32 else 1e-12)
