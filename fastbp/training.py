"""``MLP.fit``: argument checks, the epoch loop around the compiled minibatch loop, L-BFGS.

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

from . import config as _config
from . import optim as _optim
from ._threads import GATE, min_parallel_work
from ._tiers import TIERS
from ._validation import _all_finite, as_array, check_int

if TYPE_CHECKING:  # pragma: no cover
    from .model import MLP


def _check_sample_weight(sample_weight, n: int, dtype) -> np.ndarray | None:
    if sample_weight is None:
        return None
    sw = as_array("sample_weight", sample_weight)
    if sw.shape != (n,):
        raise ValueError(f"sample_weight: expected shape ({n},) to match x, got {sw.shape}")
    sw = np.ascontiguousarray(sw, dtype=dtype)
    if not _all_finite(sw):
        raise ValueError("sample_weight: contains NaN or infinity")
    if sw.min() < 0:
        raise ValueError("sample_weight: weights must be non-negative")
    if not sw.max() > 0:
        raise ValueError("sample_weight: at least one weight must be positive")
    return sw


def _check_validation(net: MLP, validation_data):
    if validation_data is None:
        return None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise TypeError("validation_data: expected a pair (x_val, y_val)")
    xv, _ = net._check_x(validation_data[0], "validation_data[0]")
    yv = net._check_y(validation_data[1], xv.shape[0], "validation_data[1]")
    return xv, yv


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


def _is_classifier(net: MLP) -> bool:
    return net.activations[-1] in ("softmax", "sigmoid") and net.loss in ("cross_entropy", "binary_cross_entropy")


def evaluate(net: MLP, x: np.ndarray, y: np.ndarray) -> tuple[float, float | None]:
    """(loss, accuracy or None) of checked arrays."""
    from .cpu.train import _count_correct

    loss, out = net._loss_checked(x, y)
    if not _is_classifier(net):
        return loss, None
    yk, lab, _ = net._kernel_targets(y)
    correct, counted = _count_correct(net._acts_arr[-1], out, yk, lab)
    return loss, correct / counted


def fit(
    net: MLP,
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
) -> dict:
    # -- every check first: nothing changes until all arguments are known good --------------------
    epochs = check_int("epochs", epochs, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    opt = _optim.get_optimizer(optimizer)
    lr = _optim._check_float("lr", lr)
    base_lr = opt.lr if getattr(opt, "lr", None) is not None else lr
    sched = _optim.get_schedule(schedule)
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"shuffle: expected True or False, got {shuffle!r}")
    if seed is not None and not isinstance(seed, np.random.Generator):
        seed = check_int("seed", seed, minimum=0)
    if patience is not None:
        patience = check_int("patience", patience, minimum=1)
    min_delta = _optim._check_float("min_delta", min_delta)
    clip = 0.0 if clip_norm is None else _optim._check_float("clip_norm", clip_norm, 0.0, lo_open=True)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable (epoch, logs, net) -> bool | None, got {callback!r}")
    if net.backend == "numpy":
        raise ValueError("backend: fit needs the compiled 'cpu' backend; the 'numpy' backend is a reference")
    if net.backend == "cuda" and not isinstance(opt, _optim.LBFGS):
        st = net._cuda
        xa, _, _ = st.check_x(x)
        ya, labels = st.check_y(y, xa.shape[0])
        sw, _ = st.check_sw(sample_weight, xa.shape[0])
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError("validation_data: expected a pair (x_val, y_val)")
            xv, _, _ = st.check_x(validation_data[0], "validation_data[0]")
            yv, lv = st.check_y(validation_data[1], xv.shape[0], "validation_data[1]")
            val = (xv, yv, lv)
    else:
        if net.backend == "cuda":
            from .cuda.backend import as_device_array, is_device_array

            x = as_device_array(x).copy_to_host() if is_device_array(x) else x
            y = as_device_array(y).copy_to_host() if is_device_array(y) else y
        xa, _ = net._check_x(x)
        ya = net._check_y(y, xa.shape[0])
        sw = _check_sample_weight(sample_weight, xa.shape[0], net.dtype)
        val = _check_validation(net, validation_data)
    lrs = [sched(base_lr, e, epochs) for e in range(epochs)]
    for e, v in enumerate(lrs):
        if not (isinstance(v, (int, float, np.floating)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"schedule: gave an invalid learning rate {v!r} for epoch {e}")

    classifier = _is_classifier(net)
    history: dict[str, list] = {"loss": [], "lr": [], "time": []}
    if classifier:
        history["accuracy"] = []
    if val is not None:
        history["val_loss"] = []
        if classifier:
            history["val_accuracy"] = []

    if isinstance(opt, _optim.LBFGS):
        return _fit_lbfgs(net, xa, ya, sw, val, opt, epochs, verbose, history, patience is not None)

    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if net.backend == "cuda":
        from .cuda.backend import fit as cuda_fit

        return cuda_fit(
            net,
            net._cuda,
            xa,
            ya,
            labels,
            sw,
            val,
            opt,
            lrs,
            batch_size,
            shuffle,
            rng,
            clip,
            patience,
            min_delta,
            restore_best,
            callback,
            verbose,
            history,
            classifier,
        )

    GATE.enter()
    try:
        return _fit_cpu(net, xa, ya, sw, val, opt, lrs, batch_size, shuffle, rng, clip, patience, min_delta,
                        restore_best, callback, verbose, history, classifier)
    finally:
        GATE.leave()


def _fit_cpu(net, xa, ya, sw, val, opt, lrs, batch_size, shuffle, rng, clip, patience, min_delta, restore_best,
             callback, verbose, history, classifier) -> dict:
    """The epoch loop of the cpu backend around the compiled minibatch loop (the caller holds a GATE slot)."""
    from .cpu.network import parallel_pays
    from .cpu.train import (
        DIVERGED,
        LOSS_SUM,
        N_CORRECT,
        N_COUNTED,
        N_SEEN,
        STEPS,
        train_epoch_parallel,
        train_epoch_serial,
    )

    epochs = len(lrs)
    n = xa.shape[0]
    B = min(batch_size, n)
    state, t = net._optimizer_state(opt)
    hp = np.zeros(7)
    h1, h2, h3, wd, flag = opt.hyper()
    hp[1:6] = (h1, h2, h3, wd, float(flag))
    hp[6] = clip
    grad = np.empty_like(net.params)
    work = net._workspace(B)
    # Targets, labels and weights in the one form the compiled loop takes (empty where absent).
    yk, lab, sw = net._kernel_targets(ya, sw)
    xb = np.empty((B, xa.shape[1]), net.dtype)
    yb = np.empty((min(B, yk.shape[0]), yk.shape[1]), net.dtype)
    lb = np.empty(min(B, lab.shape[0]), np.int64)
    swb = np.empty(min(B, sw.shape[0]), net.dtype)
    stopping = _EarlyStopping("val_loss" if val is not None else "loss", patience, min_delta)
    best_params = None
    # Minibatches per call of the compiled loop: the interrupt check runs between calls.
    rows = B * max(1, _config.INTERRUPT_WORK // max(1, B * net.n_params))
    with deferred_interrupt() as check_interrupt:
        for epoch in range(epochs):
            t0 = time.perf_counter()
            perm = rng.permutation(n) if shuffle else np.arange(n)
            hp[0] = lrs[epoch]
            stats = np.zeros(6)
            t_epoch = t
            # One twin for the epoch (a copy of train_epoch bound to it: the other is never compiled);
            # the parallel one where it pays and once it is ready (compiled, cached, or paid for).
            min_work = min_parallel_work(GATE.alone())

            args = [net.params, net._sizes_arr, net._acts_arr, net._loss_code, xa, yk, lab, perm[:rows], B,
                    opt.code, hp, state, t_epoch, grad, work, xb, yb, lb, stats, sw, swb, min_work]
            want = parallel_pays(B, net.n_params, False, min_work)
            par = want and TIERS.ready(train_epoch_parallel, net.dtype, args)
            run = train_epoch_parallel if par else train_epoch_serial
            t_run = time.perf_counter()
            try:
                for start in range(0, n, rows):
                    args[7] = perm[start : start + rows]  # this slice of the epoch's minibatches
                    args[12] = t_epoch + int(stats[STEPS])  # steps taken before it
                    run(*args)
                    if stats[DIVERGED]:
                        break
                    check_interrupt()
            finally:
                # The compiled loop counts the steps it completed: θ, the state and t agree.
                t = net._opt_t = t_epoch + int(stats[STEPS])
                if want and not par:
                    TIERS.charge(train_epoch_parallel, net.dtype, time.perf_counter() - t_run)
            if stats[DIVERGED]:
                raise FloatingPointError(
                    f"fit: the loss or gradient became non-finite in epoch {epoch}; params hold the last finite "
                    f"step. Lower lr (now {lrs[epoch]:g}) or set clip_norm."
                )
            accuracy = stats[N_CORRECT] / stats[N_COUNTED] if classifier else None
            val_result = evaluate(net, *val) if val is not None else None
            _record_epoch(history, epoch, epochs, lrs[epoch], stats[LOSS_SUM] / stats[N_SEEN], accuracy, val_result,
                          time.perf_counter() - t0, verbose)
            improved, stop = stopping.update(history)
            if improved and patience is not None and restore_best:
                best_params = net.params.copy()
            if callback is not None and callback(epoch, {k: v[-1] for k, v in history.items()}, net):
                stop = True
            if stop:
                break
    if best_params is not None:
        net.params[...] = best_params
    return history


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


def _fit_lbfgs(net, xa, ya, sw, val, opt, epochs, verbose, history, early_stop) -> dict:
    from scipy.optimize import minimize

    if early_stop:
        raise ValueError("patience: early stopping is not available with optimizer 'lbfgs'")
    trial = net.params.copy()
    grad = np.empty_like(trial)
    lam = opt.weight_decay
    classifier = "accuracy" in history
    t0 = [time.perf_counter()]

    def fun(theta):
        trial[...] = theta
        c = net._loss_and_grad_at(trial, xa, ya, sw, grad)
        g = grad.astype(np.float64)
        if lam:
            c += 0.5 * lam * float(theta @ theta)
            g += lam * theta
        return c, g

    def record(intermediate_result):
        trial[...] = intermediate_result.x
        history["loss"].append(float(intermediate_result.fun))
        history["lr"].append(float("nan"))
        saved = net.params.copy()
        net.params[...] = trial
        try:
            if classifier:
                _, acc = evaluate(net, xa, ya)
                history["accuracy"].append(acc)
            if val is not None:
                vl, va = evaluate(net, *val)
                history["val_loss"].append(vl)
                if classifier:
                    history["val_accuracy"].append(va)
        finally:
            net.params[...] = saved
        now = time.perf_counter()
        history["time"].append(now - t0[0])
        t0[0] = now
        if verbose:
            _print_epoch(len(history["loss"]) - 1, epochs, history)

    res = minimize(
        fun,
        net.params.astype(np.float64),
        jac=True,
        method="L-BFGS-B",
        callback=record,
        options={"maxiter": epochs, "maxcor": opt.history_size},
    )
    if not np.all(np.isfinite(res.x)):
        raise FloatingPointError("fit: L-BFGS produced non-finite parameters; params are unchanged")
    net.params[...] = res.x
    history["message"] = str(res.message)
    return history
