"""``MLP(backend="cuda")``: the model's device state and its checked entry points.

The model's ``params`` stay a host ndarray (the public contract: writable in
place), mirrored on the device.  ``predict``, ``loss_and_grad`` and
``evaluate`` upload θ (one copy of P numbers) and run on the device; ``fit``
uploads θ and the data once, runs every step on the device and copies θ back
at the end (and before each ``callback`` call).

x and y may be device arrays (Numba device arrays, or CuPy/PyTorch tensors
through ``__cuda_array_interface__``): they are used in place, without a copy,
after shape, dtype, finiteness and label checks that run on the device.
"""

from __future__ import annotations

import math
import time

import numpy as np

from . import network as _net
from ._kernels import ELEMENT_THREADS, elementwise_kernels, grid_1d


def is_device_array(x) -> bool:
    """Whether ``x`` lives on the GPU (``__cuda_array_interface__``, or a simulator array)."""
    return hasattr(x, "__cuda_array_interface__") or type(x).__name__ == "FakeCUDAArray"


def as_device_array(x):
    from numba import cuda

    if type(x).__name__ == "FakeCUDAArray":
        return x
    if hasattr(cuda, "as_cuda_array"):
        return cuda.as_cuda_array(x)
    return x  # pragma: no cover


def _check_device_values(name: str, arr, lo: float, hi: float, what: str) -> None:
    """Raise ValueError if ``arr`` (a device array) holds NaN/inf or a value outside [lo, hi]."""
    from numba import cuda

    if arr.size == 0:
        return
    flat = arr.reshape(arr.size)
    flags = cuda.to_device(np.zeros(2, dtype=np.int32))
    ek = elementwise_kernels("float64")
    ek.check_values[grid_1d(arr.size), ELEMENT_THREADS](flat, float(lo), float(hi), flags)
    f = flags.copy_to_host()
    if f[0]:
        raise ValueError(f"{name}: contains NaN or infinity")
    if f[1]:
        raise ValueError(f"{name}: {what}")


