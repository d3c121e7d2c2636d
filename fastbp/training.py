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
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np

from . import distributed as _distributed
from . import optim as _optim
from ._validation import check_float, check_int, check_pair

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


def fit(net: MLP, x, y, **options) -> dict:
    """The driver of :meth:`fastbp.MLP.fit`, whose docstring describes ``options``.

    Every argument is checked first, on every rank (a single process is a group of one), so a
    bad one raises before θ changes; then θ is trained in place under the model's lock.
    """
    backend = net.backend_object
    group = _distributed.group_of(options["comm"])
    a = group.agree(_checked_arguments, backend, group, x, y, options)
    a, offset = group.agree(group.agree_on_fit, backend, a, _settings(net.spec, a))
    history: dict[str, list] = {"loss": [], "lr": [], "time": []}
    if net.spec.is_classifier:
        history["accuracy"] = []
    if a.val is not None:
        history["val_loss"] = []
        if net.spec.is_classifier:
            history["val_accuracy"] = []
    a.verbose = a.verbose and group.rank == 0
    with net.lock:
        group.broadcast_array(net.params)  # θ (and below, a carried optimizer state) from rank 0
        if isinstance(a.opt, _optim.LBFGS):
            history = _fit_lbfgs(net, a, history, group)
        else:
            _run_epochs(net, a, history, group, offset)
        group.finish(net.params)
    return history


def _run_epochs(net: MLP, a, history: dict, group, offset: int) -> None:
    """The epochs of minibatch steps, early stopping and callbacks, appending to ``history``."""
    spec = net.spec
    rng = a.seed if isinstance(a.seed, np.random.Generator) else np.random.default_rng(a.seed)
    net.optimizer_state = state = _optim.OptimizerState.for_optimizer(a.opt, net.optimizer_state, spec.n_params,
                                                                      spec.dtype)
    group.broadcast_array(state.buffer)
    state.t = group.bcast(state.t)
    stopping = _EarlyStopping("val_loss" if a.val is not None else "loss", a.patience, a.min_delta)
    best = None
    trainer_cm = group.trainer(net.backend_object, net.params, a.x, a.y, a.sw, a.opt, state, a.batch_size, a.clip,
                               a.alpha, offset)
    with deferred_interrupt() as check_interrupt, trainer_cm as trainer:
        perm = np.empty(a.n_total, np.int64)
        for epoch in range(a.epochs):
            t0 = time.perf_counter()
            if group.rank == 0:
                perm[...] = rng.permutation(a.n_total) if a.shuffle else np.arange(a.n_total)
            group.broadcast_array(perm)
            st = trainer.run_epoch(perm, a.lrs[epoch], check_interrupt)
            if st.diverged:
                raise FloatingPointError(
                    f"fit: the loss or gradient became non-finite in epoch {epoch}; params hold the last "
                    f"finite step. Lower lr (now {a.lrs[epoch]:g}) or set clip_norm."
                )
            val_result = trainer.evaluate(*a.val) if a.val is not None else None
            elapsed = group.bcast(time.perf_counter() - t0)  # rank 0's time: the same history everywhere
            _record_epoch(history, epoch, a.epochs, a.lrs[epoch], st.loss, st.accuracy if spec.is_classifier else None,
                          val_result, elapsed, a.verbose)
            improved, stop = stopping.update(history)
            if improved and a.patience is not None and a.restore_best:
                best = trainer.snapshot()
            logs = {k: v[-1] for k, v in history.items()}
            stop = group.run_callback(trainer, a.callback, epoch, logs, net) or stop
            group.end_epoch(net.params, epoch)
            if stop:
                break
        if best is not None:
            trainer.restore(best)


