"""``MLP(backend="cuda")``: the CUDA kernels of :mod:`fastbp.cuda`, with the model's device state.

The model's ``params`` stay a host ndarray (the public contract: writable in place), mirrored
on the device.  ``predict``, ``loss_and_grad`` and ``evaluate`` upload θ (one copy of P
numbers) and run on the device; a :class:`CudaTrainer` uploads θ, the optimizer state and the
data once, runs every step on the device and copies θ back when it is left (and before each
``callback``).  Calls on one model are serialised (its device buffers are per model).

x and y may be device arrays (Numba device arrays, or CuPy/PyTorch tensors through
``__cuda_array_interface__``): they are used in place, without a copy, after shape, dtype,
finiteness and label checks that run on the device and fail with the messages of the host
checks (:mod:`fastbp._validation`).
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numba import cuda

from .. import _validation as V
from ..cuda import network as _net
from ..cuda._fused import eligible as fused_eligible
from ..cuda._kernels import ELEMENT_THREADS, elementwise_kernels, grid_1d
from ..layout import workspace_size
from ..optim import HP_ALPHA, HP_CLIP, HP_LR, hyper_vector
from ._host import stats


def is_device_array(x) -> bool:
    """Whether ``x`` lives on the GPU (``__cuda_array_interface__``, or a simulator array)."""
    return hasattr(x, "__cuda_array_interface__") or type(x).__name__ == "FakeCUDAArray"


def as_device_array(x):
    if type(x).__name__ == "FakeCUDAArray":
        return x
    if hasattr(cuda, "as_cuda_array"):
        return cuda.as_cuda_array(x)
    return x  # pragma: no cover


def _device_flags(arr, lo: float, hi: float) -> tuple[bool, bool]:
    """(whether ``arr`` holds NaN or infinity, whether a finite value lies outside [lo, hi])."""
    if arr.size == 0:
        return False, False
    flags = cuda.to_device(np.zeros(2, dtype=np.int32))
    elementwise_kernels("float64").check_values[grid_1d(arr.size), ELEMENT_THREADS](
        arr.reshape(arr.size), float(lo), float(hi), flags)
    f = flags.copy_to_host()
    return bool(f[0]), bool(f[1])


class CudaBackend:
    """Device buffers of one model (θ, gradient, counters, workspaces) and the device kernels."""

    name = "cuda"

    def __init__(self, spec):
        self.spec = spec
        self.sizes = spec.widths
        self.acts = tuple(int(v) for v in spec.activations)
        self.dt = spec.dtype.name
        self.params = cuda.device_array(spec.n_params, dtype=spec.dtype)
        self.grad = cuda.device_array(spec.n_params, dtype=spec.dtype)
        self.eval_grad = None
        self.scratch = cuda.device_array(_net.SCRATCH_SIZE, dtype=np.float64)
        self.norm_slot = cuda.device_array(1, dtype=np.float64)
        self._work: dict[int, object] = {}
        self.ek = elementwise_kernels(self.dt)
        self.fused = fused_eligible(self.sizes, self.acts, self.dt)
        self.lock = threading.RLock()
        self._weight_mask = None

    def weight_mask(self):
        """A device uint8 array over θ: 1 on the weights, 0 on the biases (made on first use)."""
        if self._weight_mask is None:
            mask = np.zeros(self.spec.n_params, np.uint8)
            for w in self.spec.split(mask)[0]:
                w[...] = 1
            self._weight_mask = cuda.to_device(mask)
        return self._weight_mask

    # -- buffers ------------------------------------------------------------------------------

    def work(self, n: int):
        w = self._work.get(n)
        if w is None:
            if len(self._work) >= 4:
                self._work.pop(next(iter(self._work)))
            w = cuda.device_array(max(1, workspace_size(self.sizes, n)), dtype=self.dt)
            self._work[n] = w
        return w

    def zero(self, arr) -> None:
        self.ek.fill[grid_1d(arr.shape[0]), ELEMENT_THREADS](arr, 0.0)

    def all_finite(self, arr) -> bool:
        return not _device_flags(arr, -math.inf, math.inf)[0]

    @staticmethod
    def device(a):
        """A device copy of a checked host array; a device array as it is."""
        return cuda.to_device(a) if isinstance(a, np.ndarray) else a

    # -- checks at the boundary: host data by the host checks, device data on the device ----------

    def check_x(self, x, name="x"):
        if not is_device_array(x):
            return V.check_x(self.spec, x, name)
        n0 = self.sizes[0]
        d = as_device_array(x)
        if d.ndim == 1 and d.shape[0] == n0:
            d = d.reshape(1, n0)
        if d.ndim != 2 or d.shape[1] != n0:
            raise ValueError(V.msg_batch_shape(name, n0, d.shape))
        if d.shape[0] == 0:
            raise ValueError(V.msg_empty(name, d.shape))
        if np.dtype(d.dtype) != self.spec.dtype:
            raise TypeError(f"{name}: expected a device array of dtype {self.spec.dtype}, got {d.dtype}")
        if not d.is_c_contiguous():
            raise ValueError(f"{name}: expected a C-contiguous device array")
        if _device_flags(d, -math.inf, math.inf)[0]:
            raise ValueError(V.msg_not_finite(name))
        return d, False

    def check_y(self, y, n, name="y"):
        """(y, labels): (N, nL) float targets with labels 0, or (N, 1) int64 labels with labels 1."""
        if not is_device_array(y):
            ya = V.check_y(self.spec, y, n, name)
            return (ya.reshape(n, 1), 1) if ya.ndim == 1 else (ya, 0)
        nL = self.sizes[-1]
        loss = self.spec.loss_name
        d = as_device_array(y)
        if np.dtype(d.dtype).kind in "iu":
            if d.ndim == 2 and d.shape[1] == 1:
                d = d.reshape(d.shape[0])
            if d.ndim != 1 or d.shape[0] != n:
                raise ValueError(f"{name}: expected integer class labels of shape ({n},), got {tuple(d.shape)}")
            if np.dtype(d.dtype) != np.int64:
                raise TypeError(f"{name}: expected int64 class labels on the device, got {d.dtype}")
            if loss != "cross_entropy" and nL == 1:
                raise TypeError(f"{name}: integer labels need more than one output; pass float targets")
            if any(_device_flags(d, 0, nL - 1)):
                lo, hi = V.label_bounds(d.copy_to_host())  # the error path: the host names the values
                raise ValueError(V.msg_label_range(name, nL, lo, hi))
            return d.reshape(n, 1), 1
        if np.dtype(d.dtype) != self.spec.dtype:
            raise TypeError(f"{name}: expected a device array of dtype {self.spec.dtype}, got {d.dtype}")
        if d.ndim == 1 and nL == 1 and d.shape[0] == n:
            d = d.reshape(n, 1)
        if d.ndim != 2 or tuple(d.shape) != (n, nL):
            raise ValueError(V.msg_target_shape(name, n, nL, d.shape))
        if not d.is_c_contiguous():
            raise ValueError(f"{name}: expected a C-contiguous device array")
        probabilities = loss in ("cross_entropy", "binary_cross_entropy")
        nonfinite, outside = _device_flags(d, 0.0, 1.0) if probabilities else _device_flags(d, -math.inf, math.inf)
        if nonfinite:
            raise ValueError(V.msg_not_finite(name))
        if outside:
            lo, hi = V.value_bounds(d.copy_to_host())
            raise ValueError(V.msg_probabilities(name, loss, lo, hi))
        return d, 0

    def check_sample_weight(self, sample_weight, n):
        """None, or (host weights, their device copy, 1 / Σ w); checked by the host rules."""
        if sample_weight is None:
            return None
        if is_device_array(sample_weight):
            sample_weight = as_device_array(sample_weight).copy_to_host()
        sw = V.check_sample_weight(self.spec, sample_weight, n)
        return sw, cuda.to_device(sw), 1.0 / float(np.sum(sw, dtype=np.float64))

    def check_out(self, out, params):
        if out is not None and is_device_array(out):
            g = as_device_array(out)
            if g.shape != (self.spec.n_params,) or np.dtype(g.dtype) != self.spec.dtype:
                raise ValueError(
                    f"out: expected a device array of shape ({self.spec.n_params},) and dtype {self.spec.dtype}")
            return g
        return V.check_out(self.spec, out, params)

    # -- computation --------------------------------------------------------------------------

    def _forward_device(self, xd):
        n = xd.shape[0]
        out = cuda.device_array((n, self.sizes[-1]), dtype=self.dt)
        _net.forward(self.params, self.sizes, self.acts, xd, out, self.work(n))
        return out

    def _launch(self, xd, y, sw, grad):
        """Zero the counters, launch a loss-and-gradient at the device θ into ``grad``."""
        yd, labels = y
        self.zero(self.scratch)
        if self.fused:
            self.zero(grad)
        swd, scale = (None, 0.0) if sw is None else (sw[1], sw[2])
        _net.step_loss_and_grad(self.params, self.sizes, self.acts, self.spec.loss, xd, self.device(yd), grad,
                                self.work(xd.shape[0]), self.scratch, labels, swd, scale, self.fused)

    def _evaluate_device(self, x, y):
        """(loss, accuracy or None) at the device θ; the model's gradient buffer is kept."""
        if self.eval_grad is None:
            self.eval_grad = cuda.device_array_like(self.grad)
        self._launch(self.device(x), y, None, self.eval_grad)
        s = self.scratch.copy_to_host()
        acc = float(s[_net.SCRATCH_CORRECT] / s[_net.SCRATCH_COUNTED]) if self.spec.is_classifier else None
        return float(s[_net.SCRATCH_LOSS]), acc

    def forward(self, params, x):
        with self.lock:
            self.params.copy_to_device(params)
            out = self._forward_device(self.device(x))
            return out.copy_to_host() if isinstance(x, np.ndarray) else out

    def evaluate(self, params, x, y):
        with self.lock:
            self.params.copy_to_device(params)
            return self._evaluate_device(x, y)

    def loss_and_grad(self, params, x, y, sample_weight, grad):
        with self.lock:
            self.params.copy_to_device(params)
            on_device = not isinstance(grad, np.ndarray)
            self._launch(self.device(x), y, sample_weight, grad if on_device else self.grad)
            c = float(self.scratch.copy_to_host()[_net.SCRATCH_LOSS])
            if not on_device:
                self.grad.copy_to_host(grad)
            return c

    def trainer(self, params, x, y, sample_weight, opt, state, batch_size, clip, alpha=0.0):
        return CudaTrainer(self, params, x, y, sample_weight, opt, state, batch_size, clip, alpha)