class CudaState:
    """Device buffers of one model: θ, gradient, optimizer state, workspaces, counters."""

    def __init__(self, net):
        from numba import cuda

        self.net = net
        self.sizes = tuple(int(v) for v in net.sizes)
        self.acts = tuple(int(v) for v in net._acts_arr)
        self.dt = np.dtype(net.dtype).name
        self.params = cuda.device_array(net.n_params, dtype=net.dtype)
        self.grad = cuda.device_array(net.n_params, dtype=net.dtype)
        self.scratch = cuda.device_array(_net.SCRATCH_SIZE, dtype=np.float64)
        self._work: dict[int, object] = {}
        self.ek = elementwise_kernels(self.dt)

    # -- buffers ------------------------------------------------------------------------------

    def work(self, n: int):
        from numba import cuda

        w = self._work.get(n)
        if w is None:
            if len(self._work) >= 4:
                self._work.pop(next(iter(self._work)))
            from ..layout import workspace_size

            w = cuda.device_array(max(1, workspace_size(self.sizes, n)), dtype=self.dt)
            self._work[n] = w
        return w

    def upload_params(self) -> None:
        self.params.copy_to_device(self.net.params)

    def zero(self, arr) -> None:
        self.ek.fill[grid_1d(arr.shape[0]), ELEMENT_THREADS](arr, 0.0)

    # -- inputs -------------------------------------------------------------------------------

    def check_x(self, x, name: str = "x"):
        """A C-contiguous (N, n0) device array of the model's dtype."""
        from numba import cuda

        n0 = self.sizes[0]
        if is_device_array(x):
            d = as_device_array(x)
            if d.ndim == 1:
                if d.shape[0] != n0:
                    raise ValueError(f"{name}: expected shape (N, {n0}) or ({n0},), got {tuple(d.shape)}")
                d = d.reshape(1, n0)
            if d.ndim != 2 or d.shape[1] != n0:
                raise ValueError(f"{name}: expected shape (N, {n0}), got {tuple(d.shape)}")
            if d.shape[0] == 0:
                raise ValueError(f"{name}: expected at least one sample, got 0")
            if np.dtype(d.dtype) != self.net.dtype:
                raise TypeError(f"{name}: expected a device array of dtype {self.net.dtype}, got {d.dtype}")
            if not d.is_c_contiguous():
                raise ValueError(f"{name}: expected a C-contiguous device array")
            _check_device_values(name, d, -math.inf, math.inf, "")
            return d, False, True
        xa, single = self.net._check_x(x, name)
        return cuda.to_device(xa), single, False

    def check_y(self, y, n: int, name: str = "y"):
        """(device y, labels flag): (N, nL) float targets or (N, 1) int64 labels."""
        from numba import cuda

        nL = self.sizes[-1]
        loss = self.net.loss
        if is_device_array(y):
            d = as_device_array(y)
            kind = np.dtype(d.dtype).kind
            if kind in "iu":
                if d.ndim == 2 and d.shape[1] == 1:
                    d = d.reshape(d.shape[0])
                if d.ndim != 1 or d.shape[0] != n:
                    raise ValueError(f"{name}: expected integer class labels of shape ({n},), got {tuple(d.shape)}")
                if np.dtype(d.dtype) != np.int64:
                    raise TypeError(f"{name}: expected int64 class labels on the device, got {d.dtype}")
                if loss != "cross_entropy" and nL == 1:
                    raise TypeError(f"{name}: integer labels need more than one output; pass float targets")
                _check_device_values(name, d, 0, nL - 1, f"class labels must lie in [0, {nL})")
                return d.reshape(n, 1), 1
            if np.dtype(d.dtype) != self.net.dtype:
                raise TypeError(f"{name}: expected a device array of dtype {self.net.dtype}, got {d.dtype}")
            if d.ndim == 1 and nL == 1:
                d = d.reshape(n, 1) if d.shape[0] == n else d
            if d.ndim != 2 or tuple(d.shape) != (n, nL):
                raise ValueError(f"{name}: expected shape ({n}, {nL}) to match x, got {tuple(d.shape)}")
            if not d.is_c_contiguous():
                raise ValueError(f"{name}: expected a C-contiguous device array")
            if loss in ("cross_entropy", "binary_cross_entropy"):
                _check_device_values(name, d, 0.0, 1.0, f"{loss} targets must be probabilities in [0, 1]")
            else:
                _check_device_values(name, d, -math.inf, math.inf, "")
            return d, 0
        ya = self.net._check_y(y, n, name)
        if ya.ndim == 1:
            return cuda.to_device(ya.reshape(n, 1)), 1
        return cuda.to_device(ya), 0

    def check_sw(self, sample_weight, n: int):
        """(device weights or None, 1 / Σ w): host arrays are checked by the CPU path's rules."""
        from numba import cuda

        from ..training import _check_sample_weight

        if sample_weight is None:
            return None, 0.0
        if is_device_array(sample_weight):
            sample_weight = as_device_array(sample_weight).copy_to_host()
        sw = _check_sample_weight(sample_weight, n, self.net.dtype)
        return cuda.to_device(sw), 1.0 / float(np.sum(sw, dtype=np.float64))

    # -- computation --------------------------------------------------------------------------

    def forward(self, xd):
        from numba import cuda

        n = xd.shape[0]
        out = cuda.device_array((n, self.sizes[-1]), dtype=self.dt)
        _net.forward(self.params, self.sizes, self.acts, xd, out, self.work(n))
        return out

    def loss_grad(self, xd, yd, labels, swd=None, sw_scale=0.0, grad=None):
        """Launch a loss-and-gradient into ``grad`` (default: the model's); returns scratch (not read)."""
        g = self.grad if grad is None else grad
        self.zero(self.scratch)
        if _net._fused.eligible(self.sizes, self.acts, self.dt):
            self.zero(g)
        _net.step_loss_and_grad(
            self.params,
            self.sizes,
            self.acts,
            self.net._loss_code,
            xd,
            yd,
            g,
            self.work(xd.shape[0]),
            self.scratch,
            labels,
            swd,
            sw_scale,
        )
        return self.scratch

    def evaluate(self, xd, yd, labels):
        """(loss, accuracy or None) of device data, θ already uploaded (the model's gradient is kept)."""
        from numba import cuda

        if not hasattr(self, "_eval_grad"):
            self._eval_grad = cuda.device_array_like(self.grad)
        s = self.loss_grad(xd, yd, labels, grad=self._eval_grad).copy_to_host()
        acc = s[1] / s[2] if s[2] > 0 else None
        return float(s[0]), acc


