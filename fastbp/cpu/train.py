"""The compiled training loop: one epoch of minibatch steps with no Python per step."""

from __future__ import annotations

import numpy as np
from numba import njit

from .._cache import cached_njit
from ..activations import SIGMOID, SOFTMAX
from ..config import FASTMATH, PARALLEL_MIN_PARAMS, PARALLEL_MIN_WORK
from ..layout import activation_offset
from ..optim import HP_ALPHA, HP_CLIP, HP_EPS_HAT, HP_FLAG, HP_H1, HP_H2, HP_H3, HP_LR, HP_WEIGHT_DECAY
from ._twins import bound_to
from .network import loss_and_grad_parallel, loss_and_grad_serial, parallel_pays_jit
from .optim import adam_step_parallel, adam_step_serial, clip_grad_norm, sgd_step

__all__ = ["apply_step", "train_epoch"]

# Slots of the ``stats`` array that train_epoch fills (PENALTY_SUM only in an array that has it).
LOSS_SUM, N_SEEN, N_CORRECT, N_COUNTED, DIVERGED, STEPS, PENALTY_SUM = range(7)
N_STATS = 7


@cached_njit(nogil=True, fastmath=FASTMATH)
def add_weight_penalty(params, sizes, grad, scale):
    """The L2 penalty on the weights: ∂/∂W^l of (s/2) Σ_l ‖W^l‖², i.e. ``grad[W^l] += s W^l``,
    in place (the biases are not penalised); returns (s/2) Σ_l ‖W^l‖², accumulated in float64.

    scikit-learn's ``alpha`` is s = α / m for a minibatch of m rows (or of sample weights summing
    to m).
    """
    T = params.dtype.type
    f = T(scale)
    total = 0.0
    o = 0
    for l in range(sizes.shape[0] - 1):
        nw = sizes[l + 1] * sizes[l]
        s = 0.0
        for i in range(o, o + nw):
            w = params[i]
            s += float(w) * float(w)
            grad[i] += f * w
        total += s
        o += nw + sizes[l + 1]
    return 0.5 * scale * total


@cached_njit(nogil=True, fastmath=FASTMATH)
def count_correct(act, out, y, labels):
    """(correct, counted) of a batch: argmax for softmax outputs, 0.5 threshold for sigmoid.

    Targets as the kernels take them: ``y`` (N, n) with ``labels`` empty, or class ``labels`` (N,)
    (standing for one-hot rows) with ``y`` of no rows.
    """
    N, n = out.shape
    has_labels = labels.shape[0] > 0
    correct = 0
    counted = 0
    if act == SOFTMAX:
        for r in range(N):
            best = 0
            for j in range(1, n):
                if out[r, j] > out[r, best]:
                    best = j
            if has_labels:
                target = labels[r]
            else:
                target = 0
                for j in range(1, n):
                    if y[r, j] > y[r, target]:
                        target = j
            correct += best == target
            counted += 1
    elif act == SIGMOID:
        for r in range(N):
            for j in range(n):
                t = j == labels[r] if has_labels else y[r, j] > 0.5
                correct += (out[r, j] > 0.5) == t
                counted += 1
    return correct, counted


