"""Serial and parallel twins of a kernel, compiled from one Python body.

The serial twin is cached on disk (``cache=True``); the parallel twin is not,
because cached ``parallel=True`` code has crashed when the thread count
changes (pynndescent PR #175).

Both release the GIL (``nogil=True``): concurrent calls from several Python
threads run at the same time, each in its own workspace.
"""

from __future__ import annotations

from numba import njit

from ..config import FASTMATH


def twins(body):
    """Return (serial, parallel) dispatchers compiled from ``body``'s Python function."""
    py = getattr(body, "py_func", body)
    serial = njit(cache=True, nogil=True, fastmath=FASTMATH)(py)
    parallel = njit(parallel=True, nogil=True, fastmath=FASTMATH)(py)
    return serial, parallel
