"""Checks at the public boundary: every message names the argument and what was expected.

The compiled scans here keep the GIL on purpose: they take well under a microsecond for the
batches of a serving loop, and releasing the GIL for them would add a hand-over (a thread
wake-up, tens of microseconds under contention) to every call made beside other threads.
"""

from __future__ import annotations

import numbers

import numpy as np
from numba import njit

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@njit(cache=True)
def _all_finite(a):
    for v in a.ravel():
        if not np.isfinite(v):
            return False
    return True


@njit(cache=True)
def _label_bounds(y):
    lo = y[0]
    hi = y[0]
    for v in y:
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    return lo, hi


@njit(cache=True)
def _bounds(a):
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
    if out.size and not _all_finite(out):
        raise ValueError(f"{name}: contains NaN or infinity")
    return out


def check_batch(name: str, arr: np.ndarray, width: int) -> np.ndarray:
    """Shape check of a (N, width) batch; a 1-D array of length width is one sample."""
    if arr.ndim == 1 and arr.shape[0] == width:
        arr = arr.reshape(1, width)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected shape (N, {width}), got an array of shape {arr.shape}")
    if arr.shape[1] != width:
        raise ValueError(f"{name}: expected shape (N, {width}), got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: the batch is empty (shape {arr.shape}); expected at least one sample")
    return arr