@cached_njit(nogil=True, fastmath=FASTMATH)
def apply_step(params, sizes, grad, c, wsum, opt, hp, state, t, min_parallel_work=PARALLEL_MIN_WORK):
    """The update after one minibatch's loss ``c`` and gradient ``grad`` (in place): the weights'
    L2 penalty for a batch of weight total ``wsum`` (rows, or the sum of its sample weights; a
    batch of zero weights has no loss and no penalty), norm clipping, then step ``t + 1`` of the
    optimizer (``opt``, ``hp``, ``state`` as for :func:`train_epoch`).

    Returns the penalty (α/(2 wsum)) Σ_l ‖W^l‖², or NaN, with ``params`` and ``state`` untouched,
    if the loss, the gradient or the penalty is not finite.  The Adam update runs its parallel
    twin for large θ at the default ``min_parallel_work``.
    """
    P = params.shape[0]
    alpha = hp[HP_ALPHA] if hp.shape[0] > HP_ALPHA else 0.0
    eps_hat = hp.shape[0] > HP_EPS_HAT and hp[HP_EPS_HAT] != 0
    pen = 0.0
    if alpha > 0 and wsum > 0:
        pen = add_weight_penalty(params, sizes, grad, alpha / wsum)
    norm = clip_grad_norm(grad, hp[HP_CLIP])
    if not (np.isfinite(c) and np.isfinite(norm) and np.isfinite(pen)):
        return np.nan
    t += 1
    first = state[:P]
    second = state[P:]
    # ε̂ (scikit-learn's placement) is ε̂/√(1 − β₂^t) in the kernels' form.
    eps = hp[HP_H3] / np.sqrt(1.0 - hp[HP_H2] ** t) if eps_hat else hp[HP_H3]
    if opt == 0:
        sgd_step(params, grad, first, hp[HP_LR], hp[HP_H1], hp[HP_FLAG] != 0, hp[HP_WEIGHT_DECAY])
    elif min_parallel_work <= PARALLEL_MIN_WORK and P >= PARALLEL_MIN_PARAMS:
        adam_step_parallel(params, grad, first, second, t, hp[HP_LR], hp[HP_H1], hp[HP_H2], eps, hp[HP_WEIGHT_DECAY],
                              hp[HP_FLAG] != 0)
    else:
        adam_step_serial(params, grad, first, second, t, hp[HP_LR], hp[HP_H1], hp[HP_H2], eps, hp[HP_WEIGHT_DECAY],
                            hp[HP_FLAG] != 0)
    return pen


@njit(inline="always")
def _loss_and_grad_twin(parallel, params, sizes, acts, loss, x, y, labels, grad, work, sample_weight):
    if parallel:
        return loss_and_grad_parallel(params, sizes, acts, loss, x, y, labels, grad, work, sample_weight)
    return loss_and_grad_serial(params, sizes, acts, loss, x, y, labels, grad, work, sample_weight)


