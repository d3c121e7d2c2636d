"""Checks at the public boundary: every message names the argument and what was expected.

The compiled scans here keep the GIL on purpose: they take well under a microsecond for the
batches of a serving loop, and releasing the GIL for them would add a hand-over (a thread
wake-up, tens of microseconds under contention) to every call made beside other threads.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

from . import activations as _A
from . import losses as _L
from ._cache import cached_njit

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@cached_njit()
def all_finite(a):
    """Whether every element of ``a`` is finite (one pass, no temporary)."""
    for v in a.ravel():
        if not np.isfinite(v):
            return False
    return True


@cached_njit()
def label_bounds(y):
    """(smallest, largest) of a non-empty 1-d array of class labels."""
    lo = y[0]
    hi = y[0]
    for v in y:
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    return lo, hi


@cached_njit()
def value_bounds(a):
    """(smallest, largest) element of a non-empty array."""
    lo = a.flat[0]
    hi = a.flat[0]
    for v in a.ravel():
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    return lo, hi


def check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected np.float32 or np.float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected np.float32 or np.float64, got {dt}")
    return dt


def check_float(name: str, value, lo: float = 0.0, hi: float = math.inf, lo_open=False, hi_open=False) -> float:
    """``value`` as a float, checked to be a finite number in [lo, hi] (open at an end where told)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    v = float(value)
    bad = not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi)
    if bad:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise ValueError(f"{name}: expected a finite number in {lb}{lo}, {hi}{rb}, got {value!r}")
    return v


def check_int(name: str, value, minimum: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return value


def as_array(name: str, a) -> np.ndarray:
    """An ndarray view of ``a`` (lists accepted), refusing non-numeric data."""
    if hasattr(a, "__cuda_array_interface__") and not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: a device array was given to a host backend; copy it to the host first")
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as e:
        raise TypeError(f"{name}: expected a numeric array, could not convert: {e}") from None
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name}: expected a numeric (integer or float) array, got dtype {arr.dtype}")
    return arr


def as_float_matrix(name: str, arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """C-contiguous 2-D array of ``dtype``, checked finite."""
    out = np.ascontiguousarray(arr, dtype=dtype)
    if out.size and not all_finite(out):
        raise ValueError(msg_not_finite(name))
    return out


def check_batch(name: str, arr: np.ndarray, width: int) -> np.ndarray:
    """Shape check of a (N, width) batch; a 1-D array of length width is one sample."""
    if arr.ndim == 1 and arr.shape[0] == width:
        arr = arr.reshape(1, width)
    if arr.ndim != 2 or arr.shape[1] != width:
        raise ValueError(msg_batch_shape(name, width, arr.shape))
    if arr.shape[0] == 0:
        raise ValueError(msg_empty(name, arr.shape))
    return arr


# -- the network's description ------------------------------------------------------------------


def check_sizes(sizes) -> tuple[int, ...]:
    """Layer widths [n0, ..., nL] as a tuple of ints (at least two, each >= 1)."""
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, (Sequence, np.ndarray)):
        raise TypeError(f"sizes: expected a sequence of layer widths [n0, n1, ..., nL], got {sizes!r}")
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes: expected at least two widths (input and output), got {sizes}")
    return tuple(check_int(f"sizes[{i}]", s, minimum=1) for i, s in enumerate(sizes))


