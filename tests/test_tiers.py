"""Tiered compilation: a parallel twin runs once it is compiled, cached, or paid for (fastbp._tiers).

The rule with stand-in dispatchers (no compilation), then the whole behaviour in fresh processes
with an empty cache: a cold process runs the serial twin and compiles no parallel one; a process
that finds the parallel twin in the disk cache loads it and runs it at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

import fastbp
from fastbp import _tiers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastbp.__file__)))


class Stand:
    """A dispatcher as far as the tiers look at one: its overloads and its disk cache."""

    def __init__(self, compiled=False, cached=False, broken=False):
        self.overloads = {(int,): object()} if compiled else {}
        self.loaded = 0
        self._cache_hits = {(int,): 0}
        self.targetctx = SimpleNamespace(insert_user_function=lambda *a: None)

        def load(sig, ctx):
            if broken:
                raise AttributeError("a Numba with other internals")
            if not cached:
                return None
            self.loaded += 1
            return SimpleNamespace(entry_point=None, fndesc=None, library=None)

        self._cache = SimpleNamespace(load_overload=load)

    def typeof_pyval(self, value):
        return type(value)

    def add_overload(self, cres):
        self.overloads[(int,)] = cres


class SerialStand:
    """A serial twin: its first call "compiles" (adds an overload) and takes ``compile_s``, every
    later call takes ``run_s`` (a fake clock)."""

    def __init__(self, clock, compile_s, run_s):
        self.overloads, self.clock, self.compile_s, self.run_s = {}, clock, compile_s, run_s

    def __call__(self, *args):
        if not self.overloads:
            self.overloads[(int,)] = object()
            self.clock[0] += self.compile_s
        else:
            self.clock[0] += self.run_s
        return 7


def test_the_serial_twins_own_compilation_is_not_charged(monkeypatch):
    """A first call that spends 14 s compiling the serial twin must not count as 14 s of serial
    running (it made a cold digits script compile the parallel twin too: 34 s instead of 18)."""
    monkeypatch.setattr(fastbp.config, "PARALLEL_COMPILE_AFTER", 10.0)
    clock = [0.0]
    monkeypatch.setattr(_tiers.time, "perf_counter", lambda: clock[0])
    tiers, par = _tiers.Tiers(), Stand()
    serial = SerialStand(clock, compile_s=14.0, run_s=4.0)
    assert tiers.run_serial(serial, par, np.float32, (1,)) == 7
    assert not tiers.ready(par, np.float32, (1,))  # 14 s of compiling: nothing charged
    tiers.run_serial(serial, par, np.float32, (1,))
    tiers.run_serial(serial, par, np.float32, (1,))
    assert not tiers.ready(par, np.float32, (1,))  # 8 s of running
    tiers.run_serial(serial, par, np.float32, (1,))
    assert tiers.ready(par, np.float32, (1,))  # 12 s


def test_a_twin_that_is_neither_compiled_nor_cached_waits_until_the_serial_one_paid_for_it(monkeypatch):
    monkeypatch.setattr(fastbp.config, "PARALLEL_COMPILE_AFTER", 5.0)
    tiers = _tiers.Tiers()
    par = Stand()
    assert not tiers.ready(par, np.float32, (1,))
    tiers.charge(par, np.float32, 3.0)
    assert not tiers.ready(par, np.float32, (1,))
    assert not tiers.ready(par, np.float64, (1,))  # per dtype (one signature each)
    tiers.charge(par, np.float32, 2.5)
    assert tiers.ready(par, np.float32, (1,))
    assert not tiers.ready(par, np.float64, (1,))
    assert not tiers.ready(Stand(), np.float32, (1,))  # per dispatcher


@pytest.mark.parametrize("kind", ["compiled", "cached", "broken"])
def test_a_compiled_or_cached_twin_runs_at_once(kind, monkeypatch):
    monkeypatch.setattr(fastbp.config, "PARALLEL_COMPILE_AFTER", 1e9)
    par = Stand(**{kind: True})
    assert _tiers.Tiers().ready(par, np.float32, (1,))
    if kind == "cached":
        assert par.loaded == 1 and (int,) in par.overloads


def test_the_real_dispatchers_answer_the_look_up():
    from fastbp.cpu import network

    net = fastbp.MLP([3, 5, 2], "tanh", dtype=np.float64, seed=0)
    x = np.ones((4, 3))
    out = np.empty((4, 2))
    args = (net.params, net.spec.sizes, net.spec.activations, x, out, np.empty(fastbp.workspace_size(net.sizes, 4)))
    network.forward_parallel(*args)  # compiled (or loaded) now
    assert _tiers._compiled_or_cached(network.forward_parallel, args)


CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import fastbp
    from fastbp.cpu import network

    fastbp.config.PARALLEL_COMPILE_AFTER = float(sys.argv[1])
    net = fastbp.MLP([13, 65, 7], ["tanh", "softmax"], "cross_entropy", dtype=np.float64, seed=0)
    x = np.linspace(-1.0, 1.0, 300 * 13).reshape(300, 13)  # N * P > PARALLEL_MIN_WORK
    assert network.parallel_pays(300, net.n_params, True)
    out = net.predict(x)
    par = network.forward_parallel
    print(json.dumps({"out": float(out.sum()), "parallel": len(par.overloads),
                      "serial": len(network.forward_serial.overloads), "hits": sum(par.stats.cache_hits.values())}))
    """
)


def _child(cache, after):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env.update(PYTHONPATH=ROOT, NUMBA_CACHE_DIR=cache)
    r = subprocess.run([sys.executable, "-c", CHILD, str(after)], capture_output=True, text=True, env=env,
                       timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_a_cold_process_runs_serial_and_a_cached_parallel_twin_is_loaded(tmp_path):
    cache = str(tmp_path / "cache")
    cold = _child(cache, 10.0)
    assert cold["parallel"] == 0 and cold["serial"] == 1  # nothing parallel compiled for one predict
    eager = _child(cache, 0.0)  # compiles the parallel twin at once, and caches it
    assert eager["parallel"] == 1 and eager["hits"] == 0
    warm = _child(cache, 10.0)  # finds it in the cache: loads it and runs it, no serial twin needed
    assert warm["parallel"] == 1 and warm["hits"] == 1 and warm["serial"] == 0
    assert cold["out"] == eager["out"] == warm["out"]  # the twins agree bitwise


