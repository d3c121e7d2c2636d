"""When a process starts running a kernel's ``parallel=True`` twin: tiered compilation.

Compiling the parallel twin of the training step takes some 12-16 s on the reference machine
(the serial twin about 9 s), and on 2 cores it saves at most half of a step's time.  A short
script would pay more in compilation than it could ever win back.  So ``MLP`` runs a whole-network
kernel's parallel twin, where it pays (:func:`fastbp.cpu.network.parallel_pays`), only once that
twin is **ready**:

- it is compiled in this process already, or its machine code is in the disk cache (a warm cache,
  or one filled by ``python -m fastbp compile``): it is loaded and used from the first call; or
- the serial twin has run, in calls where the parallel one would have paid, for
  ``config.PARALLEL_COMPILE_AFTER`` seconds in all: then the next call compiles it.  A call that
  compiled (or loaded) the serial twin itself is not counted: its time is compilation, not
  running.  Spending as
  long in the slower twin as compiling the faster one costs is the ski-rental rule: the total time
  is never more than about twice that of the best choice made in hindsight.

Until then the serial twin runs.  Both twins give bitwise the same result, so the choice changes
the speed only.  A user's own ``@njit`` loop calling :func:`fastbp.cpu.loss_and_grad` is not
affected (compiled code cannot tier): it compiles the twins it can reach when it is compiled.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from numba.core.compiler_lock import global_compiler_lock

from . import config

__all__ = ["RACE", "TIERS", "Race", "Tiers"]


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


class _Stretch:
    """One thread's record for one kernel and batch length (see :class:`Race`)."""

    __slots__ = ("parallel", "recent", "probe", "probe_left", "until_probe", "gap", "last")

    def __init__(self, gap: int) -> None:
        self.parallel = True  # every thread (True) or one, between probes
        self.recent: list[float] = []  # its last few clean periods
        self.probe: list[float] = []  # clean periods of the other twin in the probe under way
        self.probe_left = 0  # calls of the probe still to start
        self.until_probe = gap
        self.gap = gap
        self.last: tuple[float, bool, bool] | None = None  # (start, twin, clean) of the previous call


class Race:
    """Whether a whole-network call where the parallel twin pays runs it on every thread or on the
    calling thread alone: whichever comes round faster, measured as the program runs.

    The result is bitwise the same either way (the parallel twins' results do not depend on the
    thread count), so this changes the speed only.  On two cores the other thread's rows of W^l
    and ∂C/∂W^l live in the other core's cache, and the caller's own update of θ between calls
    (``params -= lr * g``) moves them back: one to two parameter vectors cross between the cores
    per step.  What that costs depends on where the machine has put its cores.  On the reference
    machine (a virtual machine) it changes from process to process and within one: a 1 MB vector
    modified on one core and read on the other took 0.1 ms in some processes and 0.4-0.7 ms in
    others, and the 784-300-100-10 training step with the caller's update took 0.9 ms on two
    threads against 1.4 ms on one in the first kind, but 1.8-2.6 ms on two in the second
    (bench/RESULTS.md, "One thread or two").  So the choice is measured, not assumed:

    - a call's *period* is the time from its start to the start of the next call of the same
      kernel, on the same batch length, from the same thread: the kernel and whatever the caller
      does in between, which is where the cost of moving the vectors back lands;
    - the choice in use runs for ``gap`` calls, then the other one runs ``config.TWIN_PROBE_CALLS``
      calls; the first period after each change is not counted (it pays for the move);
    - if the other one's median period is under ``config.TWIN_SWITCH_RATIO`` times the median of
      the last periods of the one in use, it takes over and ``gap`` starts again from its first
      value; otherwise ``gap`` doubles, up to its largest value (``config.TWIN_PROBE_GAP``), so a
      settled choice costs a probe every thousand calls;
    - periods of more than a second (the caller did something else) are not counted.

    One thread runs the parallel twin as one-thread parallel regions, so no other twin is ever
    compiled for it.  A user's own ``@njit`` loop is not affected: compiled code cannot choose.
    """

    def __init__(self, clock=None) -> None:
        self._local = threading.local()
        self._clock = clock or time.perf_counter

    def _stretch(self, key) -> _Stretch:
        table = getattr(self._local, "table", None)
        if table is None:
            table = self._local.table = {}
        st = table.get(key)
        if st is None:
            st = table[key] = _Stretch(config.TWIN_PROBE_GAP[0])
        return st

    def all_threads(self, parallel, dtype, n: int) -> bool:
        """Whether this call of ``parallel`` on ``n`` rows runs on every thread (True) or on the
        calling thread alone; times the previous call."""
        if not config.TWIN_RACE:
            return True
        st = self._stretch((id(parallel), str(dtype), n))
        now = self._clock()
        if st.last is not None:
            start, twin, clean = st.last
            period = now - start
            if clean and period < 1.0:
                if twin == st.parallel:
                    st.recent = (st.recent + [period])[-config.TWIN_PROBE_CALLS:]
                else:
                    st.probe.append(period)
        if st.probe_left == 0 and st.probe:
            self._decide(st)
        if st.probe_left > 0:
            st.probe_left -= 1
            twin = not st.parallel
        elif st.until_probe <= 0:
            st.probe_left = config.TWIN_PROBE_CALLS - 1
            twin = not st.parallel
        else:
            st.until_probe -= 1
            twin = st.parallel
        clean = st.last is not None and st.last[1] == twin
        st.last = (now, twin, clean)
        return twin

    @staticmethod
    def _decide(st: _Stretch) -> None:
        other, probe = np.median(st.probe), st.probe
        st.probe = []
        if st.recent and other < config.TWIN_SWITCH_RATIO * np.median(st.recent):
            st.parallel = not st.parallel
            st.recent = probe[-config.TWIN_PROBE_CALLS:]
            st.gap = config.TWIN_PROBE_GAP[0]
        else:
            st.gap = min(2 * st.gap, config.TWIN_PROBE_GAP[1])
        st.until_probe = st.gap


#: The process-wide records (kernels and their caches are per process).
TIERS = Tiers()
RACE = Race()
