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
import tempfile
import threading
import zipfile

import numpy as np

from . import training as _training
from ._resources import ResourceError, check_fits
from ._validation import _all_finite, as_array, check_activations, check_dtype, check_int, check_loss, check_sizes
from .backends import check_backend_name, get_backend
from .layout import NetworkSpec, n_params

__all__ = ["MLP"]

INITS = ("xavier", "he")
_FILE_FORMAT = "fastbp-mlp"
_FILE_VERSION = 1


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

    fit = _training.fit

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
        backend = check_backend_name(backend)
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
        sizes, activations, loss, dtype, init = desc
        net = cls.__new__(cls)
        net._setup(NetworkSpec(sizes, activations, loss, dtype), init, backend, params)
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
            sizes = check_sizes([int(v) for v in small("sizes")])
            activations = check_activations([str(v) for v in small("activations")], len(sizes) - 1)
            loss = check_loss(str(small("loss")), activations[-1])
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