def _checked_arguments(backend, group, x, y, o: dict) -> SimpleNamespace:
    """Every argument of ``fit`` checked, in the form the driver takes (on this rank)."""
    a = SimpleNamespace(**{k: o[k] for k in ("shuffle", "seed", "verbose", "restore_best", "callback")})
    a.epochs = check_int("epochs", o["epochs"], minimum=1)
    a.batch_size = check_int("batch_size", o["batch_size"], minimum=1)
    a.opt = _optim.get_optimizer(o["optimizer"])
    lr = check_float("lr", o["lr"])
    base_lr = a.opt.lr if getattr(a.opt, "lr", None) is not None else lr
    sched = _optim.get_schedule(o["schedule"])
    if not isinstance(a.shuffle, (bool, np.bool_)):
        raise TypeError(f"shuffle: expected True or False, got {a.shuffle!r}")
    if a.seed is not None and not isinstance(a.seed, np.random.Generator):
        check_int("seed", a.seed, minimum=0)
    a.patience = None if o["patience"] is None else check_int("patience", o["patience"], minimum=1)
    a.min_delta = check_float("min_delta", o["min_delta"])
    a.clip = 0.0 if o["clip_norm"] is None else check_float("clip_norm", o["clip_norm"], 0.0, lo_open=True)
    a.alpha = check_float("alpha", o["alpha"])
    if a.callback is not None and not callable(a.callback):
        raise TypeError(f"callback: expected a callable (epoch, logs, net) -> bool | None, got {a.callback!r}")
    a.x, a.y, a.sw, a.kind = group.check_data(backend, x, y, o["sample_weight"])
    a.val = a.val_kind = None
    if o["validation_data"] is not None:
        xv, yv = check_pair("validation_data", o["validation_data"])
        xv, yv, _, a.val_kind = group.check_data(backend, xv, yv, None, "validation_data[0]")
        a.val = (xv, yv)
    a.lrs = [sched(base_lr, e, a.epochs) for e in range(a.epochs)]
    for e, v in enumerate(a.lrs):
        if not (isinstance(v, (int, float, np.floating)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"schedule: gave an invalid learning rate {v!r} for epoch {e}")
    if isinstance(a.opt, _optim.LBFGS) and a.patience is not None:
        raise ValueError("patience: early stopping is not available with optimizer 'lbfgs'")
    return a


def _settings(spec, a) -> dict:
    """What every rank of an MPI group must pass alike, by the name an error gives it."""
    return {
        "the network (sizes, activations, loss, dtype)": (tuple(spec.sizes.tolist()), spec.activation_names,
                                                          spec.loss_name, spec.dtype.name),
        "epochs": a.epochs, "batch_size": a.batch_size, "optimizer": repr(a.opt),
        "the learning rates of the epochs": [float(v) for v in a.lrs], "shuffle": bool(a.shuffle),
        "patience": a.patience, "min_delta": a.min_delta, "clip_norm": a.clip, "alpha": a.alpha,
        "restore_best": bool(a.restore_best), "sample_weight (given or not)": a.sw is not None,
        "validation_data (given or not)": a.val is not None,
    }


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


def _fit_lbfgs(net: MLP, a, history: dict, group) -> dict:
    """Full-batch L-BFGS through SciPy; θ changes only at the end, and only to a finite result.

    Over MPI every rank runs the same SciPy iteration on the loss and gradient reduced over all
    shards, so every rank takes the same steps."""
    from scipy.optimize import minimize

    backend = net.backend_object
    trial = net.params.copy()
    grad = np.empty_like(trial)
    lam = a.opt.weight_decay
    t0 = [time.perf_counter()]
    # The weights' L2 penalty α/(2m) Σ‖W‖² over the whole set (m: rows or the sum of weights).
    wsum = group.weight_total(a.x, a.sw)
    s_w = a.alpha / wsum if a.alpha > 0 and wsum > 0 else 0.0
    mask = np.zeros(trial.shape[0])
    for w in net.spec.split(mask)[0]:
        w[...] = 1.0

    def fun(theta):
        trial[...] = theta
        c = group.loss_and_grad_sum(backend, trial, a.x, a.y, a.sw, grad)[0]
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
            history["accuracy"].append(group.evaluate(backend, trial, a.x, a.y)[1])
        if a.val is not None:
            vl, va = group.evaluate(backend, trial, *a.val)
            history["val_loss"].append(vl)
            if "val_accuracy" in history:
                history["val_accuracy"].append(va)
        now = time.perf_counter()
        history["time"].append(group.bcast(now - t0[0]))
        t0[0] = now
        if a.verbose:
            _print_epoch(len(history["loss"]) - 1, a.epochs, history)

    res = minimize(
        fun,
        net.params.astype(np.float64),
        jac=True,
        method="L-BFGS-B",
        callback=record,
        options={"maxiter": a.epochs, "maxcor": a.opt.history_size, "gtol": a.opt.gtol, "maxfun": a.opt.max_fun},
    )
    if not np.all(np.isfinite(res.x)):
        raise FloatingPointError("fit: L-BFGS produced non-finite parameters; params are unchanged")
    net.params[...] = res.x
    history["message"] = str(res.message)
    history["converged"] = bool(res.success)
    return history