def check_activations(activations, n_layers: int) -> tuple[str, ...]:
    """One activation name per layer (a single name stands for all); softmax on the output only."""
    if isinstance(activations, str):
        names = [activations] * n_layers
    elif isinstance(activations, (Sequence, np.ndarray)):
        names = list(activations)
        if len(names) != n_layers:
            raise ValueError(
                f"activations: expected one name or a sequence of {n_layers} names (one per layer), "
                f"got {len(names)}"
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


def check_loss(loss, output_activation: str) -> str:
    """A loss name that the output activation allows."""
    if not isinstance(loss, str) or loss not in _L.CODES:
        raise ValueError(f"loss: unknown loss {loss!r}; expected one of {', '.join(_L.NAMES)}")
    required = _L.REQUIRED_OUTPUT[_L.CODES[loss]]
    if required is not None and _A.CODES[output_activation] != required:
        need = _A.NAMES[required]
        raise ValueError(
            f"loss: {loss!r} needs a {need} output layer, but the last activation is {output_activation!r}"
        )
    return loss


# -- data, against a network's spec ---------------------------------------------------------------
#
# Every backend runs these (the cuda backend checks device arrays on the device, with the same
# messages: see fastbp.cuda.backend).  Messages are built here once.


def msg_batch_shape(name: str, width: int, shape) -> str:
    return f"{name}: expected shape (N, {width}), got an array of shape {tuple(shape)}"


def msg_empty(name: str, shape) -> str:
    return f"{name}: the batch is empty (shape {tuple(shape)}); expected at least one sample"


def msg_not_finite(name: str) -> str:
    return f"{name}: contains NaN or infinity"


def msg_label_range(name: str, n_out: int, lo, hi) -> str:
    return f"{name}: class labels must lie in [0, {n_out}), got values in [{lo}, {hi}]"


def msg_probabilities(name: str, loss: str, lo, hi) -> str:
    return f"{name}: {loss} targets must be probabilities in [0, 1], got values in [{lo}, {hi}]"


def msg_target_shape(name: str, n: int, n_out: int, shape) -> str:
    return f"{name}: expected shape ({n}, {n_out}) to match x, got {tuple(shape)}"


def check_x(spec, x, name: str = "x") -> tuple[np.ndarray, bool]:
    """(x as a C-contiguous (N, n0) array of the spec's dtype, checked finite; whether x was 1-D)."""
    arr = as_array(name, x)
    single = arr.ndim == 1
    arr = check_batch(name, arr, spec.n_inputs)
    return as_float_matrix(name, arr, spec.dtype), single


def check_y(spec, y, n: int, name: str = "y") -> np.ndarray:
    """Targets as a C-contiguous (N, nL) float array or an (N,) int64 label array.

    Integer class labels of shape (N,) stand for one-hot rows (cross-entropy, or any loss with
    nL > 1); with one output and another loss, an (N,) array holds the targets.
    """
    n_out = spec.n_outputs
    arr = as_array(name, y)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim == 1 and n == 1 and arr.shape[0] == n_out and n_out > 1:
        arr = arr.reshape(1, n_out)
    if arr.ndim == 2:
        if arr.shape != (n, n_out):
            raise ValueError(msg_target_shape(name, n, n_out, arr.shape))
        return _check_target_values(spec, name, as_float_matrix(name, arr, spec.dtype))
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected shape ({n}, {n_out}) or ({n},), got {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name}: has {arr.shape[0]} samples but x has {n}")
    if spec.loss_name != "cross_entropy" and n_out == 1:
        return _check_target_values(spec, name, as_float_matrix(name, arr.reshape(n, 1), spec.dtype))
    if arr.dtype.kind == "f":
        raise TypeError(
            f"{name}: float labels given where integer class labels are meant; pass integer labels "
            f"in [0, {n_out}) of shape ({n},), or targets of shape ({n}, {n_out})"
        )
    lo, hi = label_bounds(arr)
    if lo < 0 or hi >= n_out:
        raise ValueError(msg_label_range(name, n_out, lo, hi))
    return np.ascontiguousarray(arr, dtype=np.int64)


def _check_target_values(spec, name: str, y: np.ndarray) -> np.ndarray:
    if spec.loss_name in ("cross_entropy", "binary_cross_entropy"):
        lo, hi = value_bounds(y)
        if lo < 0 or hi > 1:
            raise ValueError(msg_probabilities(name, spec.loss_name, lo, hi))
    return y


def check_sample_weight(spec, sample_weight, n: int) -> np.ndarray | None:
    """Non-negative finite (N,) weights of the spec's dtype, not all zero; None stays None."""
    if sample_weight is None:
        return None
    sw = as_array("sample_weight", sample_weight)
    if sw.shape != (n,):
        raise ValueError(f"sample_weight: expected shape ({n},) to match x, got {sw.shape}")
    sw = np.ascontiguousarray(sw, dtype=spec.dtype)
    if not all_finite(sw):
        raise ValueError(msg_not_finite("sample_weight"))
    if sw.min() < 0:
        raise ValueError("sample_weight: weights must be non-negative")
    if not sw.max() > 0:
        raise ValueError("sample_weight: at least one weight must be positive")
    return sw


def check_out(spec, out, params: np.ndarray) -> np.ndarray:
    """A writeable C-contiguous host array for a gradient (a new one for None)."""
    if out is None:
        return np.empty_like(params)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out: expected a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != spec.dtype:
        raise TypeError(f"out: expected dtype {spec.dtype}, got {out.dtype}")
    if out.shape != params.shape:
        raise ValueError(f"out: expected shape {params.shape}, got {out.shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out: expected a writeable C-contiguous array")
    if np.may_share_memory(out, params):
        raise ValueError("out: must not share memory with params")
    return out


def check_pair(name: str, value) -> tuple:
    """A pair (x, y), as ``validation_data`` must be."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name}: expected a pair (x_val, y_val)")
    return tuple(value)
