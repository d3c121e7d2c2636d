"""``MLP(backend="cpu")``: the Numba kernels of :mod:`fastbp.cpu`.

Threads: each thread has its own workspaces (a few batch sizes are kept per thread) and
scratch gradient, the kernels release the GIL, and :mod:`fastbp._threads` decides which calls
run their parallel twins; :mod:`fastbp._tiers` decides when a parallel twin is worth compiling.
"""

from __future__ import annotations

import threading

import numpy as np

from .. import config as _config
from .. import cpu as _kernels
from .._resources import check_fits
from .._threads import GATE, min_parallel_work
from .._tiers import TIERS
from ..cpu import _layers
from ..cpu import network as _network
from ..cpu import train as _train
from ..layout import workspace_size
from ..optim import HP_LR, hyper_vector
from ._host import NO_LABELS, HostBackend, HostTrainer, stats

_MAX_CACHED_WORKSPACES = 4

assert _kernels  # fastbp.cpu's import launches Numba's threading layer before any cached parallel twin loads


class CpuBackend(HostBackend):
    """Whole-network Numba kernels, serial or parallel twin per call; the compiled epoch loop."""

    name = "cpu"

    def __init__(self, spec):
        super().__init__(spec)
        self._local = threading.local()
        # "no targets" and "no weights" for the kernels (empty arrays, see kernel_targets)
        self._no_targets = np.empty((0, int(spec.sizes[-1])), dtype=spec.dtype)
        self._no_weights = np.empty(0, dtype=spec.dtype)
        self._chunk = (None, 0)  # (config.MAX_WORKSPACE_BYTES, rows): computed by chunk_rows

    # -- scratch space ----------------------------------------------------------------------------

    def workspace(self, n: int) -> np.ndarray:
        """This thread's workspace for a batch of ``n``."""
        cache = getattr(self._local, "workspaces", None)
        if cache is None:
            cache = self._local.workspaces = {}
        w = cache.get(n)
        if w is None:
            size = workspace_size(self.spec.sizes, n)
            dt = self.spec.dtype
            check_fits(f"x: the workspace of a batch of {n:,} samples ({size:,} {dt.name} elements)",
                       size * dt.itemsize)
            if len(cache) >= _MAX_CACHED_WORKSPACES:
                cache.pop(next(iter(cache)))
            w = np.empty(size, dtype=dt)
            cache[n] = w
        return w

    def chunk_rows(self) -> int:
        """Rows of a batch whose workspace fits in ``config.MAX_WORKSPACE_BYTES`` (a multiple of 4;
        every row is computed alike wherever it falls, so chunking leaves every result bitwise the same)."""
        limit = _config.MAX_WORKSPACE_BYTES
        if self._chunk[0] != limit:
            per_row = workspace_size(self.spec.sizes, 1) * self.spec.dtype.itemsize
            self._chunk = (limit, max(4, limit // per_row // 4 * 4))
        return self._chunk[1]

    def kernel_targets(self, y: np.ndarray, sw: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """(targets, labels, weights) of checked ``y`` and ``sw`` in the one form the kernels are
        compiled for (one signature per dtype): (N, nL) targets with no labels, or (N,) labels with
        targets of no rows; weights, or an empty vector for none."""
        weights = self._no_weights if sw is None else sw
        if y.ndim == 1:
            return self._no_targets, y, weights
        return y, NO_LABELS, weights

    # -- the twins ----------------------------------------------------------------------------

    def _run_twin(self, serial, parallel, n: int, n_params: int, forward_only: bool, *args):
        """Run the serial or the parallel twin of a whole-network kernel on ``n`` rows.

        The parallel twin runs only where it pays, no other thread is inside a compiled model
        call (:mod:`fastbp._threads`), and it is compiled or cached, or the serial one has run
        long enough to pay for compiling it (:mod:`fastbp._tiers`).  Below the cut-over every
        caller runs serial, whatever the other threads do, so such a call does not register
        with the gate.
        """
        if _network.variant(n, n_params, forward_only) == "serial":
            return serial(*args)
        alone = GATE.enter()
        try:
            if _network.variant(n, n_params, forward_only, min_parallel_work(alone)) == "serial":
                return serial(*args)
            if TIERS.ready(parallel, self.spec.dtype, args):
                return parallel(*args)
            # Not compiled yet, and the serial twin has not yet run long enough to pay for it.
            return TIERS.run_serial(serial, parallel, self.spec.dtype, args)
        finally:
            GATE.leave()

    def _forward_into(self, params, x, out) -> None:
        n = x.shape[0]
        s = self.spec
        (serial, _), (parallel, _) = _network.VARIANTS["serial"], _network.VARIANTS["parallel"]
        self._run_twin(serial, parallel, n, params.shape[0], True,
                       params, s.sizes, s.activations, x, out, self.workspace(n))

    # -- the protocol -------------------------------------------------------------------------

    def forward(self, params, x):
        n = x.shape[0]
        out = np.empty((n, int(self.spec.sizes[-1])), dtype=self.spec.dtype)
        step = self.chunk_rows()
        for start in range(0, n, step):
            self._forward_into(params, x[start : start + step], out[start : start + step])
        return out

    def loss(self, params, x, y) -> tuple[float, np.ndarray]:
        """(C, a^L): the forward twin (what predict runs) and the loss of a^L; no δ, no backward pass."""
        s = self.spec
        n, nL = x.shape[0], int(s.sizes[-1])
        step = self.chunk_rows()
        out = np.empty((n, nL), dtype=s.dtype)
        if n > step:  # a large set in chunks: C is the mean of the chunk means weighted by their rows
            total = 0.0
            for start in range(0, n, step):
                c, part = self.loss(params, x[start : start + step], y[start : start + step])
                total += c * part.shape[0]
                out[start : start + step] = part
            return total / n, out
        self._forward_into(params, x, out)
        work = self.workspace(n)
        zo = workspace_size(s.sizes, n) - 2 * n * nL  # z^L, then a^L
        zL = work[zo : zo + n * nL].reshape(n, nL)
        aL = work[zo + n * nL : zo + 2 * n * nL].reshape(n, nL)
        yk, lab, sw = self.kernel_targets(y)
        return float(_layers.loss_body(s.loss, zL, aL, yk, lab, sw)), out

    def evaluate(self, params, x, y):
        c, out = self.loss(params, x, y)
        if not self.spec.is_classifier:
            return c, None
        yk, lab, _ = self.kernel_targets(y)
        correct, counted = _train.count_correct(self.spec.activations[-1], out, yk, lab)
        return c, correct / counted

    def loss_and_grad(self, params, x, y, sample_weight, grad):
        s = self.spec
        n = x.shape[0]
        yk, lab, sw = self.kernel_targets(y, sample_weight)
        (_, serial), (_, parallel) = _network.VARIANTS["serial"], _network.VARIANTS["parallel"]
        c = self._run_twin(serial, parallel, n, params.shape[0],
                           False, params, s.sizes, s.activations, s.loss, x, yk, lab, grad, self.workspace(n), sw)
        return float(c)

    def count_last_output(self, n: int, y) -> tuple[int, int]:
        """(correct, counted) of the a^L that this thread's last ``loss_and_grad`` of ``n`` rows
        left in its workspace, against ``y`` (what the compiled epoch loop counts)."""
        s = self.spec
        nL = int(s.sizes[-1])
        ao = 2 * n * int(np.sum(s.sizes[1:-1])) + n * nL  # layout.activation_offset(sizes, L - 1, n) + z^L
        out = self.workspace(n)[ao : ao + n * nL].reshape(n, nL)
        yk, lab, _ = self.kernel_targets(y)
        return _train.count_correct(s.activations[-1], out, yk, lab)

    def step(self, params, grad, c, wsum, opt, state, lr, clip, alpha) -> float:
        """One update of ``params`` from a minibatch's loss ``c`` and gradient ``grad`` (weight
        total ``wsum``), as the compiled epoch loop takes it (:func:`fastbp.cpu.train.apply_step`):
        returns the penalty, or NaN with nothing changed if the step is not finite."""
        hp = hyper_vector(opt, lr, clip, alpha)
        pen = _train.apply_step(params, self.spec.sizes, grad, c, wsum, opt.code, hp, state.buffer, state.t)
        if pen == pen:
            state.t += 1
        return float(pen)

    def trainer(self, params, x, y, sample_weight, opt, state, batch_size, clip, alpha=0.0):
        return CpuTrainer(self, params, x, y, sample_weight, opt, state, batch_size, clip, alpha)


class CpuTrainer(HostTrainer):
    """The compiled epoch loop (:func:`fastbp.cpu.train.train_epoch`), run in slices of whole
    minibatches (about ``config.INTERRUPT_WORK`` multiply-adds each) so that an interrupt is
    honoured at a step boundary.  Holds a slot of the thread gate while entered."""

    def __init__(self, backend, params, x, y, sample_weight, opt, state, batch_size, clip, alpha=0.0):
        super().__init__(backend, params, opt, state)
        s = backend.spec
        B = min(batch_size, x.shape[0])
        self.x, self.B = x, B
        self.hp = hyper_vector(opt, 0.0, clip, alpha)
        self.grad = np.empty_like(params)
        self.work = backend.workspace(B)
        # Targets, labels and weights in the one form the compiled loop takes (empty where absent).
        self.yk, self.lab, self.sw = backend.kernel_targets(y, sample_weight)
        self.xb = np.empty((B, x.shape[1]), s.dtype)
        self.yb = np.empty((min(B, self.yk.shape[0]), self.yk.shape[1]), s.dtype)
        self.lb = np.empty(min(B, self.lab.shape[0]), np.int64)
        self.swb = np.empty(min(B, self.sw.shape[0]), s.dtype)
        self.rows = B * max(1, _config.INTERRUPT_WORK // max(1, B * params.shape[0]))

    def __enter__(self):
        GATE.enter()
        return self

    def __exit__(self, *exc):
        GATE.leave()

    def run_epoch(self, perm, lr, check_interrupt):
        s = self.backend.spec
        self.hp[HP_LR] = lr
        counters = np.zeros(_train.N_STATS)
        t_epoch = self.state.t
        # One twin for the epoch (a copy of train_epoch bound to it: the other is never compiled);
        # the parallel one where it pays and once it is ready (compiled, cached, or paid for).
        min_work = min_parallel_work(GATE.alone())
        args = [self.params, s.sizes, s.activations, s.loss, self.x, self.yk, self.lab, perm[: self.rows], self.B,
                self.opt.code, self.hp, self.state.buffer, t_epoch, self.grad, self.work, self.xb, self.yb, self.lb,
                counters, self.sw, self.swb, min_work]
        serial, parallel = _train.EPOCH_VARIANTS["serial"], _train.EPOCH_VARIANTS["parallel"]
        want = _network.variant(self.B, self.params.shape[0], False, min_work) == "parallel"
        par = want and TIERS.ready(parallel, s.dtype, args)
        try:
            for start in range(0, perm.shape[0], self.rows):
                args[7] = perm[start : start + self.rows]  # this slice of the epoch's minibatches
                args[12] = t_epoch + int(counters[_train.STEPS])  # steps taken before it
                if par:
                    parallel(*args)
                elif want:  # serial time that the parallel twin would have shortened
                    TIERS.run_serial(serial, parallel, s.dtype, args)
                else:
                    serial(*args)
                if counters[_train.DIVERGED]:
                    break
                check_interrupt()
        finally:
            # The compiled loop counts the steps it completed: θ, the state and t agree.
            self.state.t = t_epoch + int(counters[_train.STEPS])
        c = counters
        return stats(c[_train.LOSS_SUM], c[_train.N_SEEN], c[_train.N_CORRECT], c[_train.N_COUNTED],
                     c[_train.STEPS], c[_train.DIVERGED] != 0, c[_train.PENALTY_SUM])
