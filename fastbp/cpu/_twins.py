"""Serial and parallel twins of a kernel, compiled from one Python body.

Both twins are cached on disk (``cache=True``) and release the GIL (``nogil=True``): concurrent
calls from several Python threads run at the same time, each in its own workspace.

The parallel twin is compiled from a *copy* of the Python function under another name
(``<name>_parallel``).  Numba's cache index is keyed by the function's name, signature and
bytecode, not by its compile flags: compiled from the same function, the serial twin would
load the parallel twin's machine code from disk (and the other way round), and a "serial"
call would open parallel regions.  The copy gets cache files of its own.

Caching parallel code is safe across thread counts, threading layers and concurrent processes
(``tests/test_cache.py`` runs each case in fresh processes and checks the answers).
"""

from __future__ import annotations

import types

from numba import njit

from .._cache import cached_njit
from ..config import FASTMATH


def _renamed(py, suffix: str, **rebind):
    """A copy of the function ``py`` named ``<name><suffix>`` (same code and defaults).

    ``rebind`` replaces global names for the copy only (the copy gets its own globals dict, a
    snapshot of ``py``'s module taken now: call this at the end of the module).
    """
    glb = dict(py.__globals__, **rebind) if rebind else py.__globals__
    f = types.FunctionType(py.__code__, glb, py.__name__ + suffix, py.__defaults__, py.__closure__)
    f.__qualname__ = py.__qualname__ + suffix
    f.__module__ = py.__module__
    f.__doc__ = py.__doc__
    f.__kwdefaults__ = py.__kwdefaults__
    return f


def bound_to(dispatcher, suffix: str, **rebind):
    """A cached copy of the compiled function ``dispatcher`` with some global names rebound.

    ``MLP.fit`` runs copies of ``train_epoch`` bound to one twin of the training step each, so
    that a process compiles only the twin it runs (the original references both).
    """
    # njit sets nopython itself; caching is not among the target options and is asked for here
    options = {k: v for k, v in dispatcher.targetoptions.items() if k != "nopython"}
    return cached_njit(**options)(_renamed(dispatcher.py_func, suffix, **rebind))


def twins(body, **options):
    """Return (serial, parallel) dispatchers compiled from ``body``'s Python function (with
    further ``njit`` options, such as ``error_model``, for both)."""
    py = getattr(body, "py_func", body)
    serial = cached_njit(nogil=True, fastmath=FASTMATH, **options)(py)
    parallel = cached_njit(parallel=True, nogil=True, fastmath=FASTMATH, **options)(_renamed(py, "_parallel"))
    return serial, parallel


def calling_twins(body, suffix: str = "", common: dict | None = None, **parallel_globals):
    """(serial, parallel) dispatchers of a function whose work is done by the twins it calls.

    The serial one is ``body`` compiled as it is; the parallel one is a copy of it with the global
    names in ``parallel_globals`` rebound (the serial twins it calls replaced by the parallel
    ones, and any inlined helper that calls them by a rebound copy of that helper).  Neither is
    compiled with ``parallel=True``: the parallel regions are in the callees, which are compiled
    once per signature and cached, and shared with every other caller.

    With a ``suffix``, both are copies named ``<name><suffix>`` and ``<name>_parallel<suffix>``
    with the global names in ``common`` rebound in both as well (``parallel_globals`` over them
    in the parallel one): another pair of twins of the same body, with cache files of their own.
    """
    py = getattr(body, "py_func", body)
    common = common or {}
    serial = cached_njit(nogil=True, fastmath=FASTMATH)(_renamed(py, suffix, **common) if suffix else py)
    parallel = cached_njit(nogil=True, fastmath=FASTMATH)(
        _renamed(py, "_parallel" + suffix, **{**common, **parallel_globals}))
    return serial, parallel


def inlined_copy(helper, suffix: str, **rebind):
    """An ``inline="always"`` copy of the inlined helper ``helper`` with some global names rebound
    (an inlined function resolves global names in its own module's globals)."""
    return njit(inline="always")(_renamed(helper.py_func, suffix, **rebind))
