"""``MLP.fit``: the one training driver, over the :class:`fastbp.backends.Backend` protocol.

Argument checks, the epoch loop, learning-rate schedules, validation, early stopping,
callbacks, the history and divergence are handled here, once for every backend; the minibatch
steps of an epoch run in the backend's :class:`~fastbp.backends.Trainer`.  Full-batch L-BFGS
(SciPy) calls the backend's loss and gradient.

Interruption: a ``KeyboardInterrupt`` (Ctrl-C, SIGINT) or an exception raised by a ``callback``
leaves θ, the optimizer state and its step count at the end of the last completed minibatch
step, and a later ``fit`` continues from there.  While ``fit`` runs in the main thread under
Python's default SIGINT handler, SIGINT is deferred to the next step boundary: the compiled
loop runs an epoch in slices of whole minibatches (about ``config.INTERRUPT_WORK``
multiply-adds each), and the interrupt is raised between two slices.  L-BFGS leaves θ as it was
before ``fit``.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from typing import TYPE_CHECKING

import numpy as np

from . import distributed as _distributed
from . import optim as _optim
from ._validation import check_int, check_pair

if TYPE_CHECKING:  # pragma: no cover
    from .model import MLP

__all__ = ["deferred_interrupt", "fit"]


@contextlib.contextmanager
def deferred_interrupt():
    """Defer SIGINT within the block; yields ``check()``, which raises the deferred KeyboardInterrupt.

    Only in the main thread and only over Python's default handler (a handler of the user's
    own is left alone).  A SIGINT that comes after the last ``check()`` is raised on exit.
    """
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield lambda: None
        return
    hits = []

    def handler(signum, frame):
        hits.append(signum)

    def check():
        if hits:
            hits.clear()
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, previous)
    check()


def fit(
    self,
    x,
    y,
    epochs=10,
    batch_size=32,
    optimizer="adam",
    lr=1e-3,
    shuffle=True,
    seed=0,
    validation_data=None,
    verbose=True,
    sample_weight=None,
    schedule="constant",
    patience=None,
    min_delta=0.0,
    restore_best=True,
    callback=None,
    clip_norm=None,
    alpha=0.0,
    comm=None,
) -> dict:
    """Train by minibatch gradient descent (or full-batch L-BFGS), continuing from ``params``.

    One driver for every backend (``MLP.fit``): the epochs, the schedule, validation, early
    stopping, callbacks, the history and divergence are handled here, and each epoch's
    minibatch steps run in the backend (the cpu backend's compiled loop,
    :func:`fastbp.cpu.train.train_epoch`: gather the shuffled batch, loss and gradient,
    optional norm clipping, optimizer step, with no Python per step).

    Parameters
    ----------
    x, y : array_like
        Training data, as for :meth:`loss_and_grad`.
    epochs : int, default 10
        Passes over the data (for L-BFGS: iterations).
    batch_size : int, default 32
        Minibatch size; the last batch of an epoch may be smaller.
    optimizer : str or optimizer object, default "adam"
        "sgd", "momentum", "nesterov", "adam", "adamw", "lbfgs", or an instance of
        :class:`fastbp.optim.SGD`, :class:`~fastbp.optim.Adam`, :class:`~fastbp.optim.AdamW`,
        :class:`~fastbp.optim.LBFGS`.  Its state (momentum, moments) is kept on the model
        and carries over to the next call of ``fit`` with the same optimizer.
    lr : float, default 1e-3
        Learning rate, unless the optimizer object sets its own ``lr``.
    shuffle : bool, default True
        Reorder the samples each epoch with ``numpy.random.default_rng(seed).permutation``.
    seed : int or numpy.random.Generator, default 0
        Seed of the shuffling: the same seed, data and thread count give bitwise the same params.
    validation_data : (x_val, y_val), optional
        Evaluated after each epoch (``val_loss``, ``val_accuracy``).
    verbose : bool, default True
        Print one line per epoch: time, loss and metrics.
    sample_weight : array_like of shape (N,), optional
        Non-negative per-sample weights (each minibatch loss is the weighted mean).
    schedule : {"constant", "step", "cosine"} or callable, default "constant"
        Learning rate per epoch: a name, a :mod:`fastbp.optim` schedule, or ``f(lr, epoch, epochs)``.
    patience : int, optional
        Early stopping: stop after ``patience`` epochs without an improvement of more than
        ``min_delta`` in ``val_loss`` (or ``loss`` without validation data).
    min_delta : float, default 0
    restore_best : bool, default True
        With early stopping, restore the parameters of the best epoch at the end.
    callback : callable, optional
        ``callback(epoch, logs, net)`` after each epoch; a true return value stops training.
        ``net.params`` hold the epoch's θ when it is called, and changes it makes are kept.
    clip_norm : float, optional
        Clip the gradient to this Euclidean norm before each step.
    alpha : float, default 0
        L2 penalty on the weights (not the biases), scikit-learn's ``alpha``: each minibatch's
        loss gains α/(2m) Σ_l ‖W^l‖², m its rows (or the sum of its sample weights), and its
        gradient α W^l / m; for L-BFGS, m is the whole training set.  ``loss`` in the history
        includes it.
    comm : mpi4py communicator, optional
        Data-parallel training over MPI (:mod:`fastbp.distributed`): each rank passes its own
        shard of ``x``, ``y``, ``sample_weight`` and ``validation_data`` (a shard may be
        empty: shape ``(0, n0)``), ``batch_size`` is the global minibatch, and the result equals
        a one-process ``fit`` on the shards concatenated in rank order with the same arguments,
        to rounding.  θ and the optimizer state are broadcast from rank 0 first; every rank
        returns the same history and ends with the same θ (checked); rank 0's ``seed`` draws
        the permutations and only rank 0 prints.  Bad input on any rank makes every rank raise
        the same error before θ changes.

    Returns
    -------
    dict
        History: lists ``loss``, ``lr``, ``time`` (seconds per epoch), and for classifiers
        ``accuracy`` (running, over the epoch's minibatches); with validation data
        ``val_loss`` (and ``val_accuracy``).  L-BFGS adds ``message`` and ``converged``
        (SciPy's ``success``: it stopped by a tolerance, not by ``epochs`` or ``max_fun``).

    Raises
    ------
    ValueError, TypeError
        On a bad argument, before any parameter changes.
    FloatingPointError
        If a step's loss or gradient is not finite.  That step is not applied: ``params``, the
        optimizer state and its step count hold the last finite step, on every backend.
    KeyboardInterrupt
        Ctrl-C (deferred to the next step boundary) or an exception raised by ``callback``
        leaves ``params`` and the optimizer state at the end of the last completed step.
    """
    net = self
    backend = net._backend
    spec = net.spec
    group = None if comm is None else _distributed.Group(comm)

    # -- every check first: nothing changes until all arguments are known good (on every rank) ----
    def check():
        a = {}
        a["epochs"] = check_int("epochs", epochs, minimum=1)
        a["batch_size"] = check_int("batch_size", batch_size, minimum=1)
        a["opt"] = opt = _optim.get_optimizer(optimizer)
        lr_ = _optim._check_float("lr", lr)
        base_lr = opt.lr if getattr(opt, "lr", None) is not None else lr_
        sched = _optim.get_schedule(schedule)
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle: expected True or False, got {shuffle!r}")
        if seed is not None and not isinstance(seed, np.random.Generator):
            check_int("seed", seed, minimum=0)
        a["patience"] = None if patience is None else check_int("patience", patience, minimum=1)
        a["min_delta"] = _optim._check_float("min_delta", min_delta)
        a["clip"] = 0.0 if clip_norm is None else _optim._check_float("clip_norm", clip_norm, 0.0, lo_open=True)
        a["alpha"] = _optim._check_float("alpha", alpha)
        if callback is not None and not callable(callback):
            raise TypeError(f"callback: expected a callable (epoch, logs, net) -> bool | None, got {callback!r}")
        a["val"] = a["val_kind"] = None
        if group is None:
            xa, _ = backend.check_x(x)
            ya = backend.check_y(y, xa.shape[0])
            a["sw"] = backend.check_sample_weight(sample_weight, xa.shape[0])
            a["kind"] = None
        else:
            xa, ya, a["sw"], a["kind"] = _distributed.check_shard(backend, x, y, sample_weight)
        a["x"], a["y"] = xa, ya
        if validation_data is not None:
            xv, yv = check_pair("validation_data", validation_data)
            if group is None:
                xv, _ = backend.check_x(xv, "validation_data[0]")
                a["val"] = (xv, backend.check_y(yv, xv.shape[0], "validation_data[1]"))
            else:
                xv, yv, _, a["val_kind"] = _distributed.check_shard(backend, xv, yv, None, "validation_data[0]")
                a["val"] = (xv, yv)
        a["lrs"] = lrs = [sched(base_lr, e, a["epochs"]) for e in range(a["epochs"])]
        for e, v in enumerate(lrs):
            if not (isinstance(v, (int, float, np.floating)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"schedule: gave an invalid learning rate {v!r} for epoch {e}")
        if isinstance(opt, _optim.LBFGS) and patience is not None:
            raise ValueError("patience: early stopping is not available with optimizer 'lbfgs'")
        return a

    if group is None:
        a = check()
        offset = 0
    else:
        a = group.agree(check)
        a, offset = group.agree(_distributed.agree_on_fit, group, backend, a, {
            "the network (sizes, activations, loss, dtype)": (tuple(spec.sizes.tolist()), spec.activation_names,
                                                              spec.loss_name, spec.dtype.name),
            "epochs": a["epochs"], "batch_size": a["batch_size"], "optimizer": repr(a["opt"]),
            "the learning rates of the epochs": [float(v) for v in a["lrs"]], "shuffle": bool(shuffle),
            "patience": a["patience"], "min_delta": a["min_delta"], "clip_norm": a["clip"], "alpha": a["alpha"],
            "restore_best": bool(restore_best), "sample_weight (given or not)": a["sw"] is not None,
            "validation_data (given or not)": a["val"] is not None,
        })
    epochs, batch_size, opt, lrs = a["epochs"], a["batch_size"], a["opt"], a["lrs"]
    clip, alpha_, val, xa, ya, sw = a["clip"], a["alpha"], a["val"], a["x"], a["y"], a["sw"]
    patience, min_delta = a["patience"], a["min_delta"]
    n = xa.shape[0] if group is None else a["n_total"]
    verbose = verbose and (group is None or group.rank == 0)

    history: dict[str, list] = {"loss": [], "lr": [], "time": []}
    if spec.is_classifier:
        history["accuracy"] = []
    if val is not None:
        history["val_loss"] = []
        if spec.is_classifier:
            history["val_accuracy"] = []

    with net._lock:
        if group is not None:  # θ (and a carried optimizer state) from rank 0 on every rank
            group.broadcast_array(net.params)
        if isinstance(opt, _optim.LBFGS):
            history = _fit_lbfgs(net, xa, ya, sw, val, opt, epochs, verbose, history, alpha_, group)
            if group is not None:
                group.finish(net.params)
            return history
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        net._opt_state = state = _optim.OptimizerState.for_optimizer(opt, net._opt_state, spec.n_params, spec.dtype)
        if group is not None:
            group.broadcast_array(state.buffer)
            state.t = group.bcast(state.t)
        stopping = _EarlyStopping("val_loss" if val is not None else "loss", patience, min_delta)
        best = None
        if group is None:
            trainer_cm = backend.trainer(net.params, xa, ya, sw, opt, state, batch_size, clip, alpha_)
        else:
            trainer_cm = _distributed.DistributedTrainer(group, backend, net.params, xa, ya, sw, opt, state,
                                                         batch_size, clip, alpha_, offset)
        with deferred_interrupt() as check_interrupt, trainer_cm as trainer:
            perm = np.empty(n, np.int64)
            for epoch in range(epochs):
                t0 = time.perf_counter()
                if group is None or group.rank == 0:
                    perm[...] = rng.permutation(n) if shuffle else np.arange(n)
                if group is not None:
                    group.broadcast_array(perm)
                st = trainer.run_epoch(perm, lrs[epoch], check_interrupt)
                if st.diverged:
                    raise FloatingPointError(
                        f"fit: the loss or gradient became non-finite in epoch {epoch}; params hold the last "
                        f"finite step. Lower lr (now {lrs[epoch]:g}) or set clip_norm."
                    )
                val_result = trainer.evaluate(*val) if val is not None else None
                elapsed = time.perf_counter() - t0
                if group is not None:
                    elapsed = group.bcast(elapsed)  # rank 0's time: the same history everywhere
                _record_epoch(history, epoch, epochs, lrs[epoch], st.loss, st.accuracy if spec.is_classifier else None,
                              val_result, elapsed, verbose)
                improved, stop = stopping.update(history)
                if improved and patience is not None and restore_best:
                    best = trainer.snapshot()
                if callback is not None or group is not None:
                    trainer.pull()
                    if _run_callback(group, callback, epoch, history, net):
                        stop = True
                    trainer.push()  # the callback may have changed params
                if group is not None and _distributed.CHECK_EVERY_EPOCH:
                    group.check_identical(net.params, f"after epoch {epoch}")
                if stop:
                    break
            if best is not None:
                trainer.restore(best)
        if group is not None:
            group.finish(net.params)
    return history


def _run_callback(group, callback, epoch, history, net) -> bool:
    """Whether the callback asks to stop; over MPI every rank runs its own callback, and if one
    raises every rank raises it, and if one asks to stop every rank stops."""
    def run():
        return callback is not None and bool(callback(epoch, {k: v[-1] for k, v in history.items()}, net))

    if group is None:
        return run()
    return any(group.allgather(group.agree(run)))


def _record_epoch(history: dict, epoch: int, epochs: int, lr: float, loss: float, accuracy, val, elapsed: float,
                  verbose: bool) -> None:
    """Append one epoch's figures to ``history`` (accuracies where it has their keys) and print them."""
    history["loss"].append(loss)
    history["lr"].append(lr)
    if "accuracy" in history:
        history["accuracy"].append(accuracy)
    if val is not None:
        history["val_loss"].append(val[0])
        if "val_accuracy" in history:
            history["val_accuracy"].append(val[1])
    history["time"].append(elapsed)
    if verbose:
        _print_epoch(epoch, epochs, history)


class _EarlyStopping:
    """The monitored figure (``val_loss``, else ``loss``) of the epochs so far."""

    def __init__(self, monitor: str, patience: int | None, min_delta: float):
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.best, self.since_best = math.inf, 0

    def update(self, history: dict) -> tuple[bool, bool]:
        """(whether the last epoch improved on the best by more than min_delta, whether to stop)."""
        current = history[self.monitor][-1]
        improved = current < self.best - self.min_delta
        if improved:
            self.best, self.since_best = current, 0
        else:
            self.since_best += 1
        return improved, self.patience is not None and self.since_best >= self.patience


def _print_epoch(epoch: int, epochs: int, history: dict) -> None:
    parts = [f"epoch {epoch + 1:>{len(str(epochs))}}/{epochs}", f"{history['time'][-1] * 1e3:8.1f} ms"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        if key in history:
            parts.append(f"{key} {history[key][-1]:.4f}")
    print("  ".join(parts), flush=True)


def _fit_lbfgs(net: MLP, xa, ya, sw, val, opt, epochs, verbose, history, alpha=0.0, group=None) -> dict:
    """Full-batch L-BFGS through SciPy; θ changes only at the end, and only to a finite result.

    Over MPI (``group``) every rank runs the same SciPy iteration on the loss and gradient
    reduced over all shards, so every rank takes the same steps."""
    from scipy.optimize import minimize

    backend = net._backend
    trial = net.params.copy()
    grad = np.empty_like(trial)
    lam = opt.weight_decay
    t0 = [time.perf_counter()]
    # The weights' L2 penalty α/(2m) Σ‖W‖² over the whole set (m: rows or the sum of weights).
    if group is None:
        wsum = xa.shape[0] if sw is None else float(np.sum(sw, dtype=np.float64))
    else:
        wsum = _distributed.loss_and_grad_sum(group, backend, trial, xa, ya, sw, grad)[1]
    s_w = alpha / wsum if alpha > 0 and wsum > 0 else 0.0
    mask = np.zeros(trial.shape[0])
    for w in net.spec.split(mask)[0]:
        w[...] = 1.0

    def evaluate(x, y):
        if group is None:
            return backend.evaluate(trial, x, y)
        return _distributed.evaluate(group, backend, trial, x, y)

    def fun(theta):
        trial[...] = theta
        if group is None:
            c = backend.loss_and_grad(trial, xa, ya, sw, grad)
        else:
            c = _distributed.loss_and_grad_sum(group, backend, trial, xa, ya, sw, grad)[0]
        g = grad.astype(np.float64)
        if lam:
            c += 0.5 * lam * float(theta @ theta)
            g += lam * theta
        if s_w:
            tw = theta * mask
            c += 0.5 * s_w * float(tw @ tw)
            g += s_w * tw
        return c, g

    def record(intermediate_result):
        trial[...] = intermediate_result.x
        history["loss"].append(float(intermediate_result.fun))
        history["lr"].append(float("nan"))
        if "accuracy" in history:
            history["accuracy"].append(evaluate(xa, ya)[1])
        if val is not None:
            vl, va = evaluate(*val)
            history["val_loss"].append(vl)
            if "val_accuracy" in history:
                history["val_accuracy"].append(va)
        now = time.perf_counter()
        elapsed = now - t0[0]
        history["time"].append(elapsed if group is None else group.bcast(elapsed))
        t0[0] = now
        if verbose:
            _print_epoch(len(history["loss"]) - 1, epochs, history)

    res = minimize(
        fun,
        net.params.astype(np.float64),
        jac=True,
        method="L-BFGS-B",
        callback=record,
        options={"maxiter": epochs, "maxcor": opt.history_size, "gtol": opt.gtol, "maxfun": opt.max_fun},
    )
    if not np.all(np.isfinite(res.x)):
        raise FloatingPointError("fit: L-BFGS produced non-finite parameters; params are unchanged")
    net.params[...] = res.x
    history["message"] = str(res.message)
    history["converged"] = bool(res.success)
    return history