@cached_njit(nogil=True, fastmath=FASTMATH)
def train_epoch(params, sizes, acts, loss, x, y, labels, perm, batch_size, opt, hp, state, t, grad, work, xb, yb, lb,
                stats, sample_weight, swb, min_parallel_work=PARALLEL_MIN_WORK):
    """Run one epoch of minibatch training in place; returns the step count t after it.

    For each minibatch (the rows ``perm[i*B:(i+1)*B]``, the last one partial):
    gather it into ``xb``/``yb``, :func:`fastbp.cpu.loss_and_grad`, clip the
    gradient norm, then one optimizer step.  A step whose loss or gradient is
    not finite is not applied: the epoch stops and ``stats[DIVERGED]`` is set,
    so ``params`` always hold the last finite step.

    Parameters
    ----------
    params, sizes, acts, loss, x
        As for :func:`fastbp.cpu.loss_and_grad` (x: the whole training set).
    y, labels : 2-D float and 1-D int64 arrays
        The targets of the training set: (N, n_L) targets with ``labels`` empty, or (N,) class
        labels with ``y`` of no rows (one compiled signature per dtype for both kinds).
    perm : 1-D int64 array
        Order of the samples in this epoch; a slice of it (cut at a multiple of
        ``batch_size``) runs those minibatches only, so an epoch can run in several calls.
    batch_size : int
    opt : int
        0: SGD (:func:`fastbp.cpu.optim.sgd_step`), 1: Adam (:func:`fastbp.cpu.optim.adam_step`).
    hp : 1-D float64 array
        [lr, h1, h2, h3, weight_decay, flag, clip_norm, alpha, eps_hat]: for SGD h1 = momentum and flag =
        nesterov; for Adam h1, h2, h3 = beta1, beta2, eps and flag = decoupled.
        clip_norm <= 0 disables clipping.  eps_hat (optional slot) != 0: Adam's eps is ε̂
        (:class:`fastbp.optim.Adam`).  alpha (optional slot) > 0 adds the penalty
        α/(2m) Σ_l ‖W^l‖² to each batch's loss (m its rows, or the sum of its sample weights)
        and its gradient, ``add_weight_penalty``, before the clipping.
    state : 1-D float array of 2 * len(params)
        Optimizer state: [velocity or m, v].
    t : int
        Steps taken before this epoch.
    grad : 1-D float array like params
    work : workspace for ``batch_size`` samples
    xb, yb, lb : batch buffers shaped like ``batch_size`` rows of x, y and labels
    stats : 1-D float64 array of 6 or 7
        Accumulates [loss sum, samples, correct, counted, diverged, steps, penalty sum]; the sums
        are of batch figure × batch rows, the loss sum without the penalty.
    sample_weight, swb : 1-D float arrays
        Per-sample weights of the training set and their batch buffer; both empty for none.
    min_parallel_work : int, default ``config.PARALLEL_MIN_WORK``
        The steps run the ``parallel=True`` twin of the training step when ``batch_size`` times
        the parameter count reaches this (all steps of the call, the last partial batch too),
        and the parallel Adam update only at the default.  ``MLP.fit`` passes a higher figure
        from a worker thread and an unreachable one while other compiled calls are in flight
        (``fastbp._threads``), and calls copies bound to one twin (``train_epoch_serial``,
        ``train_epoch_parallel``).
    """
    N = perm.shape[0]
    P = params.shape[0]
    L = sizes.shape[0] - 1
    nL = sizes[L]
    n_in = x.shape[1]
    has_labels = labels.shape[0] > 0
    weighted = sample_weight.shape[0] > 0
    # One twin for every step of the call, chosen by the full batch size: a smaller last batch
    # does not make the process compile the other twin too.
    par = parallel_pays_jit(batch_size, P, False, min_parallel_work)
    alpha = hp[HP_ALPHA] if hp.shape[0] > HP_ALPHA else 0.0
    for start in range(0, N, batch_size):
        m = min(batch_size, N - start)
        for r in range(m):
            src = perm[start + r]
            for k in range(n_in):
                xb[r, k] = x[src, k]
            if has_labels:
                lb[r] = labels[src]
            else:
                for j in range(nL):
                    yb[r, j] = y[src, j]
            if weighted:
                swb[r] = sample_weight[src]
        c = _loss_and_grad_twin(par, params, sizes, acts, loss, xb[:m], yb[:m], lb[:m], grad, work, swb[:m])
        wsum = 0.0
        if alpha > 0 and weighted:
            for r in range(m):
                wsum += swb[r]
        else:
            wsum = m
        # The batch output a^L is still in the workspace after the backward pass.
        ao = activation_offset(sizes, L - 1, m) + m * nL
        correct, counted = count_correct(acts[L - 1], work[ao : ao + m * nL].reshape((m, nL)), yb[:m], lb[:m])
        pen = apply_step(params, sizes, grad, c, wsum, opt, hp, state, t, min_parallel_work)
        if not np.isfinite(pen):
            stats[DIVERGED] = 1.0
            return t
        t += 1
        stats[LOSS_SUM] += c * m
        stats[N_SEEN] += m
        stats[N_CORRECT] += correct
        stats[N_COUNTED] += counted
        stats[STEPS] += 1
        if stats.shape[0] > PENALTY_SUM:
            stats[PENALTY_SUM] += pen * m
    return t


# ``MLP.fit`` picks one of these per call: each compiles only its own twin of the training step
# (the inlined helper that calls the twins is rebound too: it resolves them in its own globals).
def _bound_to_step(step, suffix):
    return bound_to(train_epoch, suffix, _loss_and_grad_twin=bound_to(
        _loss_and_grad_twin, suffix, loss_and_grad_serial=step, loss_and_grad_parallel=step))


train_epoch_serial = _bound_to_step(loss_and_grad_serial, "_serial")
train_epoch_parallel = _bound_to_step(loss_and_grad_parallel, "_parallel")
#: The epoch loop of each row of ``fastbp.cpu.network.VARIANTS``, by the same names.
EPOCH_VARIANTS = {"serial": train_epoch_serial, "parallel": train_epoch_parallel}
