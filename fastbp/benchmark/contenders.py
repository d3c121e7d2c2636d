"""The contenders of the benchmark suite: one training step (loss, gradient, SGD update) each.

Each contender builds its step for a configuration and returns a callable that runs it once.
They run in separate processes (see :mod:`fastbp.benchmark.suite`): Numba's and OpenBLAS's
thread pools spin, and two of them in one process slow each other down.

- ``lean``: the step as a user writes it in NumPy (:func:`lean_numpy_step`), the baseline;
- ``fastbp``: :meth:`fastbp.MLP.loss_and_grad` with ``out=`` and an in-place update;
- ``njit``: :func:`fastbp.cpu.loss_and_grad` and :func:`fastbp.cpu.optim.sgd_step` called
  from a user's ``@njit`` loop;
- ``reference``: :func:`fastbp.reference.loss_and_grad`, the oracle of the tests (written for
  clarity, not speed);
- ``torch``: PyTorch eager on the CPU, where PyTorch is installed;
- ``jax``: ``jax.jit`` of ``jax.value_and_grad`` and the update, where JAX is installed.
"""

from __future__ import annotations

import time

import numpy as np

from .configs import problem

__all__ = ["CONTENDERS", "NotInstalled", "lean_numpy_step", "make_step", "median_time", "peak_flops"]

#: The contenders, in the order of the suite's table.
CONTENDERS = ("lean", "fastbp", "njit", "reference", "torch", "jax")

LR = 1e-3


class NotInstalled(Exception):
    """The contender's library is not installed in this environment."""


def median_time(fn, repeats: int, min_time: float = 0.2) -> float:
    """Median seconds of one ``fn()`` over ``repeats`` timed batches of calls, after a warm-up call.

    Each batch runs ``fn`` often enough that ``repeats`` batches take at least ``min_time``
    seconds, so that the clock's resolution does not matter for steps of a few microseconds.
    """
    fn()
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    inner = max(1, int(min_time / max(one, 1e-7) / repeats))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t) / inner)
    return float(np.median(times))


def peak_flops(dtype, repeats: int = 6) -> float:
    """Floating-point operations a second of a 2048 × 2048 matrix product through NumPy's BLAS."""
    n = 2048
    a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)
    return 2.0 * n**3 / median_time(lambda: a @ a, repeats, min_time=0.0)


def make_step(kind: str, config: str, dtype):
    """(step, version): a callable running one training step of ``config`` with contender ``kind``,
    and the version of the library it measures (None for fastbp and NumPy).

    Raises :class:`~fastbp.benchmark.NotInstalled` where the contender's library is missing.
    """
    kw, x, y = problem(config, dtype)
    if kind == "lean":
        return lean_numpy_step(kw, x, y), None
    if kind == "torch":
        return _torch_step(kw, x, y), _version("torch")
    if kind == "jax":
        return _jax_step(kw, x, y), _version("jax")
    import fastbp

    if kind == "reference":
        net = fastbp.MLP(**dict(kw, backend="numpy"))
        lr = net.dtype.type(LR)
        spec = net.spec

        def step():
            _, g = fastbp.reference.loss_and_grad(net.params, spec.sizes, spec.activations, spec.loss, x, y)
            net.params -= lr * g

        return step, None
    net = fastbp.MLP(**kw)
    if kind == "fastbp":
        g = np.empty_like(net.params)
        lr = net.dtype.type(LR)

        def step():
            net.loss_and_grad(x, y, out=g)
            net.params -= lr * g

        step.params = net.params
        return step, None
    if kind == "njit":
        return _njit_step(net, x, y), None
    raise ValueError(f"contender: expected one of {CONTENDERS}, got {kind!r}")


def _version(module: str) -> str:
    import importlib

    try:
        return importlib.import_module(module).__version__
    except ImportError:
        raise NotInstalled(module) from None


def lean_numpy_step(kw: dict, x: np.ndarray, y: np.ndarray):
    """One SGD step of the network as a user writes it in NumPy, as a callable.

    ``z = a @ W.T + b``, the activation, ``δ = (δ' @ W) * σ'``, ``∂C/∂W = δ.T @ a``, with every
    buffer allocated once and written in place.  ``kw`` holds ``sizes``, ``activations``,
    ``loss`` and ``dtype`` as :class:`fastbp.MLP` takes them.
    """
    sizes, acts, loss = kw["sizes"], kw["activations"], kw["loss"]
    dtype = np.dtype(kw["dtype"])
    for a in acts:
        if a not in ("identity", "relu", "tanh", "sigmoid", "softmax"):
            raise ValueError(f"activations: the lean NumPy step has no {a!r}")
    if loss not in ("mse", "cross_entropy"):
        raise ValueError(f"loss: the lean NumPy step has no {loss!r}")
    rng = np.random.default_rng(0)
    L = len(sizes) - 1
    W = [(rng.standard_normal((sizes[i + 1], sizes[i])) / np.sqrt(sizes[i])).astype(dtype) for i in range(L)]
    b = [np.zeros(sizes[i + 1], dtype) for i in range(L)]
    n = x.shape[0]
    Z = [np.empty((n, sizes[i + 1]), dtype) for i in range(L)]
    gW = [np.empty_like(w) for w in W]
    D = [np.empty((n, sizes[i + 1]), dtype) for i in range(L)]
    lr = dtype.type(LR)
    inv_n = dtype.type(1.0 / n)
    rows = np.arange(n)

    def step():
        a = x
        for i in range(L):
            z = Z[i]
            np.matmul(a, W[i].T, out=z)
            z += b[i]
            _activate(acts[i], z)
            a = z
        d = D[L - 1]
        if loss == "cross_entropy":  # softmax output: δ = (a - onehot(y)) / N
            np.copyto(d, a)
            d[rows, y] -= 1
            d *= inv_n
        else:  # mse: δ = (a - y) σ'(z) / N
            np.subtract(a, y, out=d)
            d *= inv_n
            _times_derivative(acts[L - 1], d, a)
        for i in range(L - 1, -1, -1):
            a_prev = x if i == 0 else Z[i - 1]
            np.matmul(d.T, a_prev, out=gW[i])
            gb = d.sum(axis=0)
            if i > 0:
                np.matmul(d, W[i], out=D[i - 1])
                _times_derivative(acts[i - 1], D[i - 1], a_prev)
            W[i] -= lr * gW[i]
            b[i] -= lr * gb
            d = D[i - 1] if i > 0 else d

    step.params = (W, b)
    return step


