"""``fastbp.MLP``: validation, backend dispatch, save and load.

The model owns one flat parameter vector θ (``params``); ``weights`` and
``biases`` are views into it.  Every public method validates its arguments
completely before it touches θ or an output array, so a call that raises
leaves the model as it was.

Threads: ``predict``, ``loss_and_grad`` and ``evaluate`` may be called on one
model from several threads at once.  Each thread has its own scratch space
(workspaces, scratch gradient), the CPU kernels release the GIL, and
:mod:`fastbp._threads` decides which calls run their parallel twins.  ``fit``
holds the model's lock (two ``fit`` calls on one model run one after the
other); a ``predict`` beside a running ``fit`` sees θ as it is at that moment.
The cuda backend serialises the calls on one model (its device buffers are
per model).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import zipfile
from collections.abc import Sequence

import numpy as np

from . import activations as _A
from . import config as _config
from . import losses as _L
from . import reference as _ref
from ._resources import ResourceError, check_fits
from ._threads import GATE, min_parallel_work
from ._tiers import TIERS
from ._validation import (
    _all_finite,
    _bounds,
    _label_bounds,
    as_array,
    as_float_matrix,
    check_batch,
    check_dtype,
    check_int,
)
from .layout import n_params, split_params, workspace_size
from .training import _check_sample_weight

_CPU = None


def _cpu():
    """fastbp.cpu, imported on first use (``import fastbp`` does not load the compiled kernels;
    a function-level import would cost 0.5 µs per call on the hot path)."""
    global _CPU
    if _CPU is None:
        from . import cpu

        _CPU = cpu
    return _CPU

__all__ = ["MLP"]

BACKENDS = ("cpu", "numpy", "cuda")
INITS = ("xavier", "he")
_FILE_FORMAT = "fastbp-mlp"
_FILE_VERSION = 1
_MAX_CACHED_WORKSPACES = 4
_NO_LABELS = np.empty(0, dtype=np.int64)  # writeable: a read-only array is another Numba type


def _check_sizes(sizes) -> tuple[int, ...]:
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, (Sequence, np.ndarray)):
        raise TypeError(f"sizes: expected a sequence of layer widths [n0, n1, ..., nL], got {sizes!r}")
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes: expected at least two widths (input and output), got {sizes}")
    out = []
    for i, s in enumerate(sizes):
        out.append(check_int(f"sizes[{i}]", s, minimum=1))
    return tuple(out)


def _check_activations(activations, n_layers: int) -> tuple[str, ...]:
    if isinstance(activations, str):
        names = [activations] * n_layers
    elif isinstance(activations, Sequence):
        names = list(activations)
        if len(names) != n_layers:
            raise ValueError(
                f"activations: expected one name or a sequence of {n_layers} names (one per layer), got {len(names)}"
            )
    else:
        raise TypeError(f"activations: expected a name or a sequence of names, got {activations!r}")
    for i, name in enumerate(names):
        if not isinstance(name, str) or name not in _A.CODES:
            raise ValueError(f"activations[{i}]: unknown activation {name!r}; expected one of {', '.join(_A.NAMES)}")
    for i, name in enumerate(names[:-1]):
        if name == "softmax":
            raise ValueError(f"activations[{i}]: softmax is allowed on the output layer only")
    return tuple(names)


def _check_loss(loss, output_activation: str) -> str:
    if not isinstance(loss, str) or loss not in _L.CODES:
        raise ValueError(f"loss: unknown loss {loss!r}; expected one of {', '.join(_L.NAMES)}")
    required = _L.REQUIRED_OUTPUT[_L.CODES[loss]]
    if required is not None and _A.CODES[output_activation] != required:
        need = _A.NAMES[required]
        raise ValueError(
            f"loss: {loss!r} needs a {need} output layer, but the last activation is {output_activation!r}"
        )
    return loss


def _rng(seed) -> np.random.Generator:
    if seed is None or isinstance(seed, np.random.Generator):
        return np.random.default_rng(seed)
    return np.random.default_rng(check_int("seed", seed, minimum=0))


class MLP:
    """A multilayer perceptron trained by backpropagation with compiled kernels.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths [n0, n1, ..., nL]: n0 inputs, nL outputs, at least two entries.
    activations : str or sequence of str, default "sigmoid"
        One activation for every layer, or one per layer (L names).  Any of
        identity, sigmoid, tanh, relu, leaky_relu, softplus, elu, gelu, and
        softmax (output layer only).
    loss : {"mse", "cross_entropy", "binary_cross_entropy"}, default "mse"
        ``cross_entropy`` needs a softmax output, ``binary_cross_entropy`` a sigmoid one.
    dtype : np.float32 or np.float64, default np.float32
        Precision of parameters, activations and gradients.  Inputs are
        converted to it; outputs have it.
    init : {"xavier", "he"}, default "xavier"
        Xavier (Glorot) uniform, U(±sqrt(6 / (n_in + n_out))), or He normal,
        N(0, 2 / n_in).  Biases start at zero.
    seed : int, numpy.random.Generator or None
        Seed of the initialisation.
    backend : {"cpu", "numpy", "cuda"}, default "cpu"
        ``cpu``: Numba-compiled kernels; ``numpy``: the NumPy reference;
        ``cuda``: Numba CUDA kernels.

    Attributes
    ----------
    params : 1-D ndarray
        θ = [W^1.ravel(), b^1, W^2.ravel(), b^2, ...], writable in place.
    weights, biases : tuple of ndarray
        Views into ``params``: W^l of shape (n_l, n_{l-1}) and b^l of shape (n_l,).
    """

    def __init__(
        self,
        sizes,
        activations="sigmoid",
        loss: str = "mse",
        dtype=np.float32,
        init: str = "xavier",
        seed=None,
        backend: str = "cpu",
    ):
        self.sizes = _check_sizes(sizes)
        self.activations = _check_activations(activations, len(self.sizes) - 1)
        self.loss = _check_loss(loss, self.activations[-1])
        self.dtype = check_dtype(dtype)
        if init not in INITS:
            raise ValueError(f"init: unknown initialisation {init!r}; expected one of {', '.join(INITS)}")
        self.init = init
        rng = _rng(seed)
        self.backend = self._check_backend(backend)
        self._setup()
        for W in self.weights:
            n_out, n_in = W.shape
            if init == "xavier":
                lim = np.sqrt(6.0 / (n_in + n_out))
                W[...] = rng.uniform(-lim, lim, size=W.shape)
            else:
                W[...] = rng.standard_normal(W.shape) * np.sqrt(2.0 / n_in)

    # -- construction helpers ---------------------------------------------------------------

    @staticmethod
    def _check_backend(backend) -> str:
        if backend not in BACKENDS:
            raise ValueError(f"backend: unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        if backend == "cuda":
            from .cuda import unavailable_reason

            why = unavailable_reason()
            if why is not None:
                raise RuntimeError(f"backend: 'cuda' cannot run here: {why}")
        return backend

    def _setup(self, params: np.ndarray | None = None) -> None:
        self._sizes_arr = np.array(self.sizes, dtype=np.int64)
        self._acts_arr = np.array([_A.CODES[a] for a in self.activations], dtype=np.int64)
        self._loss_code = _L.CODES[self.loss]
        if params is None:
            P = n_params(self.sizes)
            # θ, and the float64 draws of the largest layer's initialisation
            largest = max(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:], strict=True))
            check_fits(f"sizes: the {P:,} parameters of a network {list(self.sizes)} in {self.dtype.name}",
                       P * self.dtype.itemsize + 8 * largest)
            params = np.zeros(P, dtype=self.dtype)
        self._params = params
        self._weights, self._biases = split_params(self._params, self.sizes)
        # "no targets" and "no weights" for the kernels (empty arrays, see _kernel_targets)
        self._no_targets = np.empty((0, self.sizes[-1]), dtype=self.dtype)
        self._no_weights = np.empty(0, dtype=self.dtype)
        self._cuda_state = None
        self._init_sync()

    def _init_sync(self) -> None:
        # Per-thread scratch (workspaces by batch size, a scratch gradient) and the model's lock.
        self._local = threading.local()
        self._lock = threading.RLock()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for key in ("_local", "_lock", "_cuda_state"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._cuda_state = None
        self._init_sync()

    @property
    def _cuda(self):
        """Device buffers of the cuda backend (created on first use)."""
        if self._cuda_state is None:
            from .cuda.backend import CudaState

            self._cuda_state = CudaState(self)
        return self._cuda_state

    # -- parameters ---------------------------------------------------------------------------

    @property
    def params(self) -> np.ndarray:
        """θ, the flat parameter vector (writable in place; assignment copies into it)."""
        return self._params

    @params.setter
    def params(self, value) -> None:
        if value is self._params:
            # ``net.params -= lr * g`` updates θ in place, then assigns θ to itself: nothing is
            # left to copy, and a check now could not undo the update (it would cost a scan
            # and a copy of θ per step: 0.1 ms for 235k parameters).
            return
        arr = as_array("params", value)
        if arr.shape != self._params.shape:
            raise ValueError(f"params: expected shape {self._params.shape}, got {arr.shape}")
        arr = arr.astype(self.dtype, copy=False)
        if not _all_finite(arr):
            raise ValueError("params: contains NaN or infinity")
        self._params[...] = arr

    @property
    def weights(self) -> tuple[np.ndarray, ...]:
        """W^1..W^L, views into ``params`` of shape (n_l, n_{l-1})."""
        return self._weights

    @property
    def biases(self) -> tuple[np.ndarray, ...]:
        """b^1..b^L, views into ``params`` of shape (n_l,)."""
        return self._biases

    @property
    def n_params(self) -> int:
        """Length of θ."""
        return self._params.shape[0]

    def __repr__(self) -> str:
        return (
            f"MLP(sizes={list(self.sizes)}, activations={list(self.activations)}, loss={self.loss!r}, "
            f"dtype=np.{self.dtype.name}, backend={self.backend!r})"
        )

    # -- input checks -------------------------------------------------------------------------

    def _workspace(self, n: int) -> np.ndarray:
        """This thread's workspace for a batch of ``n`` (a few batch sizes are kept per thread)."""
        cache = getattr(self._local, "workspaces", None)
        if cache is None:
            cache = self._local.workspaces = {}
        w = cache.get(n)
        if w is None:
            size = workspace_size(self.sizes, n)
            check_fits(f"x: the workspace of a batch of {n:,} samples ({size:,} {self.dtype.name} elements)",
                       size * self.dtype.itemsize)
            if len(cache) >= _MAX_CACHED_WORKSPACES:
                cache.pop(next(iter(cache)))
            w = np.empty(size, dtype=self.dtype)
            cache[n] = w
        return w

    def _check_x(self, x, name: str = "x") -> tuple[np.ndarray, bool]:
        arr = as_array(name, x)
        single = arr.ndim == 1
        arr = check_batch(name, arr, self.sizes[0])
        return as_float_matrix(name, arr, self.dtype), single

    def _check_y(self, y, n: int, name: str = "y") -> np.ndarray:
        """Targets as a C-contiguous (N, nL) float array or an (N,) int64 label array."""
        n_out = self.sizes[-1]
        arr = as_array(name, y)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim == 1 and n == 1 and arr.shape[0] == n_out and n_out > 1:
            arr = arr.reshape(1, n_out)
        if arr.ndim == 2:
            if arr.shape != (n, n_out):
                raise ValueError(f"{name}: expected shape ({n}, {n_out}) to match x, got {arr.shape}")
            return self._check_target_values(name, as_float_matrix(name, arr, self.dtype))
        if arr.ndim != 1:
            raise ValueError(f"{name}: expected shape ({n}, {n_out}) or ({n},), got {arr.shape}")
        if arr.shape[0] != n:
            raise ValueError(f"{name}: has {arr.shape[0]} samples but x has {n}")
        if self.loss != "cross_entropy" and n_out == 1:
            return self._check_target_values(name, as_float_matrix(name, arr.reshape(n, 1), self.dtype))
        if arr.dtype.kind == "f":
            raise TypeError(
                f"{name}: float labels given where integer class labels are meant; pass integer labels "
                f"in [0, {n_out}) of shape ({n},), or targets of shape ({n}, {n_out})"
            )
        lo, hi = _label_bounds(arr)
        if lo < 0 or hi >= n_out:
            raise ValueError(f"{name}: class labels must lie in [0, {n_out}), got values in [{lo}, {hi}]")
        return np.ascontiguousarray(arr, dtype=np.int64)

    def _check_target_values(self, name: str, y: np.ndarray) -> np.ndarray:
        if self.loss in ("cross_entropy", "binary_cross_entropy"):
            lo, hi = _bounds(y)
            if lo < 0 or hi > 1:
                raise ValueError(
                    f"{name}: {self.loss} targets must be probabilities in [0, 1], got values in [{lo}, {hi}]"
                )
        return y

    def _check_out(self, out) -> np.ndarray:
        if out is None:
            return np.empty_like(self._params)
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out: expected a numpy.ndarray, got {type(out).__name__}")
        if out.dtype != self.dtype:
            raise TypeError(f"out: expected dtype {self.dtype}, got {out.dtype}")
        if out.shape != self._params.shape:
            raise ValueError(f"out: expected shape {self._params.shape}, got {out.shape}")
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("out: expected a writeable C-contiguous array")
        if np.may_share_memory(out, self._params):
            raise ValueError("out: must not share memory with params")
        return out

    # -- computation ----------------------------------------------------------------------------

    def predict(self, x) -> np.ndarray:
        """Network output a^L.

        Parameters
        ----------
        x : array_like, shape (N, n0) or (n0,)
            Inputs, one sample per row; a 1-D x is one sample.

        Returns
        -------
        ndarray of shape (N, nL), or (nL,) for a 1-D x, in the model's dtype.
        """
        if self.backend == "cuda":
            with self._lock:
                st = self._cuda
                xd, single, on_device = st.check_x(x)
                st.upload_params()
                out = st.forward(xd)
                if on_device:
                    return out
                out = out.copy_to_host()
                return out[0] if single else out
        xa, single = self._check_x(x)
        out = self._forward_checked(xa)
        return out[0] if single else out

    def _forward_checked(self, xa: np.ndarray) -> np.ndarray:
        if self.backend == "numpy":
            return _ref.forward(self._params, self.sizes, self._acts_arr, xa)
        if self.backend == "cuda":
            from numba import cuda

            with self._lock:
                self._cuda.upload_params()
                return self._cuda.forward(cuda.to_device(xa)).copy_to_host()
        n = xa.shape[0]
        out = np.empty((n, self.sizes[-1]), dtype=self.dtype)
        step = self._chunk_rows()
        for start in range(0, n, step):
            self._cpu_forward(xa[start : start + step], out[start : start + step])
        return out

    def _chunk_rows(self) -> int:
        """Rows of a batch whose workspace fits in ``config.MAX_WORKSPACE_BYTES`` (a multiple of 4,
        the row block of the forward product, so chunking leaves every result bitwise the same)."""
        limit = _config.MAX_WORKSPACE_BYTES
        cached = getattr(self, "_chunk_cache", None)
        if cached is None or cached[0] != limit:
            per_row = workspace_size(self.sizes, 1) * self.dtype.itemsize
            cached = self._chunk_cache = (limit, max(4, limit // per_row // 4 * 4))
        return cached[1]

    def _loss_checked(self, xa: np.ndarray, ya: np.ndarray) -> tuple[float, np.ndarray]:
        """(C, a^L) of checked host arrays in one pass (the gradient is computed and dropped)."""
        if self.backend == "numpy":
            c = _ref.loss_and_grad(self._params, self.sizes, self._acts_arr, self._loss_code, xa, ya)[0]
            return c, _ref.forward(self._params, self.sizes, self._acts_arr, xa)
        if self.backend == "cuda":
            from numba import cuda

            with self._lock:
                st = self._cuda
                st.upload_params()
                xd = cuda.to_device(xa)
                yd = cuda.to_device(ya.reshape(-1, 1) if ya.ndim == 1 else ya)
                c, _ = st.evaluate(xd, yd, 1 if ya.ndim == 1 else 0)
                return c, st.forward(xd).copy_to_host()
        n, nL = xa.shape[0], self.sizes[-1]
        step = self._chunk_rows()
        if n <= step:
            # The forward twin (what predict runs) and BP1 for C: evaluate compiles no training step.
            out = np.empty((n, nL), dtype=self.dtype)
            work = self._workspace(n)
            self._cpu_forward(xa, out)
            zo = workspace_size(self.sizes, n) - 2 * n * nL  # z^L, then a^L
            zL = work[zo : zo + n * nL].reshape(n, nL)
            aL = work[zo + n * nL : zo + 2 * n * nL].reshape(n, nL)
            yk, lab, sw = self._kernel_targets(ya)
            c = _cpu()._layers.output_delta_body(self._loss_code, self._acts_arr[-1], zL, aL, yk, lab, zL, sw, False)
            return float(c), out
        # A large set in chunks: C is the mean of the chunk means weighted by their rows.
        out = np.empty((n, nL), dtype=self.dtype)
        total = 0.0
        for start in range(0, n, step):
            c, part = self._loss_checked(xa[start : start + step], ya[start : start + step])
            total += c * part.shape[0]
            out[start : start + step] = part
        return total / n, out

    def _scratch_grad(self) -> np.ndarray:
        """This thread's scratch gradient (for calls that compute and drop one)."""
        g = getattr(self._local, "grad", None)
        if g is None or g.shape != self._params.shape:
            g = self._local.grad = np.empty_like(self._params)
        return g

    def _run_twin(self, serial, parallel, n: int, n_params: int, forward_only: bool, *args):
        """Run the serial or the parallel twin of a whole-network kernel on ``n`` rows.

        The parallel twin runs only where it pays, no other thread is inside a compiled model
        call (:mod:`fastbp._threads`), and it is compiled or cached, or the serial one has run
        long enough to pay for compiling it (:mod:`fastbp._tiers`).  Below the cut-over every
        caller runs serial, whatever the
        other threads do, so such a call does not register with the gate (1-2 µs saved).
        """
        net = _cpu().network
        if not net.parallel_pays(n, n_params, forward_only):
            return serial(*args)
        alone = GATE.enter()
        try:
            if not net.parallel_pays(n, n_params, forward_only, min_parallel_work(alone)):
                return serial(*args)
            if TIERS.ready(parallel, self.dtype, args):
                return parallel(*args)
            # Not compiled yet, and the serial twin has not yet run long enough to pay for it.
            t0 = time.perf_counter()
            try:
                return serial(*args)
            finally:
                TIERS.charge(parallel, self.dtype, time.perf_counter() - t0)
        finally:
            GATE.leave()

    def _cpu_forward(self, xa: np.ndarray, out: np.ndarray) -> None:
        """a^L of checked x into ``out``, with this thread's workspace."""
        net = _cpu().network
        n = xa.shape[0]
        self._run_twin(net._forward_serial, net._forward_parallel, n, self._params.shape[0], True,
                       self._params, self._sizes_arr, self._acts_arr, xa, out, self._workspace(n))

    def _kernel_targets(self, ya: np.ndarray, sw: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """(targets, labels, weights) of checked ``ya`` and ``sw`` in the one form the kernels are
        compiled for (one signature per dtype): (N, nL) targets with no labels, or (N,) labels with
        targets of no rows; weights, or an empty vector for none."""
        weights = self._no_weights if sw is None else sw
        if ya.ndim == 1:
            return self._no_targets, ya, weights
        return ya, _NO_LABELS, weights

    def _cpu_loss_and_grad(self, theta, xa, ya, grad, sw=None) -> tuple[float, np.ndarray]:
        """(C, this thread's workspace) at θ = ``theta`` of checked arrays; ∂C/∂θ into ``grad``."""
        net = _cpu().network
        n = xa.shape[0]
        work = self._workspace(n)
        yk, lab, swk = self._kernel_targets(ya, sw)
        c = self._run_twin(net._loss_and_grad_serial, net._loss_and_grad_parallel, n, theta.shape[0], False,
                           theta, self._sizes_arr, self._acts_arr, self._loss_code, xa, yk, lab, grad, work, swk)
        return float(c), work

    def _loss_and_grad_at(self, theta: np.ndarray, xa, ya, sw, grad: np.ndarray) -> float:
        """C and ∂C/∂θ at a trial θ (host arrays, already checked); used by L-BFGS."""
        if self.backend == "cuda":
            from numba import cuda

            st = self._cuda  # the caller (fit) holds the model's lock
            st.params.copy_to_device(theta)
            swd, scale = (None, 0.0) if sw is None else (cuda.to_device(sw), 1.0 / float(np.sum(sw, dtype=np.float64)))
            yd = cuda.to_device(ya.reshape(-1, 1) if ya.ndim == 1 else ya)
            s = st.loss_grad(cuda.to_device(xa), yd, 1 if ya.ndim == 1 else 0, swd, scale).copy_to_host()
            st.grad.copy_to_host(grad)
            return float(s[0])
        return self._cpu_loss_and_grad(theta, xa, ya, grad, sw)[0]

    def loss_and_grad(self, x, y, out: np.ndarray | None = None, sample_weight=None) -> tuple[float, np.ndarray]:
        """Mean loss C over a minibatch and its gradient ∂C/∂θ.

        Parameters
        ----------
        x : array_like, shape (N, n0) or (n0,)
            Inputs.
        y : array_like
            Targets of shape (N, nL); or integer class labels of shape (N,)
            (cross-entropy, or any loss with nL > 1: labels stand for one-hot
            rows); or, for a single output (nL = 1), values of shape (N,).
        out : ndarray, optional
            Where to write the gradient: C-contiguous, of the model's dtype and
            shape ``params.shape``.  Nothing is allocated when given.
        sample_weight : array_like of shape (N,), optional
            Non-negative weights w_n: C = Σ_n w_n ℓ_n / Σ_n w_n.

        Returns
        -------
        loss : float
        grad : ndarray
            ∂C/∂θ laid out like ``params`` (``out`` when given).
        """
        if self.backend == "cuda":
            with self._lock:
                return self._loss_and_grad_cuda(x, y, out, sample_weight)
        xa, _ = self._check_x(x)
        ya = self._check_y(y, xa.shape[0])
        sw = _check_sample_weight(sample_weight, xa.shape[0], self.dtype)
        g = self._check_out(out)
        if self.backend == "numpy":
            loss, ref = _ref.loss_and_grad(
                self._params, self.sizes, self._acts_arr, self._loss_code, xa, ya, sample_weight=sw
            )
            g[...] = ref
            return loss, g
        return self._cpu_loss_and_grad(self._params, xa, ya, g, sw)[0], g

    def _loss_and_grad_cuda(self, x, y, out, sample_weight):
        from .cuda.backend import as_device_array, is_device_array

        st = self._cuda
        xd, _, _ = st.check_x(x)
        n = xd.shape[0]
        yd, labels = st.check_y(y, n)
        swd, scale = st.check_sw(sample_weight, n)
        dev_out = out is not None and is_device_array(out)
        if dev_out:
            g = as_device_array(out)
            if g.shape != (self.n_params,) or np.dtype(g.dtype) != self.dtype:
                raise ValueError(f"out: expected a device array of shape ({self.n_params},) and dtype {self.dtype}")
        else:
            g = self._check_out(out)
        st.upload_params()
        s = st.loss_grad(xd, yd, labels, swd, scale, grad=st.grad if not dev_out else g).copy_to_host()
        if dev_out:
            return float(s[0]), g
        st.grad.copy_to_host(g)
        return float(s[0]), g

    def evaluate(self, x, y) -> dict:
        """Loss (and accuracy, for a classifier) on a data set, without changing anything.

        Parameters
        ----------
        x, y : array_like
            As for :meth:`loss_and_grad`.

        Returns
        -------
        dict
            ``{"loss": float}``, plus ``"accuracy"`` for softmax + cross-entropy
            (argmax) and sigmoid + binary cross-entropy (threshold 0.5).
        """
        from .training import evaluate

        if self.backend == "cuda":
            from .training import _is_classifier

            with self._lock:
                st = self._cuda
                xd, _, _ = st.check_x(x)
                yd, labels = st.check_y(y, xd.shape[0])
                st.upload_params()
                loss, acc = st.evaluate(xd, yd, labels)
            return {"loss": loss} if not _is_classifier(self) else {"loss": loss, "accuracy": acc}
        xa, _ = self._check_x(x)
        ya = self._check_y(y, xa.shape[0])
        loss, acc = evaluate(self, xa, ya)
        return {"loss": loss} if acc is None else {"loss": loss, "accuracy": acc}

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
    ) -> dict:
        """Train by minibatch gradient descent (or full-batch L-BFGS), continuing from ``params``.

        The minibatch loop of each epoch runs compiled (:func:`fastbp.cpu.train.train_epoch`):
        gather the shuffled batch, loss and gradient, optional norm clipping, optimizer step.

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
        clip_norm : float, optional
            Clip the gradient to this Euclidean norm before each step.

        Returns
        -------
        dict
            History: lists ``loss``, ``lr``, ``time`` (seconds per epoch), and for classifiers
            ``accuracy`` (running, over the epoch's minibatches); with validation data
            ``val_loss`` (and ``val_accuracy``).

        Raises
        ------
        ValueError, TypeError
            On a bad argument, before any parameter changes.
        FloatingPointError
            If the loss or gradient becomes non-finite; ``params`` then hold the last finite step.
        """
        from .training import fit

        with self._lock:
            return fit(
                self,
                x,
                y,
                epochs=epochs,
                batch_size=batch_size,
                optimizer=optimizer,
                lr=lr,
                shuffle=shuffle,
                seed=seed,
                validation_data=validation_data,
                verbose=verbose,
                sample_weight=sample_weight,
                schedule=schedule,
                patience=patience,
                min_delta=min_delta,
                restore_best=restore_best,
                callback=callback,
                clip_norm=clip_norm,
            )

    def _optimizer_state(self, opt) -> tuple[np.ndarray, int]:
        """The optimizer state kept on the model (reset when the optimizer or its settings change)."""
        key = (type(opt), opt.hyper())
        if getattr(self, "_opt_key", None) != key:
            self._opt_key = key
            self._opt_buf = np.zeros(2 * self.n_params, dtype=self.dtype)
            self._opt_t = 0
        return self._opt_buf, self._opt_t

    # -- persistence ----------------------------------------------------------------------------

    def save(self, path) -> None:
        """Write the model to ``path`` (a .npz archive), atomically.

        The archive is written to a temporary file in the same directory and
        renamed over ``path``, so a crash never leaves a half-written model.

        Parameters
        ----------
        path : str or os.PathLike
            Destination file; written exactly as named.
        """
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".fastbp-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    format=np.array(_FILE_FORMAT),
                    version=np.array(_FILE_VERSION),
                    sizes=np.array(self.sizes, dtype=np.int64),
                    activations=np.array(self.activations),
                    loss=np.array(self.loss),
                    dtype=np.array(self.dtype.name),
                    init=np.array(self.init),
                    params=self._params,
                )
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path, backend: str = "cpu") -> MLP:
        """Read a model written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike
        backend : {"cpu", "numpy", "cuda"}, default "cpu"

        Returns
        -------
        MLP

        The file is untrusted input.  Its description (format, version, sizes, activations,
        loss, dtype) and the shape and dtype of its parameters are checked against each other,
        and the memory they need against what is available, before anything sized by the file
        is allocated; every read is bounded by the sizes the description implies, and the
        archive's checksums are verified.

        Raises
        ------
        FileNotFoundError, PermissionError, IsADirectoryError
            If ``path`` cannot be opened.
        ValueError
            If the file is not a fastbp model file, is damaged (truncated, altered, entries
            missing, swapped or added), or holds an invalid or inconsistent model; the message
            names the path.
        fastbp.ResourceError
            If the model it describes would not fit in the available memory (a ``ValueError``
            and a ``MemoryError``).
        """
        path = os.fspath(path)
        backend = cls._check_backend(backend)
        with open(path, "rb") as fh:  # a missing or unreadable file raises its OSError as it is
            try:
                desc, params = _read_model_file(fh)
            except _FileError as e:
                raise ValueError(f"path: {path!r} {e}") from None
            except ResourceError as e:
                raise ResourceError(f"path: {path!r} holds a model too large for this machine ({e})") from None
            except Exception as e:  # noqa: BLE001 - any other failure to parse is a damaged file
                why = f"{type(e).__name__}: {e}"
                raise ValueError(f"path: {path!r} is not a readable fastbp model file ({why})") from None
        net = cls.__new__(cls)
        net.sizes, net.activations, net.loss, net.dtype, net.init = desc
        net.backend = backend
        net._setup(params)
        return net


