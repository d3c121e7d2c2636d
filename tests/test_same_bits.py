"""The same inputs give the same bits whatever the thread count, the twin and the instruction set.

Every product sums each element in one fixed order with explicit fused multiply-adds
(``fastbp.cpu._tile``), and no kernel is compiled with fast-math flags that would let LLVM reorder
a sum or fuse a multiply-add of its own choosing.  So the loss, the gradient, ``predict`` and θ
after ``fit`` must be bitwise those of this process in a subprocess with another
``NUMBA_NUM_THREADS``, and in one compiled for another CPU: ``NUMBA_CPU_NAME=haswell`` (AVX2 and
FMA) and ``x86-64-v2`` (SSE4.2, no FMA: ``llvm.fma`` in software), each with
``NUMBA_CPU_FEATURES`` empty (that CPU's own features: Numba otherwise adds the host's) and a
cache directory of its own.  Those two compile the serial twins only (the parallel twin of the
training step takes as long again to compile): that the twins agree, and whatever the thread
count, is checked on the host.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastbp.cpu import network

from . import bits_case

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def here(request, tmp_path_factory):
    """The results of this environment, computed once per test run: pytest-xdist's workers share
    them through a file, since each would otherwise compile every kernel at the same time."""
    worker = getattr(request.config, "workerinput", {}).get("workerid")
    try:
        import fcntl
    except ImportError:  # not POSIX: each worker computes its own
        worker = None
    if worker is None:
        return bits_case.results()
    shared = tmp_path_factory.getbasetemp().parent / "same_bits_here.npz"
    with open(f"{shared}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first worker computes; the other waits, then reads
        try:
            if not shared.exists():
                np.savez(shared, **bits_case.results())
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    with np.load(shared) as f:
        return {k: f[k] for k in f.files}


def _run(tmp_path, env_extra, *flags):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env.update(env_extra)
    out = tmp_path / "bits.npz"
    subprocess.run([sys.executable, "-m", "tests.bits_case", str(out), *flags], cwd=ROOT, env=env, check=True,
                   timeout=600)
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


def _assert_same(got, here, serial_only=False, fit_float32_only=False):
    expected = [k for k in here if not (serial_only and k.endswith("-parallel"))
                and not (fit_float32_only and k.startswith("float64") and k.endswith("-fit"))]
    assert sorted(got) == sorted(expected)
    for k in got:
        np.testing.assert_array_equal(got[k], here[k], err_msg=k, strict=True)


def test_the_twins_agree_in_this_process(here):
    for k in here:
        if k.endswith("-grad") or k.endswith("-loss"):
            for twin in network.VARIANTS:
                np.testing.assert_array_equal(here[f"{k}-{twin}"], here[k], err_msg=f"{k} {twin}", strict=True)


@pytest.mark.parametrize("threads", ["1", "3"])
def test_same_bits_for_any_thread_count(tmp_path, here, threads):
    _assert_same(_run(tmp_path, {"NUMBA_NUM_THREADS": threads}), here)


@pytest.mark.parametrize("cpu", ["haswell", "x86-64-v2"])
def test_same_bits_on_another_instruction_set(tmp_path, here, cpu):
    env = {"NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": "", "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    # Compiling for another target takes most of this test: θ after fit in float32 only there (the
    # epoch loop runs the kernels whose float64 results are compared), both dtypes above.
    _assert_same(_run(tmp_path, env, "--serial-only", "--fit-float32-only"), here, serial_only=True,
                 fit_float32_only=True)
