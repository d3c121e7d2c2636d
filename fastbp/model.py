"""``fastbp.MLP``: θ, validation at the boundary, save and load; the rest is its backend's.

The model owns one flat parameter vector θ (``params``); ``weights`` and ``biases`` are views
into it.  What the network is (widths, activations, loss, dtype) is its :class:`NetworkSpec`
(``net.spec``); what computes is its backend (:mod:`fastbp.backends`), chosen once in the
constructor; ``fit`` is the one driver of :mod:`fastbp.training`.  Every public method
validates its arguments completely before it touches θ or an output array, so a call that
raises leaves the model as it was.

Threads: ``predict``, ``loss_and_grad`` and ``evaluate`` may be called on one model from
several threads at once (the cpu backend gives each thread its own scratch space; the cuda
backend serialises the calls on one model).  ``fit`` holds the model's lock (two ``fit`` calls
on one model run one after the other); a ``predict`` beside a running ``fit`` sees θ as it is
at that moment.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from . import training as _training
from ._modelfile import INITS, ModelFileError, read_model_file, write_model_file
from ._resources import ResourceError, check_fits
from ._validation import all_finite, as_array, check_int
from .backends import Backend, check_backend_name, get_backend
from .layout import NetworkSpec
from .optim import OptimizerState

__all__ = ["MLP"]

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
    spec : NetworkSpec
        The kernel arguments of the network (``spec.sizes``, ``spec.activations``, ``spec.loss``).
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
        spec = NetworkSpec(sizes, activations, loss, dtype)
        if init not in INITS:
            raise ValueError(f"init: unknown initialisation {init!r}; expected one of {', '.join(INITS)}")
        rng = _rng(seed)
        check_backend_name(backend)
        P = spec.n_params
        # θ, and the float64 draws of the largest layer's initialisation
        largest = max(a * b for a, b in zip(spec.widths[:-1], spec.widths[1:], strict=True))
        check_fits(f"sizes: the {P:,} parameters of a network {list(spec.widths)} in {spec.dtype.name}",
                   P * spec.dtype.itemsize + 8 * largest)
        self._setup(spec, init, backend, np.zeros(P, dtype=spec.dtype))
        for W in self.weights:
            n_out, n_in = W.shape
            if init == "xavier":
                lim = np.sqrt(6.0 / (n_in + n_out))
                W[...] = rng.uniform(-lim, lim, size=W.shape)
            else:
                W[...] = rng.standard_normal(W.shape) * np.sqrt(2.0 / n_in)

    def _setup(self, spec: NetworkSpec, init: str, backend: str, params: np.ndarray) -> None:
        self._spec = spec
        self.init = init
        self._params = params
        self._weights, self._biases = spec.split(params)
        self._opt_state = None  # fastbp.optim.OptimizerState of the last fit
        self._lock = threading.RLock()
        self._backend = get_backend(backend, spec)

    def __getstate__(self) -> dict:
        return {"spec": self._spec, "init": self.init, "backend": self._backend.name, "params": self._params,
                "opt_state": self._opt_state}

    def __setstate__(self, state: dict) -> None:
        self._setup(state["spec"], state["init"], state["backend"], state["params"])
        self._opt_state = state["opt_state"]

    # -- what the network is --------------------------------------------------------------------

    @property
    def spec(self) -> NetworkSpec:
        """The network's :class:`NetworkSpec`: what the kernels take besides θ."""
        return self._spec

    @property
    def sizes(self) -> tuple[int, ...]:
        """Layer widths (n0, ..., nL)."""
        return self._spec.widths

    @property
    def activations(self) -> tuple[str, ...]:
        """Activation names, one per layer."""
        return self._spec.activation_names

    @property
    def loss(self) -> str:
        """Loss name."""
        return self._spec.loss_name

    @property
    def dtype(self) -> np.dtype:
        """dtype of θ, of the activations and of the gradients."""
        return self._spec.dtype

    @property
    def backend(self) -> str:
        """Name of the backend that computes: "cpu", "numpy" or "cuda" (assign a name to switch;
        θ and the optimizer state are kept)."""
        return self._backend.name

    @backend.setter
    def backend(self, name) -> None:
        with self._lock:
            self._backend = get_backend(name, self._spec)

    # -- for code that drives the backend protocol (fastbp.training, fastbp.sklearn) ------------

    @property
    def backend_object(self) -> Backend:
        """The :class:`fastbp.backends.Backend` that computes for this model.

        Its methods take checked arrays in its own form (see the protocol); code that calls
        them instead of the model's methods checks its own input.
        """
        return self._backend

    @property
    def lock(self) -> threading.RLock:
        """The model's re-entrant lock: ``fit`` and a change of backend hold it, so that a block
        holding it sees θ and the optimizer state change only by its own calls."""
        return self._lock

    @property
    def optimizer_state(self) -> OptimizerState | None:
        """The :class:`fastbp.optim.OptimizerState` of the last ``fit`` (moments, momentum, step
        count), which the next ``fit`` with the same optimizer continues; None before any."""
        return self._opt_state

    @optimizer_state.setter
    def optimizer_state(self, state: OptimizerState | None) -> None:
        if state is not None and not isinstance(state, OptimizerState):
            raise TypeError(f"optimizer_state: expected a fastbp.optim.OptimizerState or None, got {state!r}")
        self._opt_state = state

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
            # and a copy of θ per step).
            return
        arr = as_array("params", value)
        if arr.shape != self._params.shape:
            raise ValueError(f"params: expected shape {self._params.shape}, got {arr.shape}")
        arr = arr.astype(self.dtype, copy=False)
        if not all_finite(arr):
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

    # -- computation ----------------------------------------------------------------------------

    def predict(self, x) -> np.ndarray:
        """Network output a^L.

        Parameters
        ----------
        x : array_like, shape (N, n0) or (n0,)
            Inputs, one sample per row; a 1-D x is one sample.  On the cuda backend x may be a
            device array; the output is then a device array too.

        Returns
        -------
        ndarray of shape (N, nL), or (nL,) for a 1-D x, in the model's dtype.
        """
        xb, single = self._backend.check_x(x)
        out = self._backend.forward(self._params, xb)
        return out[0] if single else out

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
        b = self._backend
        xb, _ = b.check_x(x)
        n = xb.shape[0]
        yb = b.check_y(y, n)
        sw = b.check_sample_weight(sample_weight, n)
        g = b.check_out(out, self._params)
        return b.loss_and_grad(self._params, xb, yb, sw, g), g

    def evaluate(self, x, y) -> dict:
        """Loss (and accuracy, for a classifier) on a data set, without changing anything.

        The forward pass and the loss only: no backward pass.

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
        b = self._backend
        xb, _ = b.check_x(x)
        loss, acc = b.evaluate(self._params, xb, b.check_y(y, xb.shape[0]))
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
        alpha=0.0,
        comm=None,
    ) -> dict:
        """Train by minibatch gradient descent (or full-batch L-BFGS), continuing from ``params``.

        One driver for every backend (:mod:`fastbp.training`): the epochs, the schedule, validation, early
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
        return _training.fit(
            self, x, y, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, shuffle=shuffle, seed=seed,
            validation_data=validation_data, verbose=verbose, sample_weight=sample_weight, schedule=schedule,
            patience=patience, min_delta=min_delta, restore_best=restore_best, callback=callback, clip_norm=clip_norm,
            alpha=alpha, comm=comm,
        )

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
        write_model_file(os.fspath(path), {
            "sizes": np.array(self.sizes, dtype=np.int64), "activations": np.array(self.activations),
            "loss": np.array(self.loss), "dtype": np.array(self.dtype.name), "init": np.array(self.init),
            "params": self._params,
        })

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
        backend = check_backend_name(backend)
        with open(path, "rb") as fh:  # a missing or unreadable file raises its OSError as it is
            try:
                desc, params = read_model_file(fh)
            except ModelFileError as e:
                raise ValueError(f"path: {path!r} {e}") from None
            except ResourceError as e:
                raise ResourceError(f"path: {path!r} holds a model too large for this machine ({e})") from None
            except Exception as e:  # noqa: BLE001 - any other failure to parse is a damaged file
                why = f"{type(e).__name__}: {e}"
                raise ValueError(f"path: {path!r} is not a readable fastbp model file ({why})") from None
        sizes, activations, loss, dtype, init = desc
        net = cls.__new__(cls)
        net._setup(NetworkSpec(sizes, activations, loss, dtype), init, backend, params)
        return net