# -- the model file ---------------------------------------------------------------------------------

#: Entries of a model file: name -> (expected kind of dtype, number of dimensions).
_ENTRIES = {
    "format": ("U", 0),
    "version": ("iu", 0),
    "sizes": ("iu", 1),
    "activations": ("U", 1),
    "loss": ("U", 0),
    "dtype": ("U", 0),
    "init": ("U", 0),
    "params": ("f", 1),
}
_OPTIONAL = {"init"}
_MAX_LAYERS = 10_000
_MAX_SMALL_ENTRY = 1 << 20


class _FileError(Exception):
    """A model file that is damaged or not a model file (the message completes 'path: ... ')."""


def _entry_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo):
    """(shape, dtype, header length) of one .npy entry, from its header alone."""
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise _FileError(f"has an entry {info.filename!r} of unsupported .npy version {version}")
        return shape, dtype, f.tell(), fortran


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, shape, dtype, header_len: int) -> np.ndarray:
    """The array of one entry, reading exactly the bytes its checked header implies (checksum verified)."""
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    nbytes = count * dtype.itemsize
    if info.file_size != header_len + nbytes:
        raise _FileError(
            f"is damaged: entry {info.filename!r} has {info.file_size} bytes, its header implies {header_len + nbytes}"
        )
    out = np.empty(count, dtype=dtype)
    view = memoryview(out).cast("B")
    with zf.open(info) as f:
        f.read(header_len)
        pos = 0
        while pos < nbytes:
            chunk = f.read(min(nbytes - pos, 1 << 24))
            if not chunk:
                raise _FileError(f"is damaged: entry {info.filename!r} ends early")
            view[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
        if f.read(1):  # also makes zipfile check the CRC-32 of the whole entry
            raise _FileError(f"is damaged: entry {info.filename!r} is longer than its header implies")
    return out.reshape(shape)


def _read_model_file(fh):
    """((sizes, activations, loss, dtype, init), params) of an open model file; checks everything first."""
    try:
        zf = zipfile.ZipFile(fh)
    except zipfile.BadZipFile:
        raise _FileError("is not a readable fastbp model file (truncated, damaged, or not a .npz archive)") from None
    with zf:
        infos = {}
        for info in zf.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if name not in _ENTRIES or name in infos:
                raise _FileError(f"is not a fastbp model file (unexpected entry {info.filename!r})")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise _FileError(f"has an entry {info.filename!r} in an unsupported compression")
            infos[name] = info
        missing = [k for k in _ENTRIES if k not in infos and k not in _OPTIONAL]
        if missing:
            raise _FileError(f"is a damaged fastbp model file (missing entries: {', '.join(missing)})")
        headers = {}
        for name, info in infos.items():
            shape, dtype, header_len, fortran = _entry_header(zf, info)
            kinds, ndim = _ENTRIES[name]
            if dtype.kind not in kinds or len(shape) != ndim or dtype.hasobject:
                raise _FileError(f"is damaged: entry {name!r} has dtype {dtype} and shape {shape}")
            if fortran and ndim > 1:
                raise _FileError(f"is damaged: entry {name!r} is Fortran-ordered")
            if name != "params" and info.file_size > _MAX_SMALL_ENTRY:
                raise _FileError(f"is damaged: entry {name!r} is {info.file_size} bytes long")
            headers[name] = (info, shape, dtype, header_len)

        def small(name):
            info, shape, dtype, header_len = headers[name]
            return _read_entry(zf, info, shape, dtype, header_len)

        if str(small("format")) != _FILE_FORMAT:
            raise _FileError("is not a fastbp model file")
        version = int(small("version"))
        if version != _FILE_VERSION:
            raise _FileError(f"has unsupported format version {version} (this fastbp reads {_FILE_VERSION})")
        if not 2 <= headers["sizes"][1][0] <= _MAX_LAYERS + 1:
            raise _FileError(f"holds an invalid model description (sizes of length {headers['sizes'][1][0]})")
        try:
            sizes = _check_sizes([int(v) for v in small("sizes")])
            activations = _check_activations([str(v) for v in small("activations")], len(sizes) - 1)
            loss = _check_loss(str(small("loss")), activations[-1])
            dtype = check_dtype(str(small("dtype")))
            init = str(small("init")) if "init" in headers else "xavier"
            if init not in INITS:
                raise ValueError(f"init: unknown initialisation {init!r}")
        except (TypeError, ValueError) as e:
            raise _FileError(f"holds an invalid model description ({e})") from None
        info, shape, pdtype, header_len = headers["params"]
        P = n_params(sizes)
        if pdtype.newbyteorder("=") != dtype or shape != (P,):
            raise _FileError(
                f"holds params of dtype {pdtype} and shape {shape}; its description {list(sizes)} in "
                f"{dtype.name} implies {dtype.name} and ({P},)"
            )
        check_fits(f"sizes: the {P:,} parameters of a network {list(sizes)} in {dtype.name}", P * dtype.itemsize)
        params = _read_entry(zf, info, shape, pdtype, header_len)
    params = params.astype(dtype, copy=False)  # native byte order
    if not _all_finite(params):
        raise _FileError("holds non-finite parameters")
    return (sizes, activations, loss, dtype, init), params
