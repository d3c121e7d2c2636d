"""When a process starts running a kernel's ``parallel=True`` twin: tiered compilation.

Compiling the parallel twin of the training step takes seconds (``bench/RESULTS.md`` has the
figures), and on 2 cores it saves at most half of a step's time.  A short
script would pay more in compilation than it could ever win back.  So ``MLP`` runs a whole-network
kernel's parallel twin, where it pays (:func:`fastbp.cpu.network.parallel_pays`), only once that
twin is **ready**:

- it is compiled in this process already, or its machine code is in the disk cache (a warm cache,
  or one filled by ``python -m fastbp compile``): it is loaded and used from the first call; or
- the serial twin has run, in calls where the parallel one would have paid, for
  ``config.PARALLEL_COMPILE_AFTER`` seconds in all: then the next call compiles it.  A call that
  compiled (or loaded) the serial twin itself is not counted: its time is compilation, not
  running.  Spending as long in the slower twin as compiling the faster one costs is the ski-rental rule: the total time
  is never more than about twice that of the best choice made in hindsight.

Until then the serial twin runs.  Both twins give bitwise the same result, so the choice changes
the speed only.  A user's own ``@njit`` loop calling :func:`fastbp.cpu.loss_and_grad` is not
affected (compiled code cannot tier): it compiles the twins it can reach when it is compiled.
"""

from __future__ import annotations

import threading
import time

from numba.core.compiler_lock import global_compiler_lock

from . import config

__all__ = ["TIERS", "Tiers"]


class Tiers:
    """Readiness of parallel twins, per (dispatcher, dtype): whole-network kernels take one
    signature per dtype, so the dtype names the specialisation."""

    def __init__(self) -> None:
        self._ready: dict[tuple[int, str], bool] = {}
        self._serial_seconds: dict[tuple[int, str], float] = {}
        self._lock = threading.Lock()

    def ready(self, parallel, dtype, args) -> bool:
        """Whether ``parallel`` (a dispatcher) may run now on ``args``; loads it from the disk cache
        if it is there (looked up once per specialisation and process)."""
        key = (id(parallel), str(dtype))
        state = self._ready.get(key)
        if state:
            return True
        if state is None:
            state = _compiled_or_cached(parallel, args)
            with self._lock:
                self._ready[key] = state
            if state:
                return True
        if self._serial_seconds.get(key, 0.0) >= config.PARALLEL_COMPILE_AFTER:
            with self._lock:
                self._ready[key] = True
            return True
        return False

    def run_serial(self, serial, parallel, dtype, args):
        """``serial(*args)``, its time charged to ``parallel`` unless the call compiled or loaded
        ``serial`` (a new entry in its overloads)."""
        before = len(serial.overloads)
        t0 = time.perf_counter()
        try:
            return serial(*args)
        finally:
            if len(serial.overloads) == before:
                self.charge(parallel, dtype, time.perf_counter() - t0)

    def charge(self, parallel, dtype, seconds: float) -> None:
        """Count ``seconds`` of serial running that the parallel twin ``parallel`` could have shortened."""
        key = (id(parallel), str(dtype))
        with self._lock:
            self._serial_seconds[key] = self._serial_seconds.get(key, 0.0) + seconds


def _compiled_or_cached(dispatcher, args) -> bool:
    """Whether ``dispatcher`` has machine code for ``args`` in memory or in its disk cache (loading
    it, as Numba does before it compiles).  Any failure of this look-up answers True: the call then
    compiles as Numba always would."""
    try:
        sig = tuple(dispatcher.typeof_pyval(a) for a in args)
        if sig in dispatcher.overloads:
            return True
        with global_compiler_lock:
            if sig in dispatcher.overloads:
                return True
            cres = dispatcher._cache.load_overload(sig, dispatcher.targetctx)
            if cres is None:
                return False
            # what numba.core.dispatcher.Dispatcher.compile does with a cache hit
            dispatcher._cache_hits[sig] += 1
            dispatcher.targetctx.insert_user_function(cres.entry_point, cres.fndesc, [cres.library])
            dispatcher.add_overload(cres)
            return True
    except Exception:  # noqa: BLE001 - a Numba without these internals: compile as usual
        return True


#: The process-wide records (kernels and their caches are per process).
TIERS = Tiers()