def _activate(act: str, z: np.ndarray) -> None:
    """z = σ(z), in place."""
    if act == "relu":
        np.maximum(z, 0, out=z)
    elif act == "tanh":
        np.tanh(z, out=z)
    elif act == "sigmoid":
        np.negative(z, out=z)
        np.exp(z, out=z)
        z += 1
        np.reciprocal(z, out=z)
    elif act == "softmax":
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)


def _times_derivative(act: str, d: np.ndarray, a: np.ndarray) -> None:
    """d *= σ'(z), from a = σ(z)."""
    if act == "relu":
        d *= a > 0
    elif act == "tanh":
        d *= 1 - a * a
    elif act == "sigmoid":
        d *= a * (1 - a)


def _njit_step(net, x, y):
    """Steps of a user's ``@njit`` loop; the callable runs ``steps`` of them and the caller divides."""
    import fastbp

    from ._user_loop import sgd_loop as loop
    spec = net.spec
    g = np.empty_like(net.params)
    work = np.empty(fastbp.workspace_size(spec.sizes, x.shape[0]), net.dtype)
    vel = np.zeros_like(net.params)

    def run(steps):
        loop(net.params, spec.sizes, spec.activations, spec.loss, x, y, g, work, vel, steps)

    run(1)  # compile or load
    t = time.perf_counter()
    run(1)
    # about 20 ms of steps a call, so that the call's own cost is spread over many steps
    steps = int(min(100, max(1, 0.02 / max(time.perf_counter() - t, 1e-9))))

    def step():
        run(steps)

    step.steps = steps
    step.params = net.params
    return step


def _torch_step(kw, x, y):
    try:
        import torch
    except ImportError:
        raise NotInstalled("torch") from None
    torch.manual_seed(0)
    tdt = torch.float32 if np.dtype(kw["dtype"]) == np.float32 else torch.float64
    sizes, acts, loss = kw["sizes"], kw["activations"], kw["loss"]
    bce = loss == "binary_cross_entropy"  # as PyTorch users write it: logits into the fused loss
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]).to(tdt))
        act = {"sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}.get(acts[i])
        if act is not None and not (bce and i == len(sizes) - 2):  # the sigmoid is in the loss
            layers.append(act())
    model = torch.nn.Sequential(*layers)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    ce = loss == "cross_entropy"  # softmax is folded into cross_entropy: the model ends at the logits

    def step():
        model.zero_grad(set_to_none=True)
        out = model(tx)
        if ce:
            c = torch.nn.functional.cross_entropy(out, ty)
        elif bce:
            c = torch.nn.functional.binary_cross_entropy_with_logits(out, ty, reduction="sum") / tx.shape[0]
        else:
            c = 0.5 * ((out - ty) ** 2).sum() / tx.shape[0]
        c.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= LR * p.grad

    return step


def _jax_step(kw, x, y):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        raise NotInstalled("jax") from None
    if np.dtype(kw["dtype"]) == np.float64:
        jax.config.update("jax_enable_x64", True)
    sizes, acts, loss = kw["sizes"], kw["activations"], kw["loss"]
    rng = np.random.default_rng(0)
    dtype = np.dtype(kw["dtype"])
    params = [(jnp.asarray((rng.standard_normal((sizes[i], sizes[i + 1])) / np.sqrt(sizes[i])).astype(dtype)),
               jnp.zeros(sizes[i + 1], dtype)) for i in range(len(sizes) - 1)]
    funcs = {"relu": jax.nn.relu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "identity": lambda z: z}
    ce = loss == "cross_entropy"
    bce = loss == "binary_cross_entropy"

    def cost(params, x, y):
        a = x
        for i, (w, b) in enumerate(params):
            z = a @ w + b
            last = i == len(params) - 1
            if last and (ce or bce):  # the output's activation is folded into the loss, as users write it
                a = z
            else:
                a = funcs[acts[i]](z) if acts[i] in funcs else jax.nn.softmax(z, axis=1)
        if ce:
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(a, axis=1), y[:, None], axis=1))
        if bce:
            return jnp.sum(jnp.logaddexp(0, a) - y * a) / x.shape[0]
        return 0.5 * jnp.sum((a - y) ** 2) / x.shape[0]

    @jax.jit
    def update(params, x, y):
        c, g = jax.value_and_grad(cost)(params, x, y)
        return c, jax.tree_util.tree_map(lambda p, q: p - LR * q, params, g)

    jx, jy = jnp.asarray(x), jnp.asarray(y)
    state = {"params": params}

    def step():
        c, state["params"] = update(state["params"], jx, jy)
        c.block_until_ready()

    return step