class CudaTrainer:
    """Every step on the device; θ and the optimizer state come back to the host on ``pull``.

    A step whose loss or gradient is not finite is not applied, as on the host backends: the
    epoch runs without reading anything back, and if its loss sum or θ is not finite at the end,
    the epoch is replayed from its start, step by step with a check after each, up to the
    first non-finite step.
    """

    def __init__(self, backend, params, x, y, sample_weight, opt, state, batch_size, clip, alpha=0.0):
        self.b, self.host_params, self.opt, self.state = backend, params, opt, state
        self.x, self.y, self.sw = x, y, sample_weight
        self.n = x.shape[0]
        self.B = min(batch_size, self.n)
        self.hp = [float(v) for v in hyper_vector(opt, 0.0, clip, alpha)]

    def __enter__(self):
        b = self.b
        b.lock.acquire()
        try:
            P = b.spec.n_params
            self.xd = b.device(self.x)
            self.yd = b.device(self.y[0])
            self.d_state = cuda.to_device(self.state.buffer)
            self.first, self.second = self.d_state[:P], self.d_state[P:]
            b.params.copy_to_device(self.host_params)
            b.zero(b.grad)
            self.xs = cuda.device_array_like(self.xd)
            self.ys = cuda.device_array_like(self.yd)
            self.sws = None if self.sw is None else cuda.device_array_like(self.sw[1])
            self.work = b.work(self.B)
            self.work_tail = b.work(self.n % self.B) if self.n % self.B else None
            self.saved = cuda.device_array_like(b.params)
            self.saved_state = cuda.device_array_like(self.d_state)
            self.t = self.state.t
        except BaseException:
            b.lock.release()
            raise
        return self

    def __exit__(self, *exc):
        try:
            self.pull()
        finally:
            self.b.lock.release()

    def pull(self):
        cuda.synchronize()
        self.b.params.copy_to_host(self.host_params)
        self.d_state.copy_to_host(self.state.buffer)
        self.state.t = self.t

    def push(self):
        self.b.params.copy_to_device(self.host_params)

    def scale_velocity(self, factor):
        self.pull()
        self.state.first[...] *= self.state.buffer.dtype.type(factor)
        self.d_state.copy_to_device(self.state.buffer)

    def snapshot(self):
        snap = cuda.device_array_like(self.b.params)
        snap.copy_to_device(self.b.params)
        return snap

    def restore(self, snapshot):
        self.b.params.copy_to_device(snapshot)

    def evaluate(self, x, y):
        return self.b._evaluate_device(x, y)

    def _steps(self, perm, checked: bool, check_interrupt) -> int:
        """The epoch's steps in order ``perm``; ``checked``: read loss and gradient back after each
        and stop before the first non-finite one.  Returns the steps applied."""
        b, n, B = self.b, self.n, self.B
        ek = b.ek
        steps = 0
        for start in range(0, n, B):
            m = min(B, n - start)
            swb, scale, wsum = None, 0.0, float(m)
            if self.sw is not None:
                swb = self.sws[start : start + m]
                wsum = float(np.sum(self.sw[0][perm[start : start + m]], dtype=np.float64))
                # 0 would mean the plain mean to the kernels; a batch of zero weights has any other
                # scale: its weighted loss and gradient are 0, as on the other backends
                scale = 1.0 / wsum if wsum > 0 else 1.0
            if checked:
                b.zero(b.scratch)
            _net.step_loss_and_grad(b.params, b.sizes, b.acts, b.spec.loss, self.xs[start : start + m],
                                    self.ys[start : start + m], b.grad, self.work if m == B else self.work_tail,
                                    b.scratch, self.y[1], swb, scale, b.fused)
            if checked and not (math.isfinite(b.scratch.copy_to_host()[_net.SCRATCH_LOSS])
                                and b.all_finite(b.grad)):
                if b.fused:
                    b.zero(b.grad)
                return steps
            if self.hp[HP_ALPHA] > 0 and wsum > 0:
                ek.weight_penalty[grid_1d(b.spec.n_params), ELEMENT_THREADS](
                    b.params, b.grad, b.weight_mask(), self.hp[HP_ALPHA] / wsum, float(m), b.scratch,
                    _net.SCRATCH_PENALTY_ROWS)
            if self.hp[HP_CLIP] > 0:
                _net.clip_grad_norm(b.grad, self.hp[HP_CLIP], b.norm_slot, 0)
            self.t += 1
            _net.optimizer_step(self.opt.code, b.params, b.grad, self.first, self.second, self.t, self.hp, 1)
            steps += 1
            if not checked:
                check_interrupt()
        return steps

    def run_epoch(self, perm, lr, check_interrupt):
        b, n = self.b, self.n
        ek = b.ek  # noqa: F841
        self.hp[HP_LR] = lr
        self.saved.copy_to_device(b.params)
        self.saved_state.copy_to_device(self.d_state)
        t_start = self.t
        dperm = cuda.to_device(perm.astype(np.int64))
        ek.gather_rows[grid_1d(self.xd.size), ELEMENT_THREADS](self.xd, dperm, self.xs)
        ek.gather_rows[grid_1d(self.yd.size), ELEMENT_THREADS](self.yd, dperm, self.ys)
        if self.sw is not None:
            ek.gather_rows[grid_1d(n), ELEMENT_THREADS](self.sw[1].reshape(n, 1), dperm, self.sws.reshape(n, 1))
        b.zero(b.scratch)
        steps = self._steps(perm, False, check_interrupt)
        s = b.scratch.copy_to_host()
        loss_sum = s[_net.SCRATCH_LOSS_ROWS]
        if math.isfinite(loss_sum) and b.all_finite(b.params):
            return stats(loss_sum, n, s[_net.SCRATCH_CORRECT], s[_net.SCRATCH_COUNTED], steps, False,
                         s[_net.SCRATCH_PENALTY_ROWS])
        # Replay the epoch from its start, checking every step, and stop before the bad one.
        b.params.copy_to_device(self.saved)
        self.d_state.copy_to_device(self.saved_state)
        self.t = t_start
        steps = self._steps(perm, True, check_interrupt)
        return stats(float("nan"), 0, 0, 0, steps, diverged=True)
