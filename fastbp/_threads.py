"""Concurrency of the compiled CPU calls made through ``fastbp.MLP``.

The kernels release the GIL (``nogil=True``), so calls from several Python threads run at the
same time.  Two rules keep that correct and fast:

- **Scratch space is per thread.**  Each thread that calls a model gets its own workspaces and
  scratch gradient (``threading.local``); nothing a call writes is shared with another call.
- **One parallel region at a time.**  A ``parallel=True`` twin already keeps every core busy;
  two of them at once oversubscribe the cores (each OpenMP team spins while it waits), and
  Numba's ``workqueue`` threading layer aborts the process on concurrent parallel launches.  So
  a call runs its parallel twin only when it is the only compiled call in flight in the
  process; otherwise it runs the serial twin.  The two twins compute bitwise the same result
  (tested), so the answer does not depend on the scheduling.
- **Worker threads need more work to go parallel.**  A parallel region opened from a thread
  other than the main one costs far more to open under OpenMP, so from such a thread the
  cut-over is ``config.PARALLEL_MIN_WORK_THREAD`` instead of ``config.PARALLEL_MIN_WORK``.
"""

from __future__ import annotations

import threading

import numba

from . import config

__all__ = ["GATE", "NEVER", "Gate", "min_parallel_work"]

#: A ``min_work`` no call reaches: the serial twin.
NEVER = 1 << 62

_MAIN = threading.main_thread().ident


def min_parallel_work(alone: bool) -> int:
    """Work from which a call of the calling thread runs its parallel twin (``alone``: no other call in flight).

    ``NEVER`` when another call is in flight or Numba has one thread for this thread.
    """
    if not alone or numba.get_num_threads() <= 1:
        return NEVER
    if threading.get_ident() == _MAIN:
        return config.PARALLEL_MIN_WORK
    return config.PARALLEL_MIN_WORK_THREAD


class Gate:
    """Counts the threads that are inside a model call into compiled CPU code.

    Re-entrant per thread: a call made while the same thread is already registered (the
    validation pass inside ``fit``) does not count as a second caller.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._depth = threading.local()

    def enter(self) -> bool:
        """Register the calling thread; return whether it is the only one in flight."""
        depth = getattr(self._depth, "n", 0)
        self._depth.n = depth + 1
        with self._lock:
            if depth == 0:
                self._active += 1
            return self._active == 1

    def leave(self) -> None:
        depth = self._depth.n - 1
        self._depth.n = depth
        if depth == 0:
            with self._lock:
                self._active -= 1

    def alone(self) -> bool:
        """Whether the calling thread, already registered, is the only one in flight."""
        return self._active == 1

    @property
    def active(self) -> int:
        """Threads in flight now."""
        return self._active


#: The process-wide gate (the cores are shared by every model).
GATE = Gate()