def fit(
    net,
    state: CudaState,
    xd,
    yd,
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
):
    """The device training loop of ``MLP.fit`` (arguments already checked)."""
    from numba import cuda

    from ..training import _EarlyStopping, _record_epoch, deferred_interrupt

    n = xd.shape[0]
    B = min(batch_size, n)
    P = net.n_params
    host_state, t = net._optimizer_state(opt)
    d_state = cuda.to_device(host_state)
    first, second = d_state[:P], d_state[P:]
    state.upload_params()
    state.zero(state.grad)
    h1, h2, h3, wd, flag = opt.hyper()
    hp = [0.0, h1, h2, h3, wd, float(flag)]
    fused = _net._fused.eligible(state.sizes, state.acts, state.dt)
    xs = cuda.device_array_like(xd)
    ys = cuda.device_array_like(yd)
    sws = None if sw is None else cuda.device_array_like(sw)
    sw_host = None if sw is None else sw.copy_to_host()
    work = state.work(B)
    work_tail = state.work(n % B) if n % B else None
    ek = state.ek
    stopping = _EarlyStopping("val_loss" if val is not None else "loss", patience, min_delta)
    best_params = None
    saved = cuda.device_array_like(state.params)
    saved_state = cuda.device_array_like(d_state)
    synced = False
    with deferred_interrupt() as check_interrupt:
        try:
            for epoch in range(len(lrs)):
                t0 = time.perf_counter()
                saved.copy_to_device(state.params)
                saved_state.copy_to_device(d_state)
                perm = rng.permutation(n) if shuffle else np.arange(n)
                dperm = cuda.to_device(perm.astype(np.int64))
                ek.gather_rows[grid_1d(xd.size), ELEMENT_THREADS](xd, dperm, xs)
                ek.gather_rows[grid_1d(yd.size), ELEMENT_THREADS](yd, dperm, ys)
                if sw is not None:
                    ek.gather_rows[grid_1d(n), ELEMENT_THREADS](sw.reshape(n, 1), dperm, sws.reshape(n, 1))
                hp[0] = lrs[epoch]
                state.zero(state.scratch)
                t_start = t
                for start in range(0, n, B):
                    m = min(B, n - start)
                    xb = xs[start : start + m]
                    yb = ys[start : start + m]
                    swb, scale = None, 0.0
                    if sw is not None:
                        swb = sws[start : start + m]
                        scale = 1.0 / float(np.sum(sw_host[perm[start : start + m]], dtype=np.float64))
                    _net.step_loss_and_grad(
                        state.params,
                        state.sizes,
                        state.acts,
                        net._loss_code,
                        xb,
                        yb,
                        state.grad,
                        work if m == B else work_tail,
                        state.scratch,
                        labels,
                        swb,
                        scale,
                        fused,
                    )
                    if clip > 0:
                        _clip(state, clip)
                    _net.optimizer_step(opt.code, state.params, state.grad, first, second, t + 1, hp, 1)
                    t += 1
                    check_interrupt()
                s = state.scratch.copy_to_host()
                loss = s[3] / n
                if not math.isfinite(loss):
                    state.params.copy_to_device(saved)
                    d_state.copy_to_device(saved_state)
                    state.params.copy_to_host(net.params)
                    d_state.copy_to_host(host_state)
                    t = net._opt_t = t_start
                    synced = True
                    raise FloatingPointError(
                        f"fit: the loss became non-finite in epoch {epoch}; params hold the values from the start "
                        f"of that epoch. Lower lr (now {lrs[epoch]:g}) or set clip_norm."
                    )
                net._opt_t = t
                accuracy = (s[1] / s[2] if s[2] else float("nan")) if classifier else None
                val_result = state.evaluate(*val) if val is not None else None
                cuda.synchronize()
                _record_epoch(history, epoch, len(lrs), lrs[epoch], loss, accuracy, val_result,
                              time.perf_counter() - t0, verbose)
                improved, stop = stopping.update(history)
                if improved and patience is not None and restore_best:
                    if best_params is None:
                        best_params = cuda.device_array_like(state.params)
                    best_params.copy_to_device(state.params)
                if callback is not None:
                    state.params.copy_to_host(net.params)
                    if callback(epoch, {k: v[-1] for k, v in history.items()}, net):
                        stop = True
                    state.upload_params()  # the callback may have changed params
                if stop:
                    break
        except BaseException:
            # An interrupt (deferred to a step boundary) or a callback's exception: the host gets
            # θ, the optimizer state and t of the last completed step.
            if not synced:
                cuda.synchronize()
                state.params.copy_to_host(net.params)
                d_state.copy_to_host(host_state)
                net._opt_t = t
            raise
    if best_params is not None:
        state.params.copy_to_device(best_params)
    state.params.copy_to_host(net.params)
    d_state.copy_to_host(host_state)
    return history


def _clip(state: CudaState, clip: float) -> None:
    """Clip the gradient norm, with its own counter slot so the loss counters are untouched."""
    from numba import cuda

    if not hasattr(state, "_norm_slot"):
        state._norm_slot = cuda.device_array(1, dtype=np.float64)
    _net.clip_grad_norm(state.grad, clip, state._norm_slot, 0)
